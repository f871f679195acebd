"""Data validation next to TensorFlow Data Validation: the same numbers, and the time taken.

    python -m benchmarks.validation_vs_tfdv [--rows 15002 150000] [--only beamforge tfdv]

For each row count the scaled taxi file (:mod:`benchmarks.data`) is the baseline and a
shifted copy of it (:func:`shift`: fares x1.5, a new payment type, two companies dropped,
some trips longer, some a year later) the current data. Each system runs as its own process on the
same two files and does the same job: statistics of both, a schema inferred from the
baseline, and the current data validated against schema and baseline, with L-infinity
drift on string columns and Jensen-Shannon drift on numeric ones, same thresholds:

- ``beamforge``: the project's CSV reader and :class:`~transforms.ops.stats.DatasetStats`
  in one Beam pipeline on the pinned local runner (as ``beamforge run`` computes stats),
  then :mod:`transforms.validation`;
- ``beamforge_arrow``: the same statistics and validation without Beam (pyarrow's CSV
  reader feeding ``DatasetStats`` in one process), the floor of beamforge's cost;
- ``tfdv``: ``tools/tfdv_reference.py`` in TFDV's own venv (``make tfdv``):
  ``generate_statistics_from_csv``, ``infer_schema``, ``validate_statistics``.

Each run writes the same JSON shape (per column: anomaly kinds and the drift measurement);
beamforge's are compared with TFDV's: the largest absolute difference of a drift value,
and whether the drifted columns and the anomaly kinds are the same. Processes are measured
as in :mod:`benchmarks.run` (wall time, peak RSS, CPU).

Results go to ``--results-dir`` (default ``benchmarks/results/``): ``validation.md`` and
``validation.json``. The exit code is 1 when a run failed or beamforge disagrees with TFDV.

One side alone: ``python -m benchmarks.validation_vs_tfdv side beamforge --baseline A.csv
--current B.csv --out result.json`` (``beamforge_arrow`` likewise).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from benchmarks import data
from benchmarks.run import REPO, RESULTS_DIR, code_version, machine, measure, wait_for_idle

if TYPE_CHECKING:
    from transforms.validation.schema import DataSchema

SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
TFDV_PYTHON = REPO / ".venv" / "tfdv" / "bin" / "python"
TFDV_SCRIPT = REPO / "tools" / "tfdv_reference.py"

SYSTEMS = ["beamforge", "beamforge_arrow", "tfdv"]
LABELS = {
    "beamforge": "beamforge (CSV reader + DatasetStats on Beam, 1 worker; validation)",
    "beamforge_arrow": "beamforge without Beam (pyarrow CSV + DatasetStats; validation)",
    "tfdv": "TFDV 1.16 (generate_statistics_from_csv, infer_schema, validate_statistics)",
}
BEAMFORGE_SYSTEMS = ["beamforge", "beamforge_arrow"]

# Drift thresholds of both sides: over them, a column has drifted.
STRING_THRESHOLD = 0.1
NUMERIC_THRESHOLD = 0.1

# The shift of the current data (see shift()).
FARE_FACTOR = 1.5
TRIP_SECONDS_FACTOR = 1.3
TRIP_SECONDS_EVERY = 3
LATER_START_SECONDS = 365 * 86_400
LATER_START_EVERY = 4
NEW_PAYMENT_TYPE = "Mobile"
NEW_PAYMENT_EVERY = 20
DROPPED_COMPANIES = ("Dispatch Taxi Affiliation", "Choice Taxi Association")

# TFDV's AnomalyInfo types under the kinds of beamforge's validation.json.
TFDV_KINDS = {
    "COMPARATOR_L_INFTY_HIGH": "drift",
    "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH": "drift",
    "COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH": "drift",
    "ENUM_TYPE_UNEXPECTED_STRING_VALUES": "unexpected_values",
    "SCHEMA_NEW_COLUMN": "new_column",
    "SCHEMA_MISSING_COLUMN": "missing_column",
    "FEATURE_TYPE_LOW_FRACTION_PRESENT": "low_presence",
    "FEATURE_TYPE_LOW_NUMBER_PRESENT": "low_presence",
    "FEATURE_TYPE_NOT_PRESENT": "low_presence",
    "UNEXPECTED_DATA_TYPE": "type_change",
    "INT_TYPE_SMALL_INT": "out_of_range",
    "INT_TYPE_BIG_INT": "out_of_range",
    "FLOAT_TYPE_SMALL_FLOAT": "out_of_range",
    "FLOAT_TYPE_BIG_FLOAT": "out_of_range",
}

# --- data --------------------------------------------------------------------------------------


def _numbers(values: pa.Array, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    empty = pc.equal(values, "").to_numpy(zero_copy_only=False)
    return np.where(empty, "0", values.to_numpy(zero_copy_only=False)).astype(dtype), empty


def _text(numbers: np.ndarray, empty: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(empty), "", pc.cast(pa.array(numbers), pa.string()))


def shift(table: pa.Table) -> pa.Table:
    """The taxi rows with their distribution shifted, as a data drift test needs.

    Fares are 1.5 times higher (rounded to cents); every third trip lasts 30% longer; every
    fourth trip starts a year later; every 20th trip is paid with a payment type the
    baseline never saw (``"Mobile"``); the trips of two companies lose their company (the
    field is left empty). Empty fields stay empty.

    Args:
        table: String columns as :func:`benchmarks.data.read_source` reads them.

    Returns:
        A string table with the same columns and rows.
    """
    rows = np.arange(table.num_rows)
    columns = []
    for name in table.column_names:
        values = table.column(name).combine_chunks()
        if name == "fare":
            fares, empty = _numbers(values, np.float64)
            values = _text(np.round(fares * FARE_FACTOR, 2), empty)
        elif name == "trip_seconds":
            seconds, empty = _numbers(values, np.int64)
            longer = np.rint(seconds * TRIP_SECONDS_FACTOR).astype(np.int64)
            values = _text(np.where(rows % TRIP_SECONDS_EVERY == 0, longer, seconds), empty)
        elif name == "trip_start_timestamp":
            stamps, empty = _numbers(values, np.int64)
            later = stamps + LATER_START_SECONDS
            values = _text(np.where(rows % LATER_START_EVERY == 0, later, stamps), empty)
        elif name == "payment_type":
            values = pc.if_else(pa.array(rows % NEW_PAYMENT_EVERY == 0), NEW_PAYMENT_TYPE, values)
        elif name == "company":
            values = pc.if_else(pc.is_in(values, pa.array(DROPPED_COMPANIES)), "", values)
        columns.append(values)
    return pa.table(columns, names=table.column_names)


def write_shifted(source: Path, target: Path) -> Path:
    """Writes :func:`shift` of the CSV file ``source`` to ``target`` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.to_csv_bytes(shift(data.read_source(source)))
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    os.replace(tmp, target)
    return target


# --- beamforge side ------------------------------------------------------------------------------


def taxi_schema() -> pa.Schema:
    """The raw columns and types the taxi example declares (``source.schema``)."""
    from transforms.core.schema import arrow_schema

    spec = yaml.safe_load(SPEC.read_text())
    return arrow_schema(spec["source"]["schema"])


def stats_with_arrow(path: Path, schema: pa.Schema) -> dict[str, Any]:
    """``DatasetStats`` of a CSV file read by pyarrow (empty fields null), without Beam."""
    import pyarrow.csv as pa_csv

    from transforms.ops.stats import DatasetStats

    table = pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types=schema, null_values=[""], strings_can_be_null=True
        ),
    ).select(schema.names)
    analyzer = DatasetStats(schema)
    accumulator = analyzer.create_accumulator()
    for batch in table.to_batches():
        accumulator = analyzer.add_batch(accumulator, batch)
    return analyzer.extract_output(accumulator)


def stats_with_beam(paths: Sequence[Path], schema: pa.Schema) -> list[dict[str, Any]]:
    """``DatasetStats`` of each CSV file, read by the project's reader in one Beam pipeline.

    The pipeline runs on the pinned local runner (FnApiRunner, one worker), as a local
    ``beamforge run`` does; reading goes through :class:`~transforms.io.read.ReadRecords`.
    """
    import apache_beam as beam

    from beam_pipelines.runner import make_options, make_pipeline
    from transforms.beam.fit import AnalyzeBatches
    from transforms.core.schema import drop_hidden
    from transforms.io.read import ReadRecords, Source
    from transforms.ops.stats import DatasetStats

    spec = yaml.safe_load(SPEC.read_text())
    outputs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results = [Path(tmp) / f"stats-{i}.json" for i in range(len(paths))]
        with make_pipeline(make_options([])) as p:
            for i, (path, result) in enumerate(zip(paths, results, strict=True)):
                source = Source(format="csv", path=str(path), schema=spec["source"]["schema"])
                read = p | f"Read{i}" >> ReadRecords(
                    source=source, schema=schema, pipeline="validation", log_files=False
                )
                _ = (
                    read.batches
                    | f"Visible{i}" >> beam.Map(drop_hidden)
                    | f"Stats{i}" >> AnalyzeBatches(DatasetStats(schema))
                    | f"Write{i}" >> beam.Map(_write_json, str(result))
                )
        for result in results:
            outputs.append(json.loads(result.read_text()))
    return outputs


def _write_json(value: Any, path: str) -> None:
    from transforms.ops.stats import stats_to_json

    Path(path).write_text(stats_to_json(value))


def tfdv_like_schema(
    baseline: Mapping[str, Any],
    string_threshold: float = STRING_THRESHOLD,
    numeric_threshold: float = NUMERIC_THRESHOLD,
) -> DataSchema:
    """beamforge's schema inferred from ``baseline``, less what TFDV's ``infer_schema`` leaves out.

    beamforge also infers each numeric column's observed range and the observed presence
    of a column with nulls (:mod:`transforms.validation.schema`); TFDV infers neither, so
    they are dropped here to run the same checks as TFDV. Every column with a measure gets
    the threshold of its kind: ``string_threshold`` for L-infinity (string, boolean, date,
    time), ``numeric_threshold`` for Jensen-Shannon.
    """
    from transforms.validation.distances import JENSEN_SHANNON, L_INFINITY
    from transforms.validation.schema import DataSchema, infer_schema

    inferred = infer_schema(
        baseline, thresholds={L_INFINITY: string_threshold, JENSEN_SHANNON: numeric_threshold}
    )
    return DataSchema(
        {
            name: dataclasses.replace(
                column,
                min=None,
                max=None,
                presence=column.presence if column.presence == 1.0 else None,
            )
            for name, column in inferred.columns.items()
        }
    )


def validate_stats(
    current: Mapping[str, Any],
    baseline: Mapping[str, Any],
    string_threshold: float = STRING_THRESHOLD,
    numeric_threshold: float = NUMERIC_THRESHOLD,
) -> dict[str, Any]:
    """beamforge's validation of ``current`` against ``baseline`` and a schema inferred from it.

    Returns:
        The ``validation.json`` content (:func:`transforms.validation.result.validate`),
        with the schema of :func:`tfdv_like_schema`.
    """
    from transforms.validation.result import validate

    schema = tfdv_like_schema(baseline, string_threshold, numeric_threshold)
    return validate(dict(current), schema=schema, baseline=dict(baseline))


def summarize(validation: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Per column: the anomaly kinds (sorted) and the drift measurement of a validation."""
    features: dict[str, dict[str, Any]] = {
        name: {"anomalies": [], "drift": None} for name in columns
    }
    for anomaly in validation["anomalies"]:
        entry = features.setdefault(anomaly["column"], {"anomalies": [], "drift": None})
        if anomaly["kind"] not in entry["anomalies"]:
            entry["anomalies"] = sorted([*entry["anomalies"], anomaly["kind"]])
    for name, measurement in validation["drift"].items():
        features.setdefault(name, {"anomalies": [], "drift": None})["drift"] = {
            "measure": measurement["measure"],
            "value": measurement["value"],
            "threshold": measurement["threshold"],
        }
    return features


def beamforge_side(
    baseline: Path, current: Path, *, beam: bool = True
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Statistics of both files and the validation, as the ``beamforge`` systems run them.

    Returns:
        The result record (``rows``, ``features`` as :func:`summarize` gives them,
        ``timings`` in seconds), the baseline's statistics and the current data's.
    """
    start = time.perf_counter()
    schema = taxi_schema()
    timings: dict[str, float] = {}
    began = time.perf_counter()
    if beam:
        baseline_stats, current_stats = stats_with_beam([baseline, current], schema)
    else:
        baseline_stats = stats_with_arrow(baseline, schema)
        current_stats = stats_with_arrow(current, schema)
    timings["stats"] = time.perf_counter() - began
    began = time.perf_counter()
    validation = validate_stats(current_stats, baseline_stats)
    timings["validate"] = time.perf_counter() - began
    timings["total"] = time.perf_counter() - start

    def rows(stats: Mapping[str, Any]) -> int:
        first = next(iter(stats.values()))
        return int(first["count"] + first["missing"])

    record = {
        "rows": {"baseline": rows(baseline_stats), "current": rows(current_stats)},
        "features": summarize(validation, schema.names),
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    return record, baseline_stats, current_stats


# --- comparison --------------------------------------------------------------------------------


def tfdv_command(baseline: Path, current: Path, out: Path) -> list[str]:
    """The command running TFDV's side in its venv."""
    return [
        str(TFDV_PYTHON),
        str(TFDV_SCRIPT),
        *["--baseline", str(baseline), "--current", str(current), "--out", str(out)],
        *["--string-threshold", str(STRING_THRESHOLD)],
        *["--numeric-threshold", str(NUMERIC_THRESHOLD)],
    ]


def tfdv_kinds(kinds: Sequence[str]) -> list[str]:
    """TFDV's anomaly type names as beamforge's kinds (unknown names kept as they are)."""
    return sorted({TFDV_KINDS.get(kind, kind) for kind in kinds})


def compare(ours: Mapping[str, Any], tfdv: Mapping[str, Any]) -> dict[str, Any]:
    """beamforge's result against TFDV's, column by column.

    Args:
        ours: ``features`` of a beamforge result.
        tfdv: ``features`` of ``tools/tfdv_reference.py``'s output.

    Returns:
        ``max_abs_difference`` (the largest ``|ours - TFDV|`` of a drift value, over the
        columns both measured), ``differences`` (column -> that difference),
        ``measured_by_one`` (columns only one side has a value for), ``drifted`` (the
        columns over threshold on each side), ``anomalies`` (column -> kinds, each side,
        where they differ) and ``same`` (drifted columns and anomaly kinds identical and
        every column measured by both or neither).
    """
    differences: dict[str, float] = {}
    measured_by_one: list[str] = []
    mismatched: dict[str, dict[str, list[str]]] = {}
    drifted: dict[str, list[str]] = {"beamforge": [], "tfdv": []}
    for name in sorted(set(ours) | set(tfdv)):
        mine = ours.get(name, {"anomalies": [], "drift": None})
        theirs = tfdv.get(name, {"anomalies": [], "drift": None})
        value = mine["drift"]["value"] if mine.get("drift") else None
        reference = theirs["drift"]["value"] if theirs.get("drift") else None
        if value is not None and reference is not None:
            differences[name] = abs(value - reference)
        elif (value is None) != (reference is None):
            measured_by_one.append(name)
        kinds, reference_kinds = sorted(mine["anomalies"]), tfdv_kinds(theirs["anomalies"])
        if "drift" in kinds:
            drifted["beamforge"].append(name)
        if "drift" in reference_kinds:
            drifted["tfdv"].append(name)
        if kinds != reference_kinds:
            mismatched[name] = {"beamforge": kinds, "tfdv": reference_kinds}
    return {
        "max_abs_difference": max(differences.values(), default=0.0),
        "differences": differences,
        "measured_by_one": measured_by_one,
        "drifted": drifted,
        "anomalies": mismatched,
        "same": not mismatched and not measured_by_one,
    }


# --- harness -----------------------------------------------------------------------------------


def command(system: str, baseline: Path, current: Path, out: Path) -> list[str]:
    """The command line that runs ``system`` on the two files, writing its JSON to ``out``."""
    if system == "tfdv":
        return tfdv_command(baseline, current, out)
    return [
        sys.executable,
        "-m",
        "benchmarks.validation_vs_tfdv",
        "side",
        system,
        *["--baseline", str(baseline), "--current", str(current), "--out", str(out)],
    ]


def run_one(
    system: str,
    rows: int,
    baseline: Path,
    current: Path,
    work: Path,
    timeout: float,
    repeat: int,
    idle_wait: float,
) -> dict[str, Any]:
    """Runs one system ``repeat`` times on the two files; wall time is the median."""
    out = work / "out" / f"validation_{system}_{rows}.json"
    log = work / "logs" / f"validation_{system}_{rows}.log"
    cmd = command(system, baseline, current, out)
    print(f"[{rows:,} rows] {system}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    walls, cpu, other_cpu, max_rss, tree_peak, status = [], [], [], 0.0, 0.0, "ok"
    result: dict[str, Any] | None = None
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        wait_for_idle(idle_wait)
        m = measure(cmd, cwd=REPO, log_path=log, timeout=timeout)
        walls.append(m.wall_seconds)
        cpu.append(round(m.cpu_seconds, 2))
        other_cpu.append(round(m.other_cpu_seconds, 2))
        max_rss = max(max_rss, m.max_rss_mb)
        tree_peak = max(tree_peak, m.tree_peak_rss_mb)
        if m.timed_out:
            status = f"timeout after {timeout:.0f} s"
        elif m.exit_code != 0 or not out.exists():
            status = f"failed (exit {m.exit_code}, see {log})"
        if status != "ok":
            break
        result = json.loads(out.read_text())
        print(
            f"  {status}: {m.wall_seconds:.1f} s, peak RSS {m.tree_peak_rss_mb:.0f} MB",
            file=sys.stderr,
        )
    wall = float(np.median(walls))
    return {
        "system": system,
        "label": LABELS[system],
        "rows": rows,
        "status": status,
        "wall_seconds": round(wall, 3),
        "wall_seconds_all": [round(w, 3) for w in walls],
        "cpu_seconds_all": cpu,
        "other_cpu_seconds_all": other_cpu,
        "max_rss_mb": round(max_rss, 1),
        "tree_peak_rss_mb": round(tree_peak, 1),
        "timings": result["timings"] if result else None,
        "command": cmd,
        "log": str(log),
        "_features": result["features"] if result else None,
    }


def add_agreement(results: list[dict[str, Any]]) -> None:
    """Compares each beamforge run with TFDV's run at the same row count."""
    reference = {r["rows"]: r["_features"] for r in results if r["system"] == "tfdv"}
    for r in results:
        theirs = reference.get(r["rows"])
        if r["system"] == "tfdv" or r["_features"] is None or theirs is None:
            r["agreement"] = None
            continue
        r["agreement"] = compare(r["_features"], theirs)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each beamforge run against TFDV's: speedup = TFDV's wall time / ours (and CPU time)."""
    ok = {(r["system"], r["rows"]): r for r in results if r["status"] == "ok"}
    out = []
    for (system, rows), ours in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        theirs = ok.get(("tfdv", rows))
        if system not in BEAMFORGE_SYSTEMS or theirs is None:
            continue
        out.append(
            {
                "rows": rows,
                "beamforge": system,
                "versus": "tfdv",
                "speedup": round(theirs["wall_seconds"] / ours["wall_seconds"], 3),
                # CPU time is less disturbed than wall time by other work on the machine.
                "cpu_speedup": round(
                    float(np.median(theirs["cpu_seconds_all"]))
                    / float(np.median(ours["cpu_seconds_all"])),
                    3,
                )
                if any(ours["cpu_seconds_all"])
                else None,
                "memory_ratio": round(ours["tree_peak_rss_mb"] / theirs["tree_peak_rss_mb"], 3)
                if theirs["tree_peak_rss_mb"]
                else None,
            }
        )
    return out


def _agreement_text(agreement: Mapping[str, Any] | None) -> str:
    if agreement is None:
        return "—"
    same = "same anomalies" if agreement["same"] else "DIFFERENT anomalies"
    return f"{same}, max \\|Δ\\| {agreement['max_abs_difference']:.1e}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown page."""
    m = report["machine"]
    lines = [
        "# beamforge data validation next to TensorFlow Data Validation",
        "",
        f"Run {report['started_at']} (seed {report['seed']}, commit "
        f"{(report['code']['commit'] or '?')[:12]}); machine: {m['cpu']}, {m['cores']} cores. "
        "Baseline: the scaled taxi file; current: the same rows shifted (fares x1.5, a new "
        "payment type on every 20th row, two companies dropped, every third trip 30% longer, "
        "every fourth a year later). "
        "Each system computes the statistics of both files, infers a schema from the baseline "
        "and validates the current data against it, L-infinity drift on string columns and "
        f"Jensen-Shannon drift on numeric ones (thresholds {STRING_THRESHOLD} and "
        f"{NUMERIC_THRESHOLD}); one process each, wall time from start to exit (imports "
        f"included), the median of {report['repeat']} run(s); CPU s: CPU time of the process "
        "tree (median); peak RSS: the peak of the process tree's summed RSS (psutil, sampled "
        "every 100 ms; the kernel's exact max RSS, in the JSON, also counts the harness's own "
        f"{report['harness_rss_mb']:.0f} MB, which a child inherits as its starting peak); "
        "other CPU s: CPU time the rest of the machine used meanwhile (highest "
        "over the runs; well above 0 means other work shared the 2 cores and the wall time is "
        "inflated). Stats s: the statistics of both files, as each side times it. Agreement: "
        "beamforge's anomaly kinds and drifted columns against TFDV's, and the largest "
        "absolute difference of a drift value.",
        "",
    ]
    for rows in report["rows"]:
        lines += [
            f"## {rows:,} rows",
            "",
            "| system | wall s | rows/s (both files) | peak RSS MB | CPU s | other CPU s | "
            "stats s | agreement with TFDV | status |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in (r for r in report["results"] if r["rows"] == rows):
            timings = r["timings"] or {}
            stats_s = timings.get("stats")
            if stats_s is None and "baseline_stats" in timings:
                stats_s = timings["baseline_stats"] + timings["current_stats"]
            wall = r["wall_seconds"]
            lines.append(
                f"| {r['label']} | {wall:.1f} | {2 * rows / wall:,.0f} | {r['tree_peak_rss_mb']:,.0f} "
                f"| {float(np.median(r['cpu_seconds_all'])):.1f} "
                f"| {max(r['other_cpu_seconds_all'], default=0.0):.1f} "
                f"| {'—' if stats_s is None else f'{stats_s:.1f}'} "
                f"| {_agreement_text(r.get('agreement'))} | {r['status']} |"
            )
        lines.append("")
        rows_ratios = [x for x in report["ratios"] if x["rows"] == rows]
        if rows_ratios:
            lines += [
                "| beamforge run | versus | speedup (TFDV's wall time / ours) "
                "| CPU time (TFDV's / ours) | memory (ours / TFDV's) |",
                "|---|---|---:|---:|---:|",
            ]
            for x in rows_ratios:
                memory = "—" if x["memory_ratio"] is None else f"{x['memory_ratio']:.2f}"
                cpu = "—" if x["cpu_speedup"] is None else f"{x['cpu_speedup']:.2f}x"
                lines.append(
                    f"| {x['beamforge']} | {x['versus']} | {x['speedup']:.2f}x | {cpu} | {memory} |"
                )
            lines.append("")
    lines.append(f"Reproduce: `{report['command']}`")
    return "\n".join(lines) + "\n"


def prepare(rows: int, seed: int, work_dir: Path) -> tuple[Path, Path]:
    """The baseline file for (rows, seed) and its shifted copy, written by a child process.

    A child's peak RSS as the kernel reports it starts from its parent's peak (it is
    carried over at exec), so the harness itself never holds the data: a million-row table
    in it would be counted in every run measured after.
    """
    # The shifted file is written anew every time: it follows shift() as it is now.
    args = [str(rows), str(seed), str(work_dir)]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.validation_vs_tfdv", "prepare", *args],
        cwd=REPO,
        check=True,
    )
    baseline = work_dir / f"taxi_{rows}_seed{seed}.csv"
    return baseline, baseline.with_name(f"{baseline.stem}_shifted.csv")


def _prepare(argv: Sequence[str]) -> int:
    rows, seed, work_dir = int(argv[0]), int(argv[1]), Path(argv[2])
    baseline = data.generate(rows, seed, work_dir)
    write_shifted(baseline, baseline.with_name(f"{baseline.stem}_shifted.csv"))
    return 0


def _side(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.validation_vs_tfdv side")
    parser.add_argument("system", choices=BEAMFORGE_SYSTEMS)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--current", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    record, _, _ = beamforge_side(args.baseline, args.current, beam=args.system == "beamforge")
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns 0 when every run succeeded and beamforge agrees with TFDV."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["side"]:
        return _side(argv[1:])
    if argv[:1] == ["prepare"]:
        return _prepare(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[15_002, 150_000])
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, default=SYSTEMS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--idle-wait", type=float, default=0.0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, default=data.WORK_DIR)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if "tfdv" in args.only and not TFDV_PYTHON.exists():
        parser.error(f"{TFDV_PYTHON} is missing: run `make tfdv` (tools/tfdv-venv.sh)")

    started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    systems = [s for s in SYSTEMS if s in args.only]
    results = []
    for rows in args.rows:
        baseline, current = prepare(rows, args.seed, args.work_dir)
        for system in systems:
            results.append(
                run_one(
                    system,
                    rows,
                    baseline,
                    current,
                    args.work_dir,
                    args.timeout,
                    args.repeat,
                    args.idle_wait,
                )
            )
    add_agreement(results)
    for r in results:
        del r["_features"]
    report = {
        "started_at": started,
        "command": "python -m benchmarks.validation_vs_tfdv " + " ".join(argv),
        "seed": args.seed,
        "rows": args.rows,
        "systems": systems,
        "repeat": args.repeat,
        "thresholds": {"l_infinity": STRING_THRESHOLD, "jensen_shannon": NUMERIC_THRESHOLD},
        "code": code_version(),
        "machine": {**machine(), "tfdv_venv": str(TFDV_PYTHON.parent.parent)},
        "harness_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
        "ratios": ratios(results),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.results_dir / "validation.md").write_text(text)
    print(text)
    agree = all(r["agreement"]["same"] for r in results if r.get("agreement") is not None)
    return 0 if agree and all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
