"""Malformed CSV degrades per record, never per file (issue 11).

A bad record is one error record with its file and line, and reading goes on: quotes, records
over the size limit, bytes the encoding cannot decode. Other formats are in
``tests/test_read_malformed_formats.py``, files that cannot be read at all in
``tests/test_read_input_errors.py``.
"""

from __future__ import annotations

import csv
import io
import pathlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import parse_spec
from tests.datasets import dataset_files
from tests.malformed_reads import TRIPS, read_all, trips
from transforms.core import errors
from transforms.core.config import SpecError, from_mapping
from transforms.core.schema import arrow_schema
from transforms.io.read import CsvOptions, ReadRecords, Source, resolve_schema

# --- CSV: quotes --------------------------------------------------------------------------

LITERAL_QUOTES = ['Flash"Cab', "5'10\"", 'Cab"', 'a""b', 'x"y"z']


@pytest.mark.parametrize("value", LITERAL_QUOTES)
@pytest.mark.parametrize("column", ["first", "middle", "last"])
def test_a_quote_inside_an_unquoted_value_is_a_literal_character(
    tmp_path: pathlib.Path, value: str, column: str
) -> None:
    schema = {"a": "string", "b": "string", "c": "string"}
    fields = {"first": [value, "m", "z"], "middle": ["f", value, "z"], "last": ["f", "m", value]}
    lines = ["a,b,c", "1,2,3", ",".join(fields[column]), "4,5,6", '"7","8,9",10']
    path = tmp_path / "x.csv"
    path.write_text("\n".join(lines) + "\n")
    rows, found = read_all(path, Source(format="csv", schema=schema))
    assert found == []
    # Python's csv module reads the same values: the quote is kept as written.
    with path.open(newline="") as handle:
        expected = [dict(zip("abc", r, strict=True)) for r in list(csv.reader(handle))[1:]]
    assert [{k: r[k] for k in "abc"} for r in rows] == expected
    assert [r["__line"] for r in rows] == [2, 3, 4, 5]
    assert expected[1][{"first": "a", "middle": "b", "last": "c"}[column]] == value


def test_lone_quotes_go_through_the_whole_pipeline(tmp_path: pathlib.Path) -> None:
    companies = ['Flash"Cab', "5'10\"", 'Blue, "Cab"', 'Taxi"', "Plain"]
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as handle:
        handle.write("id,company,fare\n")
        for i in range(200):
            company = companies[i % len(companies)]
            text = f'"{company.replace(chr(34), 2 * chr(34))}"' if "," in company else company
            handle.write(f"{i},{text},{i}.5\n")
    spec = {
        "name": "quotes",
        "source": {"format": "csv", "schema": dict(TRIPS)},
        "split": {"fractions": {"all": 1.0}},
    }
    out = tmp_path / "out"
    manifest = run_job(parse_spec(spec), inputs=[str(path)], output=str(out)).manifest
    assert manifest["counts"]["read"] == 200
    assert manifest["counts"]["rejected"] == {}
    written = pa.concat_tables([pq.read_table(f) for f in dataset_files(out)]).to_pylist()
    assert sorted((r["id"], r["company"]) for r in written) == [
        (i, companies[i % len(companies)]) for i in range(200)
    ]


def test_an_unterminated_quote_is_one_error_and_every_later_row_is_read(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    lines = ["id,company,fare"] + [
        f'{i},"Flash Cab,{i}.5' if i == 9 else f'{i},"Blue, Cab",{i}.5' for i in range(100)
    ]
    path.write_text("\n".join(lines) + "\n")
    rows, found = read_all(path, trips())
    assert [r["id"] for r in rows] == [i for i in range(100) if i != 9]
    assert [r["__line"] for r in rows] == [i + 2 for i in range(100) if i != 9]
    assert found == [
        (
            11,
            errors.UNTERMINATED_QUOTE,
            "a quoted value opened in this record is closed on a later line by a quote with"
            " more text after it (an unterminated quote?); the record is skipped and reading"
            " resumes on the next line",
            '9,"Flash Cab,9.5',
        )
    ]
    assert len(rows) + len(found) == 100


def test_an_unterminated_quote_in_read_records_counts_every_record(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    lines = ["id,company,fare"] + [
        f'{i},"oops,1' if i == 10 else f"{i},c{i},{i}" for i in range(100)
    ]
    path.write_text("\n".join(lines))
    source = trips(path=str(path), batch_size=16)
    pipeline = TestPipeline(runner="DirectRunner")
    read = pipeline | ReadRecords(
        source=source, schema=resolve_schema(source, [str(path)]), pipeline="job"
    )
    assert_that(
        read.batches | beam.FlatMap(lambda b: b.column("id").to_pylist()),
        equal_to([i for i in range(100) if i != 10]),
        label="rows",
    )
    assert_that(
        read.errors | beam.Map(lambda e: (e.reason, e.source, e.payload)),
        equal_to([(errors.UNTERMINATED_QUOTE, f"{path}:12", '10,"oops,1')]),
        label="errors",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("beamforge"))["counters"]
    }
    assert counters == {"rows_read": 99, "read_errors": 1}


# --- CSV: big records -----------------------------------------------------------------------


def test_records_up_to_the_maximum_parse_whatever_their_size(tmp_path: pathlib.Path) -> None:
    big = "x" * (3 << 20)  # Arrow's default block is 1 MiB
    path = tmp_path / "x.csv"
    path.write_text(f'id,company,fare\n1,a,1\n2,{big},2\n3,"{big}\n{big}",3\n4,d,4\n')
    rows, found = read_all(path, trips(), chunk_bytes=1 << 20)
    assert found == []
    assert [(r["id"], len(r["company"]), r["__line"]) for r in rows] == [
        (1, 1, 2),
        (2, 3 << 20, 3),
        (3, (6 << 20) + 1, 4),
        (4, 1, 6),
    ]


def test_a_record_over_the_maximum_is_one_error_and_reading_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,company,fare\n1,a,1\n2," + "x" * 100_000 + ",2\n3,c,3\n")
    rows, found = read_all(path, trips(csv=CsvOptions(max_record_bytes=1 << 16)))
    assert [(r["id"], r["__line"]) for r in rows] == [(1, 2), (3, 4)]
    assert [(line, reason, len(payload)) for line, reason, _, payload in found] == [
        (3, errors.RECORD_TOO_LARGE, 1 << 16)
    ]
    assert found[0][2] == (
        "record is longer than csv.max_record_bytes (65536 bytes); it is skipped (raise"
        " csv.max_record_bytes to read it)"
    )


@pytest.mark.parametrize("max_record_bytes", [16 << 20, 1 << 20])
def test_a_10_mb_file_without_newline_is_read_or_rejected_never_a_traceback(
    tmp_path: pathlib.Path, max_record_bytes: int
) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,company,fare\n1," + b"y" * (10 << 20) + b",2.5")
    rows, found = read_all(path, trips(csv=CsvOptions(max_record_bytes=max_record_bytes)))
    if max_record_bytes > 10 << 20:
        assert (found, [(r["id"], len(r["company"]), r["fare"]) for r in rows]) == (
            [],
            [(1, 10 << 20, 2.5)],
        )
    else:
        assert rows == []
        assert [(line, reason) for line, reason, *_ in found] == [(2, errors.RECORD_TOO_LARGE)]


def test_max_record_bytes_is_validated_with_the_spec() -> None:
    with pytest.raises(SpecError, match=r"csv\.max_record_bytes must be at least 1024, got 10"):
        from_mapping(
            Source,
            {"format": "csv", "schema": {"a": "int64"}, "csv": {"max_record_bytes": 10}},
            "source",
        )


# --- CSV: encodings and the record-by-record parser --------------------------------------


def test_bad_bytes_reject_their_record_only_in_any_encoding(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.csv"
    # cp1252 has no character for byte 0x81; the quoted value spans two lines.
    path.write_bytes('id,company,fare\n1,"Café\nNoir",1\n2,a\x81b,2\n3,Crème,3\n'.encode("latin-1"))
    rows, found = read_all(path, trips(csv=CsvOptions(encoding="cp1252")))
    assert [(r["id"], r["company"], r["__line"]) for r in rows] == [
        (1, "Café\nNoir", 2),
        (3, "Crème", 5),
    ]
    assert [(line, reason) for line, reason, *_ in found] == [(4, errors.BAD_ENCODING)]
    assert found[0][2] == ("line is not valid cp1252: character maps to <undefined> at byte 3")


def test_the_record_by_record_safety_net_reads_what_the_fast_path_reads() -> None:
    from transforms.io import csv_parse
    from transforms.io.csv_options import Dialect
    from transforms.io.csv_records import iter_records

    data = b'1,a,1\n2,b\n3,"c\nd",3\n'
    (records,) = iter_records(
        io.BytesIO(data), Dialect.of(CsvOptions()), chunk_bytes=64, max_record_bytes=1 << 10
    )
    names = ["id", "company", "fare"]
    table, keep, wrong = csv_parse.parse_one_by_one(records, names, trips(), arrow_schema(TRIPS))
    assert table.to_pylist() == [
        {"id": "1", "company": "a", "fare": "1"},
        {"id": "3", "company": "c\nd", "fare": "3"},
    ]
    assert (keep.tolist(), wrong) == ([True, False, True], [(1, 2)])
    fast, found = csv_parse.parse_records(records, names, trips(), arrow_schema(TRIPS), "f", "job")
    assert fast.column("id").to_pylist() == [1, 3]
    assert [(e.reason, e.source) for e in found] == [(errors.WRONG_FIELD_COUNT, "f:2")]
