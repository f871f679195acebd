"""Streaming next to batch on the same rows: the local file-arrival run against the batch run.

    python -m benchmarks.streaming [--rows 150000] [--files 10]

No other tool computes these features on a stream (tf.Transform and MLTransform are batch
only), so the yardstick is beamforge's own batch run of the same rows with the same steps
(``examples/chicago_taxi/streaming.yaml``). The batch run reads the generated file, fits the
artifact and writes the dataset; the streaming run then finds the same rows as ``--files``
CSV files in a folder, applies that artifact on the streaming local runner, computes the
spec's two windowed aggregations, writes rows, windows and errors, drains and checks its
ledger. Both are whole ``beamforge run`` processes, measured as in :mod:`benchmarks.run`.

Results go to ``--results-dir`` (default ``benchmarks/results/``): ``streaming.md`` and
``streaming.json``. The exit code is 1 when a run failed or the streaming ledger does not
show every row written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks import data
from benchmarks.run import REPO, RESULTS_DIR, code_version, machine, measure, wait_for_idle

SPEC = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
BEAMFORGE = str(Path(sys.executable).parent / "beamforge")


def split_csv(path: Path, files: int, folder: Path) -> list[Path]:
    """Writes the rows of a CSV file as ``files`` CSV files (each with the header)."""
    header, *lines = path.read_text().splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(lines) // files)
    out = []
    for i in range(files):
        part = folder / f"part-{i:04d}.csv"
        part.write_text("\n".join([header, *lines[i * per : (i + 1) * per]]) + "\n")
        out.append(part)
    return out


def streaming_spec(folder: Path, files: int, artifact: Path, output: Path, target: Path) -> Path:
    """The example's streaming spec, pointed at ``folder`` and bounded by its file count."""
    spec = yaml.safe_load(SPEC.read_text())
    stream = spec["streaming"]
    stream["files"] = {
        "path": str(folder / "*.csv"),
        "poll_seconds": 0.2,
        "max_files": files,
        "deadline_seconds": 3600,
    }
    stream["artifact"] = str(artifact)
    stream["output"]["path"] = str(output)
    target.write_text(yaml.safe_dump(spec, sort_keys=False))
    return target


def run(rows: int, files: int, seed: int, work: Path, idle_wait: float) -> dict[str, Any]:
    """Runs batch then streaming on ``rows`` rows; returns both measurements and the ratio."""
    csv_path = data.generate(rows, seed, work)
    root = work / f"streaming_{rows}"
    batch_out, stream_out = root / "batch", root / "stream"
    for path in (batch_out, stream_out, root / "incoming"):
        shutil.rmtree(path, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    wait_for_idle(idle_wait)
    batch_cmd = [BEAMFORGE, "run", str(SPEC), "--input", str(csv_path)]
    batch = measure(
        [*batch_cmd, "--output", str(batch_out), "--quiet"],
        cwd=REPO,
        log_path=root / "batch.log",
        timeout=3600,
    )
    split_csv(csv_path, files, root / "incoming")
    spec = streaming_spec(root / "incoming", files, batch_out, stream_out, root / "streaming.yaml")
    wait_for_idle(idle_wait)
    stream = measure(
        [BEAMFORGE, "run", str(spec), "--streaming", "--quiet"],
        cwd=REPO,
        log_path=root / "stream.log",
        timeout=3600,
    )
    summary_path = stream_out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    ok = (
        batch.exit_code == 0
        and stream.exit_code == 0
        and summary.get("balanced") is True
        and summary.get("rows_written", -1) + summary.get("rows_rejected", -1) == rows
    )
    return {
        "rows": rows,
        "files": files,
        "batch": vars(batch),
        "streaming": vars(stream),
        "streaming_summary": {k: summary.get(k) for k in ("rows_written", "aggregate_rows")},
        "streaming_over_batch_wall": stream.wall_seconds / batch.wall_seconds,
        "ok": ok,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# beamforge streaming: the file-arrival run next to the batch run",
        "",
        f"Run {report['started_at']} (seed {report['seed']}, commit "
        f"{report['code']['commit'][:12]}); machine: {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores. Whole `beamforge run` processes; the batch run "
        "fits the artifact, the streaming run applies it and computes two windowed "
        "aggregations on the streaming local runner.",
        "",
        "| rows | files | batch s | batch rows/s | streaming s | streaming rows/s "
        "| streaming / batch | streaming max RSS MB | aggregate rows | ok |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        b, s = r["batch"]["wall_seconds"], r["streaming"]["wall_seconds"]
        aggregates = sum((r["streaming_summary"].get("aggregate_rows") or {}).values())
        lines.append(
            f"| {r['rows']:,} | {r['files']} | {b:.1f} | {r['rows'] / b:,.0f} | {s:.1f} "
            f"| {r['rows'] / s:,.0f} | {r['streaming_over_batch_wall']:.2f}x "
            f"| {r['streaming']['max_rss_mb']:,.0f} | {aggregates:,} | {r['ok']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns 0 when every run succeeded and balanced, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[150_000])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-wait", type=float, default=0.0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, default=data.WORK_DIR)
    args = parser.parse_args(argv)
    if args.files < 1:
        parser.error(f"--files must be at least 1, got {args.files}")
    report = {
        "started_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "seed": args.seed,
        "code": code_version(),
        "machine": machine(),
        "results": [
            run(rows, args.files, args.seed, args.work_dir, args.idle_wait) for rows in args.rows
        ],
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "streaming.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.results_dir / "streaming.md").write_text(text)
    print(text)
    return 0 if all(r["ok"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
