"""Serving-time preprocessing next to tf.Transform's serving layer, in one process.

    python -m benchmarks.serving_vs_tft [--sizes 1 10 1000 10000] [--work DIR] [--fresh]

Both artifacts come from the same data: the taxi pipeline (``examples/chicago_taxi/
pipeline.yaml``, native steps) and its tf.Transform twin (``pipeline_tft.yaml``, TFX's taxi
``preprocessing_fn``) are run with ``beamforge run`` on ``--input`` (default: the shared
15,002-row taxi file) into ``--work``; existing runs there are reused unless ``--fresh``.

For each number of rows per call, the first rows of the file are served:

- ``beamforge (typed)``: ``Preprocessor.transform_rows`` on dicts of JSON-typed values
  (what a JSON request decodes to; missing values are None);
- ``beamforge (strings)``: the same on the CSV's own strings (``csv.DictReader`` rows);
- ``tf.Transform``: ``tft.TFTransformOutput(dir).transform_features_layer()`` called on
  ``tf.SparseTensor`` inputs built beforehand (TFX's raw feature spec without the label, as
  TFX's taxi trainer serves), so its time is the layer alone, not parsing.

Each figure is the best of repeated calls (at least ``--repeats``, and for at least
``--seconds``). The features of both are compared on the measured rows (the 16 features
the layer gives; ``tips_xf`` is the label). Results go to ``benchmarks/results/serving.json``
(key ``transform``) and ``serving.md``, which also shows the local prediction server's table
(:mod:`benchmarks.serving_latency`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.run import REPO, RESULTS_DIR, code_version, machine, wait_for_idle

DATA = REPO.parent / "shared" / "data" / "chicago_taxi" / "data.csv"
WORK = REPO / "benchmarks" / "work" / "serving"
SIZES = [1, 10, 1000, 10000]
PIPELINES = {
    "native": REPO / "examples" / "chicago_taxi" / "pipeline.yaml",
    "tft": REPO / "examples" / "chicago_taxi" / "pipeline_tft.yaml",
}
LABEL = "tips"


def run_pipelines(data: Path, work: Path, fresh: bool) -> dict[str, Path]:
    """Runs both taxi pipelines on ``data`` (unless already run); their artifact dirs."""
    from transforms.core.dataset_folder import resolve_artifact_dir

    out: dict[str, Path] = {}
    for name, spec in PIPELINES.items():
        output = work / name
        if fresh or not (output / "manifest.json").exists():
            env = {**os.environ, "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:1"}
            command = [sys.executable, "-m", "launchers.cli", "run", str(spec)]
            command += ["--input", str(data), "--output", str(output)]
            subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        out[name] = Path(resolve_artifact_dir(str(output)))
    return out


def best_of(call: Callable[[], Any], repeats: int, seconds: float) -> float:
    """The fastest of at least ``repeats`` calls lasting together at least ``seconds``."""
    call()
    best = float("inf")
    started = time.perf_counter()
    done = 0
    while done < repeats or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - begin)
        done += 1
    return best


def sparse_inputs(table: pa.Table, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Each raw column as the ``[rows, None]`` SparseTensor TFX's parsing gives the layer."""
    import tensorflow as tf

    features: dict[str, Any] = {}
    for name, feature in spec.items():
        column = table.column(name).combine_chunks()
        present = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
        values = column.drop_null().to_numpy(zero_copy_only=False)
        if feature.dtype == tf.string:
            values = np.array([v.encode() for v in values], dtype=object)
        indices = np.stack([present, np.zeros_like(present)], axis=1).astype(np.int64)
        features[name] = tf.SparseTensor(
            indices, tf.constant(values, feature.dtype), [table.num_rows, 1]
        )
    return features


def compare(served: Sequence[Mapping[str, Any]], layer: Mapping[str, Any]) -> dict[str, Any]:
    """Largest float difference and integer mismatches between the two outputs."""
    largest = 0.0
    mismatched: dict[str, int] = {}
    for name, tensor in layer.items():
        theirs = np.asarray(tensor.numpy())
        ours = np.asarray([row[name] for row in served])
        if theirs.dtype.kind == "f":
            largest = max(largest, float(np.max(np.abs(ours - theirs), initial=0.0)))
        else:
            bad = int(np.sum(ours != theirs))
            if bad:
                mismatched[name] = bad
    return {"features": sorted(layer), "max_float_difference": largest, "mismatched": mismatched}


def measure_all(
    artifacts: Mapping[str, Path], data: Path, sizes: Sequence[int], repeats: int, seconds: float
) -> dict[str, Any]:
    """Times both sides at each size; returns the results document's ``transform`` part."""
    import tensorflow_transform as tft

    from transforms.serving import Preprocessor

    preprocessor = Preprocessor.load(str(artifacts["native"]))
    options = pacsv.ConvertOptions(column_types=preprocessor.input_schema)
    table = pacsv.read_csv(data, convert_options=options)
    typed = table.to_pylist()
    with data.open(newline="") as handle:
        strings = list(csv.DictReader(handle))
    output = tft.TFTransformOutput(str(artifacts["tft"] / "transform_fn_dir"))
    layer = output.transform_features_layer()
    spec = output.raw_feature_spec()
    spec.pop(LABEL)
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for size in sizes:
        inputs = sparse_inputs(table.slice(0, size), spec)
        typed_rows, string_rows = typed[:size], strings[:size]
        serve = preprocessor.transform_rows
        result: dict[str, Any] = {
            "rows": size,
            "beamforge_typed_s": best_of(functools.partial(serve, typed_rows), repeats, seconds),
            "beamforge_strings_s": best_of(functools.partial(serve, string_rows), repeats, seconds),
            "tft_layer_s": best_of(functools.partial(layer, inputs), repeats, seconds),
        }
        result["ratio_typed"] = result["tft_layer_s"] / result["beamforge_typed_s"]
        result["ratio_strings"] = result["tft_layer_s"] / result["beamforge_strings_s"]
        rows.append(result)
        checks[str(size)] = compare(preprocessor.transform_rows(string_rows)[0], layer(inputs))
        print(
            f"{size:>6} rows: typed {result['beamforge_typed_s'] * 1e3:.3f} ms, strings "
            f"{result['beamforge_strings_s'] * 1e3:.3f} ms, tf.Transform "
            f"{result['tft_layer_s'] * 1e3:.3f} ms",
            flush=True,
        )
    return {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": str(data),
        "sizes": rows,
        "features_compared": checks,
        "machine": machine(),
        "code": code_version(),
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def render(document: Mapping[str, Any]) -> str:
    """``serving.md``: the transform table and, when measured, the server's table."""
    lines = ["# Serving benchmarks", ""]
    transform = document.get("transform")
    if transform:
        lines += [
            "## Preprocessing a call next to tf.Transform's serving layer",
            "",
            "`python -m benchmarks.serving_vs_tft`, one process, best of repeated calls;"
            f" measured {transform['measured_at']} on {transform['machine'].get('cpu', '?')}.",
            "Ratio: tf.Transform's time over beamforge's (above 1: beamforge is faster).",
            "",
            "| rows/call | beamforge typed | beamforge strings | tf.Transform layer |"
            " ratio typed | ratio strings |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in transform["sizes"]:
            lines.append(
                f"| {row['rows']:,} | {_ms(row['beamforge_typed_s'])} |"
                f" {_ms(row['beamforge_strings_s'])} | {_ms(row['tft_layer_s'])} |"
                f" {row['ratio_typed']:.1f}x | {row['ratio_strings']:.1f}x |"
            )
        checks = transform["features_compared"]
        worst = max(c["max_float_difference"] for c in checks.values())
        mismatched = {k: c["mismatched"] for k, c in checks.items() if c["mismatched"]}
        lines += [
            "",
            f"Features compared on the measured rows: {len(next(iter(checks.values()))['features'])}"
            f" (all but the label); largest float difference {worst:.2e}; integer"
            f" features differing: {mismatched or 'none'}.",
            "",
        ]
    server = document.get("server")
    if server:
        from benchmarks.serving_latency import render_server

        lines += render_server(server)
    return "\n".join(lines) + "\n"


def write_results(results_dir: Path, key: str, part: Mapping[str, Any]) -> Path:
    """Stores ``part`` under ``key`` in ``serving.json`` and rewrites ``serving.md``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "serving.json"
    document = json.loads(path.read_text()) if path.exists() else {}
    document[key] = part
    path.write_text(json.dumps(document, indent=2) + "\n")
    (results_dir / "serving.md").write_text(render(document))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, default=DATA, help="taxi CSV (header, rows)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the pipelines write")
    parser.add_argument("--fresh", action="store_true", help="rerun the pipelines")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="rows per call")
    parser.add_argument("--repeats", type=int, default=20, help="calls per figure, at least")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per figure, at least")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--idle-wait", type=float, default=0.0, help="wait up to this many seconds for idle CPUs"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    artifacts = run_pipelines(args.input, args.work, args.fresh)
    busy = wait_for_idle(args.idle_wait)
    part = measure_all(artifacts, args.input, args.sizes, args.repeats, args.seconds)
    part["busy_percent_before"] = busy
    path = write_results(args.results_dir, "transform", part)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
