"""Tests of the CSV reader (transforms.io.read_csv) through read_file."""

from __future__ import annotations

import csv
import datetime as dt
import gzip

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.chicago_taxi.schema import RAW_SCHEMA
from tests.reading import ABC, csv_source, error, key, read_all, rows
from transforms.core import errors
from transforms.core.errors import InputError
from transforms.io.read import Source, read_file, resolve_schema

TAXI_SCHEMA = RAW_SCHEMA


# --- CSV -------------------------------------------------------------------------------


def test_csv_round_trip_with_source_columns(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,c,b,extra\n1,x,2.5,9\n2,"y, z",,9\n')
    table, found = read_all(path, csv_source())
    assert found == []
    assert table.schema == pa.schema(
        [
            ("a", pa.int64()),
            ("b", pa.float32()),
            ("c", pa.string()),
            ("__file", pa.string()),
            ("__line", pa.int64()),
        ]
    )
    assert rows(table) == [
        {"a": 1, "b": 2.5, "c": "x", "__file": str(path), "__line": 2},
        {"a": 2, "b": None, "c": "y, z", "__file": str(path), "__line": 3},
    ]


def test_csv_options_delimiter_header_off_nulls_and_skip_rows(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("# exported\n1\tNA\t'a\tb'\n\n2\t3.5\tNA\n")
    source = csv_source(
        delimiter="\t",
        quote_char="'",
        header=False,
        column_names=["a", "b", "c"],
        null_values=["NA", ""],
        skip_rows=1,
    )
    table, found = read_all(path, source)
    assert found == []
    assert rows(table) == [
        {"a": 1, "b": None, "c": "a\tb", "__file": str(path), "__line": 2},
        {"a": 2, "b": 3.5, "c": None, "__file": str(path), "__line": 4},
    ]


def test_csv_header_off_defaults_to_schema_order(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2,x\n")
    table, found = read_all(path, csv_source(header=False))
    assert (rows(table), found) == (
        [{"a": 1, "b": 2.0, "c": "x", "__file": str(path), "__line": 1}],
        [],
    )


def test_csv_without_quoting_keeps_quote_characters(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b,c\n1,2,"x"\n')
    table, _ = read_all(path, csv_source(quote_char=None))
    assert table.column("c").to_pylist() == ['"x"']


def test_csv_quoted_empty_is_empty_string_and_bare_empty_is_null(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b,c\n1,2,""\n1,2,\n')
    table, _ = read_all(path, csv_source())
    assert table.column("c").to_pylist() == ["", None]


def test_csv_quoted_newlines_and_line_numbers_of_records(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b,c\n1,1,"two\nlines"\n2,2,x\n3,zz,y\n')
    table, found = read_all(path, csv_source())
    assert rows(table) == [
        {"a": 1, "b": 1.0, "c": "two\nlines", "__file": str(path), "__line": 2},
        {"a": 2, "b": 2.0, "c": "x", "__file": str(path), "__line": 4},
    ]
    assert [key(e) for e in found] == [
        error(
            path, 5, errors.UNPARSEABLE_VALUE, "column 'b': 'zz' is not a valid float32", "3,zz,y"
        )
    ]


def test_csv_malformed_records_become_exact_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"a,b,c\n"
        b"1,2.5,ok\n"
        b"2,abc,x\n"  # unparseable float
        b"3,4\n"  # too few fields
        b"4,5,\xff\xfeoops\n"  # invalid UTF-8
        b"5,6,x,extra\n"  # too many fields
        b"x7,7,y\r\n"  # unparseable int, CRLF line end
        b"8,8.5,last"  # no final newline
    )
    table, found = read_all(path, csv_source())
    assert rows(table) == [
        {"a": 1, "b": 2.5, "c": "ok", "__file": str(path), "__line": 2},
        {"a": 8, "b": 8.5, "c": "last", "__file": str(path), "__line": 8},
    ]
    assert sorted(key(e) for e in found) == sorted(
        [
            error(
                path,
                3,
                errors.UNPARSEABLE_VALUE,
                "column 'b': 'abc' is not a valid float32",
                "2,abc,x",
            ),
            error(path, 4, errors.WRONG_FIELD_COUNT, "expected 3 fields, got 2", "3,4"),
            error(
                path,
                5,
                errors.BAD_ENCODING,
                "line is not valid utf-8: invalid start byte at byte 4",
                "4,5,\ufffd\ufffdoops",
            ),
            error(path, 6, errors.WRONG_FIELD_COUNT, "expected 3 fields, got 4", "5,6,x,extra"),
            error(
                path, 7, errors.UNPARSEABLE_VALUE, "column 'a': 'x7' is not a valid int64", "x7,7,y"
            ),
        ]
    )
    assert all(e.processing_time.endswith("Z") and e.event_time is None for e in found)


def test_csv_two_bad_columns_make_one_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,c\nq,r,s\n")
    _, found = read_all(path, csv_source())
    assert [key(e) for e in found] == [
        error(
            path,
            2,
            errors.UNPARSEABLE_VALUE,
            "column 'a': 'q' is not a valid int64; column 'b': 'r' is not a valid float32",
            "q,r,s",
        )
    ]


def test_csv_small_chunks_and_batches_keep_every_row_and_line(tmp_path):
    path = tmp_path / "x.csv"
    lines = ["a,b,c"] + [
        f'{i},{i}.5,"v\n{i}"' if i % 7 == 0 else f"{i},{i}.5,v{i}" for i in range(500)
    ]
    lines[100] = "oops"
    path.write_text("\n".join(lines) + "\n")
    source = Source(format="csv", schema=ABC, batch_size=64)
    table, found = read_all(path, source, chunk_bytes=97)
    expected_a = [i for i in range(500) if i != 99]
    assert table.column("a").to_pylist() == expected_a
    # Line of record i: header + i + the extra lines of earlier multi-line values.
    assert table.column("__line").to_pylist() == [2 + i + (i + 6) // 7 for i in expected_a]
    assert [key(e) for e in found] == [
        error(path, 2 + 99 + 105 // 7, errors.WRONG_FIELD_COUNT, "expected 3 fields, got 1", "oops")
    ]


def test_csv_latin1_encoding_and_gzip(tmp_path):
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress("a,b,c\n1,2,café\n".encode("latin-1")))
    table, found = read_all(path, csv_source(encoding="latin-1"))
    assert (table.column("c").to_pylist(), found) == (["café"], [])


def test_csv_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b,c\n1,2,x\n")
    table, found = read_all(path, csv_source())
    assert (table.column("a").to_pylist(), found) == ([1], [])


@pytest.mark.parametrize("content", [b"", b"a,b,c\n", b"a,b,c"])
def test_empty_csv_yields_nothing(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    schema = resolve_schema(csv_source(), [])
    assert list(read_file(str(path), csv_source(), schema, pipeline="job")) == []


def test_csv_header_missing_a_schema_column_raises_naming_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(
        InputError, match=r"x\.csv: column 'c' of the schema is not in the file's header"
    ):
        read_all(path, csv_source())


def test_missing_file_raises_naming_path(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(InputError, match=r"nope\.csv: cannot be opened: no such file$"):
        read_all(path, csv_source())


def test_timestamps_from_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("t\n2024-01-31T12:00:00Z\n1706702400\n\n2024-01-31 12:00:00\nlater\n")
    source = Source(format="csv", schema={"t": "timestamp"})
    table, found = read_all(path, source)
    noon = dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC)
    assert table.column("t").to_pylist() == [noon, noon, noon]
    assert [key(e) for e in found] == [
        error(
            path,
            6,
            errors.UNPARSEABLE_VALUE,
            "column 't': 'later' is not a valid timestamp",
            "later",
        )
    ]


cell = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            cell,
        ),
        min_size=1,
        max_size=30,
    )
)
def test_csv_property_random_tables_read_back_equal(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("prop") / "x.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["i", "f", "s"])
        for i, f, s in data:
            writer.writerow([i, repr(f), s])
    source = Source(format="csv", schema={"i": "int64", "f": "float64", "s": "string"})
    table, found = read_all(path, source)
    assert found == []
    assert table.column("i").to_pylist() == [r[0] for r in data]
    assert table.column("f").to_pylist() == [r[1] for r in data]
    assert table.column("s").to_pylist() == [r[2] for r in data]


def test_full_taxi_csv(taxi_csv):
    source = Source(format="csv", schema=TAXI_SCHEMA)
    table, found = read_all(taxi_csv, source)
    assert found == []
    assert table.num_rows == 15_002
    assert table.column("__line").to_pylist() == list(range(2, 15_004))
    assert set(table.column("__file").to_pylist()) == {str(taxi_csv)}
    # float32 values equal parsing the decimal text directly as float32.
    with taxi_csv.open(newline="") as handle:
        raw = list(csv.DictReader(handle))
    for column in ("fare", "tips", "trip_miles", "pickup_latitude", "dropoff_longitude"):
        expected = np.array(
            [np.float32(r[column]) if r[column] else np.nan for r in raw], dtype=np.float32
        )
        got = table.column(column).to_numpy(zero_copy_only=False).astype(np.float32)
        np.testing.assert_array_equal(got, expected)
    assert table.column("company").to_pylist() == [r["company"] or None for r in raw]
    assert table.column("trip_start_timestamp").to_pylist() == [
        int(r["trip_start_timestamp"]) for r in raw
    ]
