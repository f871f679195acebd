"""CSV records: where each one starts and ends, found exactly and vectorised.

Arrow's CSV parser is fast but says neither where a row came from nor what to do with a
quote that never closes. This module finds the records first, with Arrow's own rules, so the
reader can number rows by line, hand Arrow only whole records, cut big files into ranges at
record boundaries, and turn a broken record into one error instead of a failed file.

The rules for where a record ends, and how they are found fast, are in
:mod:`transforms.io.csv_scan`; the layout options are in :mod:`transforms.io.csv_options`.

Broken records. Records are read from a record start with ``max_record_bytes`` as the
horizon, and decided by the bytes from their start only, so reading a whole file and reading
it in ranges cut at record starts find the same records:

* a record that ends within ``max_record_bytes`` is a record (Arrow parses it);
* a record still open at the end of the input, or at ``max_record_bytes`` from its start,
  inside quotes, has an unterminated quote: one ``unterminated_quote`` problem, and reading
  resumes at the next line after the record's first line;
* so does a record whose quoted value spans lines and closes with more text right after
  the closing quote (``"Blue, Cab",...`` on a later line closing a stray quote above it):
  well-formed CSV has a delimiter or a line end there, so the quote that opened the value
  was most likely never meant to open one (on one line, ``"a"b`` is read as ``ab``, as
  every CSV reader does);
* a record longer than ``max_record_bytes`` otherwise is one ``record_too_large`` problem,
  and reading resumes after the first newline at or past ``max_record_bytes`` from its start
  (the record's own end, unless it holds a quoted newline further on).
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Iterator
from typing import IO

import numpy as np

from transforms.core import errors
from transforms.io.csv_options import CsvOptions, Dialect
from transforms.io.csv_scan import Scan, scan

__all__ = [
    "PAYLOAD_BYTES",
    "CsvOptions",
    "Dialect",
    "Problem",
    "Records",
    "Scan",
    "iter_records",
    "read_fully",
    "scan",
    "skip_lines",
]

_NL = 10
_CR = 13
# Bytes of a broken record kept as its error payload.
PAYLOAD_BYTES = 64 << 10

_NONE = np.zeros(0, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Records:
    """Whole records, raw, as read.

    Attributes:
        data: The records' bytes, terminators included (blank records too).
        offset: Offset of ``data`` in the input.
        starts: Offset in ``data`` where each non-blank record starts.
        stops: Offset in ``data`` just past each non-blank record's terminator.
        lines: Line number (1-based, counting ``\\n``) where each non-blank record starts.
    """

    data: bytes
    offset: int
    starts: np.ndarray
    stops: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def text(self, k: int, encoding: str = "utf-8") -> str:
        """Record ``k`` without its terminator, decoded leniently."""
        raw = self.data[int(self.starts[k]) : int(self.stops[k])]
        return raw.decode(encoding, errors="replace").rstrip("\r\n")

    def select(self, keep: np.ndarray) -> Records:
        """The records where ``keep`` is true (their bytes only)."""
        if keep.all():
            return self
        starts, stops = self.starts[keep], self.stops[keep]
        lengths = stops - starts
        data = b"".join(self.data[int(a) : int(b)] for a, b in zip(starts, stops, strict=True))
        new_stops = np.cumsum(lengths)
        return Records(data, self.offset, new_stops - lengths, new_stops, self.lines[keep])


@dataclasses.dataclass(frozen=True)
class Problem:
    """A record that cannot be read, and why.

    Attributes:
        reason: ``unterminated_quote`` or ``record_too_large``.
        line: Line where the record starts.
        message: What is wrong.
        payload: The record's first line, raw, cut after :data:`PAYLOAD_BYTES` (or the
            maximum record size, if smaller).
    """

    reason: str
    line: int
    message: str
    payload: bytes


def read_fully(stream: IO[bytes], size: int) -> bytes:
    """Reads ``size`` bytes, or up to the end of the stream (streams may return less)."""
    parts = []
    while size > 0:
        part = stream.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


class _Input:
    """A stream read in chunks into a buffer that starts at a record start."""

    def __init__(self, stream: IO[bytes], chunk_bytes: int, line: int, offset: int) -> None:
        self.stream = stream
        self.chunk_bytes = chunk_bytes
        self.buf = b""
        self.line = line  # line number of buf[0]
        self.offset = offset  # offset of buf[0] in the input
        self.eof = False

    def fill(self) -> None:
        data = read_fully(self.stream, self.chunk_bytes) if not self.eof else b""
        if not data:
            self.eof = True
        else:
            self.buf = self.buf + data if self.buf else data

    def drop(self, size: int, newlines: int | None = None) -> None:
        """Drops the first ``size`` bytes, holding ``newlines`` newlines if known."""
        self.line += self.buf.count(b"\n", 0, size) if newlines is None else newlines
        self.offset += size
        self.buf = self.buf[size:]

    def skip_line(self, start: int) -> None:
        """Drops everything up to and including the first newline at or after ``start``."""
        while True:
            newline = self.buf.find(b"\n", start)
            if newline >= 0:
                self.drop(newline + 1)
                return
            start = max(len(self.buf), start)
            self.fill()
            if self.eof:
                self.drop(len(self.buf))
                return
            # Keep memory bounded: nothing before `start` is needed any more.
            if start > self.chunk_bytes:
                self.drop(start)
                start = 0


def skip_lines(stream: IO[bytes], count: int, chunk_bytes: int = 1 << 16) -> tuple[bytes, int, int]:
    """Drops a leading UTF-8 BOM and ``count`` lines.

    Returns:
        The bytes read past them, their offset in the stream, and the line they start on.
    """
    source = _Input(stream, chunk_bytes, 1, 0)
    source.fill()
    if source.buf.startswith(codecs.BOM_UTF8):
        source.drop(len(codecs.BOM_UTF8))
    for _ in range(count):
        source.skip_line(0)
    return source.buf, source.offset, source.line


def iter_records(
    stream: IO[bytes],
    dialect: Dialect,
    *,
    chunk_bytes: int,
    max_record_bytes: int,
    line: int = 1,
    offset: int = 0,
    head: bytes = b"",
) -> Iterator[Records | Problem]:
    """Yields the records of a stream in order, in blocks, and a problem per broken record.

    Memory stays within about ``max_record_bytes + 2 * chunk_bytes``.

    Args:
        stream: Raw bytes, read from a record start to the end of the input.
        dialect: Delimiter, quote and escape bytes.
        chunk_bytes: Bytes read at a time; a block holds about this many.
        max_record_bytes: Longest record (see the module docstring).
        line: Line number of the first byte.
        offset: Offset of the first byte in the file (reported in :attr:`Records.offset`).
        head: Bytes already read from ``stream``, read first.
    """
    source = _Input(stream, chunk_bytes, line, offset)
    source.buf = head
    more = not head
    while True:
        if more or not source.buf:
            source.fill()
            if not source.buf:
                return
        more = False
        buf = source.buf
        found = scan(buf, dialect, final=source.eof)
        ends = found.ends
        starts = np.concatenate(([0], ends[:-1])) if len(ends) else _NONE
        large = np.flatnonzero(ends - starts > max_record_bytes)
        folded = _folded(found, starts, ends)
        broken = [int(large[0])] if len(large) else []
        broken += [int(folded[0])] if len(folded) else []
        whole = min(broken) if broken else len(ends)
        if whole:
            yield _records(buf, found, starts[:whole], ends[:whole], source, 0)
            cut = int(ends[whole - 1])
            source.drop(cut, int(np.searchsorted(found.newlines, cut)))
        if broken and len(large) and whole == int(large[0]):
            yield _broken(source, found, int(starts[whole]), max_record_bytes)
            continue
        if broken:
            yield _unterminated(source, max_record_bytes, closed_late=True)
            continue
        # What is left is one incomplete record.
        start = int(ends[-1]) if len(ends) else 0
        size = len(buf) - start
        if size == 0:
            more = True
        elif size > max_record_bytes and (source.eof or buf[-1] != dialect.quote):
            # Decided by the state at start + max_record_bytes, which no later byte changes
            # (unless the buffer ends in a run of quotes: read on then).
            yield _broken(source, found, start, max_record_bytes)
        elif not source.eof:
            more = True
        elif found.open_at_end():
            yield _unterminated(source, max_record_bytes)
        elif len(_folded(found, np.array([start]), np.array([len(buf) + 1]))):
            yield _unterminated(source, max_record_bytes, closed_late=True)
        else:
            final = np.array([len(buf)], dtype=np.int64)
            yield _records(buf, found, np.array([start], np.int64), final, source, start)
            source.drop(size)


def _records(
    buf: bytes, found: Scan, starts: np.ndarray, ends: np.ndarray, source: _Input, begin: int
) -> Records:
    """Records ``[starts, ends)`` of the scanned ``buf``; ``source.buf`` starts at ``begin``."""
    data = np.frombuffer(buf, dtype=np.uint8)
    head = data[np.minimum(starts, len(buf) - 1)]
    keep = (head != _NL) & (head != _CR)
    starts, ends = starts[keep], ends[keep]
    newlines = found.newlines
    if found.simple and begin == 0:
        # One record per line: record k starts on line k.
        lines = source.line + np.flatnonzero(keep)
    else:
        lines = source.line + (
            np.searchsorted(newlines, starts, side="left") - np.searchsorted(newlines, begin)
        )
    end = int(ends[-1]) if len(ends) else begin
    return Records(
        buf if begin == 0 and end == len(buf) else buf[begin:end],
        source.offset,
        starts - begin,
        ends - begin,
        lines.astype(np.int64),
    )


def _first_line(buf: bytes, max_record_bytes: int) -> bytes:
    """The first line of ``buf``, cut where every reader of the record has its bytes."""
    limit = min(PAYLOAD_BYTES, max_record_bytes)
    end = buf.find(b"\n", 0, limit + 1)
    return buf[: end if end >= 0 else limit].rstrip(b"\r")


def _folded(found: Scan, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Complete records holding a quoted newline and a quote closed with text after it."""
    closes = found.junk_closes
    if len(closes) and len(ends):
        closes = closes[closes >= starts[0]]
    if not len(closes) or not len(ends):
        return _NONE
    suspects = np.unique(np.searchsorted(ends, closes, side="right"))
    suspects = suspects[suspects < len(ends)]
    newlines = found.newlines
    # Newlines inside the record, its terminator's excluded.
    inner = np.searchsorted(newlines, ends[suspects] - 1) - np.searchsorted(
        newlines, starts[suspects]
    )
    return suspects[inner > 0]


def _unterminated(source: _Input, max_record_bytes: int, closed_late: bool = False) -> Problem:
    """Reports the record at the buffer's start and resumes on its next line."""
    if closed_late:
        what = (
            "is closed on a later line by a quote with more text after it (an unterminated quote?)"
        )
    else:
        what = (
            "is never closed (not before the end of the input, nor within"
            f" csv.max_record_bytes = {max_record_bytes} bytes)"
        )
    problem = Problem(
        errors.UNTERMINATED_QUOTE,
        source.line,
        f"a quoted value opened in this record {what}; the record is skipped and reading"
        " resumes on the next line",
        _first_line(source.buf, max_record_bytes),
    )
    source.skip_line(0)
    return problem


def _broken(source: _Input, found: Scan, start: int, max_record_bytes: int) -> Problem:
    """Reports the record at ``start`` of the scanned buffer, longer than the maximum.

    ``source.buf`` starts at that record.
    """
    if found.inside(start + max_record_bytes):
        return _unterminated(source, max_record_bytes)
    problem = Problem(
        errors.RECORD_TOO_LARGE,
        source.line,
        f"record is longer than csv.max_record_bytes ({max_record_bytes} bytes); it is"
        " skipped (raise csv.max_record_bytes to read it)",
        _first_line(source.buf, max_record_bytes),
    )
    source.skip_line(max_record_bytes)
    return problem
