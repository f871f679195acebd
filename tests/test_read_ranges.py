"""Big CSV files are read as byte ranges in parallel: no line lost, none read twice."""

from __future__ import annotations

import csv
import io
import itertools
import pathlib

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.schema import arrow_schema
from transforms.io.read import CsvOptions, ReadRecords, Source, file_ranges, read_file

SCHEMA = {"id": "int64", "name": "string", "x": "float32"}


def _source(split_bytes: int) -> Source:
    return Source(format="csv", schema=dict(SCHEMA), split_bytes=split_bytes, batch_size=7)


def _write(path: pathlib.Path, rows: list[str]) -> None:
    path.write_text("id,name,x\n" + "".join(r + "\n" for r in rows))


def _read(path: pathlib.Path, source: Source) -> tuple[list[tuple], list[tuple]]:
    schema = arrow_schema(SCHEMA)
    rows: list[tuple] = []
    errors: list[tuple] = []
    for piece, byte_range in file_ranges(str(path), path.stat().st_size, source):
        for batch, found in read_file(piece, source, schema, pipeline="t", byte_range=byte_range):
            errors += [(e.source, e.reason, e.payload) for e in found]
            if batch is not None:
                rows += [(r["id"], r["name"], r["__line"]) for r in batch.to_pylist()]
    return rows, errors


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.text("abc xyz", max_size=12), st.booleans()),
        min_size=0,
        max_size=60,
    ),
    st.integers(1, 200),
)
def test_ranges_read_exactly_what_the_whole_file_holds(
    tmp_path_factory: object, rows: list[tuple[int, str, bool]], split_bytes: int
) -> None:
    path = tmp_path_factory.mktemp("ranges") / "f.csv"  # type: ignore[attr-defined]
    _write(path, [f"{i},{name},{'bad' if bad else '1.5'}" for i, name, bad in rows])
    whole = _read(path, _source(0))
    pieces = _read(path, _source(split_bytes))
    assert pieces == whole
    assert [r[2] for r in whole[0]] == [n + 2 for n, (_, _, bad) in enumerate(rows) if not bad]


def test_file_ranges_cover_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f.csv"
    _write(path, [f"{i},n,1.0" for i in range(100)])
    size = path.stat().st_size
    ranges = file_ranges(str(path), size, _source(256))
    bounds = [r for _, r in ranges]
    text = path.read_bytes()
    assert bounds[0][:2] == (0, bounds[1][0]) and bounds[0][2] == 1
    assert bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    for start, _, line in bounds[1:]:
        # Every cut is a line start just past a multiple of 256 bytes, numbered as in the file.
        assert text[start - 1 : start] == b"\n"
        assert line == text[:start].count(b"\n") + 1
    assert [b[0] // 256 for b in bounds[1:]] == list(range(1, len(bounds)))
    assert file_ranges(str(path), size, _source(0)) == [(str(path), None)]
    assert file_ranges(
        str(path), size, Source(format="jsonl", schema=dict(SCHEMA), split_bytes=10)
    ) == [(str(path), None)]


def test_read_records_reads_ranges_in_parallel_with_exact_lines(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f.csv"
    _write(path, [f"{i},n{i},{'oops' if i == 70 else '2.5'}" for i in range(300)])
    with TestPipeline(runner="DirectRunner") as p:
        read = p | ReadRecords(
            source=_source(512), schema=arrow_schema(SCHEMA), pipeline="t", paths=[str(path)]
        )
        lines = read.batches | beam.FlatMap(lambda b: b.column("__line").to_pylist())
        assert_that(lines, equal_to([i + 2 for i in range(300) if i != 70]), label="lines")
        assert_that(
            read.errors | beam.Map(lambda e: (e.source.rsplit("/", 1)[-1], e.reason, e.payload)),
            equal_to([("f.csv:72", "unparseable_value", "70,n70,oops")]),
            label="errors",
        )


def test_schema_types_survive_ranges(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f.csv"
    _write(path, [f"{i},n,{i}.25" for i in range(50)])
    source = _source(64)
    batches = [
        b
        for piece, byte_range in file_ranges(str(path), path.stat().st_size, source)
        for b, _ in read_file(
            piece, source, arrow_schema(SCHEMA), pipeline="t", byte_range=byte_range
        )
        if b is not None
    ]
    table = pa.Table.from_batches(batches)
    assert table.schema.field("x").type == pa.float32()
    assert table.column("x").to_pylist() == [i + 0.25 for i in range(50)]


# --- Ranges are cut at record starts, whatever the quoting -------------------------------

CELL = st.text(alphabet='ab ,"\n\r', max_size=6)
# Lines no CSV writer makes: literal quotes in unquoted values, quotes never closed, a
# stray quote closed on a later line, blank lines.
RAW = st.sampled_from(
    ['7,Flash"Cab,1', "8,5'10\",2", '9,"never closed,3', "", '10,"a"b,4', '11,x",5', '12,"y\n']
)


def _rows_to_csv(rows: list) -> bytes:
    out = io.StringIO(newline="")
    # With \r\n as the terminator the writer quotes values holding \r or \n.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "name", "x"])
    for row in rows:
        if isinstance(row, str):
            out.write(row + "\n")
        else:
            writer.writerow(row)
    return out.getvalue().encode()


def _read_bytes(
    tmp: pathlib.Path, data: bytes, split_bytes: int, **options: object
) -> tuple[list[tuple], list[tuple]]:
    path = tmp / "f.csv"
    path.write_bytes(data)
    source = Source(
        format="csv", schema=dict(SCHEMA), split_bytes=split_bytes, csv=CsvOptions(**options)
    )
    return _read(path, source)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.tuples(st.integers(0, 99), CELL, st.sampled_from(["1.5", "x", ""])), RAW),
        max_size=40,
    ),
    st.integers(1, 120),
)
def test_ranges_never_split_a_record_quoted_newlines_and_broken_quotes_included(
    tmp_path_factory: pytest.TempPathFactory, rows: list, split_bytes: int
) -> None:
    tmp = tmp_path_factory.mktemp("quoted")
    data = _rows_to_csv(rows)
    whole = _read_bytes(tmp, data, 0)
    assert _read_bytes(tmp, data, split_bytes) == whole
    # Every record read or rejected once: well-formed files agree with Python's csv module.
    if all(not isinstance(r, str) for r in rows):
        ids = [int(r[0]) for r in rows if r[2] != "x"]
        assert [r[0] for r in whole[0]] == ids
        assert len(whole[0]) + len(whole[1]) == len(rows)


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
def test_a_quoted_newline_at_a_range_boundary_is_read_once(
    tmp_path: pathlib.Path, offset: int
) -> None:
    step = 64
    head = b"id,name,x\n"
    rows = []
    size = len(head)
    for i in range(40):
        # Put the quoted newline of every other record `offset` bytes from a multiple of step.
        target = (size // step + 1) * step + offset
        pad = max(target - size - len(f'{i},"') - 1, 0)
        row = f'{i},"{"q" * pad}\n{i}",1.5\n'.encode() if i % 2 == 0 else f"{i},n,2.5\n".encode()
        rows.append(row)
        size += len(row)
    data = head + b"".join(rows)
    whole = _read_bytes(tmp_path, data, 0)
    assert whole[1] == []
    assert [r[0] for r in whole[0]] == list(range(40))
    assert _read_bytes(tmp_path, data, step) == whole


def test_ranges_with_escapes_skipped_rows_and_a_quoted_header(tmp_path: pathlib.Path) -> None:
    lines = [b"# exported by x", b'# note with a "quote', b'id,"na\nme",x']
    rows = [
        f'{i},"v\\"{i}\n,w",1.5'.encode() if i % 3 == 0 else f"{i},n\\,{i},2".encode()
        for i in range(60)
    ]
    data = b"\n".join(lines + rows) + b"\n"
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    schema = {"id": "int64", "na\nme": "string", "x": "float32"}

    def read(split_bytes: int) -> tuple[list, list]:
        source = Source(
            format="csv",
            schema=schema,
            split_bytes=split_bytes,
            csv=CsvOptions(skip_rows=2, escape_char="\\"),
        )
        out: list = []
        found: list = []
        for piece, byte_range in file_ranges(str(path), len(data), source):
            for batch, errs in read_file(
                piece, source, arrow_schema(schema), pipeline="t", byte_range=byte_range
            ):
                found += errs
                if batch is not None:
                    out += [(r["id"], r["na\nme"], r["__line"]) for r in batch.to_pylist()]
        return out, found

    whole = read(0)
    assert whole[1] == []
    assert whole[0][:4] == [(0, 'v"0\n,w', 5), (1, "n,1", 7), (2, "n,2", 8), (3, 'v"3\n,w', 9)]
    assert len(whole[0]) == 60
    for split_bytes in (7, 50, 333):
        assert read(split_bytes) == whole
