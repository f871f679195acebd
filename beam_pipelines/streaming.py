"""The streaming pipeline: arriving files or Pub/Sub -> clean + features -> sinks.

``build(p, plan)`` wires it for a validated :class:`StreamingSpec` (the spec's
``streaming:`` section); ``run_streaming(spec, ...)`` runs it. The artifact fitted by a
batch run is applied by the same engine (:func:`transforms.core.engine.apply_steps`), reloaded
when a newer one is published; windowed aggregates are computed per key
(:mod:`transforms.streaming.windows`), with rows too late for their windows sent to the errors.

Output layout under ``streaming.output.path`` (local or gs://)::

    rows/part-*.{jsonl,parquet}          transformed rows (artifact output columns)
    aggregates/{name}/part-*.jsonl       one line per key, window and pane
    errors/part-*.jsonl                  every rejected, undecodable or late row
    counts/part-*.jsonl                  the ledger: [kind, step, reason, n] per bundle
    summary.json                         counts, written when a bounded local run ends

and, with ``streaming.output.bigquery``, the rows streamed into one BigQuery table.

Local runs (the streaming local runner, fed from a thread: :mod:`transforms.streaming.live_source`):
the folder is watched until ``max_files`` files or its deadline; Pub/Sub is pulled
(:mod:`transforms.streaming.pubsub_pull`) until ``max_messages``, ``idle_seconds`` or
``deadline_seconds``. Windows fire as the watermark moves; when the source stops it drains:
every window fires, and the run ends with everything written. On Dataflow the job keeps
running (the splittable file watcher, Beam's ``ReadFromPubSub``) until drained or cancelled.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

from beam_pipelines.spec import JobSpec
from transforms.beam.artifact_reload import ApplyLatestArtifact
from transforms.core.artifact import read_artifact
from transforms.core.config import SpecError, from_mapping
from transforms.core.engine import DROPPED, READ, REJECTED, WRITTEN
from transforms.core.errors import ErrorRecord
from transforms.core.manifest import (
    CountKey,
    CountsMismatchError,
    check_balance,
    nest_counts,
    sum_counts,
)
from transforms.core.schema import FILE_COLUMN, LINE_COLUMN, arrow_schema
from transforms.io.bigquery import (
    BigQuerySink,
    WriteToBigQuery,
    make_client,
    parse_table,
    prepare_table,
)
from transforms.io.read import resolve_schema
from transforms.io.write import conform, encode_jsonl
from transforms.ops.registry import build_step
from transforms.streaming.live_source import LiveSource
from transforms.streaming.pubsub_pull import (
    Limits,
    PullPubSub,
    create_subscription,
    delete_subscription,
)
from transforms.streaming.sources import (
    DecodeMessageLists,
    DecodeMessages,
    Decoding,
    DedupeMessages,
    ReadArrivingFiles,
    is_heartbeat,
    message_from_pubsub,
)
from transforms.streaming.windows import MISSED_WINDOWS, STEP_PREFIX, AggregateWindows, Aggregation


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


def streaming_spec(spec: JobSpec) -> StreamingSpec:
    """Validates the spec's ``streaming:`` section.

    Raises:
        SpecError: if it is missing or invalid (naming the YAML path).
    """
    raw = getattr(spec, "streaming", None)
    if raw is None:
        raw = spec.raw.get("streaming") if isinstance(spec.raw, Mapping) else None
    if raw is None:
        raise SpecError(
            "streaming", "a streaming run needs a 'streaming:' section", source=spec.origin
        )
    try:
        return from_mapping(StreamingSpec, raw, "streaming")
    except SpecError as exc:
        raise exc.located(spec.origin) from None


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


@dataclasses.dataclass
class StreamPlan:
    """Everything decided before a streaming job starts."""

    spec: JobSpec
    stream: StreamingSpec
    input_schema: pa.Schema
    output_columns: list[str]
    output_schema: pa.Schema
    started: float
    # Local Pub/Sub runs: the subscription read (one made for the run when given a topic).
    subscription: str | None = None
    # Local runs: the live source, which tells whether it ran to a limit.
    live: LiveSource | None = None


def plan(
    spec: JobSpec,
    *,
    artifact_dir: str | None = None,
    output: str | None = None,
    prepare_sinks: bool = True,
) -> StreamPlan:
    """Reads the artifact and checks the aggregations against its columns.

    Args:
        spec: The job spec, with its ``streaming:`` section.
        artifact_dir: Apply this artifact instead of ``streaming.artifact``.
        output: Write under this path instead of ``streaming.output.path``.
        prepare_sinks: Create or check the BigQuery table now (not in a dry run).
    """
    stream = streaming_spec(spec)
    if artifact_dir:
        stream = dataclasses.replace(stream, artifact=artifact_dir)
    if output:
        stream = dataclasses.replace(stream, output=dataclasses.replace(stream.output, path=output))
    artifact = read_artifact(stream.artifact, build_step)
    input_schema = arrow_schema(artifact.input_schema)
    if spec.source.schema is not None:
        input_schema = resolve_schema(spec.source, [])
    available = [*input_schema.names, *artifact.output_columns]
    for i, agg in enumerate(stream.aggregations):
        for col in agg.input_columns():
            if not col.startswith("__") and col not in available:
                raise SpecError(
                    f"streaming.aggregations[{i}]",
                    f"unknown column {col!r}; available columns are {', '.join(available)}",
                    source=spec.origin,
                )
    out_schema = arrow_schema(artifact.output_schema)
    output_schema = pa.schema([out_schema.field(c) for c in artifact.output_columns])
    sink = stream.output.bigquery
    if sink is not None and prepare_sinks:
        # As the batch pipeline does: create or check the table before the job starts.
        ref = parse_table(sink.table)
        try:
            prepare_table(make_client(ref.project), ref, sink, output_schema)
        except ValueError as exc:
            raise SpecError("streaming.output.bigquery", str(exc), source=spec.origin) from None
    return StreamPlan(
        spec=spec,
        stream=stream,
        input_schema=input_schema,
        output_columns=list(artifact.output_columns),
        output_schema=output_schema,
        started=time.time(),
    )


class _WriteBundleFiles(beam.DoFn):
    """Writes the elements of each bundle to one new file (windowed output on any runner).

    File names carry a hash of what the elements are (``identity``; their encoded content by
    default), so a retried bundle rewrites the same file while two bundles never share one:
    row batches are named by their rows' sources too, as two messages may carry equal rows.
    """

    def __init__(
        self,
        prefix: str,
        encode: Any,
        suffix: str,
        identity: Callable[[Sequence[Any]], bytes] | None = None,
    ) -> None:
        self._prefix = prefix
        self._encode = encode
        self._suffix = suffix
        self._identity = identity
        self._items: list[Any] = []

    def start_bundle(self) -> None:
        self._items = []

    def process(self, item: Any) -> None:
        self._items.append(item)

    def finish_bundle(self) -> None:
        if not self._items:
            return
        data: bytes = self._encode(self._items)
        name = data if self._identity is None else self._identity(self._items)
        digest = hashlib.sha256(name).hexdigest()[:24]
        path = f"{self._prefix}-{digest}{self._suffix}"
        with FileSystems.create(path) as f:
            f.write(data)
        self._items = []


def _batch_sources(batches: Sequence[pa.RecordBatch]) -> bytes:
    """What a bundle of row batches is: the sources (file and line, or message) of its rows.

    Batches without source columns are known by their whole content. Hashed from Arrow's
    serialization: no Python work per row.
    """
    digest = hashlib.sha256()
    for b in batches:
        names = [c for c in (FILE_COLUMN, LINE_COLUMN) if c in b.schema.names]
        part = b.select(names) if names else b
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_batch(part)
        digest.update(sink.getvalue())
    return digest.digest()


def _bundle_id(items: Sequence[Any]) -> bytes:
    # Counts carry no identity of their own: every bundle gets a file (see docs/streaming.md).
    return uuid.uuid4().bytes


def _jsonl_rows(rows: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(r, default=str, sort_keys=True) + "\n" for r in rows).encode()


def _jsonl_errors(records: Sequence[ErrorRecord]) -> bytes:
    return "".join(e.to_json() + "\n" for e in records).encode()


def _batches_encoder(schema: pa.Schema, fmt: str) -> Any:
    def encode(batches: Sequence[pa.RecordBatch]) -> bytes:
        conformed = [conform(b, schema) for b in batches]
        if fmt == "jsonl":
            return b"".join(encode_jsonl(b) for b in conformed)
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_batches(conformed, schema=schema), sink)
        return bytes(sink.getvalue().to_pybytes())

    return encode


def _read_source(
    p: beam.Pipeline, plan: StreamPlan
) -> tuple[beam.PCollection, beam.PCollection, list[beam.PCollection]]:
    """The source's record batches, read errors, and counts of what it dropped on purpose."""
    from beam_pipelines.runner import is_local

    stream, spec = plan.stream, plan.spec
    if stream.source == "files":
        files = stream.files
        assert files is not None
        deadline = None
        if files.deadline_seconds is not None:
            deadline = plan.started + files.deadline_seconds
        arriving = ReadArrivingFiles(
            source=spec.source,
            schema=plan.input_schema,
            pipeline=spec.name,
            pattern=files.path,
            poll_seconds=files.poll_seconds,
            max_files=files.max_files,
            deadline=deadline,
            event_time_field=files.event_time_field,
            # Locally the folder is watched from a thread feeding the streaming runner, so
            # windows fire as files arrive (see transforms.streaming.live_source).
            live=is_local(p.options),
        )
        plan.live = arriving.live
        read = p | "ReadArrivingFiles" >> arriving
        return read.batches, read.errors, []

    sub = stream.pubsub
    assert sub is not None
    if is_local(p.options):
        # Locally: a reader that ends (at a limit) and drains, so every window is written.
        # Each pull is one batch, de-duplicated by the reader, so nothing buffers rows
        # between the source and the windows (see transforms.streaming.pubsub_pull.pull_events).
        assert plan.subscription is not None
        pull = PullPubSub(
            subscription=plan.subscription,
            limits=sub.limits(plan.started),
            batch_size=sub.batch_size,
            id_attribute=sub.id_attribute,
            dedupe_seconds=sub.dedupe_seconds,
        )
        plan.live = pull.live
        pulled = p | "PullPubSub" >> pull
        repeats = pulled | "Repeats" >> beam.FlatMap(lambda e: e.duplicates)
        messages = pulled | "Messages" >> beam.Map(lambda e: e.messages)
        decoded = messages | "Decode" >> DecodeMessageLists(
            decoding=sub,
            schema=plan.input_schema,
            pipeline=spec.name,
            allow_non_finite=spec.source.allow_non_finite,
        )
    else:
        received = (
            p
            | "ReadPubSub"
            >> beam.io.ReadFromPubSub(
                subscription=sub.subscription,
                topic=sub.topic,
                with_attributes=True,
                # Dataflow de-duplicates by this attribute; Dedupe below catches what a
                # publisher sends twice with the same id across Dataflow's dedupe window.
                id_label=sub.id_attribute,
            )
            | "ToMessage" >> beam.Map(message_from_pubsub)
            | "DropHeartbeats" >> beam.Filter(lambda m: not is_heartbeat(m))
        )
        deduped = received | "Dedupe" >> DedupeMessages(
            id_attribute=sub.id_attribute, ttl_seconds=sub.dedupe_seconds
        )
        repeats = deduped.duplicates
        decoded = deduped.messages | "Decode" >> DecodeMessages(
            decoding=sub,
            schema=plan.input_schema,
            pipeline=spec.name,
            allow_non_finite=spec.source.allow_non_finite,
            batch_size=sub.batch_size,
            max_latency_seconds=sub.max_latency_seconds,
        )
    # A repeated message is read and dropped on purpose: in the ledger as such.
    duplicates = repeats | "CountDuplicates" >> beam.Map(
        lambda _: collections.Counter({(READ, "read", ""): 1, (DROPPED, "read", DUPLICATE): 1})
    )
    return decoded.batches, decoded.errors, [duplicates]


def build(p: beam.Pipeline, plan: StreamPlan) -> dict[str, beam.PCollection]:
    """Wires the streaming pipeline onto ``p``; returns the rows, aggregates and errors."""
    stream, name = plan.stream, plan.spec.name
    root = stream.output.path
    batches, read_errors, source_counts = _read_source(p, plan)
    applied = batches | "Apply" >> ApplyLatestArtifact(
        directory=stream.artifact, pipeline=name, refresh_seconds=stream.artifact_refresh_seconds
    )
    errors = [read_errors, applied.errors]
    # The ledger: every record read is written, rejected or dropped, and every row written
    # is aggregated or rejected by each aggregation (counts/, checked when a local run ends).
    counts = [
        *source_counts,
        batches | "CountRead" >> beam.Map(lambda b: collections.Counter({_READ: b.num_rows})),
        read_errors | "CountReadErrors" >> beam.Map(_read_error_counts),
        applied.counts,
        applied.batches
        | "CountWritten" >> beam.Map(lambda b: collections.Counter({_WRITTEN: b.num_rows})),
    ]
    suffix = ".jsonl" if stream.output.format == "jsonl" else ".parquet"
    applied.batches | "WriteRows" >> beam.ParDo(
        _WriteBundleFiles(
            FileSystems.join(root, "rows", "part"),
            _batches_encoder(plan.output_schema, stream.output.format),
            suffix,
            identity=_batch_sources,
        )
    )
    if stream.output.topic:
        (
            applied.batches
            | "RowsJson"
            >> beam.FlatMap(
                lambda b, s=plan.output_schema: encode_jsonl(conform(b, s)).splitlines()
            )
            | "PublishRows" >> beam.io.WriteToPubSub(stream.output.topic)
        )
    if stream.output.bigquery is not None:
        written = applied.batches | "WriteBigQuery" >> WriteToBigQuery(
            table=stream.output.bigquery.table,
            schema=plan.output_schema,
            method="STREAMING_INSERTS",
            pipeline=name,
            step=BIGQUERY_STEP,
        )
        errors.append(written.errors)
    aggregates = {}
    for agg in stream.aggregations:
        out = applied.batches | f"Aggregate_{agg.name}" >> AggregateWindows(
            aggregation=agg, pipeline=name
        )
        out.rows | f"WriteAggregates_{agg.name}" >> beam.ParDo(
            _WriteBundleFiles(
                FileSystems.join(root, "aggregates", agg.name, "part"), _jsonl_rows, ".jsonl"
            )
        )
        errors.append(out.errors)
        counts.append(out.counts)
        aggregates[agg.name] = out.rows
    all_errors = errors | "AllErrors" >> beam.Flatten()
    all_errors | "WriteErrors" >> beam.ParDo(
        _WriteBundleFiles(FileSystems.join(root, "errors", "part"), _jsonl_errors, ".jsonl")
    )
    if stream.output.errors_topic:
        (
            all_errors
            | "ErrorsJson" >> beam.Map(lambda e: e.to_json().encode("utf-8"))
            | "PublishErrors" >> beam.io.WriteToPubSub(stream.output.errors_topic)
        )
    all_counts = counts | "AllCounts" >> beam.Flatten()
    all_counts | "WriteCounts" >> beam.ParDo(
        _WriteBundleFiles(
            FileSystems.join(root, "counts", "part"), _jsonl_counts, ".jsonl", identity=_bundle_id
        )
    )
    return {"rows": applied.batches, "errors": all_errors, "counts": all_counts, **aggregates}


_READ: CountKey = (READ, "read", "")
BIGQUERY_STEP = "bigquery"
_WRITTEN: CountKey = (WRITTEN, "rows", "")
DUPLICATE = "duplicate_message"


def _read_error_counts(error: ErrorRecord) -> collections.Counter[CountKey]:
    return collections.Counter({_READ: 1, (REJECTED, error.step, error.reason): 1})


def _jsonl_counts(counters: Sequence[Mapping[CountKey, int]]) -> bytes:
    # One line per bundle: its counters summed, as [kind, step, reason, n].
    total = sum_counts(counters)
    return (json.dumps([[*key, n] for key, n in sorted(total.items()) if n]) + "\n").encode()


def _lines(pattern: str) -> list[str]:
    (result,) = FileSystems.match([pattern])
    out: list[str] = []
    for m in sorted(result.metadata_list, key=lambda m: m.path):
        with FileSystems.open(m.path) as f:
            out += [line for line in f.read().decode("utf-8").splitlines() if line]
    return out


def _count_lines(pattern: str) -> int:
    # The row files hold one JSON object per line, each line ending in a newline.
    (result,) = FileSystems.match([pattern])
    total = 0
    for m in result.metadata_list:
        with FileSystems.open(m.path) as f:
            total += f.read().count(b"\n")
    return total


def _ledger(root: str) -> collections.Counter[CountKey]:
    total: collections.Counter[CountKey] = collections.Counter()
    for line in _lines(FileSystems.join(root, "counts", "*.jsonl")):
        for kind, step, reason, n in json.loads(line):
            total[(kind, step, reason)] += n
    return total


def summarize(root: str, fmt: str = "jsonl") -> dict[str, Any]:
    """Counts what a run wrote, and checks that every record is accounted for.

    Returns:
        ``rows_written``, ``rows_rejected``, ``errors`` (by step and reason) and
        ``aggregate_rows`` (per table) counted in the files; ``counts`` (the ledger: read,
        written, rejected and dropped by step and reason) and ``aggregations`` (rows each
        aggregation took in, aggregated and rejected); ``balanced`` and the ``problems``
        found when it is not.
    """
    if fmt == "jsonl":
        rows = _count_lines(FileSystems.join(root, "rows", "*.jsonl"))
    else:
        (result,) = FileSystems.match([FileSystems.join(root, "rows", "*.parquet")])
        rows = 0
        for m in result.metadata_list:
            with FileSystems.open(m.path) as f:
                rows += pq.read_metadata(f).num_rows
    by_reason: dict[str, dict[str, int]] = {}
    for line in _lines(FileSystems.join(root, "errors", "*.jsonl")):
        e = json.loads(line)
        by_reason.setdefault(e["step"], {}).setdefault(e["reason"], 0)
        by_reason[e["step"]][e["reason"]] += 1
    tables: dict[str, int] = {}
    (result,) = FileSystems.match([FileSystems.join(root, "aggregates", "*", "*.jsonl")])
    for m in result.metadata_list:
        table = m.path.rstrip("/").split("/")[-2]
        with FileSystems.open(m.path) as f:
            tables[table] = tables.get(table, 0) + len(f.read().splitlines())
    rejected = sum(
        n for step, r in by_reason.items() if not step.startswith(STEP_PREFIX) for n in r.values()
    )
    ledger = _ledger(root)
    windows = {k: n for k, n in ledger.items() if k[1].startswith(STEP_PREFIX)}
    nested = nest_counts({k: n for k, n in ledger.items() if k not in windows})
    aggregations: dict[str, dict[str, Any]] = {}
    for (kind, step, reason), n in sorted(windows.items()):
        agg = aggregations.setdefault(
            step[len(STEP_PREFIX) :], {"aggregated": 0, "rejected": {}, MISSED_WINDOWS: 0}
        )
        if kind == REJECTED:
            agg["rejected"][reason] = agg["rejected"].get(reason, 0) + n
        else:
            agg[kind] += n
    for agg in aggregations.values():
        agg["rows_in"] = agg["aggregated"] + sum(agg["rejected"].values())
    summary = {
        "rows_written": rows,
        "rows_rejected": rejected,
        "errors": by_reason,
        "aggregate_rows": tables,
        "counts": nested,
        "aggregations": aggregations,
    }
    problems = balance_problems(summary)
    summary["balanced"] = not problems
    summary["problems"] = problems
    return summary


def balance_problems(summary: Mapping[str, Any]) -> list[str]:
    """What does not add up in a :func:`summarize` result (empty when everything does).

    Every record read is written, rejected or dropped; the ledger's written rows are the
    rows in the files; every aggregation took in every written row; every rejection has its
    error record (rows BigQuery rejects are error records only: they were written to the
    files first).
    """
    nested = summary["counts"]
    problems = []
    try:
        check_balance(nested)
    except CountsMismatchError as exc:
        problems.append(str(exc))
    if nested["total_written"] != summary["rows_written"]:
        problems.append(
            f"{nested['total_written']} rows were written but the row files hold "
            f"{summary['rows_written']}"
        )
    for name, agg in sorted(summary["aggregations"].items()):
        if agg["rows_in"] != nested["total_written"]:
            problems.append(
                f"aggregation {name!r} took in {agg['rows_in']} rows (aggregated "
                f"{agg['aggregated']}, rejected {agg['rejected']}) of "
                f"{nested['total_written']} written"
            )
    expected = {
        (step, reason): n for step, r in nested["rejected"].items() for reason, n in r.items()
    }
    expected.update(
        ((STEP_PREFIX + name, reason), n)
        for name, agg in summary["aggregations"].items()
        for reason, n in agg["rejected"].items()
    )
    found = {
        (step, reason): n
        for step, r in summary["errors"].items()
        if step != BIGQUERY_STEP
        for reason, n in r.items()
    }
    if {k: n for k, n in expected.items() if n} != found:
        problems.append(f"rejections counted {expected} but error records {found}")
    return problems


def run_streaming(
    spec: JobSpec,
    *,
    artifact_dir: str | None = None,
    output: str | None = None,
    beam_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Plans, builds and runs a streaming job; on the local runner waits until it is bounded.

    Returns:
        The summary of what was written (also written as ``summary.json``), or ``{}`` when
        the job was submitted to a remote runner.
    """
    from beam_pipelines.runner import is_local, make_options, make_pipeline

    the_plan = plan(spec, artifact_dir=artifact_dir, output=output)
    sub = the_plan.stream.pubsub if the_plan.stream.source == "pubsub" else None
    options = make_options(beam_args)
    local = is_local(options)
    # Locally both sources run in a thread feeding the streaming local runner.
    options.view_as(StandardOptions).streaming = True
    p = make_pipeline(options)
    made = None
    if local and sub is not None:
        if sub.subscription is None:
            assert sub.topic is not None
            made = create_subscription(sub.topic)
        the_plan.subscription = sub.subscription or made
    try:
        build(p, the_plan)
        result = p.run()
        if not local:
            return {}
        # Local sources end at their limits and drain: every window fires before this returns.
        result.wait_until_finish()
        if the_plan.live is not None:
            the_plan.live.check_completed()
    finally:
        if made is not None:
            delete_subscription(made)
    summary = summarize(the_plan.stream.output.path, the_plan.stream.output.format)
    summary["pipeline"] = spec.name
    summary["run_id"] = uuid.uuid4().hex
    with FileSystems.create(FileSystems.join(the_plan.stream.output.path, "summary.json")) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    if not summary["balanced"]:
        raise CountsMismatchError(
            "the streaming run's counts do not balance: " + "; ".join(summary["problems"])
        )
    return summary


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: ``python -m beam_pipelines.streaming SPEC [--artifact DIR] [--output DIR]``."""
    import argparse

    from beam_pipelines.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--artifact")
    parser.add_argument("--output")
    args, beam_args = parser.parse_known_args(argv)
    return run_streaming(
        load_spec(args.spec), artifact_dir=args.artifact, output=args.output, beam_args=beam_args
    )


if __name__ == "__main__":
    run()
