"""The commit protocol under real processes: two runs at once, runs killed at random points,
and a gs:// output on the GCS emulator (with generation preconditions)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
from typing import Any

import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from benchmarks.data import generate
from tests.conftest import REPO, TAXI_SAMPLE
from tests.test_commit import _taxi, assert_exactly_manifest, listed_files
from transforms.io import commit

BEAMFORGE = [sys.executable, "-m", "launchers.cli"]


def _start(spec: pathlib.Path, data: pathlib.Path, out: pathlib.Path, log: pathlib.Path) -> Any:
    with log.open("wb") as f:
        return subprocess.Popen(
            [*BEAMFORGE, "run", str(spec), "--input", str(data), "--output", str(out), "--quiet"],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )


def _wait_for(path: pathlib.Path, proc: Any, timeout: float = 120.0) -> None:
    # Bounded: the process either takes its lock or exits.
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before taking its lock"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"


def _big_file() -> pathlib.Path:
    # 2M taxi rows (about 290 MB), cached between runs like the benchmarks' files.
    return generate(2_000_000, seed=3, work_dir=REPO / "benchmarks" / "work")


@pytest.mark.slow
def test_two_concurrent_runs_one_refused_the_other_complete(tmp_path: pathlib.Path):
    # Large enough that the first run still writes when the second has started up.
    data = _big_file()
    out = tmp_path / "out"
    first = _start(SPEC, data, out, tmp_path / "first.log")
    _wait_for(out / commit.LOCK, first)
    holder = json.loads((out / commit.LOCK).read_text())["run"]
    second = subprocess.run(
        [*BEAMFORGE, "run", str(SPEC), "--input", str(data), "--output", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        second.stderr.strip().splitlines()[0]
    ] and second.stderr.startswith(
        f"error: {out}: another run is writing this output: run {holder}"
    )
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
    manifest = assert_exactly_manifest(out)
    assert manifest["run"]["id"] == holder
    assert manifest["counts"]["read"] == 2_000_000


@pytest.mark.slow
def test_runs_killed_at_random_points_then_rerun_leave_exactly_the_manifest(
    tmp_path: pathlib.Path,
):
    data = _big_file()
    out = tmp_path / "out"
    rng = random.Random(20261129)
    # A complete run first, so that each killed run has a dataset to leave intact.
    done = _start(SPEC, data, out, tmp_path / "run0.log")
    assert done.wait(timeout=600) == 0, (tmp_path / "run0.log").read_text()
    previous = assert_exactly_manifest(out)
    import time

    for k in range(1, 5):
        proc = _start(SPEC, data, out, tmp_path / f"run{k}.log")
        started = time.monotonic()
        _wait_for(out / commit.LOCK, proc)
        # Random points over a whole run (about 15 s here), the commit included.
        when = rng.uniform(0.2, 16.0)
        try:
            proc.wait(timeout=max(0.0, when - (time.monotonic() - started)))
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            killed = True
        # Killed or finished, the folder is a complete dataset: the old one, or the new one
        # if the run committed before the kill.
        manifest = json.loads((out / "manifest.json").read_text())
        if not killed:
            assert proc.returncode == 0 and manifest["run"]["id"] != previous["run"]["id"]
        for path in listed_files(manifest):
            assert pathlib.Path(path).exists(), f"after kill {k} at {when:.1f} s: {path} is gone"
        previous = manifest
    final = _start(SPEC, data, out, tmp_path / "final.log")
    assert final.wait(timeout=600) == 0, (tmp_path / "final.log").read_text()
    manifest = assert_exactly_manifest(out)
    assert manifest["counts"]["read"] == 2_000_000
    rows = sum(
        pq.ParquetFile(e["path"]).metadata.num_rows
        for split in manifest["splits"].values()
        for e in split["files"]["parquet"]
    )
    assert rows == manifest["counts"]["total_written"]


@pytest.mark.emulator
def test_a_gs_output_holds_exactly_its_manifest(gcs_emulator: Any):
    client = gcs_emulator.client()
    bucket = gcs_emulator.new_bucket("commit-protocol")
    out = f"gs://{bucket}/datasets/taxi"
    run_job(_taxi(num_shards=3), inputs=[str(TAXI_SAMPLE)], output=out)
    # Leftovers of a killed run: a temporary shard in a run folder the manifest does not name.
    client.bucket(bucket).blob(
        "datasets/taxi/run-20260101T000000Z-deadbeef/train/beam-temp-x/shard"
    ).upload_from_string(b"x")
    second = run_job(_taxi(num_shards=1), inputs=[str(TAXI_SAMPLE)], output=out).manifest
    names = {f"gs://{bucket}/{b.name}" for b in client.list_blobs(bucket, prefix="datasets/taxi/")}
    assert names == listed_files(second) | {f"{out}/manifest.json"}
    assert len(second["splits"]["train"]["files"]["parquet"]) == 1
    for split in second["splits"].values():
        (entry,) = split["files"]["parquet"]
        blob = client.bucket(bucket).get_blob(entry["path"][len(f"gs://{bucket}/") :])
        assert blob.size == entry["size"]


@pytest.mark.emulator
def test_the_gs_lock_and_commit_use_generation_preconditions(gcs_emulator: Any):
    client = gcs_emulator.client()
    bucket = gcs_emulator.new_bucket("commit-preconditions")
    out = f"gs://{bucket}/out"
    first = commit.acquire(out)
    with pytest.raises(commit.OutputLockedError, match=f"run {first.run_id}"):
        commit.acquire(out)
    # Another writer commits a manifest behind the lock's back: the commit is refused.
    client.bucket(bucket).blob("out/manifest.json").upload_from_string(
        json.dumps({"run": {"id": "run-20260101T000000Z-0000000c"}})
    )
    with pytest.raises(commit.CommitConflictError, match="run-20260101T000000Z-0000000c committed"):
        first.publish({}, json.dumps({"run": {"id": first.run_id}}))
    first.abort()
    assert client.bucket(bucket).get_blob("out/_lock.json") is None
    # A create-if-absent cannot overwrite: the second of two racing creates loses.
    store = commit.store_for(out)
    assert store.create(f"{out}/x.json", b"1") is not None
    assert store.create(f"{out}/x.json", b"2") is None
    assert client.bucket(bucket).blob("out/x.json").download_as_bytes() == b"1"


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.0, 4.0])
def test_a_sigterm_stops_a_run_cleanly_in_one_line(tmp_path: pathlib.Path, after: float):
    data = _big_file()
    out = tmp_path / "out"
    previous = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    proc = _start(SPEC, data, out, tmp_path / "run.log")
    _wait_for(out / commit.LOCK, proc)
    # At once (the pipeline being built) or while the input is being read.
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=after)
    os.killpg(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=120)
    log = (tmp_path / "run.log").read_text()
    assert (code, log) == (130, "error: stopped by SIGTERM\n")
    assert not (out / commit.LOCK).exists()
    assert assert_exactly_manifest(out) == previous
