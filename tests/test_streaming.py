"""Streaming runs on the file-arrival source: real files, the batch run's artifact, parity."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec, parse_spec
from beam_pipelines.streaming import (
    balance_problems,
    check_fresh_output,
    earlier_run_files,
    plan,
    run_streaming,
)
from tests.datasets import dataset_files, run_root
from transforms.beam.artifact_reload import ArtifactWatcher
from transforms.core.artifact import read_artifact, write_artifact
from transforms.core.config import SpecError
from transforms.core.errors import InputError
from transforms.ops.registry import build_step

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "chicago_taxi" / "data" / "sample.csv"
STREAMING_YAML = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
FILES = 4


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The batch run of the taxi sample: dataset and fitted artifact."""
    out = tmp_path_factory.mktemp("batch")
    run_job(load_spec(str(STREAMING_YAML)), inputs=[str(SAMPLE)], output=str(out))
    return out


def _spec(root: pathlib.Path, artifact: pathlib.Path) -> Any:
    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"]["files"] = {
        "path": str(root / "incoming" / "*.csv"),
        "poll_seconds": 0.1,
        "max_files": FILES,
        "deadline_seconds": 90,
    }
    data["streaming"]["artifact"] = str(artifact)
    data["streaming"]["output"]["path"] = str(root / "out")
    return parse_spec(data, origin="test")


def _drop_files(folder: pathlib.Path, stop: threading.Event) -> None:
    """Writes the sample as FILES CSV files, one after another (rename: atomic arrival)."""
    header, *lines = SAMPLE.read_text().splitlines()
    per = -(-len(lines) // FILES)
    for i in range(FILES):
        if i and stop.wait(0.3):  # Spread arrivals over time; the run may end the wait.
            return
        part = folder / f".part{i}.tmp"
        part.write_text("\n".join([header, *lines[i * per : (i + 1) * per]]) + "\n")
        part.rename(folder / f"part{i}.csv")


def _jsonl(pattern: str, root: pathlib.Path) -> list[dict]:
    return [
        json.loads(line) for p in sorted(root.glob(pattern)) for line in p.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def stream_run(batch_run: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("stream")
    (root / "incoming").mkdir()
    stop = threading.Event()
    writer = threading.Thread(target=_drop_files, args=(root / "incoming", stop))
    writer.start()
    try:
        summary = run_streaming(_spec(root, batch_run))
    finally:
        stop.set()
        writer.join(timeout=30)
    return root / "out", summary


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_file_arrival_run_balances(stream_run: tuple, batch_run: pathlib.Path) -> None:
    out, summary = stream_run
    data_rows = len(SAMPLE.read_text().splitlines()) - 1
    manifest = json.loads((batch_run / "manifest.json").read_text())
    batch_rejected = manifest["counts"]["total_rejected"] - manifest["counts"]["rejected"].get(
        "split", {}
    ).get("missing", 0)
    # Every row read is either written or rejected (the sample has no rows the steps reject
    # beyond what the batch run rejects before splitting).
    assert summary["rows_written"] + summary["rows_rejected"] == data_rows
    assert summary["rows_rejected"] == batch_rejected
    assert json.loads((out / "summary.json").read_text())["rows_written"] == summary["rows_written"]
    # The ledger: every row read is accounted for, and each aggregation took in every row.
    written = summary["rows_written"]
    assert summary["counts"]["read"] == data_rows
    assert summary["counts"]["written"] == {"rows": written}
    assert summary["counts"]["total_rejected"] == summary["rows_rejected"]
    assert summary["counts"]["total_dropped"] == 0
    for name in ("fares_per_company", "trips_per_area"):
        assert summary["aggregations"][name] == {
            "aggregated": written,
            "rejected": {},
            "missed_windows": 0,
            "rows_in": written,
        }
    assert (summary["balanced"], summary["problems"]) == (True, [])
    # Windowed features: per key and window the last pane counts every row once (fixed
    # windows; generous lateness, so no row is late).
    panes = _jsonl("aggregates/fares_per_company/*.jsonl", out)
    last: dict[tuple, dict] = {}
    for pane in panes:
        key = (pane["company"], pane["window_start"])
        if key not in last or pane["rows"] > last[key]["rows"]:
            last[key] = pane
    assert sum(p["trips"] for p in last.values()) == summary["rows_written"]
    assert not [e for e in _jsonl("errors/*.jsonl", out) if e["reason"] == "late"]
    for pane in last.values():
        assert pane["fare_min"] <= pane["fare_mean"] <= pane["fare_max"]
        assert pane["fare_sum"] == pytest.approx(pane["fare_mean"] * pane["trips"], rel=1e-9)
    # Sliding windows of 60 s every 20 s: each row is in three windows.
    sliding = _jsonl("aggregates/trips_per_area/*.jsonl", out)
    final: dict[tuple, int] = {}
    for pane in sliding:
        key = (pane["pickup_community_area"], pane["window_start"])
        final[key] = max(final.get(key, 0), pane["trips"])
    assert sum(final.values()) == 3 * summary["rows_written"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_streamed_rows_get_the_batch_features(stream_run: tuple, batch_run: pathlib.Path) -> None:
    out, _ = stream_run
    streamed = _jsonl("rows/*.jsonl", out)
    table = pa.concat_tables([pq.read_table(p) for p in dataset_files(batch_run)])
    batch = table.to_pylist()
    # The JSON lines carry float32 values as their shortest text: read back as float32.
    streamed = pa.Table.from_pylist(streamed, schema=table.schema).to_pylist()
    assert len(streamed) == len(batch) > 0

    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    # Same artifact, same engine: the same feature values for every row.
    assert canonical(streamed) == canonical(batch)


def _snapshot(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_second_run_into_the_same_output_is_refused_before_any_work(
    stream_run: tuple, batch_run: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The documented command run again: its counts would add to the first run's."""
    out, summary = stream_run
    assert summary["balanced"]
    root = out.parent
    spec = tmp_path / "streaming.yaml"
    spec.write_text(yaml.safe_dump(_spec(root, batch_run).raw))
    before = _snapshot(root)
    done = subprocess.run(
        [sys.executable, "-m", "launchers.cli", "run", str(spec), "--streaming"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {out}: holds the files of an earlier streaming run; give a new output folder "
        "or remove it"
    ]
    # Nothing written, nothing moved: the first run's files are as it left them.
    assert _snapshot(root) == before
    # The same refusal in process, for --output too; a fresh folder is taken.
    with pytest.raises(InputError, match=f"^{out}: holds the files of an earlier"):
        run_streaming(_spec(tmp_path, batch_run), output=str(out))
    assert earlier_run_files(str(tmp_path / "fresh")) == []


def test_a_folder_with_any_of_a_runs_files_is_refused(tmp_path: pathlib.Path) -> None:
    check_fresh_output(str(tmp_path / "missing"))
    (tmp_path / "incoming").mkdir()
    check_fresh_output(str(tmp_path))  # other folders are not a run's
    for name in (
        "counts/part-1.jsonl",
        "rows/part-a.parquet",
        "errors/part-1.jsonl",
        "aggregates/per_company/part-1.jsonl",
        "summary.json",
    ):
        out = tmp_path / name.replace("/", "_")
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("")
        assert earlier_run_files(str(out)) == [str(out / name)]
        with pytest.raises(InputError, match="earlier streaming run"):
            check_fresh_output(str(out))


@pytest.mark.emulator
def test_a_bucket_folder_with_a_runs_files_is_refused(gcs_emulator: Any) -> None:
    bucket = gcs_emulator.new_bucket("stream-rerun")
    check_fresh_output(f"gs://{bucket}/out")
    gcs_emulator.client().bucket(bucket).blob("out/counts/part-1.jsonl").upload_from_string("[]\n")
    assert earlier_run_files(f"gs://{bucket}/out") == [f"gs://{bucket}/out/counts/part-1.jsonl"]
    with pytest.raises(InputError) as raised:
        check_fresh_output(f"gs://{bucket}/out")
    assert str(raised.value) == (
        f"gs://{bucket}/out: holds the files of an earlier streaming run; give a new output "
        "folder or remove it"
    )
    check_fresh_output(f"gs://{bucket}/out2")


def test_the_run_checks_the_aggregation_columns_at_their_keys(batch_run: pathlib.Path) -> None:
    """Without source.schema the columns are known from the artifact, when the run plans."""
    data = copy.deepcopy(dict(_spec(batch_run, batch_run).raw))
    del data["source"]["schema"]
    data["source"]["infer_schema"] = True
    data["streaming"]["aggregations"][1]["metrics"][1]["column"] = "nope"
    spec = parse_spec(data, origin="spec.yaml")
    with pytest.raises(SpecError) as raised:
        plan(spec)
    assert str(raised.value).startswith(
        "spec.yaml: streaming.aggregations[1].metrics[1].column: unknown column 'nope'; "
        "available columns are "
    )


def test_watcher_reloads_a_newer_artifact(batch_run: pathlib.Path, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "artifact"
    shutil.copytree(run_root(batch_run) / "artifact", directory)
    now = [0.0]
    watcher = ArtifactWatcher(str(directory), refresh_seconds=10, clock=lambda: now[0])
    _, fitted, first = watcher.current()
    artifact = read_artifact(str(directory), build_step)
    changed = dict(artifact.fitted)
    changed["z_score:fare"] = {**changed["z_score:fare"], "mean": 0.0}
    artifact.fitted = changed
    second = write_artifact(str(directory), artifact)
    now[0] = 5.0  # Not yet due for a check: the old artifact stays.
    assert watcher.current()[2] == first
    now[0] = 10.0
    _, fitted, digest = watcher.current()
    assert (digest, fitted["z_score:fare"]["mean"], watcher.loads) == (second, 0.0, 2)


def _summary(**changes: Any) -> dict[str, Any]:
    """A balanced summary of 10 rows read: 7 written, 2 rejected, 1 dropped; one aggregation."""
    summary: dict[str, Any] = {
        "rows_written": 7,
        "errors": {"clean": {"bad_value": 2}, "window:w": {"late": 1}},
        "counts": {
            "read": 10,
            "written": {"rows": 7},
            "rejected": {"clean": {"bad_value": 2}},
            "dropped": {"read": {"duplicate_message": 1}},
            "total_written": 7,
            "total_rejected": 2,
            "total_dropped": 1,
        },
        "aggregations": {
            "w": {"aggregated": 6, "rejected": {"late": 1}, "missed_windows": 0, "rows_in": 7}
        },
    }
    summary.update(changes)
    return summary


def test_a_balanced_summary_has_no_problems() -> None:
    assert balance_problems(_summary()) == []


def test_every_kind_of_imbalance_is_named() -> None:
    counts = dict(_summary()["counts"], read=11)
    assert balance_problems(_summary(counts=counts)) == [
        "row counts do not balance: read 11 but written 7 + rejected 2 + dropped 1 = 10"
    ]
    assert balance_problems(_summary(rows_written=6)) == [
        "7 rows were written but the row files hold 6"
    ]
    short = {"w": {"aggregated": 5, "rejected": {"late": 1}, "missed_windows": 0, "rows_in": 6}}
    assert balance_problems(_summary(aggregations=short)) == [
        "aggregation 'w' took in 6 rows (aggregated 5, rejected {'late': 1}) of 7 written"
    ]
    # A rejection without its error record.
    lost = {"clean": {"bad_value": 1}, "window:w": {"late": 1}}
    assert balance_problems(_summary(errors=lost)) == [
        "rejections counted {('clean', 'bad_value'): 2, ('window:w', 'late'): 1} but error "
        "records {('clean', 'bad_value'): 1, ('window:w', 'late'): 1}"
    ]
    # Rows BigQuery rejected are error records only: they were written to the files first.
    bigquery = {**_summary()["errors"], "bigquery": {"invalid": 3}}
    assert balance_problems(_summary(errors=bigquery)) == []


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(240)
def test_files_arriving_in_a_bucket_stream_to_a_bucket(
    gcs_emulator: Any, batch_run: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The same run with gs:// on both sides: arrivals listed in a bucket, outputs written to it."""
    from apache_beam.io.filesystems import FileSystems

    bucket = gcs_emulator.new_bucket("stream-files")
    blobs = gcs_emulator.client().bucket(bucket)
    header, *lines = SAMPLE.read_text().splitlines()
    per = -(-len(lines) // FILES)
    stop = threading.Event()

    def upload() -> None:
        for i in range(FILES):
            if i and stop.wait(0.3):
                return
            text = "\n".join([header, *lines[i * per : (i + 1) * per]]) + "\n"
            blobs.blob(f"incoming/part{i}.csv").upload_from_string(text)

    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"]["files"] = {
        "path": f"gs://{bucket}/incoming/*.csv",
        "poll_seconds": 0.2,
        "max_files": FILES,
        "deadline_seconds": 90,
    }
    data["streaming"]["artifact"] = str(batch_run)
    data["streaming"]["output"]["path"] = f"gs://{bucket}/out"
    writer = threading.Thread(target=upload)
    writer.start()
    try:
        summary = run_streaming(parse_spec(data, origin="test"))
    finally:
        stop.set()
        writer.join(timeout=30)
    assert (summary["balanced"], summary["counts"]["read"]) == (True, len(lines))
    assert summary["rows_written"] + summary["rows_rejected"] == len(lines)
    # What the bucket holds: the rows, the summary, every aggregate table.
    (match,) = FileSystems.match([f"gs://{bucket}/out/rows/*.jsonl"])
    rows = 0
    for m in match.metadata_list:
        with FileSystems.open(m.path) as f:
            rows += len(f.read().splitlines())
    assert rows == summary["rows_written"] > 0
    with FileSystems.open(f"gs://{bucket}/out/summary.json") as f:
        assert json.loads(f.read())["counts"] == summary["counts"]
    assert set(summary["aggregate_rows"]) == {"fares_per_company", "trips_per_area"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_windows_fire_while_files_are_still_arriving(
    batch_run: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """1 s windows: a file's window is written once the next file is found, before the end."""
    (tmp_path / "incoming").mkdir()
    data = copy.deepcopy(dict(_spec(tmp_path, batch_run).raw))
    data["streaming"]["aggregations"] = [
        {
            "name": "per_company",
            "keys": ["company"],
            "window": {"size_seconds": 1},
            "metrics": [{"op": "count", "output": "trips"}],
        }
    ]
    spec = parse_spec(data, origin="test")
    header, *lines = SAMPLE.read_text().splitlines()
    aggregates = tmp_path / "out" / "aggregates" / "per_company"
    seen_before_last: list[bool] = []

    def drop() -> None:
        for i in range(FILES):
            if i == FILES - 1:
                # Before the last file: the first files' windows must be out already.
                deadline = time.monotonic() + 30
                while not list(aggregates.glob("*.jsonl")) and time.monotonic() < deadline:
                    time.sleep(0.1)
                seen_before_last.append(bool(list(aggregates.glob("*.jsonl"))))
            elif i:
                time.sleep(1.2)
            part = tmp_path / "incoming" / f".part{i}.tmp"
            part.write_text("\n".join([header, *lines[i * 10 : (i + 1) * 10]]) + "\n")
            part.rename(tmp_path / "incoming" / f"part{i}.csv")

    writer = threading.Thread(target=drop)
    writer.start()
    try:
        summary = run_streaming(spec)
    finally:
        writer.join(timeout=60)
    assert seen_before_last == [True]
    assert summary["balanced"] and summary["counts"]["read"] == 10 * FILES
    assert summary["aggregations"]["per_company"]["aggregated"] == 10 * FILES
