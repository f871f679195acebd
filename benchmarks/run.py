"""Side-by-side benchmark: beamforge against tf.Transform, MLTransform and the NumPy limit.

    python -m benchmarks.run [--rows 150000 1500000] [--only beamforge numpy ...]

For each row count the scaled taxi file is generated (or taken from the cache), then every
system runs as its own subprocess on that same file, one after the other:

- ``beamforge``: ``beamforge run examples/chicago_taxi/pipeline.yaml`` on the local runner;
- ``beamforge_mp2``: the same with ``--direct_num_workers=2 --direct_running_mode=multi_processing``;
- ``tft``: tf.Transform's ``AnalyzeAndTransformDataset`` fed by tfx_bsl's ``CsvTFXIO``;
- ``mltransform``: Beam's ``MLTransform``;
- ``numpy``: pyarrow + NumPy in one process, the limit.

Measured per run: wall time around the subprocess; peak memory two ways, because
multi-processing workers are grandchildren of the measured process: the largest RSS any
single process of the tree reached (exact, from the kernel's ``wait4`` accounting, which
covers every descendant that was reaped) and the peak of the sum of RSS over the tree
(sampled with psutil every 100 ms, so short spikes can be missed). Output rows are counted
from the Parquet files each system wrote, and every output column is compared with the NumPy
limit's (sorted values; floats to 1e-4; quantile buckets, whose approximate boundaries
legitimately differ, by histogram), so a fast wrong answer shows up in the table.

Results go to ``--results-dir`` (default ``benchmarks/results/``): ``latest.md``,
``latest.json``, a timestamped JSON copy and ``latest.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import data

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SPEC = "examples/chicago_taxi/pipeline.yaml"

SYSTEMS = ["numpy", "beamforge", "beamforge_mp2", "tft", "mltransform"]
LABELS = {
    "numpy": "NumPy limit (pyarrow + NumPy, 1 process)",
    "beamforge": "beamforge (DirectRunner, 1 worker)",
    "beamforge_mp2": "beamforge (DirectRunner, 2 worker processes)",
    "tft": "tf.Transform (CsvTFXIO + AnalyzeAndTransformDataset)",
    "mltransform": "MLTransform (apache_beam.ml.transforms)",
}
# beamforge's runs are compared with these; the NumPy limit separately.
COMPETITORS = ["tft", "mltransform"]
BEAMFORGE_SYSTEMS = ["beamforge", "beamforge_mp2"]

# No subprocess may reach a Google endpoint: the metadata server is pointed at a closed port.
SUBPROCESS_ENV = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:1",
    "GCE_METADATA_IP": "127.0.0.1:1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
SAMPLE_SECONDS = 0.1
FLOAT_TOLERANCE = 1e-4
HISTOGRAM_TOLERANCE = 0.01
IDLE_PERCENT = 15.0


@dataclasses.dataclass
class Measurement:
    """What one subprocess run cost.

    Attributes:
        exit_code: The process's exit code; None when it was killed at the timeout.
        wall_seconds: Time from start to exit (or to the kill).
        max_rss_mb: Largest RSS of any single process in the tree (wait4, exact).
        tree_peak_rss_mb: Peak of the summed RSS of the tree (psutil samples).
        timed_out: Whether the run was killed at the timeout.
        cpu_seconds: User + system CPU time of the tree (reaped descendants included).
        other_cpu_seconds: CPU time the rest of the machine used during the run; well above
            0 means other work competed for the CPUs and the numbers are skewed.
    """

    exit_code: int | None
    wall_seconds: float
    max_rss_mb: float
    tree_peak_rss_mb: float
    timed_out: bool
    cpu_seconds: float
    other_cpu_seconds: float


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    # Linux counts guest time inside user time already; steal is kept: it is CPU this
    # machine wanted and did not get.
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(t, name, 0.0) for name in fields))


def _tree_rss(proc: psutil.Process) -> int:
    """Summed RSS in bytes of a process and its descendants (those alive right now)."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(cmd: Sequence[str], *, cwd: Path, log_path: Path, timeout: float) -> Measurement:
    """Runs ``cmd`` as a new process group and measures its time and memory.

    The child is reaped with ``os.wait4`` so the kernel's peak-RSS accounting (which folds in
    every reaped descendant) is available; between samples the loop waits on a pidfd, so it
    wakes as soon as the child exits.

    Args:
        cmd: The command and its arguments.
        cwd: Working directory.
        log_path: File receiving the child's stdout and stderr.
        timeout: Seconds after which the whole process group is killed.

    Returns:
        The measurement.
    """
    env = {**os.environ, **SUBPROCESS_ENV}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        busy_before = _busy_seconds()
        start = time.monotonic()
        child = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pidfd = os.pidfd_open(child.pid)
        proc = psutil.Process(child.pid)
        tree_peak = 0
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                tree_peak = max(tree_peak, _tree_rss(proc))
                if time.monotonic() - start > timeout:
                    timed_out = True
                    os.killpg(child.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(child.pid, 0)
                    break
                select.select([pidfd], [], [], SAMPLE_SECONDS)
        finally:
            os.close(pidfd)
        wall = time.monotonic() - start
        busy = _busy_seconds() - busy_before
    cpu = usage.ru_utime + usage.ru_stime
    # Popen did not reap the child itself; tell it so it does not try later.
    child.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(
        exit_code=None if timed_out else child.returncode,
        wall_seconds=wall,
        max_rss_mb=usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
        tree_peak_rss_mb=tree_peak / 2**20,
        timed_out=timed_out,
        cpu_seconds=cpu,
        # The harness's own sampling is part of "other"; it is a few ms per second.
        other_cpu_seconds=max(busy - cpu, 0.0),
    )


def wait_for_idle(budget: float, threshold: float = IDLE_PERCENT) -> float:
    """Waits (at most ``budget`` seconds) until the machine's CPUs are mostly idle.

    The checkout is shared: someone's test run during a measurement skews it. Busy time is
    measured over one-second windows; the wait ends at the first window below ``threshold``
    percent or when the budget is spent.

    Returns:
        The busy percentage of the last window (0 when ``budget`` is 0: nothing measured).
    """
    if budget <= 0:
        return 0.0
    deadline = time.monotonic() + budget
    busy = psutil.cpu_percent(interval=1.0)
    while busy >= threshold and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return float(busy)


def command(system: str, input_path: Path, output_dir: Path) -> list[str]:
    """The command line that runs ``system`` on ``input_path``."""
    if system in BEAMFORGE_SYSTEMS:
        script = Path(sys.executable).parent / "beamforge"
        base = [str(script)] if script.exists() else [sys.executable, "-m", "launchers.cli"]
        cmd = [*base, "run", SPEC, "--input", str(input_path), "--output", str(output_dir)]
        cmd.append("--quiet")
        if system == "beamforge_mp2":
            cmd += ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
        return cmd
    module = {"tft": "tft_taxi", "mltransform": "mltransform_taxi", "numpy": "numpy_taxi"}[system]
    return [
        sys.executable,
        "-m",
        f"benchmarks.competitors.{module}",
        "--input",
        str(input_path),
        "--output",
        str(output_dir),
    ]


def read_output(output_dir: Path) -> pa.Table | None:
    """Every Parquet file a system wrote under ``output_dir``, as one table (None if none)."""
    files = sorted(output_dir.rglob("*.parquet"))
    if not files:
        return None
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def compare_columns(table: pa.Table, reference: pa.Table) -> dict[str, list[str]]:
    """Sorts the reference's columns by how well ``table`` reproduces them.

    Row order differs between systems (shards, splits), so columns are compared as sorted
    value lists: integers exactly, floats to ``FLOAT_TOLERANCE``. Quantile buckets come from
    approximate quantiles whose boundaries legitimately differ a little between systems, so
    an integer column that is not exact counts as close when its value histogram is within
    ``HISTOGRAM_TOLERANCE`` (total variation distance) of the reference's.

    Returns:
        Column names under ``exact``, ``close`` and ``differing``.
    """
    out: dict[str, list[str]] = {"exact": [], "close": [], "differing": []}
    for name in reference.column_names:
        if name not in table.column_names or table.num_rows != reference.num_rows:
            out["differing"].append(name)
            continue
        ours = np.sort(table.column(name).to_numpy())
        theirs = np.sort(reference.column(name).to_numpy())
        if np.issubdtype(theirs.dtype, np.floating):
            exact = bool(np.allclose(ours, theirs, rtol=0.0, atol=FLOAT_TOLERANCE))
        else:
            exact = bool(np.array_equal(ours, theirs))
        if exact:
            out["exact"].append(name)
        elif (
            np.issubdtype(theirs.dtype, np.integer)
            and _histogram_distance(ours, theirs) <= HISTOGRAM_TOLERANCE
        ):
            out["close"].append(name)
        else:
            out["differing"].append(name)
    return out


def _histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between the value histograms of two integer arrays."""
    values = np.union1d(a, b)
    if len(values) == 0:
        return 0.0
    count_a = np.searchsorted(a, values, side="right") - np.searchsorted(a, values, side="left")
    count_b = np.searchsorted(b, values, side="right") - np.searchsorted(b, values, side="left")
    return float(np.abs(count_a - count_b).sum()) / (2 * max(len(a), 1))


def code_version() -> dict[str, Any]:
    """The commit measured and whether the measured packages had uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "transforms", "beam_pipelines", "launchers")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(dirty) if dirty is not None else None}


def machine() -> dict[str, Any]:
    """The machine and the versions the numbers were measured with."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "apache_beam": version("apache-beam"),
        "tensorflow": version("tensorflow"),
        "tensorflow_transform": version("tensorflow-transform"),
        "tfx_bsl": version("tfx-bsl"),
        "pyarrow": version("pyarrow"),
        "numpy": version("numpy"),
    }


def run_one(
    system: str,
    rows: int,
    input_path: Path,
    work_dir: Path,
    timeout: float,
    repeat: int = 1,
    idle_wait: float = 0.0,
) -> dict[str, Any]:
    """Runs one system on one file ``repeat`` times; returns its result record.

    Wall time is the median over the repeats (all are kept); memory is the largest seen. The
    first failure stops the repeats. The record's ``_table`` (the last run's output, for the
    agreement check) is removed before the report is written.
    """
    output_dir = work_dir / "out" / f"{system}_{rows}"
    log_path = work_dir / "logs" / f"{system}_{rows}.log"
    cmd = command(system, input_path, output_dir)
    print(f"[{rows:,} rows] {system}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    walls: list[float] = []
    max_rss = tree_peak = 0.0
    status, exit_code, table = "ok", None, None
    cpu: list[float] = []
    other_cpu: list[float] = []
    busy_before: list[float] = []
    for _ in range(repeat):
        shutil.rmtree(output_dir, ignore_errors=True)
        busy_before.append(wait_for_idle(idle_wait))
        m = measure(cmd, cwd=REPO, log_path=log_path, timeout=timeout)
        walls.append(m.wall_seconds)
        cpu.append(round(m.cpu_seconds, 2))
        other_cpu.append(round(m.other_cpu_seconds, 2))
        max_rss = max(max_rss, m.max_rss_mb)
        tree_peak = max(tree_peak, m.tree_peak_rss_mb)
        exit_code = m.exit_code
        if m.timed_out:
            status = f"timeout after {timeout:.0f} s"
        elif m.exit_code != 0:
            status = f"failed (exit {m.exit_code}, see {log_path})"
        table = read_output(output_dir) if status == "ok" else None
        rows_out = table.num_rows if table is not None else None
        if status == "ok" and rows_out != rows:
            status = f"row count mismatch: {rows_out} != {rows}"
        print(f"  {status}: {m.wall_seconds:.1f} s, max RSS {m.max_rss_mb:.0f} MB", file=sys.stderr)
        if status != "ok":
            break
    wall = float(np.median(walls))
    return {
        "system": system,
        "label": LABELS[system],
        "rows": rows,
        "status": status,
        "exit_code": exit_code,
        "wall_seconds": round(wall, 3),
        "wall_seconds_all": [round(w, 3) for w in walls],
        "cpu_seconds_all": cpu,
        "other_cpu_seconds_all": other_cpu,
        "busy_percent_before": busy_before,
        "rows_per_second": round(rows / wall, 1) if wall > 0 else None,
        "max_rss_mb": round(max_rss, 1),
        "tree_peak_rss_mb": round(tree_peak, 1),
        "rows_out": table.num_rows if table is not None else None,
        "command": cmd,
        "log": str(log_path),
        "_table": table,
    }


def add_agreement(results: list[dict[str, Any]]) -> None:
    """Compares each run's output columns with the NumPy limit's at the same row count."""
    reference = {r["rows"]: r["_table"] for r in results if r["system"] == "numpy"}
    for r in results:
        ref = reference.get(r["rows"])
        if r["_table"] is None or ref is None:
            r["agreement"] = None
            continue
        r["agreement"] = compare_columns(r["_table"], ref)


def _agreement_text(agreement: dict[str, list[str]] | None) -> str:
    if agreement is None:
        return "—"
    total = sum(len(v) for v in agreement.values())
    text = f"{len(agreement['exact'])} exact"
    if agreement["close"]:
        text += f" + {len(agreement['close'])} close"
    return f"{text} / {total}"


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """beamforge against each competitor (speedup = their time / ours) and the limit."""
    ok = {(r["system"], r["rows"]): r for r in results if r["status"] == "ok"}
    out = []
    for (system, rows), ours in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if system not in BEAMFORGE_SYSTEMS:
            continue
        for other in [*COMPETITORS, "numpy"]:
            theirs = ok.get((other, rows))
            if theirs is None:
                continue
            out.append(
                {
                    "rows": rows,
                    "beamforge": system,
                    "versus": other,
                    # Above 1: beamforge is faster. Against the limit it is the fraction of
                    # the limit's speed beamforge reaches.
                    "speedup": round(theirs["wall_seconds"] / ours["wall_seconds"], 3),
                    "memory_ratio": round(ours["max_rss_mb"] / theirs["max_rss_mb"], 3)
                    if theirs["max_rss_mb"]
                    else None,
                }
            )
    return out


def _code_changed(report: dict[str, Any]) -> str:
    start, end = report["code"], report["code_at_end"]
    if (start["commit"], start["dirty"]) == (end["commit"], end["dirty"]):
        return ""
    return f"; NOTE: the code changed during the run (ended at {(end['commit'] or '?')[:12]})"


def _fmt(value: Any, spec: str = "") -> str:
    return "—" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page."""
    m = report["machine"]
    lines = [
        "# beamforge benchmark: Chicago taxi preprocessing",
        "",
        f"Run {report['started_at']} (seed {report['seed']}, commit "
        f"{(report['code']['commit'] or 'unknown')[:12]}"
        f"{', uncommitted changes' if report['code']['dirty'] else ''}"
        f"{_code_changed(report)}), one process tree "
        f"per system, same generated file; wall time is the median of {report['repeat']} run(s).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['os']}; "
        f"Python {m['python']}, Beam {m['apache_beam']}, TensorFlow {m['tensorflow']}, "
        f"tf.Transform {m['tensorflow_transform']}, tfx-bsl {m['tfx_bsl']}, "
        f"pyarrow {m['pyarrow']}, NumPy {m['numpy']}.",
        "",
        "Max RSS: largest single process of the tree (kernel wait4 accounting, exact). "
        "Tree peak: peak of the summed RSS of all processes of the tree (psutil, sampled "
        "every 100 ms). Agree: output columns equal to the NumPy limit's (sorted values, "
        "floats to 1e-4); close: quantile buckets whose histogram is within 1% (total "
        "variation) of the limit's, as approximate quantiles differ a little. CPU s: CPU time of "
        "the tree (median). Other CPU s: CPU time the rest of the machine used during the "
        "run (highest over repeats); well above 0 means other work shared the CPUs and "
        "skewed the run.",
        "",
    ]
    for rows in report["rows"]:
        lines += [
            f"## {rows:,} rows",
            "",
            "| system | wall s | rows/s | max RSS MB | tree peak MB | rows out | agree | CPU s | other CPU s | status |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in report["results"]:
            if r["rows"] != rows:
                continue
            lines.append(
                f"| {r['label']} | {r['wall_seconds']:.1f} | {_fmt(r['rows_per_second'], ',.0f')}"
                f" | {r['max_rss_mb']:,.0f} | {r['tree_peak_rss_mb']:,.0f}"
                f" | {_fmt(r['rows_out'], ',')} | {_agreement_text(r['agreement'])}"
                f" | {np.median(r['cpu_seconds_all']):.1f}"
                f" | {max(r['other_cpu_seconds_all']):.1f} | {r['status']} |"
            )
        rel = [x for x in report["ratios"] if x["rows"] == rows]
        if rel:
            lines += [
                "",
                "| beamforge run | versus | speedup (their time / ours) | memory (ours / theirs) |",
                "|---|---|---:|---:|",
            ]
            for x in rel:
                lines.append(
                    f"| {x['beamforge']} | {x['versus']} | {x['speedup']:.2f}x"
                    f" | {_fmt(x['memory_ratio'], '.2f')} |"
                )
        lines.append("")
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    """Rows/s, max single-process RSS and tree peak RSS per system, one bar per row count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in SYSTEMS if any(r["system"] == s for r in report["results"])]
    rows_list = report["rows"]
    panels = [
        ("rows_per_second", "throughput, rows/s (log)"),
        ("max_rss_mb", "max RSS of a single process, MB"),
        ("tree_peak_rss_mb", "peak summed RSS of the process tree, MB"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 4.8))
    width = 0.8 / max(len(rows_list), 1)
    x = np.arange(len(systems))
    for i, rows in enumerate(rows_list):
        by_system = {r["system"]: r for r in report["results"] if r["rows"] == rows}
        for ax, (key, _) in zip(axes, panels, strict=True):
            heights = [
                by_system[s][key] or 0 if s in by_system and by_system[s]["status"] == "ok" else 0
                for s in systems
            ]
            ax.bar(x + i * width, heights, width, label=f"{rows:,} rows")
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_xticks(x + width * (len(rows_list) - 1) / 2)
        ax.set_xticklabels(systems, rotation=20)
        ax.set_title(title)
        ax.legend()
    if any(r["status"] == "ok" for r in report["results"]):
        axes[0].set_yscale("log")
    fig.suptitle(
        f"Chicago taxi preprocessing, {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], results_dir: Path) -> str:
    """Writes latest.md, latest.json, a timestamped JSON copy and latest.png; returns the md."""
    results_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (results_dir / "latest.md").write_text(text + "\n")
    payload = json.dumps(report, indent=2) + "\n"
    (results_dir / "latest.json").write_text(payload)
    stamp = report["started_at"].replace(":", "").replace("-", "")
    (results_dir / f"run-{stamp}.json").write_text(payload)
    chart(report, results_dir / "latest.png")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns 0 when every run succeeded with the right row count, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[150_000, 1_500_000])
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, default=SYSTEMS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per system and row count; wall is the median"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=0.0,
        help=f"before each run, wait up to this many seconds for CPUs under {IDLE_PERCENT:.0f}%% busy",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, default=data.WORK_DIR)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    # Others may commit while a long run goes on: the code is recorded at both ends.
    code_at_start = code_version()
    # The limit runs first so the others can be checked against it.
    systems = [s for s in SYSTEMS if s in args.only]
    results = []
    for rows in args.rows:
        input_path = data.generate(rows, args.seed, args.work_dir)
        for system in systems:
            results.append(
                run_one(
                    system,
                    rows,
                    input_path,
                    args.work_dir,
                    args.timeout,
                    args.repeat,
                    args.idle_wait,
                )
            )
    add_agreement(results)
    for r in results:
        del r["_table"]
    report = {
        "started_at": started,
        "seed": args.seed,
        "rows": args.rows,
        "systems": systems,
        "timeout_seconds": args.timeout,
        "repeat": args.repeat,
        "idle_wait_seconds": args.idle_wait,
        "code": code_at_start,
        "code_at_end": code_version(),
        "machine": machine(),
        "results": results,
        "ratios": ratios(results),
    }
    print(write_report(report, args.results_dir))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
