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

Each format has its reader module (``read_csv``, ``read_jsonl``, ``read_parquet``,
``read_avro``, ``read_tfrecord``); ``infer_schema`` infers schemas, ``streams`` opens files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.core import schema as schema_lib
from transforms.core.config import FieldError
from transforms.core.errors import InputError
from transforms.core.values import convert_strings, is_float_type
from transforms.io.batches import Yielded
from transforms.io.bigquery import BigQuerySource
from transforms.io.csv_options import CsvOptions
from transforms.io.infer_schema import infer_file_schema, infer_string_type
from transforms.io.read_avro import check_avro_file, read_avro_file
from transforms.io.read_csv import ByteRange, check_csv_file, file_ranges, read_csv_file
from transforms.io.read_jsonl import read_jsonl_file
from transforms.io.read_parquet import check_parquet_file, read_parquet_file
from transforms.io.read_tfrecord import read_tfrecord_file, tfrecord_records
from transforms.io.streams import ReadError, check_readable

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
# Files checked at once before a run (headers, Parquet footers): most of the time waits.
_CHECK_THREADS = 16


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
            raise FieldError("batch_size", f"got {self.batch_size}; expected an integer >= 1")
        if self.split_bytes < 0:
            raise ValueError(
                f"split_bytes must be >= 0 (0: never split files), got {self.split_bytes}"
            )
        self.csv.validate()
        for column, type_name in (self.schema or {}).items():
            try:
                tp = schema_lib.parse_type(type_name)
            except ValueError as exc:
                raise FieldError(f"schema.{column}", str(exc)) from None
            if column.startswith(schema_lib.HIDDEN_PREFIX):
                raise FieldError(f"schema.{column}", "names starting with '__' are reserved")
            if self.format == "csv" and pa.types.is_list(tp):
                raise FieldError(f"schema.{column}", "list columns cannot be read from csv")
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
        inferred = infer_file_schema(paths[0], source)
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
    check = _CHECKERS.get(source.format, check_readable)
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
        yield from read_csv_file(path, source, target, pipeline, chunk_bytes, byte_range)
        return
    yield from _READERS[source.format](path, source, target, pipeline, chunk_bytes)


_READERS: dict[str, Callable[[str, Source, pa.Schema, str, int], Iterator[Yielded]]] = {
    "csv": read_csv_file,
    "jsonl": read_jsonl_file,
    "parquet": read_parquet_file,
    "avro": read_avro_file,
    "tfrecord": read_tfrecord_file,
}

_CHECKERS: dict[str, Callable[[str, Source, pa.Schema], None]] = {
    "csv": check_csv_file,
    "parquet": check_parquet_file,
    "avro": check_avro_file,
}


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
