"""Streaming sources: files arriving in a folder, and Pub/Sub messages, as record batches.

Both emit ``pa.RecordBatch`` elements with the spec's columns plus the hidden columns
``__file`` (a path, or a message id), ``__line`` (files only) and ``__event_time``
(timestamp), so the batch pipeline's steps (:func:`transforms.core.engine.apply_steps`) run on
them unchanged, and the same :class:`~transforms.core.errors.ErrorRecord` shape carries every
record that cannot be decoded.

File arrival
    :class:`WatchFiles` polls a glob (local or ``gs://``) from a splittable DoFn whose
    restriction is the set of paths already emitted, so each file is emitted exactly once
    whatever the runner does with checkpoints (Beam 2.77's ``fileio.MatchContinuously``
    re-emits or loses files on the local runners). It stops after ``max_files`` files or at
    a deadline, for bounded local runs. :class:`ReadArrivingFiles` reads each new file with
    :func:`transforms.io.read.read_file`, exactly as the batch pipeline does.

Pub/Sub
    :func:`decode_messages` is the pure decoder of a list of messages (JSON object, one CSV
    line, or an Avro container per message) into one batch; :class:`DecodeMessages` groups
    messages into small batches with bounded latency (``GroupIntoBatches``) and decodes them.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import BooleanCoder, PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.core import errors as error_codes
from transforms.core import schema as schema_lib
from transforms.core import values as values_lib
from transforms.core.errors import ErrorRecord, row_payload
from transforms.io.read import Source, read_file
from transforms.streaming.live_source import LiveSource
from transforms.streaming.windows import EVENT_TIME_COLUMN, NO_TIME, event_times_us

PayloadFormat = Literal["json", "csv", "avro"]
BAD_EVENT_TIME = "bad_event_time"
BATCHES = "batches"
ERRORS = "errors"
_US = 1_000_000


# ---------------------------------------------------------------------------------------
# Event times.


def parse_event_time(value: Any) -> int | None:
    """Microseconds since the epoch from an attribute or field value, or None if unusable.

    Accepts what Beam's ``timestamp_attribute`` accepts (milliseconds since the epoch as a
    number or digit string, or an RFC 3339 string), datetimes, and numbers of seconds when
    they are floats (``1.5e9``).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return round(value.timestamp() * _US)
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, float):
        return round(value * _US) if np.isfinite(value) else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text) * 1000
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parse_event_time(parsed)
    return None


def with_event_time(batch: pa.RecordBatch, times_us: Sequence[int] | np.ndarray) -> pa.RecordBatch:
    """Appends (or replaces) the hidden ``__event_time`` column."""
    column = pa.array(np.asarray(times_us, dtype=np.int64), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    names = batch.schema.names
    if EVENT_TIME_COLUMN in names:
        batch = batch.drop_columns([EVENT_TIME_COLUMN])
    return batch.append_column(EVENT_TIME_COLUMN, column)


# ---------------------------------------------------------------------------------------
# Messages.


@dataclasses.dataclass(frozen=True)
class Message:
    """One Pub/Sub message, as the decoder needs it.

    Attributes:
        data: The payload.
        attributes: Message attributes.
        message_id: Pub/Sub's id (or the id attribute's value).
        publish_time_us: Publish time, microseconds since the epoch.
    """

    data: bytes
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    message_id: str = ""
    publish_time_us: int = 0


@dataclasses.dataclass
class Decoding:
    """How messages are decoded (the spec's ``streaming.pubsub``).

    Attributes:
        format: ``json`` (one object), ``csv`` (one line, columns in ``column_names`` or
            schema order) or ``avro`` (an Avro container holding records).
        event_time_attribute: Attribute holding the event time.
        event_time_field: Column holding the event time (when no attribute is given).
            Without either, the publish time is the event time.
        attributes: Attributes kept as string columns (same names).
        id_attribute: Attribute holding a unique id used for error sources and
            de-duplication; the Pub/Sub message id otherwise.
        column_names: CSV column order (default: the schema's order).
    """

    format: PayloadFormat = "json"
    event_time_attribute: str | None = None
    event_time_field: str | None = None
    attributes: list[str] = dataclasses.field(default_factory=list)
    id_attribute: str | None = None
    column_names: list[str] | None = None

    def validate(self) -> None:
        if self.event_time_attribute and self.event_time_field:
            raise ValueError("give event_time_attribute or event_time_field, not both")


def _decode_one(data: bytes, decoding: Decoding, names: Sequence[str]) -> list[dict[str, Any]]:
    if decoding.format == "json":
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        return [record]
    if decoding.format == "csv":
        text = data.decode("utf-8").rstrip("\r\n")
        rows = list(csv.reader(io.StringIO(text)))
        if len(rows) != 1:
            raise ValueError(f"expected one CSV line, got {len(rows)}")
        columns = decoding.column_names or list(names)
        if len(rows[0]) != len(columns):
            raise ValueError(f"expected {len(columns)} fields, got {len(rows[0])}")
        return [dict(zip(columns, rows[0], strict=True))]
    import fastavro

    records = list(fastavro.reader(io.BytesIO(data)))
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("expected Avro records")
    return records  # type: ignore[return-value]


def decode_messages(
    messages: Sequence[Message],
    decoding: Decoding,
    schema: pa.Schema,
    *,
    pipeline: str,
    allow_non_finite: Sequence[str] = (),
) -> tuple[pa.RecordBatch | None, list[ErrorRecord]]:
    """Decodes messages into one record batch plus an error record per bad message.

    Values are accepted by the readers' one rule (:mod:`transforms.core.values`): CSV values by
    the text grammar (empty is null), JSON and Avro values as the JSONL and Avro readers
    take them (JSON strings holding a number are read as text, as serving does); NaN and
    infinities are rejected as ``non_finite`` outside ``allow_non_finite``. A row means the
    same in batch, streaming and serving.

    Returns:
        A batch with the schema's columns, the kept attributes, ``__file`` (the message id)
        and ``__event_time``, or None if no message decoded; and the errors (step ``read``,
        source: the message id).
    """
    target = schema_lib.visible(schema)
    names = target.names
    found: list[ErrorRecord] = []
    rows: list[dict[str, Any]] = []
    ids: list[str] = []
    times: list[int] = []
    payloads: list[str] = []

    def reject(message: Message, ident: str, reason: str, text: str) -> None:
        found.append(
            ErrorRecord(
                pipeline=pipeline,
                step="read",
                reason=reason,
                message=text,
                payload=message.data.decode("utf-8", errors="replace")
                if decoding.format != "avro"
                else row_payload({"base64": _b64(message.data)}),
                source=ident,
                event_time=_iso(message.publish_time_us) if message.publish_time_us else None,
            )
        )

    for message in messages:
        ident = message.message_id
        if decoding.id_attribute:
            ident = message.attributes.get(decoding.id_attribute, ident)
        try:
            records = _decode_one(message.data, decoding, names)
        except (ValueError, UnicodeDecodeError, csv.Error, EOFError) as exc:
            reason = (
                error_codes.BAD_ENCODING
                if isinstance(exc, UnicodeDecodeError)
                else error_codes.MALFORMED_RECORD
            )
            reject(message, ident, reason, f"cannot decode {decoding.format} payload: {exc}")
            continue
        for record in records:
            when: int | None
            if decoding.event_time_attribute:
                when = parse_event_time(message.attributes.get(decoding.event_time_attribute))
            elif decoding.event_time_field:
                when = parse_event_time(record.get(decoding.event_time_field))
            else:
                when = message.publish_time_us
            if when is None:
                where = decoding.event_time_attribute or decoding.event_time_field
                reject(message, ident, BAD_EVENT_TIME, f"no usable event time in {where!r}")
                continue
            for name in decoding.attributes:
                record = {**record, name: message.attributes.get(name)}
            rows.append(record)
            ids.append(ident)
            times.append(when)
            payloads.append(row_payload(record))
    if not rows:
        return None, found
    batch, bad = _to_batch(rows, target, decoding, allow_non_finite)
    for i in [k for k, problem in enumerate(bad) if problem]:
        reason, text = bad[i] or ("", "")
        found.append(
            ErrorRecord(
                pipeline=pipeline,
                step="read",
                reason=reason,
                message=text,
                payload=payloads[i],
                source=ids[i],
                event_time=_iso(times[i]),
            )
        )
    keep = np.asarray([not b for b in bad])
    if not keep.any():
        return None, found
    extra = [pa.array([r.get(n) for r in rows], pa.string()) for n in decoding.attributes]
    columns = [*batch.columns, *extra, pa.array(ids, pa.string())]
    fields = [*target, *(pa.field(n, pa.string()) for n in decoding.attributes)]
    fields.append(pa.field(schema_lib.FILE_COLUMN, pa.string()))
    full = pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))
    full = with_event_time(full, times)
    return full.filter(pa.array(keep)), found


def _to_batch(
    rows: Sequence[Mapping[str, Any]],
    target: pa.Schema,
    decoding: Decoding,
    allow_non_finite: Sequence[str],
) -> tuple[pa.RecordBatch, list[tuple[str, str] | None]]:
    """Columns of ``target`` from row dicts; per row None, or its reason and message."""
    problems: list[list[tuple[str, values_lib.Rejection]]] = [[] for _ in rows]
    arrays = []
    for field in target:
        column = [r.get(field.name) for r in rows]
        allow = field.name in allow_non_finite
        if decoding.format == "csv":
            # Empty fields are null, as the CSV reader's default null_values say.
            strings = pa.array([None if v == "" else v for v in column], pa.string())
            converted = values_lib.parse_strings(strings, field.type, allow_non_finite=allow)
        else:
            converted = values_lib.convert_values(
                column,
                field.type,
                allow_non_finite=allow,
                strings_as_text=decoding.format == "json",
            )
        for i, rejection in converted.rejected.items():
            problems[i].append((field.name, rejection))
        arrays.append(converted.array)
    described = [values_lib.describe(p) if p else None for p in problems]
    return pa.RecordBatch.from_arrays(arrays, schema=target), described


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def message_from_pubsub(message: Any) -> Message:
    """A :class:`Message` from Beam's ``PubsubMessage`` (read ``with_attributes=True``)."""
    publish = getattr(message, "publish_time", None)
    publish_us = 0
    if publish is not None:
        publish_us = parse_event_time(publish) or 0
    return Message(
        data=message.data or b"",
        attributes=dict(message.attributes or {}),
        message_id=getattr(message, "message_id", None) or "",
        publish_time_us=publish_us or round(time.time() * _US),
    )


HEARTBEAT_ATTRIBUTE = "heartbeat"


def is_heartbeat(message: Message) -> bool:
    """True for a keep-alive message (attribute ``heartbeat=1``), which carries no row.

    Publishers of quiet topics send them so that local runs, whose Pub/Sub reader blocks
    on an idle subscription, keep moving; they are dropped before decoding.
    """
    return message.attributes.get(HEARTBEAT_ATTRIBUTE) == "1"


DUPLICATES_COUNTER = "duplicate_messages"
DUPLICATES = "duplicates"
MESSAGES = "messages"


def message_key(message: Message, id_attribute: str | None) -> str:
    """The id a message is de-duplicated by: the id attribute's value, else Pub/Sub's id."""
    if id_attribute:
        return message.attributes.get(id_attribute) or message.message_id
    return message.message_id


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


# ---------------------------------------------------------------------------------------
# File arrival.


@dataclasses.dataclass(frozen=True)
class _Seen:
    """The watch restriction: paths already emitted; ``stopped`` ends this piece of work."""

    paths: frozenset[str]
    stopped: bool = False


_STOP = "\x00stop"


class _SeenTracker(RestrictionTracker):
    """Claims paths; a checkpoint hands the same seen-set on to the residual."""

    def __init__(self, restriction: _Seen) -> None:
        self._paths = set(restriction.paths)
        self._stopped = restriction.stopped
        self._done = restriction.stopped

    def current_restriction(self) -> _Seen:
        return _Seen(frozenset(self._paths), self._stopped)

    def try_claim(self, position: str) -> bool:
        if self._stopped:
            return False
        if position == _STOP:
            self._stopped = True
            self._done = True
            return True
        self._paths.add(position)
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[_Seen, _Seen] | None:
        if self._stopped:
            return None
        self._stopped = True
        seen = frozenset(self._paths)
        return _Seen(seen, True), _Seen(seen, False)

    def check_done(self) -> None:
        return None

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(completed=len(self._paths), remaining=0 if self._done else 1)

    def is_bounded(self) -> bool:
        return False


class _SeenProvider(RestrictionProvider):
    def initial_restriction(self, element: Any) -> _Seen:
        return _Seen(frozenset())

    def create_tracker(self, restriction: _Seen) -> _SeenTracker:
        return _SeenTracker(restriction)

    def restriction_size(self, element: Any, restriction: _Seen) -> int:
        return 1

    def split(self, element: Any, restriction: _Seen) -> Iterator[_Seen]:
        yield restriction

    def restriction_coder(self) -> PickleCoder:
        return PickleCoder()


def new_files(pattern: str, seen: Iterable[str]) -> list[str]:
    """Files matching ``pattern`` not in ``seen``, oldest first (then by name)."""
    (result,) = FileSystems.match([pattern])
    known = set(seen)
    found = [m for m in result.metadata_list if m.path not in known]
    return [m.path for m in sorted(found, key=lambda m: (m.last_updated_in_seconds, m.path))]


_TRACKER_PARAM = beam.DoFn.RestrictionParam(_SeenProvider())
_WATERMARK_PARAM = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class _WatchFn(beam.DoFn):
    def __init__(self, poll_seconds: float, max_files: int | None, deadline: float | None) -> None:
        self._poll = poll_seconds
        self._max_files = max_files
        self._deadline = deadline

    def process(
        self,
        pattern: str,
        tracker: Any = _TRACKER_PARAM,
        watermark: Any = _WATERMARK_PARAM,
    ) -> Iterator[TimestampedValue]:
        seen = tracker.current_restriction().paths
        count = len(seen)
        for path in new_files(pattern, seen):
            if self._max_files is not None and count >= self._max_files:
                break
            if not tracker.try_claim(path):
                return
            count += 1
            now = Timestamp.now()
            watermark.set_watermark(now)
            yield TimestampedValue(path, now)
        full = self._max_files is not None and count >= self._max_files
        late = self._deadline is not None and time.time() >= self._deadline
        if full or late:
            tracker.try_claim(_STOP)
            return
        tracker.defer_remainder(Duration(seconds=self._poll))


@dataclasses.dataclass(frozen=True)
class Found:
    """A file found by :func:`watch_events`, at ``timestamp_us`` (the time it was found)."""

    path: str
    timestamp_us: int


def watch_events(
    pattern: str,
    *,
    poll_seconds: float = 1.0,
    max_files: int | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Any]:
    """The events of a folder watched until a limit, for a :class:`~transforms.streaming.live_source.LiveSource`.

    Each listing yields a :class:`Found` per new file (oldest first, each file once), the
    watermark at the time of the listing (files are timestamped with the time they were
    found, as :class:`WatchFiles` does), and the processing time. After ``max_files`` files
    or at ``deadline`` (a Unix time) it drains; without either it runs until the job is
    cancelled.
    """
    from transforms.streaming.live_source import Now, Watermark, drain

    seen: set[str] = set()
    while True:
        now = clock()
        for path in new_files(pattern, seen):
            if max_files is not None and len(seen) >= max_files:
                break
            seen.add(path)
            yield Found(path, round(now * _US))
        yield Watermark(round(now * _US))
        yield Now(round(now * _US))
        full = max_files is not None and len(seen) >= max_files
        if full or (deadline is not None and now >= deadline):
            yield drain()
            return
        sleep(poll_seconds)


class WatchFiles(beam.PTransform):
    """Emits each file matching a glob once, as it appears; polls until a limit is reached.

    Applied to a pipeline root. Output: ``PCollection[str]`` of paths (unbounded),
    timestamped with the time they were found. Stops after ``max_files`` files or when
    ``deadline`` (a Unix time) passes; without either it runs until cancelled.
    """

    def __init__(
        self,
        *,
        pattern: str,
        poll_seconds: float = 1.0,
        max_files: int | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        if not pattern:
            raise ValueError("pattern must be a glob, e.g. incoming/*.csv or gs://b/in/*.csv")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        if max_files is not None and max_files < 1:
            raise ValueError(f"max_files must be >= 1, got {max_files}")
        self._pattern = pattern
        self._poll = poll_seconds
        self._max_files = max_files
        self._deadline = deadline

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Watch" >> beam.ParDo(_WatchFn(self._poll, self._max_files, self._deadline))
        )


class _ReadArrivedFn(beam.DoFn):
    def __init__(
        self, source: Source, schema: pa.Schema, pipeline: str, event_time_field: str | None
    ) -> None:
        self._source = source
        self._schema = schema
        self._pipeline = pipeline
        self._field = event_time_field

    def process(self, path: str, arrived: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
        arrival_us = int(arrived.micros)
        for batch, found in read_file(path, self._source, self._schema, pipeline=self._pipeline):
            for error in found:
                yield beam.pvalue.TaggedOutput(ERRORS, error)
            if batch is None or not batch.num_rows:
                continue
            if self._field is None:
                times = np.full(batch.num_rows, arrival_us, dtype=np.int64)
                yield with_event_time(batch, times)
                continue
            times = event_times_us(batch.column(self._field))
            missing = times == NO_TIME
            yield with_event_time(batch, np.where(missing, arrival_us, times))


class ReadArrivingFiles(beam.PTransform):
    """Reads files as they arrive in a folder (local or ``gs://``) into record batches.

    Applied to a pipeline root. Each file is read once, by the batch pipeline's reader.
    Outputs (a tagged tuple): ``batches`` with the schema's columns, ``__file``, ``__line``
    and ``__event_time`` (the ``event_time_field`` value, or the time the file was found);
    ``errors``, one per malformed record (step ``read``).

    The folder is watched by :class:`WatchFiles` (a splittable DoFn, for Dataflow and the
    batch local runner) or, with ``live=True``, by :func:`watch_events` in a thread for the
    streaming local runner (``self.live``, whose ``check_completed`` tells a run that ended
    at its limit from one cut short).
    """

    def __init__(
        self,
        *,
        source: Source,
        schema: pa.Schema,
        pipeline: str,
        pattern: str,
        poll_seconds: float = 1.0,
        max_files: int | None = None,
        deadline: float | None = None,
        event_time_field: str | None = None,
        live: bool = False,
    ) -> None:
        super().__init__()
        source.validate()
        if event_time_field is not None and event_time_field not in schema.names:
            raise ValueError(
                f"event_time_field {event_time_field!r} is not a column; columns are "
                f"{', '.join(schema.names)}"
            )
        self.live: LiveSource | None = None
        if live:
            self.live = LiveSource(
                lambda: watch_events(
                    pattern, poll_seconds=poll_seconds, max_files=max_files, deadline=deadline
                ),
                pattern,
            )
        self._watch = WatchFiles(
            pattern=pattern, poll_seconds=poll_seconds, max_files=max_files, deadline=deadline
        )
        self._read = _ReadArrivedFn(source, schema_lib.visible(schema), pipeline, event_time_field)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        if self.live is not None:
            paths = pbegin | "WatchFiles" >> self.live | "Paths" >> beam.Map(lambda f: f.path)
        else:
            paths = pbegin | "WatchFiles" >> self._watch
        return paths | "ReadFiles" >> beam.ParDo(self._read).with_outputs(ERRORS, main=BATCHES)
