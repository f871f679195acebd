"""Readers: files (local or ``gs://``) to Arrow record batches plus error records.

:func:`read_file` is the pure core: it streams one file in bounded memory and yields record
batches with exactly the requested schema (plus the hidden ``__file``/``__line`` columns)
together with one :class:`~transforms.errors.ErrorRecord` per malformed record.
:class:`ReadRecords` is the Beam transform that spreads a list of files over workers and
applies :func:`read_file` to each.

Malformed records never fail a read and are never dropped silently: they go to the error
output. A file that cannot be read at all (missing, not Parquet, truncated framing) is an
infrastructure error and raises, so Beam retries or fails the bundle.

CSV line numbers assume one record per line (the header is line 1). Quoted values that hold
newlines are parsed correctly; ``__line`` is then the line on which the record starts.
Blank lines hold no record and are skipped.
"""

from __future__ import annotations

import base64
import codecs
import dataclasses
import datetime as dt
import functools
import gzip
import io
import json
import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import errors
from transforms import schema as schema_lib
from transforms.bigquery import BigQuerySource
from transforms.errors import ErrorRecord, row_payload

Format = Literal["csv", "jsonl", "parquet", "avro", "tfrecord", "bigquery"]

# Bytes of whole lines parsed at once: big enough for Arrow's vectorised parser to shine,
# small enough to keep a worker's memory bounded whatever the file size.
CHUNK_BYTES = 16 << 20
# Rows looked at to infer a schema.
INFER_ROWS = 10_000

_GZIP_MAGIC = b"\x1f\x8b"
_INT_PATTERN = r"^\s*[+-]?[0-9]+\s*$"
_FLOAT_PATTERN = r"(?i)^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan)\s*$"
_ZONE_PATTERN = r"([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"


@dataclasses.dataclass
class CsvOptions:
    """How CSV files are laid out.

    Attributes:
        delimiter: Field separator, one character.
        quote_char: Quote character, or None for no quoting. Doubled quotes inside a quoted
            value stand for one quote.
        escape_char: Escape character inside quoted values, or None.
        header: Whether the first line (after ``skip_rows``) holds the column names.
        column_names: Names of the file's columns when ``header`` is false; defaults to the
            schema's order.
        null_values: Field values read as null (for every column type).
        encoding: Text encoding; must keep ``\\n`` a single byte (utf-8, latin-1, cp1252...).
        skip_rows: Lines skipped at the start of each file, before the header.
    """

    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    header: bool = True
    column_names: list[str] | None = None
    null_values: list[str] = dataclasses.field(default_factory=lambda: [""])
    encoding: str = "utf-8"
    skip_rows: int = 0

    def validate(self) -> None:
        """Checks the options; raises ValueError saying how to fix them."""
        for name in ("delimiter", "quote_char", "escape_char"):
            value = getattr(self, name)
            if value is not None and len(value) != 1:
                raise ValueError(f"csv.{name} must be a single character, got {value!r}")
        if self.delimiter in ("\n", "\r") or self.delimiter == self.quote_char:
            raise ValueError(f"csv.delimiter {self.delimiter!r} cannot be a newline or the quote")
        if self.skip_rows < 0:
            raise ValueError(f"csv.skip_rows must be >= 0, got {self.skip_rows}")
        try:
            codec = codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"csv.encoding {self.encoding!r} is not a known encoding") from None
        if "\n".encode(codec.name) != b"\n":
            raise ValueError(
                f"csv.encoding {self.encoding!r} is not supported: use an encoding in which a"
                " newline is one byte (utf-8, latin-1, cp1252, ...)"
            )
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            raise ValueError(f"csv.column_names has duplicates: {self.column_names}")


@dataclasses.dataclass
class Source:
    """Where input records come from and what they look like (the spec's ``source``).

    Attributes:
        format: File format.
        path: File paths or glob patterns, local or ``gs://``.
        schema: ``{column: type name}`` (see :mod:`transforms.schema`); required unless
            ``infer_schema`` is true, and wins over inferred types when both are given.
        infer_schema: Infer the schema from the first file.
        csv: CSV layout (``format: csv`` only).
        batch_size: Maximum rows per emitted record batch.
        split_bytes: Uncompressed CSV files larger than this are read as byte ranges of about
            this size, in parallel; 0 never splits. Ranges start at line boundaries, so set 0
            when quoted values contain newlines.
    """

    format: Format
    path: str | list[str] = ""
    schema: dict[str, str] | None = None
    infer_schema: bool = False
    csv: CsvOptions = dataclasses.field(default_factory=CsvOptions)
    batch_size: int = 8192
    bigquery: BigQuerySource | None = None
    split_bytes: int = 32 << 20

    def validate(self) -> None:
        """Checks the source; raises ValueError saying how to fix it."""
        if (self.format == "bigquery") != (self.bigquery is not None):
            raise ValueError("format: bigquery goes with a bigquery: section (table or query)")
        if self.bigquery is not None:
            self.bigquery.validate()
        elif self.schema is None and not self.infer_schema:
            raise ValueError("schema is required unless infer_schema is true")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.split_bytes < 0:
            raise ValueError(
                f"split_bytes must be >= 0 (0: never split files), got {self.split_bytes}"
            )
        self.csv.validate()
        for column, type_name in (self.schema or {}).items():
            try:
                tp = schema_lib.parse_type(type_name)
            except ValueError as exc:
                raise ValueError(f"schema.{column}: {exc}") from None
            if column.startswith(schema_lib.HIDDEN_PREFIX):
                raise ValueError(f"schema.{column}: names starting with '__' are reserved")
            if self.format == "csv" and pa.types.is_list(tp):
                raise ValueError(f"schema.{column}: list columns cannot be read from csv")

    @property
    def patterns(self) -> list[str]:
        """The path patterns as a list."""
        return [self.path] if isinstance(self.path, str) else list(self.path)


def declared_schema(source: Source) -> pa.Schema | None:
    """Returns the Arrow schema the spec declares, or None."""
    return None if source.schema is None else schema_lib.arrow_schema(source.schema)


def expand_paths(patterns: Sequence[str]) -> list[str]:
    """Expands glob patterns into a sorted list of files (local or ``gs://``).

    Raises:
        ValueError: naming a pattern that matches no file.
    """
    if not patterns or any(not p for p in patterns):
        raise ValueError("source.path is empty: give file paths or glob patterns")
    paths: list[str] = []
    for pattern, result in zip(patterns, FileSystems.match(list(patterns)), strict=True):
        found = sorted(m.path for m in result.metadata_list)
        if not found:
            raise ValueError(f"no file matches {pattern!r}")
        paths.extend(p for p in found if p not in paths)
    return paths


def resolve_schema(source: Source, paths: Sequence[str]) -> pa.Schema:
    """Returns the schema to read with: declared, or inferred from the first file.

    With ``infer_schema``, types are inferred from the first file (int64, float64, bool,
    timestamp or string for text formats; the file's own types for binary ones) and the
    declared schema, if any, overrides them column by column.

    Raises:
        ValueError: if no schema is declared and inference is off, or there is no file.
    """
    declared = declared_schema(source)
    if not source.infer_schema:
        if declared is None:
            raise ValueError("schema is required unless infer_schema is true")
        return declared
    if not paths:
        raise ValueError("cannot infer a schema without a file")
    inferred = _INFERERS[source.format](paths[0], source)
    if declared is None:
        return inferred
    fields = [declared.field(f.name) if f.name in declared.names else f for f in inferred]
    fields += [f for f in declared if f.name not in inferred.names]
    return pa.schema(fields)


Yielded = tuple[pa.RecordBatch | None, list[ErrorRecord]]


def read_file(
    path: str,
    source: Source,
    schema: pa.Schema,
    *,
    pipeline: str,
    chunk_bytes: int = CHUNK_BYTES,
    byte_range: ByteRange | None = None,
) -> Iterator[Yielded]:
    """Streams one file as record batches and error records.

    Args:
        path: File path, local or ``gs://``; gzip-compressed text and TFRecord files are
            recognised by their magic bytes.
        source: Format and options.
        schema: Columns to return, with their types; hidden columns in it are ignored.
            Columns in the file but not in the schema are not read.
        pipeline: Job name recorded in error records.
        chunk_bytes: Bytes of whole lines parsed at once (text formats).
        byte_range: ``(start, end, first line)`` of an uncompressed CSV file, from
            :func:`file_ranges`: only the records within it are read, numbered as in the
            whole file.

    Yields:
        ``(batch, errors)`` pairs. ``batch`` holds at most ``source.batch_size`` rows with
        ``schema``'s columns plus ``__file`` and ``__line`` (or is None when a chunk held
        only errors); ``errors`` has one record per malformed input record. An empty file
        yields nothing.

    Raises:
        ValueError, OSError: if the file cannot be read at all (missing, wrong format, a
            column of the schema missing from a CSV header or a Parquet file); the message
            names the file.
    """
    target = schema_lib.visible(schema)
    if byte_range is not None:
        if source.format != "csv":
            raise ValueError(f"byte ranges are read for csv files only, not {source.format}")
        yield from _read_csv(path, source, target, pipeline, chunk_bytes, byte_range)
        return
    yield from _READERS[source.format](path, source, target, pipeline, chunk_bytes)


# ---------------------------------------------------------------------------------------
# Opening files.


def _open(path: str) -> IO[bytes]:
    """Opens a file through Beam's file systems, decompressing gzip transparently."""
    try:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:
        raise OSError(f"cannot open {path}: {exc}") from exc
    stream: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[type-var]
    if stream.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream  # type: ignore[return-value]


def _read_fully(stream: IO[bytes], size: int) -> bytes:
    parts = []
    while size > 0:
        part = stream.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _line_chunks(
    stream: IO[bytes], chunk_bytes: int, quote: bytes | None, escape: bytes | None
) -> Iterator[bytes]:
    """Yields the stream in pieces of whole lines, never splitting a quoted value."""
    carry = b""
    while True:
        data = _read_fully(stream, chunk_bytes)
        if not data:
            if carry:
                yield carry
            return
        buf = carry + data
        cut = _split_point(buf, quote, escape)
        if cut < 0:
            carry = buf
            continue
        yield buf[: cut + 1]
        carry = buf[cut + 1 :]


def _split_point(buf: bytes, quote: bytes | None, escape: bytes | None) -> int:
    """Returns the offset of the last newline outside quotes, or -1."""
    cut = buf.rfind(b"\n")
    if quote is None:
        return cut
    # Each piece starts outside quotes, so the parity of the quote count before a newline
    # says whether the newline ends a record. Doubled quotes count twice: no change.
    while cut >= 0:
        head = buf[:cut]
        quotes = head.count(quote) - (head.count(escape + quote) if escape else 0)
        if quotes % 2 == 0:
            return cut
        cut = buf.rfind(b"\n", 0, cut)
    return -1


# ---------------------------------------------------------------------------------------
# Converting strings to typed columns, vectorised.


def _elementwise(
    values: pa.Array, parse: Callable[[pa.Array], pa.Array], tp: pa.DataType
) -> tuple[pa.Array, np.ndarray]:
    """Slow path: parses value by value, returning the array and a mask of failures."""
    out: list[Any] = []
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(parse(pa.array([value], pa.string()))[0].as_py())
        except (pa.ArrowException, ValueError, OverflowError):
            out.append(None)
            bad[i] = True
    return pa.array(out, tp), bad


def _with_pattern(
    values: pa.Array, pattern: str, parse: Callable[[pa.Array], pa.Array], tp: pa.DataType
) -> tuple[pa.Array, np.ndarray]:
    ok = pc.fill_null(pc.match_substring_regex(values, pattern), True)
    bad = ~ok.to_numpy(zero_copy_only=False)
    kept = pc.if_else(ok, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
    try:
        return parse(kept), bad
    except (pa.ArrowException, ValueError):
        # Well-formed but unconvertible (out of range): find those one by one.
        converted, overflow = _elementwise(kept, parse, tp)
        return converted, bad | overflow


def _parse_int(values: pa.Array, tp: pa.DataType) -> pa.Array:
    try:
        return pc.cast(values, tp)
    except pa.ArrowInvalid:
        # Only a column holding an explicit sign pays for the regex.
        return pc.cast(pc.replace_substring_regex(values, r"^\+", ""), tp)


def _parse_timestamp(values: pa.Array, tp: pa.DataType) -> pa.Array:
    # Integer unix seconds, ISO-8601 with a zone, or ISO-8601 without one (taken as UTC).
    null = pa.scalar(None, pa.string())
    is_int = pc.fill_null(pc.match_substring_regex(values, r"^[+-]?[0-9]+$"), False)
    has_zone = pc.fill_null(pc.match_substring_regex(values, _ZONE_PATTERN), False)
    naive_mask = pc.and_(pc.invert(is_int), pc.invert(has_zone))
    seconds = pc.cast(pc.if_else(is_int, values, null), pa.int64())
    from_int = pc.cast(pc.multiply_checked(seconds, 1_000_000), pa.timestamp("us"))
    zoned = pc.cast(pc.cast(pc.if_else(has_zone, values, null), tp), pa.timestamp("us"))
    naive = pc.cast(pc.if_else(naive_mask, values, null), pa.timestamp("us"))
    merged = pc.coalesce(from_int, zoned, naive)
    return pc.cast(merged, tp)


def _parser(tp: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    if pa.types.is_integer(tp):
        return lambda v: _parse_int(v, tp)
    if pa.types.is_timestamp(tp):
        return lambda v: _parse_timestamp(v, tp)
    return lambda v: pc.cast(v, tp)


def convert_strings(values: pa.Array, tp: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Converts a string column to ``tp``.

    Floats are parsed straight from the decimal text to the target width (float32 values
    equal ``numpy.float32(text)``); ints accept an optional sign; timestamps accept ISO-8601
    (a missing zone means UTC) and integer unix seconds; bools accept true/false/1/0.

    Args:
        values: Strings; nulls stay null.
        tp: Target Arrow type.

    Returns:
        The converted array (null where parsing failed) and a boolean mask of the non-null
        values that failed, or None when all parsed (the common, fully vectorised path).
    """
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return values.cast(tp), None
    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        return values.cast(tp), None
    parse = _parser(tp)
    try:
        return parse(values), None
    except (pa.ArrowException, ValueError):
        pass
    if pa.types.is_integer(tp):
        return _with_pattern(values, _INT_PATTERN, parse, tp)
    if pa.types.is_floating(tp):
        return _with_pattern(values, _FLOAT_PATTERN, parse, tp)
    return _elementwise(values, parse, tp)


# ---------------------------------------------------------------------------------------
# CSV.


@dataclasses.dataclass
class _CsvLayout:
    names: list[str]  # the file's columns
    first_line: int  # 1-based line number of the first data line


def _csv_parse_options(
    opts: CsvOptions, handler: Callable[[Any], str] | None, multiline: bool
) -> pa_csv.ParseOptions:
    return pa_csv.ParseOptions(
        delimiter=opts.delimiter,
        quote_char=opts.quote_char if opts.quote_char is not None else False,
        escape_char=opts.escape_char if opts.escape_char is not None else False,
        newlines_in_values=multiline,
        ignore_empty_lines=True,
        invalid_row_handler=handler,
    )


def _parse_header(line: bytes, opts: CsvOptions) -> list[str]:
    table = pa_csv.read_csv(
        io.BytesIO(line),
        read_options=pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False),
        parse_options=_csv_parse_options(opts, None, False),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                f"f{i}": pa.string() for i in range(line.count(opts.delimiter.encode()) + 1)
            }
        ),
    )
    return [str(v) for v in table.to_pylist()[0].values()]


def _decode_chunk(
    chunk: bytes, first_line: int, encoding: str, path: str, pipeline: str
) -> tuple[bytes, list[ErrorRecord]]:
    """Returns the chunk as UTF-8 with undecodable lines blanked, and their errors."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        text = chunk.decode(encoding)
        return (chunk if utf8 else text.encode("utf-8")), []
    except UnicodeDecodeError:
        pass
    found: list[ErrorRecord] = []
    lines = chunk.split(b"\n")
    for i, line in enumerate(lines):
        try:
            decoded = line.decode(encoding)
        except UnicodeDecodeError as exc:
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=errors.BAD_ENCODING,
                    message=f"line is not valid {encoding}: {exc.reason} at byte {exc.start}",
                    payload=line.decode(encoding, errors="replace").rstrip("\r"),
                    source=f"{path}:{first_line + i}",
                )
            )
            # A blank line keeps the line numbering and holds no record.
            lines[i] = b""
            continue
        if not utf8:
            lines[i] = decoded.encode("utf-8")
    return b"\n".join(lines), found


def _record_lines(buf: np.ndarray, opts: CsvOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finds the lines where records start.

    Returns:
        0-based indexes of record-start lines within the chunk, and the byte offsets of the
        start and end (exclusive, without the newline) of every line.
    """
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(buf)]))
    if starts[-1] >= len(buf):  # the chunk ends with a newline: no last partial line
        starts, ends = starts[:-1], ends[:-1]
    lengths = ends - starts
    first = buf[np.minimum(starts, max(len(buf) - 1, 0))] if len(buf) else np.zeros(0)
    blank = (lengths == 0) | ((lengths == 1) & (first == 13))
    record = ~blank
    if opts.quote_char is not None:
        quote = ord(opts.quote_char)
        is_quote = buf == quote
        if opts.escape_char is not None:
            escaped = np.zeros_like(is_quote)
            escaped[1:] = buf[:-1] == ord(opts.escape_char)
            is_quote &= ~escaped
        positions = np.flatnonzero(is_quote)
        if len(positions):
            per_line = np.searchsorted(positions, ends) - np.searchsorted(positions, starts)
            before = np.cumsum(per_line) - per_line
            record &= before % 2 == 0
    return np.flatnonzero(record), starts, ends


def _csv_chunk(
    chunk: bytes,
    first_line: int,
    layout: _CsvLayout,
    source: Source,
    target: pa.Schema,
    path: str,
    pipeline: str,
) -> tuple[pa.Table | None, list[ErrorRecord]]:
    """Parses one chunk of whole lines into a table with source columns, plus errors."""
    opts = source.csv
    chunk, found = _decode_chunk(chunk, first_line, opts.encoding, path, pipeline)
    buf = np.frombuffer(chunk, dtype=np.uint8)
    record_idx, starts, ends = _record_lines(buf, opts)
    if len(record_idx) == 0:
        return None, found

    def line_text(k: int) -> str:
        # Text of the record starting on chunk line ``record_idx[k]``, up to the next one.
        line = record_idx[k]
        stop = ends[record_idx[k + 1] - 1] if k + 1 < len(record_idx) else ends[-1]
        return chunk[starts[line] : stop].decode("utf-8").rstrip("\r\n")

    multiline = opts.quote_char is not None and opts.quote_char.encode() in chunk
    invalid = 0

    def count_invalid(row: Any) -> str:
        nonlocal invalid
        invalid += 1
        return "skip"

    def convert_options(typed: bool) -> pa_csv.ConvertOptions:
        types = {name: pa.string() for name in layout.names}
        if typed:
            types.update({f.name: f.type for f in target if _csv_parses(f.type)})
        return pa_csv.ConvertOptions(
            column_types=types,
            include_columns=list(target.names),
            null_values=list(opts.null_values),
            strings_can_be_null=True,
            # A quoted empty field ("") is an empty string, not a null: writers quote it.
            quoted_strings_can_be_null=False,
            check_utf8=False,
        )

    # Fast path: Arrow's parser converts numbers itself (same parser as the string casts
    # below). Any value it refuses sends the chunk down the string path, which finds and
    # reports the bad values one by one.
    convert = convert_options(typed=True)

    def parse(handler: Callable[[Any], str], threads: bool) -> pa.Table:
        return pa_csv.read_csv(
            io.BytesIO(chunk),
            read_options=pa_csv.ReadOptions(column_names=layout.names, use_threads=threads),
            parse_options=_csv_parse_options(opts, handler, multiline),
            convert_options=convert,
        )

    try:
        table = parse(count_invalid, True)
    except pa.ArrowInvalid:
        invalid = 0
        convert = convert_options(typed=False)
        table = parse(count_invalid, True)
    keep = np.ones(len(record_idx), dtype=bool)
    if invalid:
        # Record numbers are only known to the serial parser; reparse this chunk with it.
        bad_rows: list[tuple[int, int]] = []

        def record_invalid(row: Any) -> str:
            bad_rows.append((row.number, row.actual_columns))
            return "skip"

        table = parse(record_invalid, False)
        for number, actual in bad_rows:
            k = number - 1
            if k >= len(record_idx):
                continue
            keep[k] = False
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=errors.WRONG_FIELD_COUNT,
                    message=f"expected {len(layout.names)} fields, got {actual}",
                    payload=line_text(k),
                    source=f"{path}:{first_line + int(record_idx[k])}",
                )
            )
    kept = np.flatnonzero(keep)
    if len(kept) != table.num_rows:
        # Only escape characters in odd places can get here; number rows in order.
        kept = np.arange(table.num_rows)
    lines = first_line + record_idx[kept].astype(np.int64) if len(kept) else np.zeros(0, np.int64)
    if table.num_rows == 0:
        return None, found

    columns: list[pa.Array] = []
    problems: list[tuple[np.ndarray, str, pa.Array, pa.DataType]] = []
    for field in target:
        values = table.column(field.name).combine_chunks()
        if values.type == field.type:
            columns.append(values)
            continue
        converted, bad = convert_strings(values, field.type)
        columns.append(converted)
        if bad is not None and bad.any():
            problems.append((bad, field.name, values, field.type))
    table_out = _with_source(pa.Table.from_arrays(columns, schema=target), path, lines)
    if problems:
        any_bad = np.zeros(table.num_rows, dtype=bool)
        for bad, *_ in problems:
            any_bad |= bad
        for row in np.flatnonzero(any_bad):
            parts = [
                f"column {name!r}: {values[int(row)].as_py()!r} is not a valid "
                f"{schema_lib.type_name(tp)}"
                for bad, name, values, tp in problems
                if bad[row]
            ]
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=errors.UNPARSEABLE_VALUE,
                    message="; ".join(parts),
                    payload=line_text(int(kept[row])) if len(kept) == table.num_rows else "",
                    source=f"{path}:{int(lines[row])}",
                )
            )
        table_out = table_out.filter(pa.array(~any_bad))
    found.sort(key=_line_of)
    return table_out, found


def _csv_parses(tp: pa.DataType) -> bool:
    """Types Arrow's CSV parser converts exactly as :func:`convert_strings` would."""
    return pa.types.is_integer(tp) or pa.types.is_floating(tp)


def _line_of(record: ErrorRecord) -> int:
    return int(record.source.rsplit(":", 1)[1])


def _with_source(table: pa.Table, path: str, lines: np.ndarray) -> pa.Table:
    n = table.num_rows
    file_column = pa.array([path], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64)))
    table = table.append_column(pa.field(schema_lib.FILE_COLUMN, pa.string()), file_column)
    return table.append_column(
        pa.field(schema_lib.LINE_COLUMN, pa.int64()), pa.array(lines, pa.int64())
    )


def _csv_layout(
    header_line: bytes | None, opts: CsvOptions, target: pa.Schema, path: str
) -> list[str]:
    if header_line is not None:
        text = header_line.decode(opts.encoding, errors="replace").lstrip("\ufeff")
        names = _parse_header(text.encode("utf-8"), opts)
    else:
        names = list(opts.column_names) if opts.column_names else list(target.names)
    missing = [n for n in target.names if n not in names]
    if missing:
        where = "header" if header_line is not None else "csv.column_names"
        raise ValueError(
            f"{path}: column {missing[0]!r} of the schema is not in the file's {where}"
            f" (columns: {', '.join(names)})"
        )
    return names


def _csv_lines(
    path: str, opts: CsvOptions, chunk_bytes: int, byte_range: ByteRange | None = None
) -> Iterator[tuple[bytes, int]]:
    """Yields ``(chunk, first line number)`` after the skipped rows, header first if any."""
    quote = opts.quote_char.encode() if opts.quote_char is not None else None
    escape = opts.escape_char.encode() if opts.escape_char is not None else None
    with _open(path) as stream:
        line = 1
        if byte_range is not None:
            start, end, line = byte_range
            stream.seek(start)
            stream = _Limited(stream, end - start)  # type: ignore[assignment]
        for chunk in _line_chunks(stream, chunk_bytes, quote, escape):
            yield chunk, line
            line += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)


# A piece of a file: (start, end, line number at start). Both offsets are line starts.
ByteRange = tuple[int, int, int]


class _Limited(io.RawIOBase):
    """A read-only view of the next ``size`` bytes of a stream."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.read(want)
        self._left -= len(data)
        return data


def file_ranges(path: str, size: int, source: Source) -> list[tuple[str, ByteRange | None]]:
    """Cuts a file into line-aligned byte ranges read in parallel, or keeps it whole.

    Only uncompressed CSV files larger than ``source.split_bytes`` are cut. One sequential
    scan finds, near every multiple of ``split_bytes``, the next line start and its line
    number, so each range reads its records and numbers them as in the whole file.
    """
    step = source.split_bytes
    if source.format != "csv" or step <= 0 or size <= step or path.endswith(".gz"):
        return [(path, None)]
    with _open(path) as stream:
        if isinstance(stream, gzip.GzipFile):
            return [(path, None)]
        cuts = [(0, 1)]
        position, lines, target = 0, 1, step
        while True:
            block = stream.read(8 << 20)
            if not block:
                break
            while target <= position + len(block):
                # The line start at or after `target`: just past the first newline at or
                # after target - 1 (a line starting exactly at target counts).
                newline = block.find(b"\n", max(target - 1 - position, 0))
                if newline < 0:
                    break
                lines_before = lines + block.count(b"\n", 0, newline + 1)
                start = position + newline + 1
                if start < size and start > cuts[-1][0]:
                    cuts.append((start, lines_before))
                target = max(target + step, start + 1)
            lines += block.count(b"\n")
            position += len(block)
    bounds = [c[0] for c in cuts] + [size]
    return [(path, (bounds[i], bounds[i + 1], cuts[i][1])) for i in range(len(cuts))]


def _read_csv(
    path: str,
    source: Source,
    target: pa.Schema,
    pipeline: str,
    chunk_bytes: int,
    byte_range: ByteRange | None = None,
) -> Iterator[Yielded]:
    opts = source.csv
    to_skip = opts.skip_rows + (1 if opts.header else 0)
    names: list[str] | None = None if opts.header else _csv_layout(None, opts, target, path)
    if byte_range is not None and byte_range[0] > 0:
        # A later range: the header and skipped rows belong to the first one.
        if opts.header:
            names = _csv_layout(_header_line(path, opts), opts, target, path)
        to_skip = 0
    for chunk, first_line in _csv_lines(path, opts, chunk_bytes, byte_range):
        if first_line == 1 and chunk.startswith(codecs.BOM_UTF8):
            chunk = chunk[len(codecs.BOM_UTF8) :]
        while to_skip and chunk:
            end = chunk.find(b"\n")
            line, chunk = (chunk, b"") if end < 0 else (chunk[:end], chunk[end + 1 :])
            to_skip -= 1
            if to_skip == 0 and opts.header:
                names = _csv_layout(line.rstrip(b"\r") + b"\n", opts, target, path)
            first_line += 1
        if not chunk or names is None:
            continue
        table, found = _csv_chunk(
            chunk, first_line, _CsvLayout(names, first_line), source, target, path, pipeline
        )
        yield from _batched(table, found, source.batch_size)


def _header_line(path: str, opts: CsvOptions) -> bytes:
    with _open(path) as stream:
        for _ in range(opts.skip_rows):
            stream.readline()
        line = stream.readline()
    if line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8) :]
    return line.rstrip(b"\r\n") + b"\n"


def _batched(table: pa.Table | None, found: list[ErrorRecord], size: int) -> Iterator[Yielded]:
    """Splits a table into batches of at most ``size`` rows; errors go with the first."""
    if table is None or table.num_rows == 0:
        if found:
            yield None, found
        return
    first = True
    whole = table.combine_chunks()
    for batch in whole.to_batches(max_chunksize=size):
        if batch.num_rows < whole.num_rows:
            # A slice shares its parent's buffers, and pickling it (which Beam does to
            # estimate element sizes, and to move elements between workers) copies them
            # all: compact it so each batch costs its own size.
            batch = pa.concat_batches([batch])
        yield batch, (found if first else [])
        first = False


# ---------------------------------------------------------------------------------------
# Records as Python values (JSONL, Avro, tf.Example): checked one value at a time.


class _Decimal(str):
    """A JSON number's text, kept so floats are parsed once, to the column's width."""


def _python_value(value: Any, tp: pa.DataType, binary_base64: bool) -> Any:
    """Checks one value against ``tp``; returns it ready for ``pa.array`` or raises."""
    if value is None:
        return None
    if pa.types.is_boolean(tp):
        if isinstance(value, bool):
            return value
    elif pa.types.is_integer(tp):
        if isinstance(value, int) and not isinstance(value, bool):
            bits = tp.bit_width - 1
            if -(1 << bits) <= value < (1 << bits):
                return value
    elif pa.types.is_floating(tp):
        if isinstance(value, _Decimal):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _Decimal(repr(float(value)))
    elif pa.types.is_string(tp):
        if isinstance(value, str):
            return str(value) if not isinstance(value, _Decimal) else None
    elif pa.types.is_binary(tp):
        if isinstance(value, bytes):
            return value
        if isinstance(value, str) and not isinstance(value, _Decimal):
            return base64.b64decode(value, validate=True) if binary_base64 else value.encode()
    elif pa.types.is_timestamp(tp):
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, int) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value, dt.UTC)
        if isinstance(value, str) and not isinstance(value, _Decimal):
            parsed = dt.datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    elif pa.types.is_date(tp):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str) and not isinstance(value, _Decimal):
            return dt.date.fromisoformat(value)
    elif pa.types.is_list(tp) and isinstance(value, list | tuple):
        return [_python_value(v, tp.value_type, binary_base64) for v in value]
    raise ValueError(f"got {_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, _Decimal):
        return str(value)
    text = json.dumps(value, default=str) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float_column(values: list[Any], tp: pa.DataType) -> pa.Array:
    if pa.types.is_list(tp):
        offsets = [0]
        flat: list[Any] = []
        for v in values:
            if v is not None:
                flat.extend(v)
            offsets.append(len(flat))
        mask = pa.array([v is None for v in values])
        inner = _float_column(flat, tp.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner, mask=mask).cast(tp)
    if pa.types.is_floating(tp):
        return pc.cast(pa.array(values, pa.string()), tp)
    return pa.array(values, tp)


class _RowBuilder:
    """Collects checked rows column by column, turning bad rows into error records."""

    def __init__(self, target: pa.Schema, path: str, pipeline: str, binary_base64: bool):
        self.target = target
        self.path = path
        self.pipeline = pipeline
        self.binary_base64 = binary_base64
        self.columns: list[list[Any]] = [[] for _ in target]
        self.lines: list[int] = []
        self.errors: list[ErrorRecord] = []

    def error(self, line: int, reason: str, message: str, payload: str) -> None:
        self.errors.append(
            ErrorRecord(
                pipeline=self.pipeline,
                step="read",
                reason=reason,
                message=message,
                payload=payload,
                source=f"{self.path}:{line}",
            )
        )

    def add(self, record: Mapping[str, Any], line: int, payload: Callable[[], str]) -> None:
        row: list[Any] = []
        problems: list[str] = []
        for field in self.target:
            try:
                row.append(_python_value(record.get(field.name), field.type, self.binary_base64))
            except (ValueError, TypeError, OverflowError) as exc:
                problems.append(
                    f"column {field.name!r}: expected {schema_lib.type_name(field.type)}, {exc}"
                )
        if problems:
            self.error(line, errors.UNPARSEABLE_VALUE, "; ".join(problems), payload())
            return
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.lines)

    def flush(self) -> Yielded:
        if not self.lines:
            found, self.errors = self.errors, []
            return None, found
        arrays = [
            _float_column(values, field.type)
            for values, field in zip(self.columns, self.target, strict=True)
        ]
        table = pa.Table.from_arrays(arrays, schema=self.target)
        table = _with_source(table, self.path, np.asarray(self.lines, dtype=np.int64))
        batch = table.combine_chunks().to_batches()[0]
        found = self.errors
        self.columns = [[] for _ in self.target]
        self.lines, self.errors = [], []
        return batch, found


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


def _drain(builder: _RowBuilder, size: int, final: bool) -> Iterator[Yielded]:
    if len(builder) >= size or (final and (len(builder) or builder.errors)):
        yield builder.flush()


# ---------------------------------------------------------------------------------------
# JSONL.


def _read_jsonl(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    builder = _RowBuilder(target, path, pipeline, binary_base64=True)
    with _open(path) as stream:
        for number, raw in enumerate(stream, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                builder.error(
                    number,
                    errors.BAD_ENCODING,
                    f"line is not valid utf-8: {exc.reason} at byte {exc.start}",
                    raw.decode("utf-8", errors="replace"),
                )
                continue
            try:
                record = json.loads(text, parse_float=_Decimal)
            except ValueError as exc:
                builder.error(number, errors.MALFORMED_RECORD, f"not valid JSON: {exc}", text)
                continue
            if not isinstance(record, dict):
                builder.error(
                    number,
                    errors.MALFORMED_RECORD,
                    f"expected a JSON object, got {type(record).__name__}",
                    text,
                )
                continue
            builder.add(record, number, _constant(text))
            yield from _drain(builder, source.batch_size, final=False)
    yield from _drain(builder, source.batch_size, final=True)


# ---------------------------------------------------------------------------------------
# Parquet.


def _read_parquet(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        try:
            parquet = pq.ParquetFile(stream)
        except pa.ArrowException as exc:
            raise ValueError(f"{path} is not a readable Parquet file: {exc}") from exc
        names = parquet.schema_arrow.names
        missing = [n for n in target.names if n not in names]
        if missing:
            raise ValueError(
                f"{path}: column {missing[0]!r} of the schema is not in the Parquet file"
                f" (columns: {', '.join(names)})"
            )
        line = 1
        for batch in parquet.iter_batches(batch_size=source.batch_size, columns=target.names):
            try:
                table = pa.Table.from_batches([batch]).select(target.names).cast(target)
            except (pa.ArrowException, ValueError) as exc:
                raise ValueError(f"{path}: cannot cast to the schema: {exc}") from exc
            lines = np.arange(line, line + batch.num_rows, dtype=np.int64)
            line += batch.num_rows
            if batch.num_rows:
                yield _with_source(table, path, lines).combine_chunks().to_batches()[0], []


# ---------------------------------------------------------------------------------------
# Avro.


def _read_avro(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    import fastavro

    builder = _RowBuilder(target, path, pipeline, binary_base64=False)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        try:
            records = fastavro.reader(stream)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable Avro file: {exc}") from exc
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                builder.error(
                    number,
                    errors.MALFORMED_RECORD,
                    f"expected an Avro record, got {type(record).__name__}",
                    row_payload({"value": record}),
                )
                continue
            builder.add(record, number, functools.partial(row_payload, record))
            yield from _drain(builder, source.batch_size, final=False)
    yield from _drain(builder, source.batch_size, final=True)


# ---------------------------------------------------------------------------------------
# TFRecord of tf.Example.


def tfrecord_records(stream: IO[bytes], path: str) -> Iterator[bytes]:
    """Yields the records of a TFRecord stream, checking lengths and checksums.

    Raises:
        ValueError: on a truncated file or a checksum mismatch (the file is corrupt).
    """
    from transforms.tf_example import masked_crc32c

    while True:
        header = _read_fully(stream, 12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError(f"{path}: truncated TFRecord length header")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise ValueError(f"{path}: corrupt TFRecord (length checksum mismatch)")
        data = _read_fully(stream, length + 4)
        if len(data) < length + 4:
            raise ValueError(f"{path}: truncated TFRecord record")
        if struct.unpack("<I", data[length:])[0] != masked_crc32c(data[:length]):
            raise ValueError(f"{path}: corrupt TFRecord (data checksum mismatch)")
        yield data[:length]


def _read_tfrecord(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    from transforms.tf_example import decode_tf_examples

    with _open(path) as stream:
        number = 0
        pending: list[bytes] = []

        def decode(records: list[bytes], first: int) -> Yielded:
            batch, problems = decode_tf_examples(records, target)
            found = [
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=p.reason,
                    message=p.message,
                    payload=json.dumps(
                        {"tf_example_base64": base64.b64encode(records[p.position]).decode()}
                    ),
                    source=f"{path}:{first + p.position}",
                )
                for p in problems
            ]
            bad = {p.position for p in problems}
            lines = np.array([first + i for i in range(len(records)) if i not in bad], np.int64)
            if batch.num_rows == 0:
                return None, found
            table = _with_source(pa.Table.from_batches([batch]), path, lines)
            return table.combine_chunks().to_batches()[0], found

        for record in tfrecord_records(stream, path):
            pending.append(record)
            number += 1
            if len(pending) >= source.batch_size:
                yield decode(pending, number - len(pending) + 1)
                pending = []
        if pending:
            yield decode(pending, number - len(pending) + 1)


_READERS: dict[str, Callable[[str, Source, pa.Schema, str, int], Iterator[Yielded]]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "avro": _read_avro,
    "tfrecord": _read_tfrecord,
}


# ---------------------------------------------------------------------------------------
# Schema inference.


def infer_string_type(values: pa.Array) -> pa.DataType:
    """Picks the narrowest of int64, float64, bool, timestamp and string for text values."""
    present = values.drop_null()
    if len(present) == 0:
        return pa.string()
    for tp in (pa.int64(), pa.float64()):
        _, bad = convert_strings(present, tp)
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
    loose = dataclasses.replace(source, schema=None)
    names: list[str] | None = None
    sample: list[pa.Table] = []
    rows = 0
    to_skip = opts.skip_rows + (1 if opts.header else 0)
    for chunk, first_line in _csv_lines(path, opts, 1 << 20):
        while to_skip and chunk:
            end = chunk.find(b"\n")
            line, chunk = (chunk, b"") if end < 0 else (chunk[:end], chunk[end + 1 :])
            to_skip -= 1
            if to_skip == 0 and opts.header:
                text = line.rstrip(b"\r").decode(opts.encoding, errors="replace").lstrip("\ufeff")
                names = _parse_header(text.encode("utf-8") + b"\n", opts)
            first_line += 1
        if names is None:
            if opts.header:
                continue
            if not opts.column_names:
                raise ValueError(f"{path}: csv.column_names is needed to infer a headerless schema")
            names = list(opts.column_names)
        if not chunk:
            continue
        strings = pa.schema([pa.field(n, pa.string()) for n in names])
        table, _ = _csv_chunk(
            chunk, first_line, _CsvLayout(names, first_line), loose, strings, path, "infer"
        )
        if table is not None:
            sample.append(table.select(names))
            rows += table.num_rows
        if rows >= INFER_ROWS:
            break
    if names is None:
        raise ValueError(f"{path}: cannot infer a schema from an empty file")
    if not sample:
        return pa.schema([pa.field(n, pa.string()) for n in names])
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
    with _open(path) as stream:
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
        raise ValueError(f"{path}: cannot infer a schema: no JSON object found")
    inferred = pa.Table.from_pylist(rows).schema
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in inferred])


def _infer_parquet(path: str, source: Source) -> pa.Schema:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        arrow = pq.ParquetFile(stream).schema_arrow
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in arrow])


def _infer_avro(path: str, source: Source) -> pa.Schema:
    import fastavro

    rows: list[dict[str, Any]] = []
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        for record in fastavro.reader(stream):
            rows.append(record)  # type: ignore[arg-type]
            if len(rows) >= INFER_ROWS:
                break
    if not rows:
        raise ValueError(f"{path}: cannot infer a schema from an empty Avro file")
    inferred = pa.Table.from_pylist(rows).schema
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in inferred])


def _infer_tfrecord(path: str, source: Source) -> pa.Schema:
    from transforms.tf_example import infer_tf_example_schema

    records: list[bytes] = []
    with _open(path) as stream:
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


# ---------------------------------------------------------------------------------------
# Beam.

_LOG = logging.getLogger(__name__)
BATCHES = "batches"
ERRORS = "errors"


class _ReadFileFn(beam.DoFn):
    def __init__(self, source: Source, schema: pa.Schema, pipeline: str, log: bool = True) -> None:
        self._log = log
        self._source = source
        self._schema = schema
        self._pipeline = pipeline
        self._rows = Metrics.counter("beamforge", "rows_read")
        self._errors = Metrics.counter("beamforge", "read_errors")

    def process(self, piece: tuple[str, ByteRange | None]) -> Iterable[Any]:
        path, byte_range = piece
        rows = errors = 0
        for batch, found in read_file(
            path, self._source, self._schema, pipeline=self._pipeline, byte_range=byte_range
        ):
            if found:
                errors += len(found)
                self._errors.inc(len(found))
                for record in found:
                    yield beam.pvalue.TaggedOutput(ERRORS, record)
            if batch is not None and batch.num_rows:
                rows += batch.num_rows
                self._rows.inc(batch.num_rows)
                yield batch
        # One line per file: progress for long runs, never per row.
        if self._log:
            where = f"{path} bytes {byte_range[0]}-{byte_range[1]}" if byte_range else path
            _LOG.info("read %s: %d rows, %d malformed", where, rows, errors)


def _pieces(path: str, source: Source) -> list[tuple[str, ByteRange | None]]:
    (result,) = FileSystems.match([path])
    size = result.metadata_list[0].size_in_bytes if result.metadata_list else 0
    return file_ranges(path, size, source)


class ReadRecords(beam.PTransform):
    """Reads files into Arrow record batches, sending malformed records to an error output.

    Applied to a pipeline root (``p | ReadRecords(...)``). The path patterns are expanded
    when the transform is built, so a pattern matching nothing fails before any work. The
    file list is reshuffled so files are read in parallel; each file is read in bounded
    memory by :func:`read_file`. Bounded.

    Returns:
        A ``DoOutputsTuple``: ``result["batches"]`` (also ``result.batches``) is a
        ``PCollection[pa.RecordBatch]`` with the schema's columns plus ``__file`` and
        ``__line``; ``result["errors"]`` is a ``PCollection[ErrorRecord]``, one per malformed
        record (``step="read"``, ``source="path:line"``).

    Metrics:
        Counters ``beamforge/rows_read`` (rows emitted) and ``beamforge/read_errors``.

    Raises:
        ValueError: at construction, for an invalid source or a pattern matching no file.
    """

    def __init__(
        self,
        *,
        source: Source,
        schema: pa.Schema,
        pipeline: str,
        paths: Sequence[str] | None = None,
        log_files: bool = True,
    ) -> None:
        """Validates the configuration and lists the files.

        Args:
            source: The spec's source section.
            schema: Columns and types to read (see :func:`resolve_schema`).
            pipeline: Job name recorded in error records.
            paths: Patterns overriding ``source.path`` (e.g. from the command line).
            log_files: Log one line per file read (progress); off for a second pass.
        """
        super().__init__()
        if not isinstance(source, Source):
            raise TypeError(f"source must be a Source, got {type(source).__name__}")
        if not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
        if not pipeline:
            raise ValueError("pipeline (the job name) must be given")
        source.validate()
        self._source = source
        self._schema = schema_lib.visible(schema)
        self._pipeline = pipeline
        self._log_files = log_files
        self._paths = expand_paths(list(paths) if paths is not None else source.patterns)

    @property
    def paths(self) -> list[str]:
        """The files this transform reads."""
        return list(self._paths)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            | "CutFiles" >> beam.FlatMap(_pieces, self._source)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles"
            >> beam.ParDo(
                _ReadFileFn(self._source, self._schema, self._pipeline, self._log_files)
            ).with_outputs(ERRORS, main=BATCHES)
        )
