"""Writers: Arrow record batches to sharded files (local or ``gs://``).

The encoders (:func:`encode_csv`, :func:`encode_jsonl` and
:func:`~transforms.io.tf_example.encode_tf_examples`) are pure functions of one batch.
:class:`WriteBatches` wires them to Beam's file sinks, which write temporary files and
rename them when the write is finalised, so a reader never sees half-written shards.
Hidden (``__``-prefixed) columns are never written.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal, get_args

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from apache_beam.io.filesystem import CompressionTypes

from transforms.core import schema as schema_lib
from transforms.io.tf_example import encode_tf_examples

WriteFormat = Literal["parquet", "tfrecord", "csv", "jsonl"]

EXTENSIONS: dict[str, str] = {
    "parquet": ".parquet",
    "tfrecord": ".tfrecord.gz",
    "csv": ".csv",
    "jsonl": ".jsonl",
}
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Returns the batch's visible columns in ``schema``'s order and types.

    A column that is entirely null may arrive with Arrow's ``null`` type (e.g. after an
    inference that saw no value); casting keeps the declared type in the output files.

    Raises:
        ValueError: if a column of the schema is missing from the batch.
    """
    target = schema_lib.visible(schema)
    missing = [n for n in target.names if n not in batch.schema.names]
    if missing:
        raise ValueError(
            f"column {missing[0]!r} of the output schema is not in the batch"
            f" (columns: {', '.join(batch.schema.names)})"
        )
    selected = batch.select(target.names)
    if selected.schema.equals(target):
        return selected
    table = pa.Table.from_batches([selected]).cast(target)
    return _single_batch(table)


def _single_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if batches:
        return batches[0]
    return pa.RecordBatch.from_arrays(
        [pa.array([], f.type) for f in table.schema], schema=table.schema
    )


def csv_header(schema: pa.Schema) -> str:
    """Returns the CSV header line (without newline) for the visible columns of ``schema``."""
    buffer = io.BytesIO()
    pa_csv.write_csv(schema_lib.visible(schema).empty_table(), buffer)
    return buffer.getvalue().decode("utf-8").rstrip("\r\n")


def encode_csv(batch: pa.RecordBatch, *, header: bool) -> bytes:
    """Encodes a batch as CSV (comma-separated, quoted where needed, ``\\n`` line ends).

    Nulls are empty fields; timestamps are ISO-8601 (``2024-01-31 12:00:00.000000Z``);
    floats are written so that they parse back to the same value.

    Args:
        batch: Rows to write; hidden columns are left out.
        header: Whether to start with the header line.

    Returns:
        The lines, each ending in ``\\n`` (empty bytes for an empty batch without header).
    """
    visible = schema_lib.drop_hidden(batch)
    buffer = io.BytesIO()
    options = pa_csv.WriteOptions(include_header=header)
    if visible.num_rows or header:
        pa_csv.write_csv(visible, buffer, write_options=options)
    return buffer.getvalue()


def _json_column(column: pa.Array) -> list[Any]:
    """Converts a column to JSON-ready Python values."""
    tp = column.type
    if pa.types.is_float32(tp):
        # The shortest text that parses back to the same float32, e.g. 12.45 and not
        # 12.449999809265137.
        values = column.to_numpy(zero_copy_only=False)
        texts = values.astype(str)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        return [float(t) if ok else None for t, ok in zip(texts, valid, strict=True)]
    if pa.types.is_timestamp(tp):
        if tp.tz is None:
            column = column.cast(pa.timestamp(tp.unit, tz="UTC"))
        return [None if v is None else v.isoformat() for v in column.to_pylist()]
    if pa.types.is_date(tp):
        return [None if v is None else v.isoformat() for v in column.to_pylist()]
    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        return [None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()]
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        flat = _json_column(pc.list_flatten(column))
        offsets = column.offsets.to_numpy() - column.offsets[0].as_py()
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        return [flat[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(column))]
    return column.to_pylist()


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _float_texts(texts: Iterable[str]) -> list[str]:
    # repr is what json.dumps writes for a float; it spells the non-finite ones its own way.
    return [_NON_FINITE.get(t, t) for t in texts]


def _json_texts(column: pa.Array) -> pa.Array:
    """The JSON text of every value of a column (``null`` for nulls), as json.dumps writes it.

    Whole columns at a time where Arrow can: numbers and booleans are cast, strings are
    escaped once per distinct value; the other types go value by value.
    """
    tp = column.type
    if pa.types.is_integer(tp):
        texts = pc.cast(column, pa.string())
    elif pa.types.is_boolean(tp):
        texts = pc.if_else(column, "true", "false")
    elif pa.types.is_float32(tp) or pa.types.is_float64(tp):
        values = column.to_numpy(zero_copy_only=False)
        # Each distinct value (by its bits, so -0.0 stays apart from 0.0) is spelled once:
        # columns of prices and distances repeat their values a great deal.
        bits, inverse = np.unique(
            values.view(np.uint32 if values.dtype == np.float32 else np.uint64),
            return_inverse=True,
        )
        distinct = bits.view(values.dtype)
        if values.dtype == np.float32:
            # The shortest text that parses back to the same float32 (12.45, not
            # 12.449999809265137), then written as json.dumps writes that float.
            reprs = (repr(float(t)) for t in distinct.astype(str))
        else:
            reprs = (repr(v) for v in distinct.tolist())
        spelled = pa.array(_float_texts(reprs), pa.string()).take(pa.array(inverse.ravel()))
        # Nulls became NaN on the way to NumPy: the validity mask puts them back.
        texts = pc.if_else(column.is_valid(), spelled, None)
    elif pa.types.is_string(tp) or pa.types.is_large_string(tp):
        encoded = pc.dictionary_encode(column)
        escaped = pa.array(
            [json.dumps(v, ensure_ascii=False) for v in encoded.dictionary.to_pylist()],
            pa.string(),
        )
        texts = pc.take(escaped, encoded.indices)
    else:
        texts = pa.array(
            [json.dumps(v, ensure_ascii=False) for v in _json_column(column)], pa.string()
        )
    return pc.fill_null(texts, "null")


def encode_jsonl(batch: pa.RecordBatch) -> bytes:
    """Encodes a batch as JSON lines: one object per row, keys in column order.

    Floats are JSON numbers (float32 with their shortest exact text; NaN and infinities as
    ``NaN``/``Infinity``, which Python's and most JSON readers accept); timestamps and dates
    are ISO-8601 strings; binary values are base64 strings; nulls are ``null``. The text is
    what ``json.dumps`` writes for each row's dict, assembled column by column by Arrow.

    Returns:
        The lines, each ending in ``\n``.
    """
    visible = schema_lib.drop_hidden(batch)
    if not visible.num_rows:
        return b""
    names = visible.schema.names
    if not names:
        return b"{}\n" * visible.num_rows
    parts: list[Any] = []
    for i, name in enumerate(names):
        key = ("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "
        parts += [pa.scalar(key), _json_texts(visible.column(i))]
    parts.append(pa.scalar("}\n"))
    lines = pc.binary_join_element_wise(*parts, "")
    return "".join(lines.to_pylist()).encode("utf-8")


def _text_chunk(encoded: bytes) -> Iterator[bytes]:
    # WriteToText appends a newline after each element.
    if encoded:
        yield encoded[:-1] if encoded.endswith(b"\n") else encoded


class WriteBatches(beam.PTransform):
    """Writes record batches of one split to sharded files.

    Files are named ``{path_prefix}-SSSSS-of-NNNNN{ext}`` with ext ``.parquet``,
    ``.tfrecord.gz`` (GZIP TFRecord of tf.Example), ``.csv`` (with a header in every shard)
    or ``.jsonl``. Beam's file sinks write temporary files and rename them at the end, so
    the write is atomic per shard and works on ``gs://``. An empty input still produces one
    valid empty file (Parquet with the schema, CSV with the header) so readers never find a
    split missing. Bounded input only (file sinks finalise once).

    Input: ``PCollection[pa.RecordBatch]`` carrying at least the schema's columns; hidden
    columns are dropped and all-null columns keep their declared type.

    Output: ``PCollection[str]`` of the final paths of the files written.
    """

    def __init__(
        self,
        *,
        path_prefix: str,
        format: WriteFormat,
        schema: pa.Schema,
        num_shards: int = 0,
    ) -> None:
        """Validates the configuration.

        Args:
            path_prefix: Prefix of the shard names, e.g. ``out/train/part``.
            format: One of parquet, tfrecord, csv, jsonl.
            schema: Columns and types to write (hidden columns are ignored).
            num_shards: Number of shards; 0 lets the runner decide.

        Raises:
            ValueError: for an empty prefix, an unknown format, a negative shard count or
                list columns in CSV output.
        """
        super().__init__()
        if not path_prefix:
            raise ValueError("path_prefix must be given, e.g. 'out/train/part'")
        if format not in get_args(WriteFormat):
            raise ValueError(
                f"unknown format {format!r}; valid formats are {', '.join(get_args(WriteFormat))}"
            )
        if not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
        if num_shards < 0:
            raise ValueError(f"num_shards must be >= 0 (0 = runner decides), got {num_shards}")
        target = schema_lib.visible(schema)
        if format == "csv":
            lists = [f.name for f in target if pa.types.is_list(f.type)]
            if lists:
                raise ValueError(f"list columns cannot be written as csv: {', '.join(lists)}")
        self._prefix = path_prefix
        self._format = format
        self._schema = target
        self._num_shards = num_shards

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        schema = self._schema
        conformed = batches | "Conform" >> beam.Map(conform, schema)
        suffix = EXTENSIONS[self._format]
        common: dict[str, Any] = {
            "file_path_prefix": self._prefix,
            "file_name_suffix": suffix,
            "num_shards": self._num_shards,
            "shard_name_template": SHARD_TEMPLATE,
        }
        if self._format == "parquet":
            return (
                conformed
                | "ToTables" >> beam.Map(lambda b: pa.Table.from_batches([b]))
                | "WriteParquet" >> beam.io.parquetio.WriteToParquetBatched(schema=schema, **common)
            )
        if self._format == "tfrecord":
            return (
                conformed
                | "Encode" >> beam.FlatMap(encode_tf_examples)
                | "WriteTFRecord"
                >> beam.io.WriteToTFRecord(compression_type=CompressionTypes.GZIP, **common)
            )
        if self._format == "csv":
            return (
                conformed
                | "Encode" >> beam.FlatMap(lambda b: _text_chunk(encode_csv(b, header=False)))
                | "WriteCsv" >> beam.io.WriteToText(header=csv_header(schema), **common)
            )
        return (
            conformed
            | "Encode" >> beam.FlatMap(lambda b: _text_chunk(encode_jsonl(b)))
            | "WriteJsonl" >> beam.io.WriteToText(**common)
        )


__all__ = [
    "EXTENSIONS",
    "WriteBatches",
    "conform",
    "csv_header",
    "encode_csv",
    "encode_jsonl",
]
