"""The ``streaming:`` section of a job spec, typed: where a stream comes from and goes to.

:class:`StreamingSpec` is parsed with the rest of the spec (:func:`beam_pipelines.spec.parse_spec`
builds it with :func:`transforms.core.config.from_mapping`), so ``beamforge validate`` refuses an
unknown key or a wrong type anywhere in the section, naming its YAML path, the value and what is
valid. Every number of the section's sources, output and refresh is range-checked there too,
at its key (``streaming.files.max_files: got
-1; expected an integer of at least 1``). When the spec declares ``source.schema``, the columns
the aggregations read are checked then as well (:func:`check_streaming_columns`, called by
``parse_spec``); otherwise when a run plans (:func:`check_aggregation_columns`, with the
artifact's columns). :func:`describe` says in one line what a local run of it does.

This module imports no pipeline code and not the spec module (which imports it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

from transforms.core.config import FieldError, SpecError, Within
from transforms.io.bigquery import BigQuerySink
from transforms.streaming.pubsub_messages import Decoding
from transforms.streaming.pubsub_pull import Limits
from transforms.streaming.windows import Aggregation

if TYPE_CHECKING:
    # Only for annotations: the spec module imports this one.
    from beam_pipelines.spec import JobSpec

# A count of files, messages or rows: at least one.
_COUNT = Within(1)


def _check_positive(section: object, keys: Sequence[str]) -> None:
    """Raises FieldError for the first of ``keys`` (durations in seconds) that is not > 0.

    Null (an optional bound left out) passes: it means "no bound". ``Within`` bounds are
    inclusive, so a strict bound is checked here.
    """
    for key in keys:
        value = getattr(section, key)
        if value is not None and value <= 0:
            raise FieldError(key, f"got {value:g}; expected a number greater than 0 (seconds)")


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
    max_files: Annotated[int, _COUNT] | None = None
    deadline_seconds: float | None = None
    event_time_field: str | None = None

    def validate(self) -> None:
        _check_positive(self, ("poll_seconds", "deadline_seconds"))


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
    batch_size: Annotated[int, _COUNT] = 500
    max_latency_seconds: float = 1.0
    dedupe_seconds: float = 600.0
    max_messages: Annotated[int, _COUNT] | None = None
    idle_seconds: float | None = None
    deadline_seconds: float | None = None

    def validate(self) -> None:
        _check_positive(
            self, ("max_latency_seconds", "dedupe_seconds", "idle_seconds", "deadline_seconds")
        )
        super().validate()
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
        _check_positive(self, ("artifact_refresh_seconds",))
        if getattr(self, self.source) is None:
            raise ValueError(f"source: {self.source} needs a streaming.{self.source} section")
        names = [a.name for a in self.aggregations]
        if len(set(names)) != len(names):
            raise ValueError(f"aggregation names must be distinct: {names}")


def check_aggregation_columns(stream: StreamingSpec, available: Sequence[str]) -> None:
    """Checks every column the aggregations read (keys, time column, metrics).

    Args:
        stream: The section.
        available: The columns of the rows aggregated: the source's and the artifact's
            output columns. Hidden columns (``__event_time``, set by the source) always are.

    Raises:
        SpecError: at the key naming an unknown column (``streaming.aggregations[0].keys[1]``,
            ``...time_column``, ``...metrics[2].column``), listing the available ones.
    """
    for i, agg in enumerate(stream.aggregations):
        where = f"streaming.aggregations[{i}]"
        refs = [(f"{where}.keys[{j}]", key) for j, key in enumerate(agg.keys)]
        refs.append((f"{where}.time_column", agg.time_column))
        refs += [
            (f"{where}.metrics[{j}].column", m.column)
            for j, m in enumerate(agg.metrics)
            if m.column is not None
        ]
        for path, col in refs:
            if not col.startswith("__") and col not in available:
                raise SpecError(
                    path, f"unknown column {col!r}; available columns are {', '.join(available)}"
                )


def check_streaming_columns(spec: JobSpec, after_steps: Sequence[str]) -> None:
    """What a run's plan checks, checked when a spec declaring ``source.schema`` is parsed.

    The artifact a batch run fits from this spec outputs ``spec.output_columns``; with a
    ``transform.preprocessing_fn`` those are known only once it is traced, so the check is
    left to the run.

    Args:
        spec: The spec, whose ``source.schema`` is given.
        after_steps: The columns present after every step (``check_columns``'s result).

    Raises:
        SpecError: as :func:`check_aggregation_columns` does.
    """
    if spec.streaming is None or spec.source.schema is None:
        return
    if spec.transform.preprocessing_fn is not None:
        return
    available = list(spec.source.schema)
    available += [c for c in spec.output_columns(list(after_steps)) if c not in available]
    check_aggregation_columns(spec.streaming, available)


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


__all__ = [
    "FilesSource",
    "PubsubSource",
    "StreamOutput",
    "StreamingSpec",
    "check_aggregation_columns",
    "check_streaming_columns",
    "describe",
]
