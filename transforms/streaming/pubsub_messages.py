"""Pub/Sub messages as rows: the message, its id and heartbeat rules, and the pure decoder.

:func:`decode_messages` decodes a list of messages (a JSON object, one CSV line, or an Avro
container per message) into one record batch with the spec's columns plus the hidden columns
``__file`` (the message id) and ``__event_time``, and an
:class:`~transforms.core.errors.ErrorRecord` per message that cannot be decoded, so the batch
pipeline's steps (:func:`transforms.core.batch_steps.apply_steps`) run on them unchanged. No Beam
here: the transforms that de-duplicate, batch and decode messages in a pipeline are in
:mod:`transforms.streaming.pubsub_decode`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from transforms.core import errors as error_codes
from transforms.core import schema as schema_lib
from transforms.core import values as values_lib
from transforms.core.errors import ErrorRecord, row_payload
from transforms.streaming.event_time import iso_time, parse_event_time, with_event_time

PayloadFormat = Literal["json", "csv", "avro"]
BAD_EVENT_TIME = "bad_event_time"
HEARTBEAT_ATTRIBUTE = "heartbeat"
_US = 1_000_000


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
                event_time=iso_time(message.publish_time_us) if message.publish_time_us else None,
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
                event_time=iso_time(times[i]),
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


def is_heartbeat(message: Message) -> bool:
    """True for a keep-alive message (attribute ``heartbeat=1``), which carries no row.

    Publishers of quiet topics send them so that local runs, whose Pub/Sub reader blocks
    on an idle subscription, keep moving; they are dropped before decoding.
    """
    return message.attributes.get(HEARTBEAT_ATTRIBUTE) == "1"


def message_key(message: Message, id_attribute: str | None) -> str:
    """The id a message is de-duplicated by: the id attribute's value, else Pub/Sub's id."""
    if id_attribute:
        return message.attributes.get(id_attribute) or message.message_id
    return message.message_id


__all__ = [
    "BAD_EVENT_TIME",
    "HEARTBEAT_ATTRIBUTE",
    "Decoding",
    "Message",
    "PayloadFormat",
    "decode_messages",
    "is_heartbeat",
    "message_from_pubsub",
    "message_key",
]
