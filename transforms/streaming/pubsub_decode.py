"""The Beam transforms from Pub/Sub messages to record batches: de-duplicate, batch, decode.

:class:`DedupeMessages` drops repeated message ids (stateful, keyed by
:func:`~transforms.streaming.pubsub_messages.message_key`); :class:`DecodeMessages` groups
messages into small batches with bounded latency (``GroupIntoBatches``) and decodes them with
:func:`~transforms.streaming.pubsub_messages.decode_messages`; :class:`DecodeMessageLists`
decodes lists of messages that are batches already (the pulls of a local read).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration

from transforms.streaming.pubsub_messages import Decoding, Message, decode_messages, message_key

BATCHES = "batches"
ERRORS = "errors"

DUPLICATES_COUNTER = "duplicate_messages"
DUPLICATES = "duplicates"
MESSAGES = "messages"


_SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
_EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
_SEEN_PARAM = beam.DoFn.StateParam(_SEEN)
_EXPIRY_PARAM = beam.DoFn.TimerParam(_EXPIRY)


class _DedupeFn(beam.DoFn):
    """Passes the first message of each id; later ones, until the id expires, are dropped."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = Duration(seconds=ttl_seconds)
        self._duplicates = Metrics.counter("beamforge", DUPLICATES_COUNTER)

    def process(
        self,
        keyed: tuple[str, Message],
        timestamp: Any = beam.DoFn.TimestampParam,
        seen: Any = _SEEN_PARAM,
        expiry: Any = _EXPIRY_PARAM,
    ) -> Iterator[Any]:
        if seen.read():
            self._duplicates.inc()
            yield beam.pvalue.TaggedOutput(DUPLICATES, keyed[0])
            return
        seen.write(True)
        # An event-time timer bounds the state: an id is remembered for ttl after its
        # first message, which covers Pub/Sub's redelivery and publisher retries.
        expiry.set(timestamp + self._ttl)
        yield keyed[1]

    @on_timer(_EXPIRY)
    def expire(self, seen: Any = _SEEN_PARAM) -> None:
        seen.clear()


class DedupeMessages(beam.PTransform):
    """Drops messages whose id was seen in the last ``ttl_seconds`` of event time.

    Pub/Sub delivers at least once, and publishers retry: Dataflow de-duplicates by the
    reader's ``id_label``, local runners ignore it, so this stateful step (keyed by
    :func:`message_key`) does it everywhere. Duplicates are dropped on purpose and counted
    (``beamforge/duplicate_messages``).

    Input: ``PCollection[Message]``. Outputs (a tagged tuple): ``messages``, the first of
    each id; ``duplicates``, the id of every message dropped.
    """

    def __init__(self, *, id_attribute: str | None = None, ttl_seconds: float = 600.0) -> None:
        super().__init__()
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        self._id_attribute = id_attribute
        self._ttl = ttl_seconds

    def expand(self, messages: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        attribute = self._id_attribute
        return (
            messages
            | "ById"
            >> beam.Map(lambda m: (message_key(m, attribute), m)).with_output_types(tuple[str, Any])
            | "FirstOfEachId"
            >> beam.ParDo(_DedupeFn(self._ttl)).with_outputs(DUPLICATES, main=MESSAGES)
        )


class _DecodeDoFn(beam.DoFn):
    def __init__(
        self,
        decoding: Decoding,
        schema: pa.Schema,
        pipeline: str,
        allow_non_finite: Sequence[str] = (),
    ) -> None:
        self._decoding = decoding
        self._schema = schema
        self._pipeline = pipeline
        self._allow = list(allow_non_finite)

    def process(self, messages: Iterable[Message]) -> Iterator[Any]:
        batch, found = decode_messages(
            list(messages),
            self._decoding,
            self._schema,
            pipeline=self._pipeline,
            allow_non_finite=self._allow,
        )
        for error in found:
            yield beam.pvalue.TaggedOutput(ERRORS, error)
        if batch is not None and batch.num_rows:
            yield batch


class DecodeMessages(beam.PTransform):
    """Groups messages into small batches with bounded latency and decodes them.

    Input: ``PCollection[Message]`` (bounded or unbounded, any windowing). Messages are
    spread over ``shards`` keys and grouped by ``GroupIntoBatches`` (at most ``batch_size``
    messages, held at most ``max_latency_seconds``), then decoded by :func:`decode_messages`.

    Outputs (a tagged tuple): main ``batches`` (``pa.RecordBatch``), ``errors``
    (:class:`~transforms.core.errors.ErrorRecord`, step ``read``).
    """

    def __init__(
        self,
        *,
        decoding: Decoding,
        schema: pa.Schema,
        pipeline: str,
        batch_size: int = 500,
        max_latency_seconds: float = 1.0,
        shards: int = 4,
        allow_non_finite: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if batch_size < 1 or max_latency_seconds <= 0 or shards < 1:
            raise ValueError("batch_size and shards must be >= 1, max_latency_seconds > 0")
        decoding.validate()
        self._allow = list(allow_non_finite)
        self._decoding = decoding
        self._schema = schema
        self._pipeline = pipeline
        self._batch_size = batch_size
        self._latency = max_latency_seconds
        self._shards = shards

    def expand(self, messages: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        shards = self._shards
        return (
            messages
            | "Shard"
            >> beam.Map(lambda m: (random.randrange(shards), m)).with_output_types(tuple[int, Any])
            | "Batch"
            >> beam.GroupIntoBatches(self._batch_size, max_buffering_duration_secs=self._latency)
            | "Messages" >> beam.Values()
            | "Decode"
            >> DecodeMessageLists(
                decoding=self._decoding,
                schema=self._schema,
                pipeline=self._pipeline,
                allow_non_finite=self._allow,
            )
        )


class DecodeMessageLists(beam.PTransform):
    """Decodes lists of messages (each list one batch) with :func:`decode_messages`.

    Input: ``PCollection[Sequence[Message]]``, e.g. the pulls of a local Pub/Sub read.
    Outputs (a tagged tuple): main ``batches`` (``pa.RecordBatch``), ``errors``
    (:class:`~transforms.core.errors.ErrorRecord`, step ``read``).
    """

    def __init__(
        self,
        *,
        decoding: Decoding,
        schema: pa.Schema,
        pipeline: str,
        allow_non_finite: Sequence[str] = (),
    ) -> None:
        super().__init__()
        decoding.validate()
        self._fn = _DecodeDoFn(decoding, schema, pipeline, allow_non_finite)

    def expand(self, lists: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return lists | beam.ParDo(self._fn).with_outputs(ERRORS, main=BATCHES)


__all__ = [
    "BATCHES",
    "DUPLICATES",
    "DUPLICATES_COUNTER",
    "ERRORS",
    "MESSAGES",
    "DecodeMessageLists",
    "DecodeMessages",
    "DedupeMessages",
]
