"""TensorFlow Data Validation's drift measures and anomalies for two CSV files, as JSON.

Run with TFDV's own venv (``make tfdv`` creates it; TFDV cannot share the project's)::

    .venv/tfdv/bin/python tools/tfdv_reference.py --baseline OLD.csv --current NEW.csv \
        [--string-threshold 0.1] [--numeric-threshold 0.1] [--threshold fare=0.2 ...] \
        [--out result.json]

Statistics of both files come from ``tfdv.generate_statistics_from_csv`` (TFDV's default
options: its quantile sketch, 10-bucket STANDARD histograms, rank histograms), the schema
from ``tfdv.infer_schema`` on the baseline. Every string feature gets an ``infinity_norm``
drift comparator and every numeric one a ``jensen_shannon_divergence`` comparator, with the
thresholds given; ``tfdv.validate_statistics(current, schema, previous_statistics=baseline)``
then compares them. Printed (and written to ``--out``)::

    {"tfdv_version": str,
     "rows": {"baseline": n, "current": n},
     "features": {NAME: {"type": "INT" | "FLOAT" | "STRING" | ...,
                         "anomalies": [AnomalyInfo type names, sorted],
                         "drift": {"measure": "l_infinity" | "jensen_shannon",
                                   "value": float, "threshold": float} | null}},
     "stats": {"baseline" | "current": {NAME: {"histogram": [[low, high, count], ...],
                                               "num_nan": n} |
                                              {"rank_histogram": {VALUE: count}}}},
     "timings": {"import": s, "baseline_stats": s, "current_stats": s, "infer_schema": s,
                 "validate": s, "total": s}}

Only the standard library is imported at the top so ``--help`` works anywhere; TFDV is
imported in :func:`main` (and timed: TensorFlow's import is a large part of a short run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

# TFDV's DriftSkewInfo measurement types, under the names beamforge's validation.json uses.
MEASURES = {"L_INFTY": "l_infinity", "JENSEN_SHANNON_DIVERGENCE": "jensen_shannon"}


def _thresholds(pairs: Sequence[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--threshold takes NAME=VALUE, got {pair!r}")
        out[name] = float(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; prints the JSON result and returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--baseline", required=True, help="CSV file of the baseline data")
    parser.add_argument("--current", required=True, help="CSV file compared with it")
    parser.add_argument("--string-threshold", type=float, default=0.1)
    parser.add_argument("--numeric-threshold", type=float, default=0.1)
    parser.add_argument(
        "--threshold", action="append", default=[], help="NAME=VALUE for one feature"
    )
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    per_feature = _thresholds(args.threshold)

    start = time.perf_counter()
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

    timings: dict[str, float] = {"import": time.perf_counter() - start}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        result = fn(*a, **kw)
        timings[name] = time.perf_counter() - began
        return result

    baseline = timed("baseline_stats", tfdv.generate_statistics_from_csv, args.baseline)
    current = timed("current_stats", tfdv.generate_statistics_from_csv, args.current)
    schema = timed("infer_schema", tfdv.infer_schema, baseline)

    types: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    for feature in schema.feature:
        name = feature.name
        types[name] = schema_pb2.FeatureType.Name(feature.type)
        comparator = feature.drift_comparator
        if feature.type == schema_pb2.BYTES:
            thresholds[name] = per_feature.get(name, args.string_threshold)
            comparator.infinity_norm.threshold = thresholds[name]
        elif feature.type in (schema_pb2.INT, schema_pb2.FLOAT):
            thresholds[name] = per_feature.get(name, args.numeric_threshold)
            comparator.jensen_shannon_divergence.threshold = thresholds[name]

    anomalies = timed(
        "validate", tfdv.validate_statistics, current, schema, previous_statistics=baseline
    )
    timings["total"] = time.perf_counter() - start

    features: dict[str, dict[str, Any]] = {
        name: {"type": types[name], "anomalies": [], "drift": None} for name in types
    }
    for name, info in anomalies.anomaly_info.items():
        kinds = {anomalies_pb2.AnomalyInfo.Type.Name(reason.type) for reason in info.reason}
        features.setdefault(name, {"type": None, "anomalies": [], "drift": None})
        features[name]["anomalies"] = sorted(kinds)
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(measurement.type)
            features[name]["drift"] = {
                "measure": MEASURES.get(kind, kind),
                "value": measurement.value,
                "threshold": measurement.threshold,
            }

    def rows(stats: Any) -> int:
        return int(stats.datasets[0].num_examples)

    def histograms(stats: Any) -> dict[str, dict[str, Any]]:
        # The distributions the drift measures are computed from: the STANDARD histogram of
        # numeric features and the rank histogram of string ones.
        out: dict[str, dict[str, Any]] = {}
        for feature in stats.datasets[0].features:
            name = ".".join(feature.path.step) or feature.name
            kind = feature.WhichOneof("stats")
            if kind == "num_stats":
                for histogram in feature.num_stats.histograms:
                    if histogram.type == histogram.STANDARD:
                        out[name] = {
                            "histogram": [
                                [b.low_value, b.high_value, b.sample_count]
                                for b in histogram.buckets
                            ],
                            "num_nan": histogram.num_nan,
                        }
            elif kind == "string_stats":
                ranked = feature.string_stats.rank_histogram.buckets
                out[name] = {"rank_histogram": {b.label: b.sample_count for b in ranked}}
        return out

    result = {
        "tfdv_version": tfdv.__version__,
        "rows": {"baseline": rows(baseline), "current": rows(current)},
        "features": features,
        "stats": {"baseline": histograms(baseline), "current": histograms(current)},
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
