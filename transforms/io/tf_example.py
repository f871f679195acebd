"""tf.train.Example records, encoded and decoded without TensorFlow.

The protobuf wire format of ``tf.train.Example`` is small enough to write by hand, which
keeps TensorFlow out of the workers that only read or write TFRecord files:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    *List    { repeated <bytes | float (packed) | int64 (packed)> value = 1; }

Column types map to features as follows: int and bool -> ``int64_list``; float ->
``float_list`` (float32 on the wire); string and binary -> ``bytes_list``; timestamp and
date -> ``bytes_list`` holding ISO-8601 text; ``list<T>`` -> a multi-valued feature of T's
kind. A null is an omitted feature (an empty list stays an empty feature).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from transforms.core import errors
from transforms.core import schema as schema_lib

BYTES_LIST = 1
FLOAT_LIST = 2
INT64_LIST = 3
_KIND_NAMES = {BYTES_LIST: "bytes_list", FLOAT_LIST: "float_list", INT64_LIST: "int64_list"}


# ---------------------------------------------------------------------------------------
# Checksums of the TFRecord framing.

try:
    import google_crc32c

    def _crc32c(data: bytes) -> int:
        return int(google_crc32c.value(data))

except ImportError:  # pragma: no cover - google-crc32c ships with Beam's GCP extra
    _TABLE = []
    for _n in range(256):
        _c = _n
        for _ in range(8):
            _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def _crc32c(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """Returns the masked CRC-32C that TFRecord framing stores."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """Returns one record framed as in a TFRecord file (length, checksums, data)."""
    length = struct.pack("<Q", len(record))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + record
        + struct.pack("<I", masked_crc32c(record))
    )


# ---------------------------------------------------------------------------------------
# Encoding.


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    # Length-delimited field ``tag`` (wire type 2).
    return bytes([(tag << 3) | 2]) + _varint(len(payload)) + payload


def _kind(tp: pa.DataType) -> int:
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        return _kind(tp.value_type)
    if pa.types.is_integer(tp) or pa.types.is_boolean(tp):
        return INT64_LIST
    if pa.types.is_floating(tp):
        return FLOAT_LIST
    return BYTES_LIST


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return value.isoformat().encode("utf-8")  # datetime and date


def _list_payload(kind: int, values: Sequence[Any]) -> bytes:
    if kind == INT64_LIST:
        packed = b"".join(_varint(int(v)) for v in values)
    elif kind == FLOAT_LIST:
        packed = np.asarray(values, dtype="<f4").tobytes()
    else:
        return b"".join(_field(1, _to_bytes(v)) for v in values)
    return _field(1, packed) if values else b""


def _column_entries(name: str, column: pa.Array) -> list[bytes]:
    """Encodes one column as map entries of ``Features.feature``, one per row."""
    key = _field(1, name.encode("utf-8"))
    kind = _kind(column.type)
    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
    entries: list[bytes] = []
    for value in column.to_pylist():
        if value is None:
            entries.append(b"")
            continue
        values = value if is_list else [value]
        if is_list and kind == FLOAT_LIST and any(v is None for v in values):
            raise ValueError(f"column {name!r}: a null inside a list cannot be encoded")
        values = [v for v in values if v is not None]
        feature = _field(kind, _list_payload(kind, values))
        entries.append(_field(1, key + _field(2, feature)))
    return entries


def encode_tf_examples(batch: pa.RecordBatch) -> list[bytes]:
    """Encodes each row of a batch as a serialized ``tf.train.Example``.

    Hidden (``__``) columns are not written; null values are omitted features.

    Args:
        batch: Rows to encode.

    Returns:
        One serialized Example per row, in order.
    """
    visible = schema_lib.drop_hidden(batch)
    columns = [
        _column_entries(name, visible.column(i)) for i, name in enumerate(visible.schema.names)
    ]
    out = []
    for row in zip(*columns, strict=True) if columns else [() for _ in range(batch.num_rows)]:
        features = b"".join(row)
        out.append(_field(1, features))
    return out


# ---------------------------------------------------------------------------------------
# Decoding.


class DecodeProblem(NamedTuple):
    """A record that could not be decoded: its position in the input and why."""

    position: int
    reason: str
    message: str


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterable[tuple[int, int, Any]]:
    """Yields ``(field number, wire type, value)``; length-delimited values are bytes."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        tag, wire = key >> 3, key & 7
        value: Any
        if tag == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > end:
                raise ValueError("truncated length-delimited field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield tag, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind: int, payload: bytes) -> list[Any]:
    values: list[Any] = []
    for tag, wire, value in _fields(payload):
        if tag != 1:
            continue
        if kind == BYTES_LIST:
            if wire != 2:
                raise ValueError("bytes_list value is not length-delimited")
            values.append(value)
        elif kind == FLOAT_LIST:
            if wire == 2:
                if len(value) % 4:
                    raise ValueError("packed float_list length is not a multiple of 4")
                values.extend(np.frombuffer(value, dtype="<f4").tolist())
            elif wire == 5:
                values.append(struct.unpack("<f", value)[0])
            else:
                raise ValueError("bad float_list encoding")
        elif wire == 2:
            pos = 0
            while pos < len(value):
                item, pos = _read_varint(value, pos)
                values.append(_signed(item))
        elif wire == 0:
            values.append(_signed(value))
        else:
            raise ValueError("bad int64_list encoding")
    return values


def parse_tf_example(record: bytes) -> dict[str, tuple[int, list[Any]]]:
    """Parses a serialized ``tf.train.Example``.

    Returns:
        ``{feature name: (kind, values)}`` with kind one of :data:`BYTES_LIST`,
        :data:`FLOAT_LIST`, :data:`INT64_LIST`; float values are float32 widened to float.

    Raises:
        ValueError: if the bytes are not a valid Example.
    """
    features: dict[str, tuple[int, list[Any]]] = {}
    for tag, wire, value in _fields(record):
        if tag != 1:
            continue
        if wire != 2:
            raise ValueError("Example.features is not length-delimited")
        for entry_tag, entry_wire, entry in _fields(value):
            if entry_tag != 1:
                continue
            if entry_wire != 2:
                raise ValueError("feature map entry is not length-delimited")
            name = b""
            feature = b""
            for part_tag, part_wire, part in _fields(entry):
                if part_wire != 2:
                    raise ValueError("feature map entry has a bad field")
                if part_tag == 1:
                    name = part
                elif part_tag == 2:
                    feature = part
            kind, values = 0, []
            for kind_tag, kind_wire, payload in _fields(feature):
                if kind_tag in _KIND_NAMES:
                    if kind_wire != 2:
                        raise ValueError("feature kind is not length-delimited")
                    kind, values = kind_tag, _list_values(kind_tag, payload)
            try:
                features[name.decode("utf-8")] = (kind, values)
            except UnicodeDecodeError:
                raise ValueError(f"feature name {name!r} is not utf-8") from None
    return features


class _ValueError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _scalar(value: Any, kind: int, tp: pa.DataType, name: str) -> Any:
    import datetime as dt

    if pa.types.is_integer(tp) or pa.types.is_boolean(tp):
        if pa.types.is_boolean(tp):
            return bool(value)
        bits = tp.bit_width - 1
        if not -(1 << bits) <= value < (1 << bits):
            raise _ValueError(
                errors.UNPARSEABLE_VALUE, f"feature {name!r}: {value} is out of range for {tp}"
            )
        return value
    if pa.types.is_floating(tp):
        return value
    if pa.types.is_timestamp(tp) and kind == INT64_LIST:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        return value
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise _ValueError(
            errors.BAD_ENCODING, f"feature {name!r}: value is not valid utf-8"
        ) from None
    try:
        if pa.types.is_timestamp(tp):
            parsed = dt.datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        if pa.types.is_date(tp):
            return dt.date.fromisoformat(text)
    except ValueError:
        raise _ValueError(
            errors.UNPARSEABLE_VALUE,
            f"feature {name!r}: {text!r} is not a valid {schema_lib.type_name(tp)}",
        ) from None
    return text


def _accepts(tp: pa.DataType, kind: int) -> bool:
    if pa.types.is_timestamp(tp):
        return kind in (BYTES_LIST, INT64_LIST)
    return _kind(tp) == kind


def _column_value(features: dict[str, tuple[int, list[Any]]], field: pa.Field) -> Any:
    if field.name not in features:
        return None
    kind, values = features[field.name]
    tp = field.type
    is_list = pa.types.is_list(tp) or pa.types.is_large_list(tp)
    item_type = tp.value_type if is_list else tp
    if kind == 0:
        return [] if is_list else None
    if not _accepts(item_type, kind):
        raise _ValueError(
            errors.UNPARSEABLE_VALUE,
            f"feature {field.name!r} is a {_KIND_NAMES[kind]}; expected"
            f" {_KIND_NAMES[_kind(item_type)]} for {schema_lib.type_name(tp)}",
        )
    items = [_scalar(v, kind, item_type, field.name) for v in values]
    if is_list:
        return items
    if len(items) > 1:
        raise _ValueError(
            errors.UNPARSEABLE_VALUE,
            f"feature {field.name!r} has {len(items)} values; expected at most 1 for"
            f" {schema_lib.type_name(tp)}",
        )
    return items[0] if items else None


def decode_tf_examples(
    records: Sequence[bytes], schema: pa.Schema
) -> tuple[pa.RecordBatch, list[DecodeProblem]]:
    """Decodes serialized ``tf.train.Example`` records into a batch with ``schema``.

    Features not in the schema are ignored; a feature missing from a record is null.

    Args:
        records: Serialized Examples.
        schema: Columns and types wanted (hidden columns are ignored).

    Returns:
        The batch of the records that decoded (in order) and one :class:`DecodeProblem`
        per record that did not: ``malformed_record`` when the bytes are not an Example,
        ``unparseable_value`` for a feature of the wrong kind or with several values for
        a scalar column, ``bad_encoding`` for string bytes that are not UTF-8.
    """
    target = schema_lib.visible(schema)
    columns: list[list[Any]] = [[] for _ in target]
    problems: list[DecodeProblem] = []
    for index, record in enumerate(records):
        try:
            features = parse_tf_example(record)
        except ValueError as exc:
            problems.append(
                DecodeProblem(index, errors.MALFORMED_RECORD, f"not a tf.train.Example: {exc}")
            )
            continue
        row: list[Any] = []
        try:
            for field in target:
                row.append(_column_value(features, field))
        except _ValueError as exc:
            problems.append(DecodeProblem(index, exc.reason, exc.message))
            continue
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    arrays = [pa.array(values, field.type) for values, field in zip(columns, target, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=target), problems


def infer_tf_example_schema(records: Iterable[bytes]) -> pa.Schema:
    """Infers a schema from Examples: int64, float32 or string; list<> when multi-valued.

    Records that do not decode are skipped.
    """
    kinds: dict[str, int] = {}
    multi: set[str] = set()
    for record in records:
        try:
            features = parse_tf_example(record)
        except ValueError:
            continue
        for name, (kind, values) in features.items():
            if kind:
                kinds.setdefault(name, kind)
            if len(values) > 1:
                multi.add(name)
    scalar: dict[int, Callable[[], pa.DataType]] = {
        INT64_LIST: pa.int64,
        FLOAT_LIST: pa.float32,
        BYTES_LIST: pa.string,
    }
    fields = []
    for name in sorted(kinds):
        tp = scalar[kinds[name]]()
        fields.append(pa.field(name, pa.list_(tp) if name in multi else tp))
    return pa.schema(fields)
