"""Where CSV records end, found exactly and vectorised: the quote state along a buffer.

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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from transforms.io.csv_options import Dialect

__all__ = ["Scan", "scan"]

_NL = 10
_CR = 13

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
