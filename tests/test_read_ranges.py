"""Big CSV files are read as byte ranges in parallel: no line lost, none read twice."""

from __future__ import annotations

import itertools
import pathlib

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.read import ReadRecords, Source, file_ranges, read_file
from transforms.schema import arrow_schema

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
