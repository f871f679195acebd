"""Tests for transforms.io.commit and the dataset run's use of it: a run owns its output.

What a reader of an output folder sees is exactly what its manifest lists: after reruns with
fewer shards, after failed runs and killed runs, locally and on gs:// (GCS emulator with
generation preconditions), and two runs into one folder cannot both succeed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from launchers.chain import ChainError, dataset_outputs, read_manifest
from tests.conftest import REPO, TAXI_SAMPLE
from transforms.core.manifest import CountsMismatchError
from transforms.io import commit

TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"


def _taxi(num_shards: int = 0, **errors: Any) -> Any:
    spec = load_spec(str(TAXI_SPEC))
    spec = dataclasses.replace(spec, output=dataclasses.replace(spec.output, num_shards=num_shards))
    if errors:
        spec = dataclasses.replace(spec, errors=dataclasses.replace(spec.errors, **errors))
    return spec


def listed_files(manifest: dict[str, Any]) -> set[str]:
    """Every file a manifest lists (data, artifact, stats, validation, errors)."""
    files = {
        e["path"]
        for split in manifest["splits"].values()
        for entries in split["files"].values()
        for e in entries
    }
    files |= {e["path"] for e in manifest["artifact"]["files"]}
    files |= {e["path"] for e in manifest["errors"]["files"]}
    # stats.json, validation.json and the baseline's statistics it was measured against.
    files |= {v["path"] for k, v in manifest.items() if k.endswith("_file")}
    return files


def files_under(root: pathlib.Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def assert_exactly_manifest(out: pathlib.Path) -> dict[str, Any]:
    """The folder holds the manifest's files and nothing else; their rows are its counts.

    ``beamforge run`` also keeps its lineage store beside the runs (``metadata.sqlite``, not
    part of the dataset); nothing else may be there.
    """
    manifest = json.loads((out / "manifest.json").read_text())
    found = {f for f in files_under(out) if not f.startswith(str(out / "metadata.sqlite"))}
    assert found == listed_files(manifest) | {str(out / "manifest.json")}
    for name, split in manifest["splits"].items():
        for entry in split["files"]["parquet"]:
            assert pq.ParquetFile(entry["path"]).metadata.num_rows == entry["rows"]
            assert os.path.getsize(entry["path"]) == entry["size"]
        assert sum(e["rows"] for e in split["files"]["parquet"]) == split["rows"], name
    return manifest


# ---------------------------------------------------------------------------------------------
# The lock and the commit, on their own


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: pathlib.Path):
    first = commit.acquire(str(tmp_path / "out"))
    with pytest.raises(commit.OutputLockedError) as caught:
        commit.acquire(str(tmp_path / "out"))
    message = str(caught.value)
    assert first.run_id in message and f"pid {os.getpid()}" in message
    assert "\n" not in message
    first.release()
    second = commit.acquire(str(tmp_path / "out"))
    assert second.run_id != first.run_id
    second.release()
    assert not (tmp_path / "out" / commit.LOCK).exists()


def test_publish_over_a_manifest_written_meanwhile_is_a_conflict(tmp_path: pathlib.Path):
    out = str(tmp_path / "out")
    mine = commit.acquire(out)
    # Another run that broke the lock commits first.
    other_run = "run-20260101T000000Z-0000000b"
    (tmp_path / "out" / commit.MANIFEST).write_text(json.dumps({"run": {"id": other_run}}))
    with pytest.raises(commit.CommitConflictError, match=f"{other_run} committed to this output"):
        mine.publish({}, json.dumps({"run": {"id": mine.run_id}}))
    mine.abort()
    assert not (tmp_path / "out" / mine.run_id).exists()
    # A retried commit of the run that did commit is not a conflict.
    other = commit.acquire(out, run_id="run-20260101T000000Z-0000000a")
    text = json.dumps({"run": {"id": other.run_id}})
    other.publish({}, text)
    other.manifest_generation = "stale"
    other.publish({}, text)


# ---------------------------------------------------------------------------------------------
# Dataset runs


def test_a_rerun_with_fewer_shards_leaves_only_its_own_files(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    first = run_job(_taxi(num_shards=3), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    assert len(first["splits"]["train"]["files"]["parquet"]) == 3
    second = run_job(_taxi(num_shards=1), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    manifest = assert_exactly_manifest(out)
    assert manifest == second and manifest["run"]["id"] != first["run"]["id"]
    assert len(manifest["splits"]["train"]["files"]["parquet"]) == 1
    # What the chain hands a trainer matches exactly the manifest's files.
    outputs = dataset_outputs(str(out), read_manifest(str(out)))
    assert outputs["files"]["train"] == [
        e["path"] for e in manifest["splits"]["train"]["files"]["parquet"]
    ]
    assert outputs["splits"]["train"] == os.path.join(
        manifest["run"]["root"], "train", "part-*.parquet"
    )
    assert (
        sorted(str(p) for p in out.glob(os.path.relpath(outputs["splits"]["train"], out)))
        == outputs["files"]["train"]
    )


def test_the_chain_refuses_a_folder_changed_after_the_commit(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    manifest = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    stray = pathlib.Path(manifest["run"]["root"]) / "train" / "part-00009-of-00010.parquet"
    stray.write_bytes(b"not listed")
    with pytest.raises(ChainError, match=r"matches 2 file\(s\) but the manifest .* lists 1"):
        dataset_outputs(str(out), read_manifest(str(out)))


def test_a_failing_rerun_leaves_the_previous_dataset_intact(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    good = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    before = {p: pathlib.Path(p).read_bytes() for p in files_under(out)}
    bad = tmp_path / "bad.csv"
    lines = TAXI_SAMPLE.read_text().splitlines()
    bad.write_text("\n".join([lines[0], *(line + ",extra" for line in lines[1:50])]) + "\n")
    with pytest.raises(CountsMismatchError):
        run_job(_taxi(max_fraction=0.01), inputs=[str(bad)], output=str(out))
    after = files_under(out)
    # Beside the intact dataset, only the failed run's dead letters, for the message's reader.
    (failed,) = [p for p in after if p not in before]
    assert pathlib.Path(failed).parent.name == "errors"
    assert len(pathlib.Path(failed).read_text().splitlines()) == 49
    assert {p: pathlib.Path(p).read_bytes() for p in after if p != failed} == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == good
    assert not (out / commit.LOCK).exists()


def test_a_killed_runs_leftovers_are_cleaned_by_the_next(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out))
    # What a run killed while writing leaves: its folder with complete temporary shards,
    # and its lock, held by a process that is gone.
    leftover = out / "run-20260101T000000Z-deadbeef"
    temp = leftover / "train" / "beam-temp-part-0123"
    temp.mkdir(parents=True)
    (temp / "shard.parquet").write_bytes((out / "manifest.json").read_bytes())
    (out / commit.LOCK).write_text(
        json.dumps(
            {
                "run": leftover.name,
                "host": os.uname().nodename,
                "pid": 2**22 + 17,
                "started": "2026-01-01T00:00:00+00:00",
                "expires": "2999-01-01T00:00:00+00:00",
                "runner": "local",
            }
        )
    )
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out))
    assert not leftover.exists()
    assert_exactly_manifest(out)


def test_an_applied_artifact_is_copied_into_the_run(tmp_path: pathlib.Path):
    fitted = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "fit")).manifest
    applied = run_job(
        _taxi(),
        inputs=[str(TAXI_SAMPLE)],
        output=str(tmp_path / "apply"),
        artifact_dir=str(tmp_path / "fit"),
    ).manifest
    assert applied["artifact"]["applied_from"] == fitted["artifact"]["path"]
    assert applied["artifact"]["path"].startswith(applied["run"]["root"])
    assert applied["artifact"]["sha256"] == fitted["artifact"]["sha256"]
    # Rerunning the fit removes its old run; the applied dataset still has its artifact.
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "fit"))
    assert not pathlib.Path(fitted["run"]["root"]).exists()
    assert_exactly_manifest(tmp_path / "apply")


def test_a_custom_error_folder_holds_one_run_at_a_time(tmp_path: pathlib.Path):
    out, errors = tmp_path / "out", tmp_path / "dead-letters"
    bad = tmp_path / "bad.csv"
    lines = TAXI_SAMPLE.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1] + ",extra", *lines[2:40]]) + "\n")
    first = run_job(_taxi(path=str(errors)), inputs=[str(bad)], output=str(out)).manifest
    second = run_job(_taxi(path=str(errors)), inputs=[str(bad)], output=str(out)).manifest
    assert first["errors"]["count"] == second["errors"]["count"] == 1
    assert sorted(os.listdir(errors)) == [second["run"]["id"]]
    assert files_under(errors) == {e["path"] for e in second["errors"]["files"]}


def test_a_streaming_artifact_given_as_a_dataset_follows_its_commits(tmp_path: pathlib.Path):
    from transforms.beam.artifact_reload import ArtifactWatcher

    out = tmp_path / "out"
    first = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    now = [0.0]
    watcher = ArtifactWatcher(str(out), refresh_seconds=10, clock=lambda: now[0])
    assert watcher.current()[2] == first["artifact"]["sha256"]
    # A new run on other rows commits another artifact: the next check picks it up.
    lines = TAXI_SAMPLE.read_text().splitlines()
    half = tmp_path / "half.csv"
    half.write_text("\n".join(lines[:1500]) + "\n")
    second = run_job(_taxi(), inputs=[str(half)], output=str(out)).manifest
    assert second["artifact"]["sha256"] != first["artifact"]["sha256"]
    assert watcher.current()[2] == first["artifact"]["sha256"]  # not yet time to look
    now[0] = 10.0
    assert watcher.current()[2] == second["artifact"]["sha256"]
    assert watcher.loads == 2


# ---------------------------------------------------------------------------------------------
# What a hostile user tries


def test_a_write_of_the_manifest_or_the_lock_cut_short_is_cleaned_by_the_next_run(
    tmp_path: pathlib.Path,
):
    out = tmp_path / "out"
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out))
    (out / "manifest.json.tmp-0e6dff74").write_text('{"run": ')
    (out / "_lock.json.tmp-1a2b3c4d").write_text("{")
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out))
    assert_exactly_manifest(out)


def test_a_relative_output_is_recorded_with_absolute_paths(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    manifest = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output="rel/out").manifest
    assert manifest["run"]["output"] == str(tmp_path / "rel" / "out")
    assert all(os.path.isabs(p) for p in listed_files(manifest))
    monkeypatch.chdir("/")
    from transforms.serving.preprocessor import Preprocessor

    assert Preprocessor.load(str(tmp_path / "rel" / "out")).output_columns


def test_a_failed_runs_dead_letters_stay_until_the_next_run(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    lines = TAXI_SAMPLE.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1] + ",extra", *lines[2:30]]) + "\n")
    with pytest.raises(CountsMismatchError, match=r"see (.*/errors)") as caught:
        run_job(_taxi(max_fraction=0.0), inputs=[str(bad)], output=str(out))
    errors_dir = pathlib.Path(str(caught.value).split("see ")[1].split(" ")[0])
    (records,) = [
        json.loads(x) for f in errors_dir.glob("*.jsonl") for x in f.read_text().splitlines()
    ]
    assert (records["reason"], records["source"]) == ("wrong_field_count", f"{bad}:2")
    assert not (out / "manifest.json").exists() and not (out / commit.LOCK).exists()
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out))
    assert not errors_dir.exists()
    assert_exactly_manifest(out)
