"""A Pub/Sub run while it runs: a newer artifact applied without a restart, a topic read
through a subscription made for the run (the official emulator)."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec, parse_spec
from tests.datasets import dataset_files, run_root
from tests.emulators import PubSub
from tests.pubsub_runs import (
    ROWS,
    STREAMING_YAML,
    jsonl,
    publish_rows,
    pubsub_spec,
    rows_written,
    start_run,
    subset,
)


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(240)
def test_a_newer_artifact_is_applied_without_restarting(
    pubsub_emulator: PubSub, tmp_path: pathlib.Path
) -> None:
    """Half the rows, then a newer artifact is published, then the other half."""
    from transforms.core.artifact import read_artifact, write_artifact
    from transforms.ops.registry import build_step

    rows_csv = subset(tmp_path)
    header, *lines = rows_csv.read_text().splitlines()
    half = len(lines) // 2
    (tmp_path / "first.csv").write_text("\n".join([header, *lines[:half]]) + "\n")
    (tmp_path / "second.csv").write_text("\n".join([header, *lines[half:]]) + "\n")
    spec_file = load_spec(str(STREAMING_YAML))
    run_job(spec_file, inputs=[str(rows_csv)], output=str(tmp_path / "batch"))
    # The newer artifact: another fare mean (as a refit on other data would give).
    newer = read_artifact(str(tmp_path / "batch"), build_step)
    newer.fitted = {**newer.fitted, "z_score:fare": {**newer.fitted["z_score:fare"], "mean": 0.0}}
    write_artifact(str(tmp_path / "newer"), newer)
    # What each half must get: the first half the artifact of the start, the second the newer.
    expected = []
    for name, artifact in (
        ("first", tmp_path / "batch"),
        ("second", tmp_path / "newer"),
    ):
        out = tmp_path / f"expected-{name}"
        inputs = [str(tmp_path / f"{name}.csv")]
        run_job(spec_file, inputs=inputs, output=str(out), artifact_dir=str(artifact))
        expected += [pq.read_table(p) for p in dataset_files(out)]
    table = pa.concat_tables(expected)

    live = tmp_path / "live-artifact"
    shutil.copytree(run_root(tmp_path / "batch") / "artifact", live)
    raw = pubsub_spec(tmp_path, live, pubsub_emulator.subscription).raw
    # Checked before every batch; the run ends when every row was read.
    raw["streaming"]["artifact_refresh_seconds"] = 0.001
    raw["streaming"]["pubsub"]["max_messages"] = len(lines)
    spec = parse_spec(raw, origin="test")
    with (tmp_path / "first.csv").open() as f:
        first = list(csv.DictReader(f))
    with (tmp_path / "second.csv").open() as f:
        second = list(csv.DictReader(f))
    publish_rows(pubsub_emulator, first, 0)
    runner, result = start_run(spec)
    deadline = time.monotonic() + 60
    while rows_written(tmp_path / "out") < half:
        assert time.monotonic() < deadline, "the first half was not written within 60 s"
        assert runner.is_alive()
        time.sleep(0.1)
    # Published while the job runs: transform.json last, so the new hash names complete files.
    shutil.copytree(
        tmp_path / "newer",
        live,
        ignore=shutil.ignore_patterns("transform.json"),
        dirs_exist_ok=True,
    )
    shutil.copy(tmp_path / "newer" / "transform.json", live / "transform.json")
    publish_rows(pubsub_emulator, second, half)
    runner.join(timeout=120)
    assert "summary" in result
    streamed = pa.Table.from_pylist(
        jsonl("rows/*.jsonl", tmp_path / "out"), schema=table.schema
    ).to_pylist()

    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    assert canonical(streamed) == canonical(table.to_pylist())
    assert len(streamed) == len(lines)
    # Event times are the publish times: every row is on time in every aggregation.
    for agg in result["summary"]["aggregations"].values():
        assert (agg["aggregated"], agg["rejected"]) == (len(lines), {})


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(180)
def test_a_topic_is_read_through_a_subscription_made_for_the_run(
    pubsub_emulator: PubSub, tmp_path: pathlib.Path
) -> None:
    rows_csv = subset(tmp_path)
    run_job(load_spec(str(STREAMING_YAML)), inputs=[str(rows_csv)], output=str(tmp_path / "b"))
    raw = pubsub_spec(tmp_path, tmp_path / "b", pubsub_emulator.subscription).raw
    pubsub = raw["streaming"]["pubsub"]
    del pubsub["subscription"]
    pubsub.update(topic=pubsub_emulator.topic, max_messages=ROWS)
    spec = parse_spec(raw, origin="test")
    publisher = pubsub_emulator.publisher()

    def made() -> list[str]:
        listed = publisher.list_topic_subscriptions(request={"topic": pubsub_emulator.topic})
        return [s for s in listed if s != pubsub_emulator.subscription]

    runner, result = start_run(spec)
    # Messages published before the run's subscription exists are not the run's to read.
    deadline = time.monotonic() + 60
    while not made():
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.1)
    with rows_csv.open() as f:
        publish_rows(pubsub_emulator, list(csv.DictReader(f)), 0)
    runner.join(timeout=120)
    assert result["summary"]["rows_written"] == ROWS
    # The run's subscription is deleted when it ends.
    assert made() == []
