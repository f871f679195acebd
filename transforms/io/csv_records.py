"""CSV records: where each one starts and ends, found exactly and vectorised.

Arrow's CSV parser is fast but says neither where a row came from nor what to do with a
quote that never closes. This module finds the records first, with Arrow's own rules, so the
reader can number rows by line, hand Arrow only whole records, cut big files into ranges at
record boundaries, and turn a broken record into one error instead of a failed file.

The rules (Arrow's ``csv/parser.cc``, also Python's ``csv`` module): a quote opens a quoted
value only at the start of a field; anywhere else it is a literal character (``Flash"Cab``,
``5'10"``). Inside quotes, a doubled quote is a literal quote and any other quote closes the
quoted part. The escape character, when set, makes the next byte literal, inside quotes or
not. Outside quotes ``\\n``, ``\\r\\n`` and a lone ``\\r`` end the record; inside quotes they
are data. A record starting with ``\\r`` or ``\\n`` is blank (no record).

Vectorised exactly: escapes pair up left to right within each run of escape bytes; the
unescaped quotes then form runs of adjacent quotes, and a run of length L acts on the
inside/outside state as a function determined by L's parity and by whether the run starts a
field (its previous byte is an unescaped delimiter or newline, or it opens the buffer): an
even run changes nothing; an odd run that starts a field swaps the state (it opens, then
pairs; or, inside, pairs then closes); an odd run elsewhere leaves the state outside (outside
its quotes are literal; inside, pairs then closes). Whether a run starts a field only
matters outside quotes, where the previous delimiter or newline really ends a field. A
prefix scan over those functions (cumulative swaps since the last reset) gives the state
after every run, and a line end is a record end when the state there is outside.

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
from collections.abc import Callable, Iterator
from typing import IO

import numpy as np

from transforms.core import errors

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


@dataclasses.dataclass
class CsvOptions:
    """How CSV files are laid out.

    Attributes:
        delimiter: Field separator, one ASCII character.
        quote_char: Quote character, or None for no quoting. Doubled quotes inside a quoted
            value stand for one quote; a quote inside an unquoted value is a literal quote.
        escape_char: Escape character (makes the next character literal), or None.
        header: Whether the first record (after ``skip_rows``) holds the column names.
        column_names: Names of the file's columns when ``header`` is false; defaults to the
            schema's order.
        null_values: Field values read as null (for every column type).
        encoding: Text encoding; must keep ``\\n`` a single byte (utf-8, latin-1, cp1252...).
        skip_rows: Lines skipped at the start of each file, before the header.
        max_record_bytes: Largest record read; a longer one is rejected as one error record
            (``record_too_large``), and so is a quote not closed within this many bytes
            (``unterminated_quote``). Bounds a reader's memory.
    """

    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    header: bool = True
    column_names: list[str] | None = None
    null_values: list[str] = dataclasses.field(default_factory=lambda: [""])
    encoding: str = "utf-8"
    skip_rows: int = 0
    max_record_bytes: int = 16 << 20

    def validate(self) -> None:
        """Checks the options; raises ValueError saying how to fix them."""
        for name in ("delimiter", "quote_char", "escape_char"):
            value = getattr(self, name)
            if value is not None and (len(value) != 1 or not value.isascii()):
                raise ValueError(f"csv.{name} must be a single ASCII character, got {value!r}")
            if value in ("\n", "\r"):
                raise ValueError(f"csv.{name} cannot be a newline, got {value!r}")
        specials = [c for c in (self.delimiter, self.quote_char, self.escape_char) if c]
        if len(set(specials)) != len(specials):
            raise ValueError(
                "csv.delimiter, csv.quote_char and csv.escape_char must differ, got "
                f"{self.delimiter!r}, {self.quote_char!r} and {self.escape_char!r}"
            )
        if self.skip_rows < 0:
            raise ValueError(f"csv.skip_rows must be >= 0, got {self.skip_rows}")
        if self.max_record_bytes < 1024:
            raise ValueError(
                f"csv.max_record_bytes must be at least 1024, got {self.max_record_bytes}"
            )
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


@dataclasses.dataclass(frozen=True)
class Dialect:
    """The bytes that delimit records."""

    delimiter: int
    quote: int | None
    escape: int | None

    @classmethod
    def of(cls, opts: CsvOptions) -> Dialect:
        return cls(
            delimiter=ord(opts.delimiter),
            quote=ord(opts.quote_char) if opts.quote_char else None,
            escape=ord(opts.escape_char) if opts.escape_char else None,
        )


_NONE = np.zeros(0, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _Quotes:
    """Where the parser is inside quotes, from the quotes of a buffer.

    Attributes:
        starts: Offsets of the runs of unescaped quotes, ascending; when ``inside_after`` is
            None, of every unescaped quote (each one then toggles the state).
        inside_after: Whether the parser is inside quotes after each run.
    """

    starts: np.ndarray
    inside_after: np.ndarray | None

    def inside_before(self, positions: np.ndarray) -> np.ndarray:
        """Whether the parser is inside quotes just before each position."""
        k = np.searchsorted(self.starts, positions, side="left")
        if self.inside_after is None:
            return (k & 1).astype(bool)
        return np.where(k > 0, self.inside_after[np.maximum(k - 1, 0)], False)


_NO_QUOTES = _Quotes(_NONE, None)


@dataclasses.dataclass(frozen=True)
class Scan:
    """Records found in a buffer that starts at a record start.

    Attributes:
        ends: Offset just past the terminator of every complete record, ascending.
        newlines: Offsets of every ``\\n`` byte (for line numbers).
        quotes: The quote state along the buffer.
        size: Length of the buffer.
        simple: Whether every newline ends a record and nothing else does (one record per
            line, the common case: line numbers need no search).
        junk_closes: Offsets of the quotes that close a quoted value with more text right
            after them (``"a"b``): fine on one line, the sign of an unterminated quote when
            the value spans lines.
    """

    ends: np.ndarray
    newlines: np.ndarray
    quotes: _Quotes
    size: int
    simple: bool = False
    junk_closes: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)

    def inside(self, position: int) -> bool:
        """Whether the parser is inside quotes just before ``position``."""
        return bool(self.quotes.inside_before(np.array([position]))[0])

    def open_at_end(self) -> bool:
        """Whether the buffer ends inside quotes."""
        return self.inside(self.size)


def _escaped(data: np.ndarray, escape: int) -> tuple[np.ndarray, bool]:
    """A mask of the bytes made literal by an escape; whether the last byte escapes."""
    n = len(data)
    found = np.flatnonzero(data == escape)
    mask = np.zeros(n + 1, dtype=bool)
    if len(found) == 0:
        return mask[:n], False
    # Within a run of adjacent escape bytes, the 1st, 3rd... escape the byte after them.
    first = np.flatnonzero(np.diff(found, prepend=-2) != 1)
    run = np.cumsum(np.isin(np.arange(len(found)), first)) - 1
    escapers = found[(np.arange(len(found)) - first[run]) % 2 == 0]
    mask[escapers + 1] = True
    return mask[:n], bool(mask[n])


def scan(buf: bytes, dialect: Dialect, *, final: bool) -> Scan:
    """Finds the complete records of ``buf``, which starts at a record start.

    Args:
        buf: Raw bytes (an ASCII-compatible encoding).
        dialect: Delimiter, quote and escape bytes.
        final: Whether the input ends with ``buf`` (a trailing ``\\r`` then ends a record).
    """
    data = np.frombuffer(buf, dtype=np.uint8)
    n = len(data)
    escaped: np.ndarray | None = None
    if dialect.escape is not None and buf.find(bytes([dialect.escape])) >= 0:
        escaped, _ = _escaped(data, dialect.escape)
    newlines = np.flatnonzero(data == _NL)
    terminators = newlines if escaped is None else newlines[~escaped[newlines]]
    lone_cr = False
    if buf.find(b"\r") >= 0:
        cr = np.flatnonzero(data == _CR)
        if escaped is not None:
            cr = cr[~escaped[cr]]
        following = np.where(cr + 1 < n, data[np.minimum(cr + 1, n - 1)], -1)
        lone = cr[(following != _NL) & ((cr + 1 < n) | final)]
        if len(lone):
            terminators, lone_cr = np.union1d(terminators, lone), True
    quotes, junk = _quote_state(buf, data, dialect, escaped)
    junk_closes = _NONE
    if len(quotes.starts):
        outside = ~quotes.inside_before(terminators)
        if not outside.all():
            # Quoted newlines: only then can a late close fold lines into one record.
            terminators, junk_closes = terminators[outside], junk()
    # Terminators are a subset of the newlines unless a lone \r is one: equal sizes, same set.
    simple = not lone_cr and len(terminators) == len(newlines)
    return Scan(terminators + 1, newlines, quotes, n, simple, junk_closes)


def _is_boundary(values: np.ndarray, dialect: Dialect) -> np.ndarray:
    return (values == dialect.delimiter) | (values == _NL) | (values == _CR)


def _quote_state(
    buf: bytes, data: np.ndarray, dialect: Dialect, escaped: np.ndarray | None
) -> tuple[_Quotes, Callable[[], np.ndarray]]:
    """The quote state along the buffer, and a function finding the quotes that close a
    quoted value with more text right after them (not a delimiter or line end)."""
    if dialect.quote is None or buf.find(bytes([dialect.quote])) < 0:
        return _NO_QUOTES, lambda: _NONE
    quotes = np.flatnonzero(data == dialect.quote)
    if escaped is not None:
        quotes = quotes[~escaped[quotes]]
    if len(quotes) == 0:
        return _NO_QUOTES, lambda: _NONE
    n = len(data)
    # Fast path, exact for CSV as writers make it: every quote toggles the state. That holds
    # when every quote met outside quotes (an even-numbered one) starts a field or follows
    # a quote that just closed (a doubled quote); otherwise the runs decide (below).
    opening, closing = quotes[0::2], quotes[1::2]  # len(opening) - 1 <= len(closing)
    later = len(opening) - 1
    previous = data[np.maximum(opening - 1, 0)]
    starts_field = _is_boundary(previous, dialect)
    if escaped is not None:
        starts_field &= ~escaped[np.maximum(opening - 1, 0)]
    starts_field |= opening == 0
    # opening[k + 1] right after closing[k]: a doubled quote inside a quoted value.
    doubled = closing[:later] + 1 == opening[1:]
    if starts_field[0] and np.all(starts_field[1:] | doubled):

        def junk() -> np.ndarray:
            # An odd-numbered quote closes its value unless a doubled quote follows it.
            after = closing + 1
            following = data[np.minimum(after, n - 1)]
            late = (after < n) & ~_is_boundary(following, dialect)
            late[:later] &= ~doubled
            return closing[late]

        return _Quotes(quotes, None), junk
    return _quote_runs(data, quotes, dialect, escaped)


def _quote_runs(
    data: np.ndarray, quotes: np.ndarray, dialect: Dialect, escaped: np.ndarray | None
) -> tuple[_Quotes, Callable[[], np.ndarray]]:
    """The quote state from the runs of adjacent quotes (see the module docstring)."""
    first = np.flatnonzero(np.diff(quotes, prepend=-2) != 1)
    starts = quotes[first]
    lengths = np.diff(np.append(first, len(quotes)))
    odd = lengths % 2 == 1
    previous = data[np.maximum(starts - 1, 0)]
    field_start = _is_boundary(previous, dialect)
    if escaped is not None:
        field_start &= ~escaped[np.maximum(starts - 1, 0)]
    field_start |= starts == 0
    swaps = np.cumsum(odd & field_start)
    reset = odd & ~field_start
    last_reset = np.maximum.accumulate(np.where(reset, np.arange(len(starts)), -1))
    base = np.where(last_reset >= 0, swaps[np.maximum(last_reset, 0)], 0)
    inside_after = (swaps - base) % 2 == 1

    def junk() -> np.ndarray:
        # A run ends with a closing quote when, from inside, it is odd (pairs, then a
        # close), or when it opens a field and is even (an opening quote, pairs, a close).
        inside_before = np.concatenate(([False], inside_after[:-1]))
        closes = (inside_before & odd) | (~inside_before & field_start & ~odd)
        after = starts + lengths
        following = data[np.minimum(after, len(data) - 1)]
        late = closes & (after < len(data)) & ~_is_boundary(following, dialect)
        return (after - 1)[late]

    return _Quotes(starts, inside_after), junk


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
