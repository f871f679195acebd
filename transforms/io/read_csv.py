"""CSV reader: files to typed record batches, a malformed record to one error record.

CSV records are found by :mod:`transforms.io.csv_records` with the parser's own quoting rules:
a quote opens a quoted value only at the start of a field (elsewhere it is a literal
character), quoted values may hold newlines, and ``__line`` is the line on which a record
starts (the header is line 1). A quote that never closes is one ``unterminated_quote`` error
and reading resumes on the next line; a record longer than ``csv.max_record_bytes`` is one
``record_too_large`` error. Blank lines hold no record and are skipped.

Uncompressed files larger than ``source.split_bytes`` are cut into byte ranges at record
starts (:func:`file_ranges`) and read in parallel, each row numbered as in the whole file.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from transforms.core.errors import ErrorRecord
from transforms.io.batches import Yielded, batched
from transforms.io.csv_options import CsvOptions, Dialect
from transforms.io.csv_parse import parse_header, parse_records
from transforms.io.csv_records import Problem, Records, iter_records, skip_lines
from transforms.io.streams import (
    BROKEN_STREAM,
    ReadError,
    check_readable,
    open_stream,
    truncated_error,
)

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = [
    "ByteRange",
    "check_csv_file",
    "csv_header",
    "csv_layout",
    "file_ranges",
    "read_csv_file",
]


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
    with open_stream(path) as stream:
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


def read_csv_file(
    path: str,
    source: Source,
    target: pa.Schema,
    pipeline: str,
    chunk_bytes: int,
    byte_range: ByteRange | None = None,
) -> Iterator[Yielded]:
    """Streams one CSV file (or the records starting in ``byte_range``) as ``(batch, errors)``.

    See :func:`transforms.io.read.read_file`.

    Raises:
        ReadError: if the file cannot be read at all; the message names it.
    """
    opts = source.csv
    dialect = Dialect.of(opts)
    names: list[str] | None = None if opts.header else csv_layout(None, opts, target, path)
    with open_stream(path) as stream:
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
                    names = csv_layout(csv_header(path, opts), opts, target, path)
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
                    names = csv_layout(item, opts, target, path)
                    item = item.select(np.arange(len(item)) > 0)
                if not len(item):
                    continue
                table, found = parse_records(item, names, source, target, path, pipeline)
                yield from batched(table, found, source.batch_size)
        except BROKEN_STREAM as exc:
            raise truncated_error(path, exc) from None


def _problem_record(problem: Problem, path: str, pipeline: str, encoding: str) -> ErrorRecord:
    return ErrorRecord(
        pipeline=pipeline,
        step="read",
        reason=problem.reason,
        message=problem.message,
        payload=problem.payload.decode(encoding, errors="replace"),
        source=f"{path}:{problem.line}",
    )


def csv_header(path: str, opts: CsvOptions) -> Records | None:
    """The header record of a CSV file (after ``skip_rows``), or None for an empty file."""
    with open_stream(path) as stream:
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
        except BROKEN_STREAM as exc:
            raise ReadError(path, f"is a truncated or corrupt gzip file ({exc})") from None
    return None


def csv_layout(header: Records | None, opts: CsvOptions, target: pa.Schema, path: str) -> list[str]:
    """The file's column names (from its header record, or the options), checked."""
    if header is not None:
        raw = header.data[int(header.starts[0]) : int(header.stops[0])]
        text = raw.decode(opts.encoding, errors="replace").rstrip("\r\n")
        names = parse_header(text.encode("utf-8") + b"\n", opts)
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


def check_csv_file(path: str, source: Source, target: pa.Schema) -> None:
    """Checks, before any work, that a CSV file holds the schema's columns.

    The columns are the header's, or ``csv.column_names`` for a file without one.

    Raises:
        ReadError: naming the file, if it cannot be read with ``target``'s columns.
    """
    if not source.csv.header:
        check_readable(path, source, target)
        csv_layout(None, source.csv, target, path)
        return
    header = csv_header(path, source.csv)
    if header is not None:  # an empty file holds no record, and no error
        csv_layout(header, source.csv, target, path)
