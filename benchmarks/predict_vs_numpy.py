"""Batch scoring: ``beamforge predict`` (Beam RunInference) against a plain NumPy loop.

    python -m benchmarks.predict_vs_numpy [--rows 150000 1500000] [--repeat 1] [--only ...]

A taxi model is trained once (``beamforge chain`` on the taxi sample: dataset -> train ->
upload, the example's gradient boosting model) into ``benchmarks/work/predict/``. For each row
count the scaled taxi file (:mod:`benchmarks.data`) is scored by every system, each as its
own process tree measured by :func:`benchmarks.run.measure` (wall time, peak RSS):

- ``beamforge``: ``beamforge predict CHAIN --input CSV --output DIR --quiet`` on the local
  runner (CSV reader, transform artifact, RunInference, Parquet, errors, manifest);
- ``numpy``: this module's ``numpy-side`` in one process: Arrow reads the whole CSV, NumPy
  computes the same features from the artifact's fitted parameters (z-scores, vocabularies
  with FarmHash OOV buckets, bucket boundaries, copies), ``model.predict_proba`` scores them
  all at once, and pyarrow writes one Parquet file.

The two outputs are compared row by row (by file line): the label must agree everywhere and
the probabilities within 1e-9, so a fast wrong answer shows. Results:
``benchmarks/results/predict.md`` and ``predict.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import data

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SYSTEMS = ["numpy", "beamforge"]
LABELS = {
    "numpy": "NumPy loop (pyarrow + NumPy + predict_proba, 1 process)",
    "beamforge": "beamforge predict (RunInference, local runner, 1 worker)",
}
PROBABILITY_TOLERANCE = 1e-9
TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
TAXI_SAMPLE = REPO / "examples" / "chicago_taxi" / "data" / "sample.csv"


def train(work_dir: Path) -> Path:
    """The benchmark's chain, trained once: returns the chain file (its model in the state)."""
    folder = work_dir / "predict"
    chain = folder / "chain.yaml"
    model = folder / "work" / "train" / "model" / "model.joblib"
    if chain.exists() and model.exists():
        return chain
    folder.mkdir(parents=True, exist_ok=True)
    steps = [
        {
            "name": "dataset",
            "kind": "dataset",
            "spec": str(TAXI_SPEC),
            "inputs": [str(TAXI_SAMPLE)],
            "output": str(folder / "dataset"),
        },
        {
            "name": "train",
            "kind": "train",
            "dataset": "dataset",
            "module": "examples.chicago_taxi.trainer.task",
            "args": ["--model", "gradient_boosting"],
        },
        {
            "name": "upload",
            "kind": "upload",
            "model": "train",
            "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
        },
    ]
    chain.write_text(
        json.dumps({"name": "taxi_predict", "workdir": str(folder / "work"), "steps": steps})
    )
    from benchmarks.run import SUBPROCESS_ENV

    subprocess.run(
        [sys.executable, "-m", "launchers.cli", "chain", str(chain)],
        cwd=REPO,
        env={**os.environ, **SUBPROCESS_ENV},
        check=True,
        timeout=600,
    )
    return chain


def command(system: str, chain: Path, input_path: Path, output: Path) -> list[str]:
    """The command line of one system's run."""
    if system == "beamforge":
        return [
            sys.executable,
            "-m",
            "launchers.cli",
            "predict",
            str(chain),
            "--input",
            str(input_path),
            "--output",
            str(output),
            "--quiet",
        ]
    model = chain.parent / "work" / "train" / "model"
    return [
        sys.executable,
        "-m",
        "benchmarks.predict_vs_numpy",
        "numpy-side",
        "--model",
        str(model),
        "--input",
        str(input_path),
        "--output",
        str(output / "predictions.parquet"),
    ]


# --- the NumPy side -------------------------------------------------------------------------


def numpy_features(table: pa.Table, artifact: Any) -> dict[str, np.ndarray]:
    """The artifact's output features of a raw table, computed with NumPy from its fitted values.

    The taxi artifact's steps: fill missing numbers with 0 and strings with '', z-scores in
    float32, vocabulary ids (FarmHash OOV buckets), bucket ids (``side="right"``), copies.
    """
    from benchmarks.competitors.numpy_taxi import apply_vocabulary

    columns: dict[str, Any] = {}
    for step in artifact.steps:
        op, name = step["op"], step["name"]
        fitted = artifact.fitted.get(name, {})
        if op == "fill_missing":
            for c in step["columns"]:
                col = table.column(c)
                default: Any = "" if pa.types.is_string(col.type) else 0
                columns[c] = col.fill_null(default).combine_chunks()
        elif op == "z_score":
            x = columns[step["column"]].to_numpy().astype(np.float32)
            std = np.sqrt(np.float32(fitted["variance"]))
            centred = x - np.float32(fitted["mean"])
            columns[step["output"]] = centred / std if std != 0 else centred
        elif op == "vocabulary":
            vocab = fitted["vocabulary"]
            columns[step["output"]] = apply_vocabulary(
                columns[step["column"]], list(vocab), step["num_oov_buckets"]
            )
        elif op == "bucketize":
            edges = np.asarray(fitted["boundaries"], dtype=np.float32)
            x = columns[step["column"]].to_numpy().astype(np.float32)
            columns[step["output"]] = np.searchsorted(edges, x, side="right").astype(np.int64)
        elif op == "copy":
            for c in step["columns"]:
                columns[c + step["suffix"]] = np.asarray(columns[c])
    return {k: np.asarray(v) for k, v in columns.items()}


def numpy_side(model_dir: Path, input_path: Path, output: Path) -> int:
    """Reads, featurises, scores and writes in one process; returns the rows scored."""
    import io

    import joblib

    from benchmarks.competitors.numpy_taxi import read_taxi
    from transforms.core.artifact import read_artifact
    from transforms.ops.registry import build_step

    with (model_dir / "model.joblib").open("rb") as f:
        bundle = joblib.load(io.BytesIO(f.read()))
    artifact = read_artifact(str(model_dir / "artifact"), build_step)
    table = read_taxi(str(input_path))
    features = numpy_features(table, artifact)
    x = np.column_stack([features[c].astype(np.float64) for c in bundle["features"]])
    p = bundle["model"].predict_proba(x)[:, 1]
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                # The file's line of each row (the header is line 1), as beamforge keys them.
                "line": np.arange(2, len(p) + 2, dtype=np.int64),
                bundle["label"]: (p >= 0.5).astype(np.int64),
                "probability": p,
            }
        ),
        output,
    )
    return len(p)


# --- the harness ----------------------------------------------------------------------------


def read_predictions(system: str, output: Path) -> pa.Table:
    """A system's predictions, sorted by line."""
    if system == "numpy":
        table = pq.read_table(output / "predictions.parquet")
    else:
        manifest = json.loads((output / "manifest.json").read_text())
        files = [e["path"] for e in manifest["predictions"]["files"]]
        table = pa.concat_tables(pq.read_table(p) for p in files).drop_columns(["file"])
    return table.sort_by("line")


def agreement(table: pa.Table, reference: pa.Table, label: str) -> dict[str, Any]:
    """How a system's predictions compare with the NumPy loop's, line by line."""
    if table.num_rows != reference.num_rows or table.column("line") != reference.column("line"):
        return {"same_rows": False}
    p = table.column("probability").to_numpy()
    q = reference.column("probability").to_numpy()
    diff = float(np.max(np.abs(p - q))) if len(p) else 0.0
    labels = table.column(label).to_numpy() != reference.column(label).to_numpy()
    return {
        "same_rows": True,
        "max_probability_difference": diff,
        "label_disagreements": int(np.count_nonzero(labels)),
        "ok": diff <= PROBABILITY_TOLERANCE and not labels.any(),
    }


def run_one(
    system: str,
    rows: int,
    chain: Path,
    input_path: Path,
    work_dir: Path,
    timeout: float,
    repeat: int,
    idle_wait: float = 0.0,
) -> dict[str, Any]:
    """Runs one system ``repeat`` times on one file; wall is the median, memory the maximum."""
    import shutil

    from benchmarks.run import measure, wait_for_idle

    output = work_dir / "out" / f"predict_{system}_{rows}"
    runs = []
    for _ in range(repeat):
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
        log = work_dir / "logs" / f"predict_{system}_{rows}.log"
        if idle_wait:
            wait_for_idle(idle_wait)
        m = measure(
            command(system, chain, input_path, output), cwd=REPO, log_path=log, timeout=timeout
        )
        runs.append(m)
        if m.exit_code != 0:
            break
    ok = all(m.exit_code == 0 for m in runs)
    wall = statistics.median(m.wall_seconds for m in runs)
    result: dict[str, Any] = {
        "system": system,
        "rows": rows,
        "status": "ok" if ok else "failed",
        "runs": len(runs),
        "wall_seconds": round(wall, 2),
        "rows_per_second": round(rows / wall) if ok else None,
        "max_rss_mb": round(max(m.max_rss_mb for m in runs), 1),
        "tree_peak_rss_mb": round(max(m.tree_peak_rss_mb for m in runs), 1),
        "cpu_seconds": round(statistics.median(m.cpu_seconds for m in runs), 2),
        "other_cpu_seconds": round(statistics.median(m.other_cpu_seconds for m in runs), 2),
        "_output": output,
    }
    if ok:
        scored = read_predictions(system, output).num_rows
        result["rows_scored"] = scored
        if scored != rows:
            result["status"] = "wrong_rows"
    print(json.dumps({k: v for k, v in result.items() if k != "_output"}), flush=True)
    return result


def markdown(report: dict[str, Any]) -> str:
    """The results table."""
    lines = [
        "# Batch scoring: beamforge predict against a NumPy loop",
        "",
        f"Measured {report['started_at']} on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores, shared), Beam {report['machine']['apache_beam']}, "
        f"commit {report['code'].get('commit', '?')[:10]}; model: {report['model']}; "
        f"runs per cell: {report['repeat']} (wall: median).",
        "",
        "| rows | system | wall s | rows/s | peak RSS MB (one process) | tree peak RSS MB | "
        "CPU s | other CPU s | agrees with NumPy |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        agree = r.get("agreement")
        if agree is None:
            text = "reference" if r["system"] == "numpy" else "-"
        elif not agree.get("same_rows"):
            text = "different rows"
        else:
            text = (
                f"{'yes' if agree['ok'] else 'NO'} (max prob. diff {agree['max_probability_difference']:.1e},"
                f" {agree['label_disagreements']} labels differ)"
            )
        rate = f"{r['rows_per_second']:,}" if r["rows_per_second"] else r["status"]
        lines.append(
            f"| {r['rows']:,} | {LABELS[r['system']]} | {r['wall_seconds']:.1f} | {rate} | "
            f"{r['max_rss_mb']:,.0f} | {r['tree_peak_rss_mb']:,.0f} | {r['cpu_seconds']:.1f} | "
            f"{r['other_cpu_seconds']:.1f} | {text} |"
        )
    lines += ["", "Ratios (beamforge / NumPy):", ""]
    for rows in report["rows"]:
        pair = {r["system"]: r for r in report["results"] if r["rows"] == rows}
        if {"numpy", "beamforge"} <= set(pair) and all(p["status"] == "ok" for p in pair.values()):
            b, n = pair["beamforge"], pair["numpy"]
            lines.append(
                f"- {rows:,} rows: wall x{b['wall_seconds'] / n['wall_seconds']:.2f}, "
                f"peak RSS x{b['max_rss_mb'] / n['max_rss_mb']:.2f}"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; 0 when every run succeeded and agreed with the NumPy loop, else 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["numpy-side"]:
        side = argparse.ArgumentParser(prog="predict_vs_numpy numpy-side")
        side.add_argument("--model", type=Path, required=True)
        side.add_argument("--input", type=Path, required=True)
        side.add_argument("--output", type=Path, required=True)
        a = side.parse_args(argv[1:])
        numpy_side(a.model, a.input, a.output)
        return 0
    from benchmarks.run import code_version, machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[150_000, 1_500_000])
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, default=SYSTEMS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=0.0,
        help="before each run, wait up to this many seconds for the CPUs to be mostly idle",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, default=data.WORK_DIR)
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    chain = train(args.work_dir)
    results = []
    for rows in args.rows:
        input_path = data.generate(rows, args.seed, args.work_dir)
        for system in [s for s in SYSTEMS if s in args.only]:
            results.append(
                run_one(
                    system,
                    rows,
                    chain,
                    input_path,
                    args.work_dir,
                    args.timeout,
                    args.repeat,
                    args.idle_wait,
                )
            )
    label = "tips_xf"
    for rows in args.rows:
        pair = {r["system"]: r for r in results if r["rows"] == rows and r["status"] == "ok"}
        if "numpy" in pair and "beamforge" in pair:
            reference = read_predictions("numpy", pair["numpy"]["_output"])
            ours = read_predictions("beamforge", pair["beamforge"]["_output"])
            pair["beamforge"]["agreement"] = agreement(ours, reference, label)
            if not pair["beamforge"]["agreement"].get("ok"):
                pair["beamforge"]["status"] = "disagrees"
    for r in results:
        del r["_output"]
    report = {
        "started_at": started,
        "seed": args.seed,
        "rows": args.rows,
        "repeat": args.repeat,
        "idle_wait_seconds": args.idle_wait,
        "model": "examples.chicago_taxi.trainer.task --model gradient_boosting, trained on the "
        "taxi sample",
        "code": code_version(),
        "machine": machine(),
        "results": results,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "predict.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.results_dir / "predict.md").write_text(text)
    print(text)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
