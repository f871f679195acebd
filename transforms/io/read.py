"""Readers: files (local or ``gs://``) to Arrow record batches plus error records.

:func:`read_file` is the pure core: it streams one file in bounded memory and yields record
batches with exactly the requested schema (plus the hidden ``__file``/``__line`` columns)
together with one :class:`~transforms.core.errors.ErrorRecord` per malformed record.
:class:`ReadRecords` is the Beam transform that spreads a list of files over workers and
applies :func:`read_file` to each.

Malformed records never fail a read and are never dropped silently: each goes to the error
output, whatever the format, and reading goes on with the next record. Values are converted
by :mod:`transforms.core.values`, the one rule serving applies too: a value the column cannot take
rejects its row (``unparseable_value``), and so does a non-finite float (``non_finite``)
unless its column is in ``source.allow_non_finite``. A file that cannot be read at all
(missing, unreadable, a directory, not Parquet, truncated compression or framing, a schema
column missing) raises :class:`ReadError`, a one-line
:class:`~transforms.core.errors.InputError` naming the file; :func:`expand_paths` and
:func:`resolve_schema` find most of these before any work.

CSV records are found by :mod:`transforms.io.csv_records` with the parser's own quoting rules:
a quote opens a quoted value only at the start of a field (elsewhere it is a literal
character), quoted values may hold newlines, and ``__line`` is the line on which a record
starts (the header is line 1). A quote that never closes is one ``unterminated_quote`` error
and reading resumes on the next line; a record longer than ``csv.max_record_bytes`` is one
``record_too_large`` error. Blank lines hold no record and are skipped.
"""

from __future__ import annotations

import base64
import codecs
import concurrent.futures
import dataclasses
import functools
import gzip
import io
import json
import logging
import struct
import zlib
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

from transforms.core import errors
from transforms.core import schema as schema_lib
from transforms.core.errors import ErrorRecord, InputError, row_payload
from transforms.core.values import (
    Converted,
    Decimal,
    Rejection,
    convert_batch,
    convert_strings,
    convert_values,
    describe,
    is_float_type,
    non_finite_rows,
    parse_strings,
    rejected_mask,
)
from transforms.io.bigquery import BigQuerySource
from transforms.io.csv_records import (
    CsvOptions,
    Dialect,
    Problem,
    Records,
    iter_records,
    read_fully,
    scan,
    skip_lines,
)

__all__ = [
    "BATCHES",
    "CHUNK_BYTES",
    "ERRORS",
    "ByteRange",
    "CsvOptions",
    "Format",
    "ReadError",
    "ReadRecords",
    "Source",
    "check_files",
    "convert_strings",
    "declared_schema",
    "expand_paths",
    "file_ranges",
    "infer_string_type",
    "read_file",
    "resolve_schema",
    "tfrecord_records",
]

Format = Literal["csv", "jsonl", "parquet", "avro", "tfrecord", "bigquery"]

# Bytes of whole records parsed at once: big enough for Arrow's vectorised parser to shine,
# small enough to keep a worker's memory bounded whatever the file size.
CHUNK_BYTES = 16 << 20
# Rows looked at to infer a schema.
INFER_ROWS = 10_000
# Files checked at once before a run (headers, Parquet footers): most of the time waits.
_CHECK_THREADS = 16

_GZIP_MAGIC = b"\x1f\x8b"


class ReadError(InputError):
    """An input file cannot be read as the source says; the message names the file."""


@dataclasses.dataclass
class Source:
    """Where input records come from and what they look like (the spec's ``source``).

    Attributes:
        format: File format.
        path: File paths or glob patterns, local or ``gs://``.
        schema: ``{column: type name}`` (see :mod:`transforms.core.schema`); required unless
            ``infer_schema`` is true, and wins over inferred types when both are given.
        infer_schema: Infer the schema from the first file.
        csv: CSV layout (``format: csv`` only).
        batch_size: Maximum rows per emitted record batch.
        split_bytes: Uncompressed CSV files larger than this are read as byte ranges of about
            this size, in parallel; 0 never splits. Ranges are cut at record starts (quoted
            newlines included), found by one scan of the file.
        allow_non_finite: Float columns that accept NaN, infinities and values beyond their
            type's range (e.g. ``1e39`` for float32, read as infinity). In every other float
            column such a value rejects its row (reason ``non_finite``). Recorded in the
            transform artifact, so serving applies the same rule.
    """

    format: Format
    path: str | list[str] = ""
    schema: dict[str, str] | None = None
    infer_schema: bool = False
    csv: CsvOptions = dataclasses.field(default_factory=CsvOptions)
    batch_size: int = 8192
    bigquery: BigQuerySource | None = None
    split_bytes: int = 32 << 20
    allow_non_finite: list[str] = dataclasses.field(default_factory=list)

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
        if len(set(self.allow_non_finite)) != len(self.allow_non_finite):
            raise ValueError(f"allow_non_finite lists a column twice: {self.allow_non_finite}")
        if self.schema is not None and not self.infer_schema and self.bigquery is None:
            problem = non_finite_problem(self.allow_non_finite, declared_schema(self))
            if problem:
                raise ValueError(problem)

    @property
    def patterns(self) -> list[str]:
        """The path patterns as a list."""
        return [self.path] if isinstance(self.path, str) else list(self.path)


def non_finite_problem(columns: Sequence[str], schema: pa.Schema | None) -> str | None:
    """What is wrong with an ``allow_non_finite`` list for ``schema``, or None."""
    if schema is None:
        return None
    for name in columns:
        if name not in schema.names:
            return (
                f"allow_non_finite: column {name!r} is not in the schema"
                f" (columns: {', '.join(schema_lib.visible(schema).names)})"
            )
        if not is_float_type(schema.field(name).type):
            return (
                f"allow_non_finite: column {name!r} is"
                f" {schema_lib.type_name(schema.field(name).type)}; only float columns hold"
                " non-finite values"
            )
    return None


def declared_schema(source: Source) -> pa.Schema | None:
    """Returns the Arrow schema the spec declares, or None."""
    return None if source.schema is None else schema_lib.arrow_schema(source.schema)


def expand_paths(patterns: Sequence[str]) -> list[str]:
    """Expands glob patterns into a sorted list of files (local or ``gs://``).

    Raises:
        InputError: naming a pattern that matches no file (saying so when it is a
            directory).
    """
    if not patterns or any(not p for p in patterns):
        raise InputError("source.path", "is empty: give file paths or glob patterns")
    paths: list[str] = []
    for pattern, result in zip(patterns, FileSystems.match(list(patterns)), strict=True):
        found = sorted(m.path for m in result.metadata_list if not _is_directory(m.path))
        if not found:
            if _is_directory(pattern):
                folder = pattern.rstrip("/")
                raise InputError(
                    pattern,
                    f"is a directory, not a file: give a pattern for its files, e.g."
                    f" '{folder}/*.csv'",
                )
            raise InputError(pattern, "no file matches this path or pattern")
        paths.extend(p for p in found if p not in paths)
    return paths


def _is_directory(path: str) -> bool:
    """Whether ``path`` is a local directory, or a ``gs://`` prefix holding objects."""
    if "://" not in path:
        import os

        return os.path.isdir(path)
    if any(c in path for c in "*?["):
        return False
    try:
        (result,) = FileSystems.match([path.rstrip("/") + "/*"], limits=[1])
    except Exception:  # an unreachable bucket is reported by the caller's own match
        return False
    return bool(result.metadata_list)


def resolve_schema(source: Source, paths: Sequence[str]) -> pa.Schema:
    """Returns the schema to read with: declared, or inferred from the first file.

    With ``infer_schema``, types are inferred from the first file (int64, float64, bool,
    timestamp or string for text formats; the file's own types for binary ones) and the
    declared schema, if any, overrides them column by column. Then every file is checked
    (:func:`check_files`), so an unreadable file or one without a schema column fails now,
    not halfway through a run.

    Raises:
        ValueError: if no schema is declared and inference is off, or there is no file.
        InputError: for a file that cannot be read as the source says, or an
            ``allow_non_finite`` column that is not a float column of the schema.
    """
    declared = declared_schema(source)
    if not source.infer_schema:
        if declared is None:
            raise ValueError("schema is required unless infer_schema is true")
        schema = declared
    else:
        if not paths:
            raise ValueError("cannot infer a schema without a file")
        inferred = _INFERERS[source.format](paths[0], source)
        if declared is None:
            schema = inferred
        else:
            fields = [declared.field(f.name) if f.name in declared.names else f for f in inferred]
            fields += [f for f in declared if f.name not in inferred.names]
            schema = pa.schema(fields)
    problem = non_finite_problem(source.allow_non_finite, schema)
    if problem:
        raise InputError("source.allow_non_finite", problem.split(": ", 1)[1])
    check_files(source, schema, paths)
    return schema


def check_files(source: Source, schema: pa.Schema, paths: Sequence[str]) -> None:
    """Checks, before any work, that every file can be read with ``schema``.

    Each file is opened; a CSV file's header and a Parquet file's footer (truncated or
    corrupt files fail there) must hold the schema's columns; an Avro file's header must
    parse. Files are checked a few at a time, in parallel.

    Raises:
        ReadError: for the first file (in ``paths`` order) that fails, naming it.
    """
    if not paths or source.format == "bigquery":
        return
    target = schema_lib.visible(schema)
    check = _CHECKERS.get(source.format, _check_readable)
    with concurrent.futures.ThreadPoolExecutor(min(_CHECK_THREADS, len(paths))) as pool:
        outcomes = list(pool.map(lambda p: _outcome(check, p, source, target), paths))
    for failure in outcomes:
        if failure is not None:
            raise failure


def _outcome(
    check: Callable[[str, Source, pa.Schema], None], path: str, source: Source, target: pa.Schema
) -> ReadError | None:
    try:
        check(path, source, target)
    except ReadError as exc:
        return exc
    return None


def _check_readable(path: str, source: Source, target: pa.Schema) -> None:
    with _open(path) as stream:
        stream.read(1)


def _check_csv(path: str, source: Source, target: pa.Schema) -> None:
    if not source.csv.header:
        _check_readable(path, source, target)
        _csv_layout(None, source.csv, target, path)
        return
    header = _csv_header(path, source.csv)
    if header is not None:  # an empty file holds no record, and no error
        _csv_layout(header, source.csv, target, path)


def _check_parquet(path: str, source: Source, target: pa.Schema) -> None:
    with _open_raw(path) as stream:
        _parquet_columns(_parquet_file(stream, path), target, path)


def _check_avro(path: str, source: Source, target: pa.Schema) -> None:
    import fastavro

    with _open_raw(path) as stream:
        try:
            fastavro.reader(stream)
        except Exception as exc:
            raise ReadError(path, f"is not a readable Avro file ({exc})") from None


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
        chunk_bytes: Bytes of whole records parsed at once (text formats).
        byte_range: ``(start, end, first line)`` of an uncompressed CSV file, from
            :func:`file_ranges`: only the records starting within it are read, numbered as
            in the whole file.

    Yields:
        ``(batch, errors)`` pairs. ``batch`` holds at most ``source.batch_size`` rows with
        ``schema``'s columns plus ``__file`` and ``__line`` (or is None when a chunk held
        only errors); ``errors`` has one record per malformed input record. An empty file
        yields nothing.

    Raises:
        ReadError: if the file cannot be read at all (missing, unreadable, wrong format,
            truncated, a column of the schema missing from a CSV header or a Parquet file);
            the message names the file.
    """
    target = schema_lib.visible(schema)
    problem = non_finite_problem(source.allow_non_finite, target)
    if problem:
        raise InputError("source.allow_non_finite", problem.split(": ", 1)[1])
    if byte_range is not None:
        if source.format != "csv":
            raise ValueError(f"byte ranges are read for csv files only, not {source.format}")
        yield from _read_csv(path, source, target, pipeline, chunk_bytes, byte_range)
        return
    yield from _READERS[source.format](path, source, target, pipeline, chunk_bytes)


# ---------------------------------------------------------------------------------------
# Opening files.


def _open_raw(path: str) -> IO[bytes]:
    """Opens a file through Beam's file systems.

    Raises:
        ReadError: if the file is missing, a directory or not readable (permissions);
            other failures (a network error) are raised as they are, to be retried.
    """
    try:
        stream: IO[bytes] = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:
        why = _user_fault(exc)
        if why is None:
            raise
        raise ReadError(path, f"cannot be opened: {why}") from exc
    return stream


def _user_fault(exc: BaseException) -> str | None:
    """Why opening failed, when the user can fix it (Beam wraps the cause), else None."""
    try:
        from google.api_core import exceptions as google
    except ImportError:  # without the gcp extra there is no gs:// either
        google = None  # type: ignore[assignment]
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PermissionError) or (
            google is not None and isinstance(seen, google.Forbidden)
        ):
            return "permission denied (check the file's permissions or your credentials)"
        if isinstance(seen, IsADirectoryError):
            return "it is a directory, not a file"
        if isinstance(seen, FileNotFoundError) or (
            google is not None and isinstance(seen, google.NotFound)
        ):
            return "no such file"
        seen = seen.__cause__ or seen.__context__
    return None


def _open(path: str) -> IO[bytes]:
    """Opens a file through Beam's file systems, decompressing gzip transparently."""
    raw = _open_raw(path)
    stream: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[type-var]
    try:
        magic = stream.peek(2)[:2]
    except OSError as exc:
        why = _user_fault(exc)
        if why is None:
            raise
        raise ReadError(path, f"cannot be read: {why}") from exc
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream  # type: ignore[return-value]


# Exceptions a truncated or corrupt compressed stream raises while it is read.
_BROKEN_STREAM = (EOFError, zlib.error, gzip.BadGzipFile)


# ---------------------------------------------------------------------------------------
# CSV.


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
        read_options=pa_csv.ReadOptions(
            autogenerate_column_names=True,
            use_threads=False,
            block_size=max(1 << 20, 2 * len(line)),
        ),
        parse_options=_csv_parse_options(opts, None, True),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                f"f{i}": pa.string() for i in range(line.count(opts.delimiter.encode()) + 1)
            },
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return [str(v) for v in table.to_pylist()[0].values()]


def _csv_header(path: str, opts: CsvOptions) -> Records | None:
    """The header record of a CSV file (after ``skip_rows``), or None for an empty file."""
    with _open(path) as stream:
        try:
            head, offset, line = skip_lines(stream, opts.skip_rows)
            for item in iter_records(
                stream,
                Dialect.of(opts),
                chunk_bytes=1 << 16,
                max_record_bytes=opts.max_record_bytes,
                line=line,
                offset=offset,
                head=head,
            ):
                if isinstance(item, Problem):
                    raise ReadError(
                        f"{path}:{item.line}", f"the header cannot be read: {item.message}"
                    )
                if len(item):
                    return item
        except _BROKEN_STREAM as exc:
            raise ReadError(path, f"is a truncated or corrupt gzip file ({exc})") from None
    return None


def _csv_layout(
    header: Records | None, opts: CsvOptions, target: pa.Schema, path: str
) -> list[str]:
    """The file's column names (from its header record, or the options), checked."""
    if header is not None:
        raw = header.data[int(header.starts[0]) : int(header.stops[0])]
        text = raw.decode(opts.encoding, errors="replace").rstrip("\r\n")
        names = _parse_header(text.encode("utf-8") + b"\n", opts)
    elif opts.header:
        names = []
    else:
        names = list(opts.column_names) if opts.column_names else list(target.names)
    missing = [n for n in target.names if n not in names]
    if missing:
        where = "header" if opts.header else "csv.column_names"
        raise ReadError(
            path,
            f"column {missing[0]!r} of the schema is not in the file's {where}"
            f" (columns: {', '.join(names) or 'none, the file is empty'})",
        )
    return names


def _decoded(
    records: Records, encoding: str, dialect: Dialect, path: str, pipeline: str
) -> tuple[Records, list[ErrorRecord]]:
    """The records as UTF-8, without those that do not decode (one error each)."""
    data = records.data
    if data.isascii():
        return records, []
    utf8 = codecs.lookup(encoding).name == "utf-8"
    found: list[ErrorRecord] = []
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        first = int(np.searchsorted(records.stops, exc.start, side="right"))
        keep = np.ones(len(records), dtype=bool)
        for k in range(first, len(records)):
            raw = data[int(records.starts[k]) : int(records.stops[k])]
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as bad:
                keep[k] = False
                found.append(
                    ErrorRecord(
                        pipeline=pipeline,
                        step="read",
                        reason=errors.BAD_ENCODING,
                        message=f"line is not valid {encoding}: {bad.reason} at byte {bad.start}",
                        payload=raw.decode(encoding, errors="replace").rstrip("\r\n"),
                        source=f"{path}:{int(records.lines[k])}",
                    )
                )
        records = records.select(keep)
        if not len(records):
            return records, found
        text = records.data.decode(encoding)
    if utf8:
        return records, found
    # Transcoding keeps every ASCII byte, so the records are the same, at new offsets.
    data = text.encode("utf-8")
    ends = scan(data, dialect, final=True).ends
    if not len(ends) or ends[-1] != len(data):
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1]))
    head = np.frombuffer(data, dtype=np.uint8)[np.minimum(starts, len(data) - 1)]
    keep = (head != 10) & (head != 13)
    assert int(keep.sum()) == len(records), f"{path}: transcoding changed the records"
    return Records(data, records.offset, starts[keep], ends[keep], records.lines), found


def _read_options(names: list[str], records: Records, threads: bool) -> pa_csv.ReadOptions:
    # A block must hold the longest record whole (Arrow cannot parse a row across blocks).
    longest = int((records.stops - records.starts).max()) if len(records) else 0
    block = max(1 << 20, 1 << (longest + 1).bit_length())
    return pa_csv.ReadOptions(column_names=names, use_threads=threads, block_size=block)


def _csv_block(
    records: Records,
    names: list[str],
    source: Source,
    target: pa.Schema,
    path: str,
    pipeline: str,
) -> tuple[pa.Table | None, list[ErrorRecord]]:
    """Parses whole records into a table with source columns, plus their errors."""
    opts = source.csv
    dialect = Dialect.of(opts)
    records, found = _decoded(records, opts.encoding, dialect, path, pipeline)
    if not len(records):
        return None, found
    data = records.data
    specials = [c.encode() for c in (opts.quote_char, opts.escape_char) if c]
    multiline = any(c in data for c in specials)
    allowed = set(source.allow_non_finite)

    def convert_options(typed: bool) -> pa_csv.ConvertOptions:
        types = {name: pa.string() for name in names}
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

    def parse(handler: Callable[[Any], str], threads: bool, typed: bool) -> pa.Table:
        return pa_csv.read_csv(
            io.BytesIO(data),
            read_options=_read_options(names, records, threads),
            parse_options=_csv_parse_options(opts, handler, multiline),
            convert_options=convert_options(typed),
        )

    invalid = 0

    def count_invalid(row: Any) -> str:
        nonlocal invalid
        invalid += 1
        return "skip"

    # Fast path: Arrow's parser converts numbers itself (the same parser as the text rule
    # of transforms.core.values). A value it refuses, or a non-finite float where none is
    # allowed, sends the block down the text path, which reports the bad values one by one.
    typed = True
    table: pa.Table | None
    try:
        table = parse(count_invalid, True, typed)
        if any(
            len(non_finite_rows(table.column(f.name)))
            for f in target
            if f.name not in allowed and pa.types.is_floating(f.type)
        ):
            raise pa.ArrowInvalid("non-finite values")
    except pa.ArrowInvalid:
        invalid, typed = 0, False
        table = _or_none(lambda: parse(count_invalid, True, typed))
    keep = np.ones(len(records), dtype=bool)
    wrong: list[tuple[int, int]] = []
    if invalid and table is not None:
        # Record numbers are only known to the serial parser; reparse this block with it.
        def record_invalid(row: Any) -> str:
            wrong.append((row.number - 1, row.actual_columns))
            return "skip"

        table = _or_none(lambda: parse(record_invalid, False, typed))
        for k, _ in wrong:
            if 0 <= k < len(keep):
                keep[k] = False
    if table is None or table.num_rows != int(keep.sum()) or len(wrong) != invalid:
        # Arrow and transforms.io.csv_records disagree on the records (never seen): parse them
        # one by one rather than misnumber rows or fail the file.
        _LOG.warning("%s: records parsed one by one after a parser disagreement", path)
        table, keep, wrong = _csv_one_by_one(records, names, source, target)
    for k, actual in wrong:
        found.append(
            ErrorRecord(
                pipeline=pipeline,
                step="read",
                reason=errors.WRONG_FIELD_COUNT,
                message=f"expected {len(names)} fields, got {actual}",
                payload=records.text(k),
                source=f"{path}:{int(records.lines[k])}",
            )
        )
    kept = np.flatnonzero(keep)
    if table.num_rows == 0:
        found.sort(key=_line_of)
        return None, found
    lines = records.lines[kept]
    columns: list[pa.Array] = []
    problems: dict[int, list[tuple[str, Rejection]]] = {}
    for field in target:
        values = table.column(field.name).combine_chunks()
        if values.type == field.type:
            columns.append(values)
            continue
        converted = parse_strings(values, field.type, allow_non_finite=field.name in allowed)
        columns.append(converted.array)
        for row, rejection in converted.rejected.items():
            problems.setdefault(row, []).append((field.name, rejection))
    table_out = _with_source(pa.Table.from_arrays(columns, schema=target), path, lines)
    if problems:
        for row in sorted(problems):
            reason, message = describe(problems[row])
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=reason,
                    message=message,
                    payload=records.text(int(kept[row])),
                    source=f"{path}:{int(lines[row])}",
                )
            )
        bad = np.zeros(table.num_rows, dtype=bool)
        bad[list(problems)] = True
        table_out = table_out.filter(pa.array(~bad))
    found.sort(key=_line_of)
    return table_out, found


def _or_none(parse: Callable[[], pa.Table]) -> pa.Table | None:
    try:
        return parse()
    except pa.ArrowInvalid:
        return None


def _csv_one_by_one(
    records: Records, names: list[str], source: Source, target: pa.Schema
) -> tuple[pa.Table, np.ndarray, list[tuple[int, int]]]:
    """Slow, sure path: each record parsed on its own, as strings."""
    opts = source.csv
    strings = pa.schema([pa.field(n, pa.string()) for n in target.names])
    tables: list[pa.Table] = []
    keep = np.zeros(len(records), dtype=bool)
    wrong: list[tuple[int, int]] = []
    for k in range(len(records)):
        one = records.select(np.arange(len(records)) == k)
        fields: list[int] = []

        def count(row: Any, fields: list[int] = fields) -> str:
            fields.append(row.actual_columns)
            return "skip"

        try:
            table = pa_csv.read_csv(
                io.BytesIO(one.data),
                read_options=_read_options(names, one, False),
                parse_options=_csv_parse_options(opts, count, True),
                convert_options=pa_csv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    include_columns=list(target.names),
                    null_values=list(opts.null_values),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:
            table = strings.empty_table()
        if table.num_rows == 1:
            keep[k] = True
            tables.append(table.select(target.names))
        else:
            wrong.append((k, fields[0] if fields else 0))
    table = pa.concat_tables(tables) if tables else strings.empty_table()
    return table, keep, wrong


def _csv_parses(tp: pa.DataType) -> bool:
    """Types Arrow's CSV parser converts exactly as :func:`parse_strings` would."""
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


# A piece of a file: (start, end, line number at start). Both offsets are record starts.
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
    """Cuts a file into byte ranges at record starts, read in parallel, or keeps it whole.

    Only uncompressed CSV files larger than ``source.split_bytes`` are cut. One sequential
    scan of the file finds its records exactly as a whole read does
    (:func:`transforms.io.csv_records.iter_records`, quoted newlines, escapes and broken
    records included), and the first record starting at or after every multiple of
    ``split_bytes`` (past the header) starts a range, with its line number. A range read
    from a record start finds the same records as the whole read from there on (records are
    decided by the bytes from their start), so every record is read once, by the range it
    starts in, and numbered as in the whole file.
    """
    step = source.split_bytes
    if source.format != "csv" or step <= 0 or size <= step or path.endswith(".gz"):
        return [(path, None)]
    opts = source.csv
    cuts: list[tuple[int, int]] = [(0, 1)]
    with _open(path) as stream:
        if isinstance(stream, gzip.GzipFile):
            return [(path, None)]
        head, offset, line = skip_lines(stream, opts.skip_rows)
        header = opts.header
        target = step
        for item in iter_records(
            stream,
            Dialect.of(opts),
            chunk_bytes=8 << 20,
            max_record_bytes=opts.max_record_bytes,
            line=line,
            offset=offset,
            head=head,
        ):
            if isinstance(item, Problem):
                if header:
                    return [(path, None)]  # the reader reports the broken header
                continue
            starts = item.offset + item.starts
            lines = item.lines
            if header and len(starts):
                starts, lines, header = starts[1:], lines[1:], False
            while len(starts):
                k = int(np.searchsorted(starts, target, side="left"))
                if k >= len(starts):
                    break
                start = int(starts[k])
                if start < size and start > cuts[-1][0]:
                    cuts.append((start, int(lines[k])))
                target = max(target + step, start + 1)
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
    dialect = Dialect.of(opts)
    names: list[str] | None = None if opts.header else _csv_layout(None, opts, target, path)
    with _open(path) as stream:
        start, end, line = byte_range if byte_range is not None else (0, -1, 1)
        if byte_range is not None:
            stream.seek(start)
            stream = _Limited(stream, end - start)  # type: ignore[assignment]
        try:
            if start == 0:
                head, offset, line = skip_lines(stream, opts.skip_rows)
            else:
                # A later range: the header and skipped rows belong to the first one.
                head, offset = b"", start
                if opts.header:
                    names = _csv_layout(_csv_header(path, opts), opts, target, path)
            for item in iter_records(
                stream,
                dialect,
                chunk_bytes=chunk_bytes,
                max_record_bytes=opts.max_record_bytes,
                line=line,
                offset=offset,
                head=head,
            ):
                if isinstance(item, Problem):
                    if names is None:
                        raise ReadError(
                            f"{path}:{item.line}", f"the header cannot be read: {item.message}"
                        )
                    yield None, [_problem_record(item, path, pipeline, opts.encoding)]
                    continue
                if names is None:
                    names = _csv_layout(item, opts, target, path)
                    item = item.select(np.arange(len(item)) > 0)
                if not len(item):
                    continue
                table, found = _csv_block(item, names, source, target, path, pipeline)
                yield from _batched(table, found, source.batch_size)
        except _BROKEN_STREAM as exc:
            raise _truncated(path, exc) from None


def _truncated(path: str, exc: BaseException) -> ReadError:
    """The error for a compressed file that breaks off; counts its whole lines again."""
    lines = 0
    try:
        with _open(path) as stream:
            while True:
                piece = stream.read(1 << 16)
                if not piece:
                    break
                lines += piece.count(b"\n")
    except _BROKEN_STREAM:
        pass
    return ReadError(
        path,
        f"is a truncated or corrupt gzip file ({exc}): its last whole line is line {lines};"
        " write or upload it again",
    )


def _problem_record(problem: Problem, path: str, pipeline: str, encoding: str) -> ErrorRecord:
    return ErrorRecord(
        pipeline=pipeline,
        step="read",
        reason=problem.reason,
        message=problem.message,
        payload=problem.payload.decode(encoding, errors="replace"),
        source=f"{path}:{problem.line}",
    )


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
# Records as Python values (JSONL, Avro): converted column by column at each flush.


class _RowBuilder:
    """Collects records, then converts them column by column; bad rows become errors."""

    def __init__(
        self, target: pa.Schema, path: str, pipeline: str, binary_base64: bool, source: Source
    ):
        self.target = target
        self.path = path
        self.pipeline = pipeline
        self.binary_base64 = binary_base64
        self.allowed = set(source.allow_non_finite)
        self.records: list[Mapping[str, Any]] = []
        self.payloads: list[Callable[[], str]] = []
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
        self.records.append(record)
        self.payloads.append(payload)
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.lines)

    def flush(self) -> Yielded:
        found, self.errors = self.errors, []
        if not self.lines:
            return None, found
        arrays: list[pa.Array] = []
        problems: dict[int, list[tuple[str, Rejection]]] = {}
        for field in self.target:
            converted: Converted = convert_values(
                [r.get(field.name) for r in self.records],
                field.type,
                allow_non_finite=field.name in self.allowed,
                binary_base64=self.binary_base64,
            )
            arrays.append(converted.array)
            for row, rejection in converted.rejected.items():
                problems.setdefault(row, []).append((field.name, rejection))
        lines = np.asarray(self.lines, dtype=np.int64)
        table = _with_source(pa.Table.from_arrays(arrays, schema=self.target), self.path, lines)
        for row in sorted(problems):
            reason, message = describe(problems[row])
            self.error(int(lines[row]), reason, message, self.payloads[row]())
        found += self.errors
        self.errors = []
        if problems:
            bad = np.zeros(len(lines), dtype=bool)
            bad[list(problems)] = True
            table = table.filter(pa.array(~bad))
        found.sort(key=_line_of)
        self.records, self.payloads, self.lines = [], [], []
        if table.num_rows == 0:
            return None, found
        return table.combine_chunks().to_batches()[0], found


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


def _drain(builder: _RowBuilder, size: int, final: bool) -> Iterator[Yielded]:
    if len(builder) >= size or (final and (len(builder) or builder.errors)):
        batch, found = builder.flush()
        if batch is not None or found:
            yield batch, found


# ---------------------------------------------------------------------------------------
# JSONL.


def _read_jsonl(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    builder = _RowBuilder(target, path, pipeline, binary_base64=True, source=source)
    with _open(path) as stream:
        try:
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
                    # Bare NaN/Infinity literals parse (Python's json does); the non-finite
                    # rule then rejects them like any other non-finite float.
                    record = json.loads(text, parse_float=Decimal)
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
        except _BROKEN_STREAM as exc:
            raise _truncated(path, exc) from None
    yield from _drain(builder, source.batch_size, final=True)


# ---------------------------------------------------------------------------------------
# Parquet.


def _parquet_file(stream: IO[bytes], path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        raise ReadError(
            path, f"is not a readable Parquet file (truncated or corrupt?): {exc}"
        ) from None


def _parquet_columns(parquet: pq.ParquetFile, target: pa.Schema, path: str) -> None:
    names = parquet.schema_arrow.names
    missing = [n for n in target.names if n not in names]
    if missing:
        raise ReadError(
            path,
            f"column {missing[0]!r} of the schema is not in the Parquet file"
            f" (columns: {', '.join(names)})",
        )


def _read_parquet(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    allowed = set(source.allow_non_finite)
    with _open_raw(path) as stream:
        parquet = _parquet_file(stream, path)
        _parquet_columns(parquet, target, path)
        line = 1
        batches = parquet.iter_batches(batch_size=source.batch_size, columns=target.names)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                raise ReadError(
                    path, f"is not a readable Parquet file (corrupt after row {line - 1}): {exc}"
                ) from None
            n = batch.num_rows
            lines = np.arange(line, line + n, dtype=np.int64)
            line += n
            if n:
                yield _typed_batch(batch, target, allowed, path, pipeline, lines, _row_payloads)


def _row_payloads(batch: pa.RecordBatch | pa.Table, rows: Sequence[int]) -> list[str]:
    return [row_payload(batch.slice(int(i), 1).to_pylist()[0]) for i in rows]


def _typed_batch(
    batch: pa.RecordBatch | pa.Table,
    target: pa.Schema,
    allowed: set[str],
    path: str,
    pipeline: str,
    lines: np.ndarray,
    payloads: Callable[[pa.RecordBatch | pa.Table, Sequence[int]], list[str]],
) -> Yielded:
    """Converts a typed batch to ``target`` value by value: bad values reject their row."""
    converted, problems = convert_batch(batch, target, allow_non_finite=allowed)
    table = _with_source(converted, path, lines)
    found: list[ErrorRecord] = []
    if problems:
        rows = sorted(problems)
        for row, payload in zip(rows, payloads(batch, rows), strict=True):
            reason, message = describe(problems[row])
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=reason,
                    message=message,
                    payload=payload,
                    source=f"{path}:{int(lines[row])}",
                )
            )
        table = table.filter(pa.array(~rejected_mask(len(lines), problems)))
    if table.num_rows == 0:
        return None, found
    return table.combine_chunks().to_batches()[0], found


# ---------------------------------------------------------------------------------------
# Avro.


def _read_avro(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    import fastavro

    builder = _RowBuilder(target, path, pipeline, binary_base64=False, source=source)
    number = 0
    with _open_raw(path) as stream:
        try:
            records = fastavro.reader(stream)
        except Exception as exc:
            raise ReadError(path, f"is not a readable Avro file ({exc})") from None
        try:
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
        except (EOFError, ValueError, OSError, struct.error) as exc:
            raise ReadError(
                path, f"is a truncated or corrupt Avro file: it ends after record {number} ({exc})"
            ) from None
    yield from _drain(builder, source.batch_size, final=True)


# ---------------------------------------------------------------------------------------
# TFRecord of tf.Example.


def tfrecord_records(stream: IO[bytes], path: str) -> Iterator[bytes]:
    """Yields the records of a TFRecord stream, checking lengths and checksums.

    Raises:
        ReadError: on a truncated file or a checksum mismatch (the file is corrupt).
    """
    from transforms.io.tf_example import masked_crc32c

    number = 0
    while True:
        try:
            header = read_fully(stream, 12)
        except _BROKEN_STREAM as exc:
            raise ReadError(path, f"is a truncated or corrupt gzip file ({exc})") from None
        if not header:
            return
        number += 1
        if len(header) < 12:
            raise ReadError(path, f"is a truncated TFRecord file: record {number}'s length header")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise ReadError(path, f"is a corrupt TFRecord file: record {number}'s length checksum")
        try:
            data = read_fully(stream, length + 4)
        except _BROKEN_STREAM as exc:
            raise ReadError(path, f"is a truncated or corrupt gzip file ({exc})") from None
        if len(data) < length + 4:
            raise ReadError(path, f"is a truncated TFRecord file: record {number} is cut short")
        if struct.unpack("<I", data[length:])[0] != masked_crc32c(data[:length]):
            raise ReadError(path, f"is a corrupt TFRecord file: record {number}'s data checksum")
        yield data[:length]


def _read_tfrecord(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    from transforms.io.tf_example import decode_tf_examples

    allowed = set(source.allow_non_finite)

    def encoded(record: bytes) -> str:
        return json.dumps({"tf_example_base64": base64.b64encode(record).decode()})

    def decode(records: list[bytes], first: int) -> Yielded:
        batch, problems = decode_tf_examples(records, target)
        found = [
            ErrorRecord(
                pipeline=pipeline,
                step="read",
                reason=p.reason,
                message=p.message,
                payload=encoded(records[p.position]),
                source=f"{path}:{first + p.position}",
            )
            for p in problems
        ]
        bad = {p.position for p in problems}
        good = [i for i in range(len(records)) if i not in bad]
        if batch.num_rows == 0:
            return None, found
        lines = np.array([first + i for i in good], np.int64)
        # The Examples' values have their columns' types; the non-finite rule still applies.
        checked, more = _typed_batch(
            batch,
            target,
            allowed,
            path,
            pipeline,
            lines,
            lambda _, rows: [encoded(records[good[i]]) for i in rows],
        )
        found = sorted(found + more, key=_line_of)
        return checked, found

    with _open(path) as stream:
        number = 0
        pending: list[bytes] = []
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

_CHECKERS: dict[str, Callable[[str, Source, pa.Schema], None]] = {
    "csv": _check_csv,
    "parquet": _check_parquet,
    "avro": _check_avro,
}


# ---------------------------------------------------------------------------------------
# Schema inference.


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
        header = _csv_header(path, opts)
        if header is None:
            raise ReadError(path, "cannot infer a schema from an empty file")
        names = _csv_layout(header, opts, pa.schema([]), path)
    elif opts.column_names:
        names = list(opts.column_names)
    else:
        raise ReadError(path, "csv.column_names is needed to infer a headerless schema")
    strings = pa.schema([pa.field(n, pa.string()) for n in names])
    loose = dataclasses.replace(source, schema=None, allow_non_finite=[])
    sample: list[pa.Table] = []
    rows = 0
    for batch, _ in _read_csv(path, loose, strings, "infer", 1 << 20):
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
        raise ReadError(path, "cannot infer a schema: no JSON object found")
    inferred = pa.Table.from_pylist(rows).schema
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in inferred])


def _infer_parquet(path: str, source: Source) -> pa.Schema:
    with _open_raw(path) as stream:
        arrow = _parquet_file(stream, path).schema_arrow
    return pa.schema([pa.field(f.name, _normalise(f.type)) for f in arrow])


def _infer_avro(path: str, source: Source) -> pa.Schema:
    import fastavro

    rows: list[dict[str, Any]] = []
    with _open_raw(path) as stream:
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
        ValueError: at construction, for an invalid source.
        InputError: at construction, for a pattern matching no file (or a directory); while
            running, a :class:`ReadError` for a file that cannot be read at all (it reaches
            the launcher as a ``ReadError``, whatever Beam wraps it in).
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
