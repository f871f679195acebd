"""The ``streaming:`` section of a job spec, typed: where a stream comes from and goes to.

:class:`StreamingSpec` is parsed with the rest of the spec (:func:`beam_pipelines.spec.parse_spec`
builds it with :func:`transforms.core.config.from_mapping`), so ``beamforge validate`` refuses an
unknown key or a wrong type anywhere in the section, naming its YAML path, the value and what is
valid. :func:`describe` says in one line what a local run of it does.

This module imports no pipeline code and not the spec module (which imports it).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from transforms.io.bigquery import BigQuerySink
from transforms.streaming.pubsub_messages import Decoding
from transforms.streaming.pubsub_pull import Limits
from transforms.streaming.windows import Aggregation


@dataclasses.dataclass
class FilesSource:
    """``streaming.files``: a folder watched for new files (read with ``source``'s format).

    Attributes:
        path: Glob of the files, local or gs:// (e.g. ``incoming/*.csv``).
        poll_seconds: Time between two listings.
        max_files: Stop after this many files (bounded runs).
        deadline_seconds: Stop polling this long after the start (bounded runs).
        event_time_field: Column holding the event time; else the time a file was found.
    """

    path: str
    poll_seconds: float = 1.0
    max_files: int | None = None
    deadline_seconds: float | None = None
    event_time_field: str | None = None


@dataclasses.dataclass
class PubsubSource(Decoding):
    """``streaming.pubsub``: a subscription (or a topic) and how messages decode.

    Attributes:
        subscription: ``projects/P/subscriptions/S``.
        topic: ``projects/P/topics/T`` (a subscription is created by the runner).
        batch_size: Messages per decoded batch at most.
        max_latency_seconds: Longest time a message waits for its batch.
        dedupe_seconds: How long (event time) a message id is remembered to drop repeats.
        max_messages: Local runs: stop reading after this many messages (heartbeats not
            counted), then drain.
        idle_seconds: Local runs: stop reading when no message came for this long.
        deadline_seconds: Local runs: stop reading this long after the start.
    """

    subscription: str | None = None
    topic: str | None = None
    batch_size: int = 500
    max_latency_seconds: float = 1.0
    dedupe_seconds: float = 600.0
    max_messages: int | None = None
    idle_seconds: float | None = None
    deadline_seconds: float | None = None

    def validate(self) -> None:
        super().validate()
        if self.dedupe_seconds <= 0:
            raise ValueError("streaming.pubsub.dedupe_seconds must be > 0")
        self.limits(started=0.0).validate()
        if bool(self.subscription) == bool(self.topic):
            raise ValueError("give exactly one of streaming.pubsub.subscription and topic")

    def limits(self, started: float) -> Limits:
        """When a local run stops reading, for a run started at ``started`` (Unix time)."""
        deadline = None if self.deadline_seconds is None else started + self.deadline_seconds
        return Limits(self.max_messages, self.idle_seconds, deadline)


@dataclasses.dataclass
class StreamOutput:
    """``streaming.output``.

    Attributes:
        path: Root of the rows, aggregates and errors files (local or gs://).
        format: Format of the row files.
        topic: Also publish each transformed row as a JSON message to this topic.
        errors_topic: Also publish each error record to this topic.
        bigquery: Also stream the rows into one BigQuery table (STREAMING_INSERTS); rows
            BigQuery rejects go to the errors.
    """

    path: str
    format: Literal["jsonl", "parquet"] = "jsonl"
    topic: str | None = None
    errors_topic: str | None = None
    bigquery: BigQuerySink | None = None

    def validate(self) -> None:
        sink = self.bigquery
        if sink is None:
            return
        if sink.per_split:
            raise ValueError("streaming.output.bigquery.table is one table: no {split} in it")
        if sink.resolved_method(streaming=True) != "STREAMING_INSERTS":
            raise ValueError(
                "streaming.output.bigquery.method must be STREAMING_INSERTS (rows are "
                "inserted as they come, and rows BigQuery rejects go to the errors)"
            )


@dataclasses.dataclass
class StreamingSpec:
    """The ``streaming:`` section of a job spec."""

    source: Literal["files", "pubsub"]
    artifact: str
    output: StreamOutput
    files: FilesSource | None = None
    pubsub: PubsubSource | None = None
    artifact_refresh_seconds: float = 30.0
    aggregations: list[Aggregation] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        if getattr(self, self.source) is None:
            raise ValueError(f"source: {self.source} needs a streaming.{self.source} section")
        names = [a.name for a in self.aggregations]
        if len(set(names)) != len(names):
            raise ValueError(f"aggregation names must be distinct: {names}")


def describe(stream: StreamingSpec, output: str | None = None) -> str:
    """One line saying what a local streaming run reads, when it stops, where it writes."""
    stops: list[str] = []
    if stream.source == "files":
        files = stream.files
        assert files is not None
        what = f"watching {files.path} every {files.poll_seconds:g} s"
        if files.max_files is not None:
            stops.append(f"{files.max_files} file{'s' if files.max_files > 1 else ''}")
        deadline = files.deadline_seconds
    else:
        sub = stream.pubsub
        assert sub is not None
        what = f"reading {sub.subscription or sub.topic}"
        if sub.max_messages is not None:
            stops.append(f"{sub.max_messages} message{'s' if sub.max_messages > 1 else ''}")
        if sub.idle_seconds is not None:
            stops.append(f"{sub.idle_seconds:g} s without a message")
        deadline = sub.deadline_seconds
    if deadline is not None:
        stops.append(f"{deadline:g} s")
    until = f"stops after {' or '.join(stops)}" if stops else "runs until interrupted"
    windows = ", ".join(a.name for a in stream.aggregations) or "no windows"
    return (
        f"{what}; {until}; rows, windows ({windows}) and errors to {output or stream.output.path}"
    )


__all__ = ["FilesSource", "PubsubSource", "StreamOutput", "StreamingSpec", "describe"]
