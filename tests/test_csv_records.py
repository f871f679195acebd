"""csv_records and csv_scan find exactly the records Arrow's CSV parser finds, vectorised."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transforms.core import errors
from transforms.io import csv_scan
from transforms.io.csv_options import CsvOptions, Dialect
from transforms.io.csv_records import Problem, Records, iter_records
from transforms.io.csv_scan import scan

COMMA, QUOTE, BACKSLASH = ord(","), ord('"'), ord("\\")


def reference(
    buf: bytes, escape: int | None, junk: list[int] | None = None
) -> tuple[list[tuple[int, int]], bool]:
    """Arrow's record state machine (cpp/src/arrow/csv/parser.cc), byte by byte.

    Returns the ``(start, end)`` of every non-blank record (end past its terminator) and
    whether the input ends inside quotes; appends to ``junk`` the closing quotes followed
    by more text (neither a delimiter nor a line end).
    """
    n, i, out, open_at_end = len(buf), 0, [], False
    junk = [] if junk is None else junk
    while i < n:
        start = i
        if buf[i] in b"\r\n":  # a blank line: \r, \n or \r\n
            i += 2 if buf[i : i + 2] == b"\r\n" else 1
            continue
        state = "field_start"
        while True:
            if state == "field_start":
                if i < n and buf[i] == QUOTE:
                    i, state = i + 1, "quoted"
                else:
                    state = "field"
            elif state == "field":
                if i >= n:
                    out.append((start, n))
                    break
                c, i = buf[i], i + 1
                if c == escape:
                    if i >= n:
                        out.append((start, n))
                        break
                    i += 1
                elif c == COMMA:
                    state = "field_start"
                elif c in b"\r\n":
                    i += 1 if c == 13 and buf[i : i + 1] == b"\n" else 0
                    out.append((start, i))
                    break
            else:  # inside quotes
                if i >= n:
                    out.append((start, n))
                    open_at_end = True
                    break
                c, i = buf[i], i + 1
                if c == escape:
                    if i >= n:
                        out.append((start, n))
                        open_at_end = True
                        break
                    i += 1
                elif c == QUOTE:
                    if buf[i : i + 1] == b'"':
                        i += 1
                    else:
                        state = "field"
                        if i < n and buf[i] not in b",\r\n":
                            junk.append(i - 1)
    return out, open_at_end


def scanned(buf: bytes, escape: int | None) -> tuple[list[tuple[int, int]], bool]:
    """The records scan() finds, in the reference's terms (a last record may lack an end)."""
    found = scan(buf, Dialect(COMMA, QUOTE, escape), final=True)
    records, previous = [], 0
    for end in (int(e) for e in found.ends):
        if buf[previous] not in b"\r\n":
            records.append((previous, end))
        previous = end
    if previous < len(buf):
        records.append((previous, len(buf)))
    return records, found.open_at_end() if previous < len(buf) else False


TOKENS = [b"a", b"x", b",", b'"', b'""', b',"', b'",', b"\n", b"\r", b"\r\n", b"\\"]
buffers = st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(buffers, st.sampled_from([None, BACKSLASH]))
@example(b'a,Flash"Cab\n2,x\n', None)
@example(b'a,"b""c"d"e\nf', None)
@example(b'"\\"",x\r\ry', BACKSLASH)
def test_scan_finds_the_records_of_arrows_state_machine(buf: bytes, escape: int | None) -> None:
    junk: list[int] = []
    assert scanned(buf, escape) == reference(buf, escape, junk)
    data = np.frombuffer(buf, dtype=np.uint8)
    escaped = csv_scan._escaped(data, escape)[0] if escape is not None and len(buf) else None
    _, late_closes = csv_scan._quote_state(buf, data, Dialect(COMMA, QUOTE, escape), escaped)
    assert late_closes().tolist() == junk


@settings(max_examples=1000, deadline=None)
@given(buffers, st.sampled_from([None, BACKSLASH]))
def test_the_fast_quote_path_agrees_with_the_runs(buf: bytes, escape: int | None) -> None:
    # Every quote toggling the state (CSV as writers make it) and the general run model
    # must agree wherever the fast path says it applies.
    dialect = Dialect(COMMA, QUOTE, escape)
    data = np.frombuffer(buf, dtype=np.uint8)
    escaped = csv_scan._escaped(data, escape)[0] if escape is not None and len(buf) else None
    fast, fast_junk = csv_scan._quote_state(buf, data, dialect, escaped)
    if fast.inside_after is not None or not len(fast.starts):
        return  # the runs decided: nothing to compare
    runs, runs_junk = csv_scan._quote_runs(data, fast.starts, dialect, escaped)
    assert fast_junk().tolist() == runs_junk().tolist()
    # Compare between runs (the runs model has no state inside a run of quotes).
    quotes = set(fast.starts.tolist())
    between = np.array([p for p in range(len(buf) + 1) if not {p - 1, p} <= quotes])
    assert fast.inside_before(between).tolist() == runs.inside_before(between).tolist()


@settings(max_examples=400, deadline=None)
@given(buffers, st.sampled_from([None, "\\"]))
def test_the_reference_agrees_with_arrow_on_the_number_of_rows(
    buf: bytes, escape: str | None
) -> None:
    records, _ = reference(buf, ord(escape) if escape else None)
    invalid: list[int] = []

    def count(row: object) -> str:
        invalid.append(1)
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(buf + b"\n"),
        read_options=pa_csv.ReadOptions(column_names=["a", "b"], use_threads=False),
        parse_options=pa_csv.ParseOptions(
            escape_char=escape or False, newlines_in_values=True, invalid_row_handler=count
        ),
        convert_options=pa_csv.ConvertOptions(column_types={"a": pa.string(), "b": pa.string()}),
    )
    assert table.num_rows + len(invalid) == len(records)


def read_items(data: bytes, chunk_bytes: int, max_record_bytes: int) -> list[tuple]:
    """Every record (line, text) and problem (line, reason, payload) of a stream, in order."""
    out: list[tuple] = []
    for item in iter_records(
        io.BytesIO(data),
        Dialect(COMMA, QUOTE, None),
        chunk_bytes=chunk_bytes,
        max_record_bytes=max_record_bytes,
    ):
        if isinstance(item, Problem):
            out.append((item.line, item.reason, item.payload))
        else:
            assert isinstance(item, Records)
            out += [(int(item.lines[k]), item.text(k)) for k in range(len(item))]
    return out


RECORD = st.sampled_from(
    [
        "1,a",
        '2,"b,c"',
        '3,"d\ne"',
        '4,Flash"Cab',
        '5,"oops',
        "",
        '6,"x""y"',
        "7," + "z" * 40,
        '8,"late"x',
        '9,"a\n"b',
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORD, max_size=12), st.integers(1, 64), st.sampled_from([b"\n", b"\r\n"]))
def test_records_do_not_depend_on_the_chunk_size(
    records: list[str], chunk_bytes: int, newline: bytes
) -> None:
    data = newline.join(r.encode() for r in records) + newline
    assert read_items(data, chunk_bytes, 1 << 10) == read_items(data, 1 << 20, 1 << 10)


def test_unterminated_quote_is_one_problem_and_reading_resumes_on_the_next_line() -> None:
    never_closed = b'1,a\n2,"never closed\n3,b\n4,c\n'
    assert read_items(never_closed, 4, 1 << 10) == [
        (1, "1,a"),
        (2, errors.UNTERMINATED_QUOTE, b'2,"never closed'),
        (3, "3,b"),
        (4, "4,c"),
    ]
    # Closed by the opening quote of a later value ("c), which leaves text after it: the
    # stray quote is reported, and the later quoted value read as written.
    closed_late = b'1,a\n2,"never closed\n3,b\n4,"c\nd"\n5,e'
    assert read_items(closed_late, 4, 1 << 10) == [
        (1, "1,a"),
        (2, errors.UNTERMINATED_QUOTE, b'2,"never closed'),
        (3, "3,b"),
        (4, '4,"c\nd"'),
        (6, "5,e"),
    ]
    # A multi-line value closed properly is a record, and so is "a"b on one line.
    fine = b'1,"a\nb",c\n2,"a"b,c\n'
    assert read_items(fine, 4, 1 << 10) == [(1, '1,"a\nb",c'), (3, '2,"a"b,c')]


def test_records_longer_than_the_maximum_are_problems() -> None:
    long_line = b"2," + b"x" * 3000
    quoted = b'3,"' + b"y" * 3000 + b'"'
    data = b"1,a\n" + long_line + b"\n" + quoted + b"\n4,b\n"
    expected = [
        (1, "1,a"),
        # Payloads are cut at the maximum size, the same whatever the chunks.
        (2, errors.RECORD_TOO_LARGE, long_line[:1024]),
        # Still inside quotes at the maximum: the quote is reported, reading resumes on the
        # next line (here the record's end).
        (3, errors.UNTERMINATED_QUOTE, quoted[:1024]),
        (4, "4,b"),
    ]
    assert read_items(data, 100, 1024) == expected
    assert read_items(data, 1 << 20, 1024) == expected


def test_a_huge_line_without_newline_is_skipped_in_bounded_memory() -> None:
    data = b"1,a\n2," + b"x" * (5 << 20)
    items = read_items(data, 1 << 16, 1 << 16)
    assert [i[:2] for i in items] == [(1, "1,a"), (2, errors.RECORD_TOO_LARGE)]
    assert len(items[1][2]) <= 64 << 10


def test_blank_lines_hold_no_record_and_lines_count_newlines() -> None:
    data = b"\n1,a\r\n\r\n\r2,b\n\n"
    assert read_items(data, 3, 1 << 10) == [(2, "1,a"), (4, "2,b")]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"delimiter": "§"}, "single ASCII character"),
        ({"quote_char": "\n"}, "cannot be a newline"),
        ({"escape_char": '"'}, "must differ"),
        ({"max_record_bytes": 10}, "at least 1024"),
    ],
)
def test_options_are_validated(options: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CsvOptions(**options).validate()


def test_escapes_pair_up_within_runs() -> None:
    # An escaped quote does not close the value: the record runs to the next line.
    first = b'a,"x\\"\ny"\n'
    # An escaped backslash does not escape the quote after it, which closes the value.
    second = b'b,"\\\\"\n'
    data = first + second
    escaped = scan(data, Dialect(COMMA, QUOTE, BACKSLASH), final=True)
    assert list(escaped.ends) == [len(first), len(data)]
    plain = scan(data, Dialect(COMMA, QUOTE, None), final=True)
    assert int(plain.ends[0]) == len(b'a,"x\\"\n')
