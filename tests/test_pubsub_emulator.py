"""Streaming from Pub/Sub for real: the official emulator, Beam's Pub/Sub reader, the taxi rows.

A batch run fits the artifact on a few hundred taxi rows; the same rows are then published as
JSON messages, with a repeated message, malformed messages and heartbeats mixed in, and the
streaming pipeline reads them until it has seen every message, then drains: every window
fires before the run ends, so the outputs are exact whatever the timing.
De-duplication by message id is tested on its own with TestStream.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import pathlib
import shutil
import threading
import time
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec, parse_spec
from beam_pipelines.streaming import run_streaming
from tests.datasets import dataset_files, run_root
from tests.emulators import PubSub
from transforms.streaming.sources import DedupeMessages, Message, is_heartbeat, message_key

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "chicago_taxi" / "data" / "sample.csv"
STREAMING_YAML = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
ROWS = 300
# The rows, one repeat and two malformed messages (heartbeats are not counted).
MESSAGES = ROWS + 3
DEADLINE_SECONDS = 90


def test_heartbeats_are_recognised_by_their_attribute() -> None:
    assert is_heartbeat(Message(b"", {"heartbeat": "1"}))
    assert not is_heartbeat(Message(b"", {"heartbeat": "0"}))
    assert not is_heartbeat(Message(b"{}", {}))


def _msg(ident: str, payload: str, message_id: str = "") -> Message:
    return Message(payload.encode(), {"id": ident} if ident else {}, message_id=message_id)


def test_message_key_prefers_the_id_attribute() -> None:
    assert message_key(_msg("a", "x", "m1"), "id") == "a"
    assert message_key(_msg("", "x", "m1"), "id") == "m1"
    assert message_key(_msg("a", "x", "m1"), None) == "m1"


def test_duplicates_are_dropped_until_their_id_expires() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(
            [
                TimestampedValue(_msg("a", "a0"), 0),
                TimestampedValue(_msg("b", "b0"), 0),
                TimestampedValue(_msg("a", "a1"), 1),  # duplicate of a0
            ]
        )
        .advance_watermark_to(5)  # ttl 3 s: a and b are forgotten
        .add_elements(
            [
                TimestampedValue(_msg("a", "a6"), 6),  # a again, after expiry: kept
                TimestampedValue(_msg("b", "b6"), 6),
                TimestampedValue(_msg("b", "b7"), 7),  # duplicate of b6
                TimestampedValue(_msg("", "c7", "m-c"), 7),  # no attribute: Pub/Sub's id
                TimestampedValue(_msg("", "c8", "m-c"), 8),  # duplicate of c7
            ]
        )
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(runner="DirectRunner", options=options)
    deduped = p | stream | DedupeMessages(id_attribute="id", ttl_seconds=3)
    kept = deduped.messages | beam.Map(lambda m: m.data.decode())
    assert_that(kept, equal_to(["a0", "b0", "a6", "b6", "c7"]))
    assert_that(deduped.duplicates, equal_to(["a", "b", "m-c"]), label="Duplicates")
    p.run().wait_until_finish()


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be > 0"):
        DedupeMessages(ttl_seconds=0)


def _subset(folder: pathlib.Path) -> pathlib.Path:
    header, *lines = SAMPLE.read_text().splitlines()
    path = folder / "rows.csv"
    path.write_text("\n".join([header, *lines[:ROWS]]) + "\n")
    return path


def _spec(
    root: pathlib.Path,
    artifact: pathlib.Path,
    subscription: str,
    bigquery: dict[str, Any] | None = None,
    topics: dict[str, str] | None = None,
) -> Any:
    data = yaml.safe_load(STREAMING_YAML.read_text())
    stream = data["streaming"]
    stream["source"] = "pubsub"
    del stream["files"]
    stream["pubsub"] = {
        "subscription": subscription,
        "format": "json",
        "event_time_attribute": "event_time",
        "id_attribute": "id",
        "batch_size": 100,
        "max_latency_seconds": 0.5,
        "max_messages": MESSAGES,
        # A safety net only: the run ends when it has read every message.
        "deadline_seconds": DEADLINE_SECONDS,
    }
    for agg in stream["aggregations"]:
        # The reader's watermark follows publish times (now): the event times, up to 120 s
        # back, are on time with this lateness.
        agg["allowed_lateness_seconds"] = 600
    stream["artifact"] = str(artifact)
    stream["output"]["path"] = str(root / "out")
    if bigquery is not None:
        stream["output"]["bigquery"] = bigquery
    stream["output"].update(topics or {})
    return parse_spec(data, origin="test")


def _publish(emulator: PubSub, rows_csv: pathlib.Path) -> tuple[dict[str, str], list[int]]:
    """Publishes the rows, a repeat, two malformed messages and heartbeats.

    Returns:
        The Pub/Sub message id of each malformed message, by its payload, and the event
        time (ms) each row was published with.
    """
    publisher = emulator.publisher()
    now_ms = int(time.time() * 1000)
    with rows_csv.open() as f:
        records = list(csv.DictReader(f))
    futures = []
    times: list[int] = []
    for i, record in enumerate(records):
        # Empty CSV fields are null. Event times lie 120 s to 100 s back.
        row = {k: (v if v != "" else None) for k, v in record.items()}
        when = now_ms - 120_000 + (20_000 * i) // len(records)
        times.append(when)
        futures.append(
            publisher.publish(
                emulator.topic,
                json.dumps(row).encode(),
                event_time=str(when),
                id=f"row-{i}",
            )
        )
    # A repeat of row 0 (a publisher retry): the same id, dropped by the pipeline.
    futures.append(
        publisher.publish(
            emulator.topic,
            json.dumps({k: (v if v != "" else None) for k, v in records[0].items()}).encode(),
            event_time=str(now_ms - 120_000),
            id="row-0",
        )
    )
    bad: dict[str, Any] = {}
    for payload in ("{not json", "[1, 2]"):
        # No id attribute: the error names the Pub/Sub message id.
        bad[payload] = publisher.publish(emulator.topic, payload.encode(), event_time=str(now_ms))
    # Keep-alive messages: dropped by the reader, counted nowhere.
    futures += [publisher.publish(emulator.topic, b"", heartbeat="1") for _ in range(3)]
    for future in futures:
        future.result(timeout=30)
    return {payload: future.result(timeout=30) for payload, future in bad.items()}, times


def _jsonl(pattern: str, root: pathlib.Path) -> list[dict]:
    return [
        json.loads(line) for p in sorted(root.glob(pattern)) for line in p.read_text().splitlines()
    ]


def _jsonl_lines(pattern: str, root: pathlib.Path) -> list[str]:
    return [line for p in sorted(root.glob(pattern)) for line in p.read_text().splitlines()]


def _run(
    emulator: PubSub,
    root: pathlib.Path,
    bigquery: dict[str, Any] | None = None,
    topics: dict[str, str] | None = None,
) -> tuple:
    """Fits on the rows in batch, publishes them, runs the streaming job until it drains."""
    rows_csv = _subset(root)
    batch = root / "batch"
    run_job(load_spec(str(STREAMING_YAML)), inputs=[str(rows_csv)], output=str(batch))
    spec = _spec(root, batch, emulator.subscription, bigquery, topics)
    published, times = _publish(emulator, rows_csv)
    started = time.monotonic()
    summary = run_streaming(spec)
    # Ended by reading every message, not by the deadline.
    assert time.monotonic() - started < DEADLINE_SECONDS
    with rows_csv.open() as f:
        records = list(csv.DictReader(f))
    return root / "out", summary, batch, published, list(zip(records, times, strict=True))


@pytest.fixture
def pubsub_run(pubsub_emulator: PubSub, tmp_path: pathlib.Path) -> tuple:
    return _run(pubsub_emulator, tmp_path)


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(180)
def test_pubsub_run_matches_the_batch_run(pubsub_run: tuple) -> None:
    out, summary, batch_dir, published, sent = pubsub_run
    # Rows: the same feature values as the batch run gave the same rows.
    table = pa.concat_tables([pq.read_table(p) for p in dataset_files(batch_dir)])
    streamed = pa.Table.from_pylist(_jsonl("rows/*.jsonl", out), schema=table.schema).to_pylist()

    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    assert len(streamed) == table.num_rows > 0
    assert canonical(streamed) == canonical(table.to_pylist())
    assert summary["rows_written"] == table.num_rows
    # Errors: exactly the two malformed messages, named by their Pub/Sub message ids;
    # heartbeats are dropped before decoding, so none of them is an error.
    errors = _jsonl("errors/*.jsonl", out)
    assert sorted((e["step"], e["reason"], e["source"], e["payload"]) for e in errors) == sorted(
        ("read", "malformed_record", published[payload], payload) for payload in published
    )
    assert len(published) == 2
    # Windowed aggregates: the last pane of each company and 30 s window holds exactly the
    # rows published with event times in it (the run drains: every window fires).
    expected: dict[tuple, list[float]] = {}
    for record, when in sent:
        start = when // 1000 // 30 * 30
        fare = float(record["fare"] or 0)
        expected.setdefault((record["company"] or "", start), []).append(fare)
    last: dict[tuple, dict] = {}
    for pane in _jsonl("aggregates/fares_per_company/*.jsonl", out):
        start = int(dt.datetime.fromisoformat(pane["window_start"]).timestamp())
        key = (pane["company"], start)
        if key not in last or pane["trips"] > last[key]["trips"]:
            last[key] = pane
    assert {k: p["trips"] for k, p in last.items()} == {k: len(v) for k, v in expected.items()}
    for key, pane in last.items():
        assert pane["fare_sum"] == pytest.approx(sum(expected[key]), rel=1e-6)
        assert pane["fare_max"] == pytest.approx(max(expected[key]), rel=1e-6)
    sliding: dict[tuple, int] = {}
    for pane in _jsonl("aggregates/trips_per_area/*.jsonl", out):
        key = (pane["pickup_community_area"], pane["window_start"])
        sliding[key] = max(sliding.get(key, 0), pane["trips"])
    # Sliding windows of 60 s every 20 s: each row is in three windows.
    assert sum(sliding.values()) == 3 * table.num_rows
    # Every message is accounted for: rows written, the repeat dropped, two errors; each
    # aggregation took in every row.
    assert summary["counts"] == {
        "read": MESSAGES,
        "written": {"rows": ROWS},
        "rejected": {"read": {"malformed_record": 2}},
        "dropped": {"read": {"duplicate_message": 1}},
        "total_written": ROWS,
        "total_rejected": 2,
        "total_dropped": 1,
    }
    for name in ("fares_per_company", "trips_per_area"):
        assert summary["aggregations"][name] == {
            "aggregated": ROWS,
            "rejected": {},
            "missed_windows": 0,
            "rows_in": ROWS,
        }
    assert (summary["balanced"], summary["problems"]) == (True, [])


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(180)
def test_pubsub_rows_stream_into_bigquery(
    pubsub_emulator: PubSub, bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    client = bigquery_emulator.client()
    client.create_dataset("stream_out", exists_ok=True)
    table = f"{bigquery_emulator.project}.stream_out.taxi"
    out, summary, batch_dir, *_ = _run(pubsub_emulator, tmp_path, bigquery={"table": table})
    files = _jsonl("rows/*.jsonl", out)
    # The dataset's schema: float32 features travel as FLOAT64 in BigQuery, exactly.
    schema = pq.read_schema(dataset_files(batch_dir)[0])
    inserted = [dict(r.items()) for r in client.list_rows(table)]

    def canonical(rows: list[dict]) -> list[str]:
        typed = pa.Table.from_pylist(rows, schema=schema).to_pylist()
        return sorted(json.dumps(r, sort_keys=True) for r in typed)

    # Every row written to the files is in the table, once; BigQuery rejected none.
    assert len(inserted) == summary["rows_written"] == len(files) > 0
    assert canonical(inserted) == canonical(files)
    assert "bigquery" not in summary["errors"]


@pytest.mark.parametrize(
    ("sink", "problem"),
    [
        ({"table": "p-proj.ds.t_{split}"}, r"one table: no \{split\}"),
        ({"table": "p-proj.ds.t", "method": "FILE_LOADS"}, "must be STREAMING_INSERTS"),
    ],
)
def test_the_streaming_bigquery_sink_is_one_table_with_streaming_inserts(
    sink: dict[str, Any], problem: str
) -> None:
    from beam_pipelines.streaming import streaming_spec
    from transforms.core.config import SpecError

    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"]["output"]["bigquery"] = sink
    with pytest.raises(SpecError, match=problem):
        streaming_spec(parse_spec(data, origin="test"))


def _drain_subscription(emulator: PubSub, subscription: str) -> list[bytes]:
    """Every message on a subscription (acknowledged), until a pull comes back empty."""
    from google.api_core import exceptions

    client = emulator.subscriber()
    out: list[bytes] = []
    while True:
        try:
            response = client.pull(
                request={"subscription": subscription, "max_messages": 1000},
                timeout=3,
                retry=None,
            )
        except exceptions.DeadlineExceeded:
            return out
        if not response.received_messages:
            return out
        out += [r.message.data for r in response.received_messages]
        ack_ids = [r.ack_id for r in response.received_messages]
        client.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(180)
def test_rows_and_errors_are_published_back_to_pubsub(
    pubsub_emulator: PubSub, tmp_path: pathlib.Path
) -> None:
    rows_topic = pubsub_emulator.new_topic("rows-out")
    errors_topic = pubsub_emulator.new_topic("errors-out")
    rows_sub = pubsub_emulator.new_subscription(rows_topic, "rows-out-sub")
    errors_sub = pubsub_emulator.new_subscription(errors_topic, "errors-out-sub")
    topics = {"topic": rows_topic, "errors_topic": errors_topic}
    out, summary, *_ = _run(pubsub_emulator, tmp_path, topics=topics)
    # The messages are the lines of the files, one each, in no particular order.
    rows = _drain_subscription(pubsub_emulator, rows_sub)
    lines = _jsonl_lines("rows/*.jsonl", out)
    assert len(rows) == summary["rows_written"] == len(lines) > 0

    def canonical(texts: list[Any]) -> list[str]:
        return sorted(json.dumps(json.loads(t), sort_keys=True) for t in texts)

    assert canonical(rows) == canonical(lines)
    # Error records are the ones in the files: the two malformed messages.
    errors = _drain_subscription(pubsub_emulator, errors_sub)
    assert canonical(errors) == canonical(_jsonl_lines("errors/*.jsonl", out))
    assert sorted(json.loads(e)["payload"] for e in errors) == ["[1, 2]", "{not json"]


def _publish_rows(emulator: PubSub, records: list[dict[str, str]], first_id: int) -> None:
    publisher = emulator.publisher()
    now_ms = int(time.time() * 1000)
    futures = [
        publisher.publish(
            emulator.topic,
            json.dumps({k: (v if v != "" else None) for k, v in record.items()}).encode(),
            event_time=str(now_ms),
            id=f"row-{first_id + i}",
        )
        for i, record in enumerate(records)
    ]
    for future in futures:
        future.result(timeout=30)


def _start(spec: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Starts the streaming run in a thread; its summary lands in the dict when it ends."""
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_streaming(spec)))
    runner.start()
    return runner, result


def _rows_written(out: pathlib.Path) -> int:
    return len(_jsonl_lines("rows/*.jsonl", out))


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(240)
def test_a_newer_artifact_is_applied_without_restarting(
    pubsub_emulator: PubSub, tmp_path: pathlib.Path
) -> None:
    """Half the rows, then a newer artifact is published, then the other half."""
    from transforms.core.artifact import read_artifact, write_artifact
    from transforms.ops.registry import build_step

    rows_csv = _subset(tmp_path)
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
    raw = _spec(tmp_path, live, pubsub_emulator.subscription).raw
    # Checked before every batch; the run ends when every row was read.
    raw["streaming"]["artifact_refresh_seconds"] = 0.001
    raw["streaming"]["pubsub"]["max_messages"] = len(lines)
    spec = parse_spec(raw, origin="test")
    with (tmp_path / "first.csv").open() as f:
        first = list(csv.DictReader(f))
    with (tmp_path / "second.csv").open() as f:
        second = list(csv.DictReader(f))
    _publish_rows(pubsub_emulator, first, 0)
    runner, result = _start(spec)
    deadline = time.monotonic() + 60
    while _rows_written(tmp_path / "out") < half:
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
    _publish_rows(pubsub_emulator, second, half)
    runner.join(timeout=120)
    assert "summary" in result
    streamed = pa.Table.from_pylist(
        _jsonl("rows/*.jsonl", tmp_path / "out"), schema=table.schema
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
    rows_csv = _subset(tmp_path)
    run_job(load_spec(str(STREAMING_YAML)), inputs=[str(rows_csv)], output=str(tmp_path / "b"))
    raw = _spec(tmp_path, tmp_path / "b", pubsub_emulator.subscription).raw
    pubsub = raw["streaming"]["pubsub"]
    del pubsub["subscription"]
    pubsub.update(topic=pubsub_emulator.topic, max_messages=ROWS)
    spec = parse_spec(raw, origin="test")
    publisher = pubsub_emulator.publisher()

    def made() -> list[str]:
        listed = publisher.list_topic_subscriptions(request={"topic": pubsub_emulator.topic})
        return [s for s in listed if s != pubsub_emulator.subscription]

    runner, result = _start(spec)
    # Messages published before the run's subscription exists are not the run's to read.
    deadline = time.monotonic() + 60
    while not made():
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.1)
    with rows_csv.open() as f:
        _publish_rows(pubsub_emulator, list(csv.DictReader(f)), 0)
    runner.join(timeout=120)
    assert result["summary"]["rows_written"] == ROWS
    # The run's subscription is deleted when it ends.
    assert made() == []
