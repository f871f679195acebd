"""Tests for transforms.io.output_lock through acquire: a lock whose holder is gone is broken,
a live one refuses the run, and a damaged one never crashes it."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from transforms.io import commit


def test_a_lock_whose_process_died_is_broken(tmp_path: pathlib.Path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = tmp_path / "out"
    out.mkdir()
    holder = commit.LockInfo(
        run="run-20260101T000000Z-00000000",
        host=os.uname().nodename,
        pid=int(dead.stdout),
        started="2026-01-01T00:00:00+00:00",
        expires="2999-01-01T00:00:00+00:00",
    )
    (out / commit.LOCK).write_text(json.dumps(dataclasses.asdict(holder)))
    (out / holder.run / "train").mkdir(parents=True)
    (out / holder.run / "train" / "part-00000-of-00001.parquet").write_bytes(b"half")
    taken = commit.acquire(str(out))
    # The dead run's folder went with its lock.
    assert sorted(os.listdir(out)) == [commit.LOCK]
    taken.release()


def test_an_expired_lease_is_broken_but_a_live_one_is_not(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    out.mkdir()
    holder = commit.LockInfo(
        run="run-20260101T000000Z-00000001",
        host="another-host",
        pid=1,
        started="2026-01-01T00:00:00+00:00",
        expires="2999-01-01T00:00:00+00:00",
        runner="DataflowRunner",
    )
    (out / commit.LOCK).write_text(json.dumps(dataclasses.asdict(holder)))
    with pytest.raises(
        commit.OutputLockedError, match="run-20260101T000000Z-00000001 \\(DataflowRunner"
    ):
        commit.acquire(str(out))
    expired = dataclasses.replace(holder, expires="2026-01-01T00:10:00+00:00")
    (out / commit.LOCK).write_text(json.dumps(dataclasses.asdict(expired)))
    commit.acquire(str(out)).release()


@pytest.mark.parametrize(
    ("expires", "note"),
    [("2999-01-01T00:00:00", "no zone: UTC"), ("never", "unparseable: held by nobody")],
)
def test_a_damaged_lock_never_crashes_a_run(tmp_path: pathlib.Path, expires: str, note: str):
    out = tmp_path / "out"
    out.mkdir()
    lock = {"run": "run-20260101T000000Z-00000002", "host": "elsewhere", "pid": 1}
    (out / commit.LOCK).write_text(
        json.dumps({**lock, "started": "2026-01-01T00:00:00", "expires": expires})
    )
    if expires == "never":
        commit.acquire(str(out)).release()
    else:
        with pytest.raises(commit.OutputLockedError, match="run-20260101T000000Z-00000002"):
            commit.acquire(str(out))
