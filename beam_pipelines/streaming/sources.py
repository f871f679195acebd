"""The stream a job reads: arriving files, or Pub/Sub (pulled locally, Beam's source on Dataflow).

:func:`read_stream` applies the source of a :class:`~beam_pipelines.streaming.stream_plan.StreamPlan`
to a pipeline and returns its record batches, its read errors, and the counts of what it
dropped on purpose (repeated messages). Locally both sources run in a thread feeding the
streaming local runner (:mod:`transforms.streaming.threaded_source`) and end by draining; on
Dataflow the folder is watched by a splittable DoFn and Pub/Sub is read by Beam's
``ReadFromPubSub``.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from beam_pipelines.runner import is_local
from beam_pipelines.streaming.ledger import duplicate_counts
from beam_pipelines.streaming.settings import PubsubSource
from beam_pipelines.streaming.stream_plan import StreamPlan
from transforms.streaming.file_arrival import ReadArrivingFiles
from transforms.streaming.pubsub_decode import DecodeMessageLists, DecodeMessages, DedupeMessages
from transforms.streaming.pubsub_messages import is_heartbeat, message_from_pubsub
from transforms.streaming.pubsub_pull import PullPubSub


@dataclasses.dataclass(frozen=True)
class StreamRead:
    """What a source gives the pipeline.

    Attributes:
        batches: ``pa.RecordBatch`` elements with the spec's columns and the hidden ones.
        errors: An :class:`~transforms.core.errors.ErrorRecord` per record not read.
        counts: Counters of what the source read and dropped on purpose.
    """

    batches: beam.PCollection
    errors: beam.PCollection
    counts: list[beam.PCollection]


class ReadMessages(beam.PTransform):
    """Beam's Pub/Sub source (Dataflow's own), as :class:`Message` elements, heartbeats dropped.

    Applied to a pipeline root. Output: ``PCollection[Message]`` (unbounded).
    """

    def __init__(self, source: PubsubSource) -> None:
        super().__init__()
        self._source = source

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        sub = self._source
        return (
            pbegin
            | "Read"
            >> beam.io.ReadFromPubSub(
                subscription=sub.subscription,
                topic=sub.topic,
                with_attributes=True,
                # Dataflow de-duplicates by this attribute; Dedupe after it catches what a
                # publisher sends twice with the same id across Dataflow's dedupe window.
                id_label=sub.id_attribute,
            )
            | "ToMessage" >> beam.Map(message_from_pubsub)
            | "DropHeartbeats" >> beam.Filter(lambda m: not is_heartbeat(m))
        )


def read_stream(p: beam.Pipeline, plan: StreamPlan) -> StreamRead:
    """Applies the plan's source to ``p`` (sets ``plan.live`` for local runs)."""
    if plan.stream.source == "files":
        return _read_files(p, plan)
    if is_local(p.options):
        return _pull_pubsub(p, plan)
    return _read_pubsub(p, plan)


def _read_files(p: beam.Pipeline, plan: StreamPlan) -> StreamRead:
    files, spec = plan.stream.files, plan.spec
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
        # windows fire as files arrive (see transforms.streaming.threaded_source).
        live=is_local(p.options),
    )
    plan.live = arriving.live
    read = p | "ReadArrivingFiles" >> arriving
    return StreamRead(read.batches, read.errors, [])


def _pull_pubsub(p: beam.Pipeline, plan: StreamPlan) -> StreamRead:
    # Locally: a reader that ends (at a limit) and drains, so every window is written.
    # Each pull is one batch, de-duplicated by the reader, so nothing buffers rows
    # between the source and the windows (see transforms.streaming.pubsub_pull.pull_events).
    sub, spec = plan.stream.pubsub, plan.spec
    assert sub is not None and plan.subscription is not None
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
    decoded = (
        pulled
        | "Messages" >> beam.Map(lambda e: e.messages)
        | "Decode"
        >> DecodeMessageLists(
            decoding=sub,
            schema=plan.input_schema,
            pipeline=spec.name,
            allow_non_finite=spec.source.allow_non_finite,
        )
    )
    return StreamRead(decoded.batches, decoded.errors, [_count_duplicates(repeats)])


def _read_pubsub(p: beam.Pipeline, plan: StreamPlan) -> StreamRead:
    sub, spec = plan.stream.pubsub, plan.spec
    assert sub is not None
    deduped = (
        p
        | "ReadPubSub" >> ReadMessages(sub)
        | "Dedupe" >> DedupeMessages(id_attribute=sub.id_attribute, ttl_seconds=sub.dedupe_seconds)
    )
    decoded = deduped.messages | "Decode" >> DecodeMessages(
        decoding=sub,
        schema=plan.input_schema,
        pipeline=spec.name,
        allow_non_finite=spec.source.allow_non_finite,
        batch_size=sub.batch_size,
        max_latency_seconds=sub.max_latency_seconds,
    )
    return StreamRead(decoded.batches, decoded.errors, [_count_duplicates(deduped.duplicates)])


def _count_duplicates(repeats: beam.PCollection) -> beam.PCollection:
    # A repeated message is read and dropped on purpose: in the ledger as such.
    return repeats | "CountDuplicates" >> beam.Map(duplicate_counts)


__all__ = ["ReadMessages", "StreamRead", "read_stream"]
