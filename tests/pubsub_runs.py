"""Streaming runs from the Pub/Sub emulator: the spec, the rows published, the files written."""

from __future__ import annotations

import json
import pathlib
import threading
import time
from typing import Any

import yaml

from beam_pipelines.spec import parse_spec
from beam_pipelines.streaming import run_streaming
from tests.emulators import PubSub

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "chicago_taxi" / "data" / "sample.csv"
STREAMING_YAML = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
ROWS = 300
# The rows, one repeat and two malformed messages (heartbeats are not counted).
MESSAGES = ROWS + 3
DEADLINE_SECONDS = 90


def subset(folder: pathlib.Path) -> pathlib.Path:
    """The first ``ROWS`` rows of the taxi sample, as ``rows.csv`` in ``folder``."""
    header, *lines = SAMPLE.read_text().splitlines()
    path = folder / "rows.csv"
    path.write_text("\n".join([header, *lines[:ROWS]]) + "\n")
    return path


def pubsub_spec(
    root: pathlib.Path,
    artifact: pathlib.Path,
    subscription: str,
    bigquery: dict[str, Any] | None = None,
    topics: dict[str, str] | None = None,
) -> Any:
    """The streaming example reading ``subscription``, applying ``artifact``, writing under ``root``."""
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


def jsonl(pattern: str, root: pathlib.Path) -> list[dict]:
    """The JSON objects of the files matching ``pattern`` under ``root``."""
    return [
        json.loads(line) for p in sorted(root.glob(pattern)) for line in p.read_text().splitlines()
    ]


def jsonl_lines(pattern: str, root: pathlib.Path) -> list[str]:
    """The lines of the files matching ``pattern`` under ``root``."""
    return [line for p in sorted(root.glob(pattern)) for line in p.read_text().splitlines()]


def publish_rows(emulator: PubSub, records: list[dict[str, str]], first_id: int) -> None:
    """Publishes CSV records as JSON messages stamped now, with ids from ``first_id``."""
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


def start_run(spec: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Starts the streaming run in a thread; its summary lands in the dict when it ends."""
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_streaming(spec)))
    runner.start()
    return runner, result


def rows_written(out: pathlib.Path) -> int:
    """The rows in the row files under ``out``."""
    return len(jsonl_lines("rows/*.jsonl", out))
