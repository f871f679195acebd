"""Streaming from Pub/Sub for real: the official emulator, Beam's Pub/Sub reader, the taxi rows.

A batch run fits the artifact on a few hundred taxi rows; the same rows are then published as
JSON messages, with a repeated message, malformed messages and heartbeats mixed in, and the
streaming pipeline reads them until it has seen every message, then drains: every window
fires before the run ends, so the outputs are exact whatever the timing.
De-duplication by message id is tested on its own with TestStream (test_pubsub_dedupe.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import pathlib
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from beam_pipelines.streaming import run_streaming
from tests.datasets import dataset_files
from tests.emulators import PubSub
from tests.pubsub_runs import (
    DEADLINE_SECONDS,
    MESSAGES,
    ROWS,
    STREAMING_YAML,
    jsonl,
    jsonl_lines,
    pubsub_spec,
    subset,
)


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


def _run(
    emulator: PubSub,
    root: pathlib.Path,
    bigquery: dict[str, Any] | None = None,
    topics: dict[str, str] | None = None,
) -> tuple:
    """Fits on the rows in batch, publishes them, runs the streaming job until it drains."""
    rows_csv = subset(root)
    batch = root / "batch"
    run_job(load_spec(str(STREAMING_YAML)), inputs=[str(rows_csv)], output=str(batch))
    spec = pubsub_spec(root, batch, emulator.subscription, bigquery, topics)
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
    streamed = pa.Table.from_pylist(jsonl("rows/*.jsonl", out), schema=table.schema).to_pylist()

    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    assert len(streamed) == table.num_rows > 0
    assert canonical(streamed) == canonical(table.to_pylist())
    assert summary["rows_written"] == table.num_rows
    # Errors: exactly the two malformed messages, named by their Pub/Sub message ids;
    # heartbeats are dropped before decoding, so none of them is an error.
    errors = jsonl("errors/*.jsonl", out)
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
    for pane in jsonl("aggregates/fares_per_company/*.jsonl", out):
        start = int(dt.datetime.fromisoformat(pane["window_start"]).timestamp())
        key = (pane["company"], start)
        if key not in last or pane["trips"] > last[key]["trips"]:
            last[key] = pane
    assert {k: p["trips"] for k, p in last.items()} == {k: len(v) for k, v in expected.items()}
    for key, pane in last.items():
        assert pane["fare_sum"] == pytest.approx(sum(expected[key]), rel=1e-6)
        assert pane["fare_max"] == pytest.approx(max(expected[key]), rel=1e-6)
    sliding: dict[tuple, int] = {}
    for pane in jsonl("aggregates/trips_per_area/*.jsonl", out):
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
    files = jsonl("rows/*.jsonl", out)
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
    lines = jsonl_lines("rows/*.jsonl", out)
    assert len(rows) == summary["rows_written"] == len(lines) > 0

    def canonical(texts: list[Any]) -> list[str]:
        return sorted(json.dumps(json.loads(t), sort_keys=True) for t in texts)

    assert canonical(rows) == canonical(lines)
    # Error records are the ones in the files: the two malformed messages.
    errors = _drain_subscription(pubsub_emulator, errors_sub)
    assert canonical(errors) == canonical(jsonl_lines("errors/*.jsonl", out))
    assert sorted(json.loads(e)["payload"] for e in errors) == ["[1, 2]", "{not json"]
