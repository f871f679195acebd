"""Schema inference: a file's columns and the narrowest types that hold its first rows.

Text formats (CSV, JSON Lines) get int64, float64, bool, timestamp or string; binary formats
their own types, normalised to the types a schema names (string, not large_string; UTC
microsecond timestamps).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.values import convert_strings
from transforms.io.read_csv import csv_header, csv_layout, read_csv_file
from transforms.io.read_parquet import parquet_file
from transforms.io.read_tfrecord import tfrecord_records
from transforms.io.streams import ReadError, open_raw, open_stream

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = ["INFER_ROWS", "infer_file_schema", "infer_string_type"]

# Rows looked at to infer a schema.
INFER_ROWS = 10_000


def infer_string_type(values: pa.Array) -> pa.DataType:
    """Picks the narrowest of int64, float64, bool, timestamp and string for text values."""
    present = values.drop_null()
    if len(present) == 0:
        return pa.string()
    for tp in (pa.int64(), pa.float64()):
        _, bad = convert_strings(present, tp, allow_non_finite=True)
        if bad is None or not bad.any():
            return tp
    lowered = pc.utf8_lower(present)
    if pc.all(pc.is_in(lowered, pa.array(["true", "false"]))).as_py():
        return pa.bool_()
    iso = pc.match_substring_regex(present, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:")
    if pc.all(iso).as_py():
        ts = pa.timestamp("us", tz="UTC")
        _, bad = convert_strings(present, ts)
        if bad is None or not bad.any():
            return ts
    return pa.string()


def _infer_csv(path: str, source: Source) -> pa.Schema:
    opts = source.csv
    if opts.header:
        header = csv_header(path, opts)
        if header is None:
            raise ReadError(path, "cannot infer a schema from an empty file")
        names = csv_layout(header, opts, pa.schema([]), path)
    elif opts.column_names:
        names = list(opts.column_names)
    else:
        raise ReadError(path, "csv.column_names is needed to infer a headerless schema")
    strings = pa.schema([pa.field(n, pa.string()) for n in names])
    loose = dataclasses.replace(source, schema=None, allow_non_finite=[])
    sample: list[pa.Table] = []
    rows = 0
    for batch, _ in read_csv_file(path, loose, strings, "infer", 1 << 20):
        if batch is not None:
            sample.append(pa.Table.from_batches([batch]).select(names))
            rows += batch.num_rows
        if rows >= INFER_ROWS:
            break
    if not sample:
        return strings
    data = pa.concat_tables(sample).slice(0, INFER_ROWS)
    return pa.schema(
        [pa.field(n, infer_string_type(data.column(n).combine_chunks())) for n in names]
    )


def _normalise(tp: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(tp):
        return pa.string()
    if pa.types.is_large_binary(tp):
        return pa.binary()
    if pa.types.is_timestamp(tp):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        return pa.list_(_normalise(tp.value_type))
    if pa.types.is_null(tp):
        return pa.string()
    return tp


def _infer_jsonl(path: str, source: Source) -> pa.Schema:
    rows: list[dict[str, Any]] = []
    with open_stream(path) as stream:
        for raw in stream:
            text = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
            if not text:
                continue
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                rows.append(record)
            if len(rows) >= INFER_ROWS:
                break
    if not rows:
        raise ReadError(path, "cannot infer a schema: no JSON object found")
    inferred = pa.Table.from_pylist(rows).schema
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in inferred])


def _infer_parquet(path: str, source: Source) -> pa.Schema:
    with open_raw(path) as stream:
        arrow = parquet_file(stream, path).schema_arrow
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in arrow])


def _infer_avro(path: str, source: Source) -> pa.Schema:
    import fastavro

    rows: list[dict[str, Any]] = []
    with open_raw(path) as stream:
        for record in fastavro.reader(stream):
            rows.append(record)  # type: ignore[arg-type]
            if len(rows) >= INFER_ROWS:
                break
    if not rows:
        raise ReadError(path, "cannot infer a schema from an empty Avro file")
    inferred = pa.Table.from_pylist(rows).schema
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in inferred])


def _infer_tfrecord(path: str, source: Source) -> pa.Schema:
    from transforms.io.tf_example import infer_tf_example_schema

    records: list[bytes] = []
    with open_stream(path) as stream:
        for record in tfrecord_records(stream, path):
            records.append(record)
            if len(records) >= INFER_ROWS:
                break
    return infer_tf_example_schema(records)


_INFERERS: dict[str, Callable[[str, Source], pa.Schema]] = {
    "csv": _infer_csv,
    "jsonl": _infer_jsonl,
    "parquet": _infer_parquet,
    "avro": _infer_avro,
    "tfrecord": _infer_tfrecord,
}


def infer_file_schema(path: str, source: Source) -> pa.Schema:
    """Infers the schema of one file in ``source.format``."""
    return _INFERERS[source.format](path, source)
