"""Tests of transforms.io.read: file readers and the ReadRecords transform."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import pathlib

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.chicago_taxi.schema import RAW_SCHEMA
from transforms.core import errors
from transforms.core.config import SpecError, from_mapping
from transforms.core.errors import ErrorRecord, InputError
from transforms.io.read import (
    CsvOptions,
    ReadRecords,
    Source,
    convert_strings,
    expand_paths,
    read_file,
    resolve_schema,
)
from transforms.io.tf_example import encode_tf_examples, tfrecord_frame

TAXI_SCHEMA = RAW_SCHEMA
ABC = {"a": "int64", "b": "float32", "c": "string"}


def read_all(
    path: pathlib.Path | str, source: Source, **kwargs
) -> tuple[pa.Table | None, list[ErrorRecord]]:
    """Reads a whole file; returns the rows as one table and all errors."""
    schema = resolve_schema(source, [str(path)])
    batches, found = [], []
    for batch, errs in read_file(str(path), source, schema, pipeline="job", **kwargs):
        if batch is not None:
            assert batch.num_rows <= source.batch_size
            batches.append(batch)
        found.extend(errs)
    return (pa.Table.from_batches(batches) if batches else None), found


def rows(table: pa.Table | None) -> list[dict]:
    return [] if table is None else table.to_pylist()


def error(path, line: int, reason: str, message: str, payload: str) -> tuple:
    return ("job", "read", reason, message, payload, f"{path}:{line}")


def key(record: ErrorRecord) -> tuple:
    return (
        record.pipeline,
        record.step,
        record.reason,
        record.message,
        record.payload,
        record.source,
    )


def csv_source(schema=ABC, **options) -> Source:
    return Source(format="csv", schema=schema, csv=CsvOptions(**options))


# --- configuration ---------------------------------------------------------------------


def test_source_from_mapping_builds_nested_options():
    source = from_mapping(
        Source,
        {
            "format": "csv",
            "path": ["a.csv", "b.csv"],
            "schema": {"x": "int64"},
            "csv": {"delimiter": ";", "null_values": ["", "NA"]},
        },
        "source",
    )
    assert source.csv.delimiter == ";"
    assert source.csv.null_values == ["", "NA"]
    assert source.patterns == ["a.csv", "b.csv"]


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        ({"format": "csv"}, "schema is required unless infer_schema is true"),
        ({"format": "csv", "schema": {"x": "integer"}}, "schema.x: unknown type 'integer'"),
        ({"format": "xml", "schema": {"x": "int64"}}, "expected one of"),
        (
            {"format": "csv", "schema": {"x": "int64"}, "csv": {"delimiter": ";;"}},
            "csv.delimiter must be a single ASCII character",
        ),
        (
            {"format": "csv", "schema": {"x": "list<int64>"}},
            "list columns cannot be read from csv",
        ),
        (
            {"format": "csv", "schema": {"x": "int64"}, "csv": {"encoding": "utf-16"}},
            "newline is one byte",
        ),
    ],
)
def test_source_validation_errors(mapping, problem):
    with pytest.raises(SpecError, match=problem):
        from_mapping(Source, mapping, "source")


def test_resolve_schema_declared_wins_over_inferred(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c,d\n1,2.5,x,true\n2,,y,false\n")
    inferred = resolve_schema(Source(format="csv", infer_schema=True), [str(path)])
    assert inferred == pa.schema(
        [("a", pa.int64()), ("b", pa.float64()), ("c", pa.string()), ("d", pa.bool_())]
    )
    mixed = resolve_schema(
        Source(format="csv", infer_schema=True, schema={"b": "float32", "a": "string"}),
        [str(path)],
    )
    assert mixed == pa.schema(
        [("a", pa.string()), ("b", pa.float32()), ("c", pa.string()), ("d", pa.bool_())]
    )
    assert resolve_schema(csv_source(), []) == pa.schema(
        [("a", pa.int64()), ("b", pa.float32()), ("c", pa.string())]
    )


# --- string conversion -----------------------------------------------------------------


def test_convert_strings_flags_bad_values_and_keeps_nulls():
    values = pa.array(["1", None, "x", " 7 ", "+3", "99999999999999999999"])
    converted, bad = convert_strings(values, pa.int64())
    assert converted.to_pylist() == [1, None, None, 7, 3, None]
    assert bad is not None
    assert bad.tolist() == [False, False, True, False, False, True]


def test_convert_strings_all_good_has_no_mask():
    converted, bad = convert_strings(pa.array(["1.5", "-2", None, "1e3"]), pa.float64())
    assert converted.to_pylist() == [1.5, -2.0, None, 1000.0]
    assert bad is None


def test_convert_strings_timestamps_iso_and_unix_seconds():
    values = pa.array(
        [
            "2024-01-31T12:00:00Z",
            "2024-01-31 13:00:00+01:00",
            "2024-01-31T12:00:00",
            "1706702400",
            "soon",
        ]
    )
    converted, bad = convert_strings(values, pa.timestamp("us", tz="UTC"))
    noon = dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC)
    assert converted.to_pylist() == [noon, noon, noon, noon, None]
    assert bad is not None
    assert bad.tolist() == [False, False, False, False, True]


@settings(max_examples=200, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_parsing_matches_numpy(value):
    text = repr(value)
    converted, bad = convert_strings(pa.array([text]), pa.float32())
    assert bad is None
    assert converted.to_numpy()[0] == np.float32(text)


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


# --- JSONL -----------------------------------------------------------------------------


def test_jsonl_round_trip_and_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'{"a": 1, "b": 0.1, "c": "x", "t": "2024-01-31T12:00:00Z", "l": [1, 2]}\n'
        b'{"a": 2, "c": null}\n'
        b"\n"
        b'{"a": "3", "b": 1}\n'  # string in an int column
        b"not json\n"
        b"[1, 2]\n"
        b'{"a": 4, "c": "\xff"}\n'
        b'{"a": 5, "b": 2, "t": 1706702400}'
    )
    source = Source(
        format="jsonl",
        schema={"a": "int64", "b": "float32", "c": "string", "t": "timestamp", "l": "list<int64>"},
    )
    table, found = read_all(path, source)
    noon = dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC)
    assert rows(table) == [
        {
            "a": 1,
            "b": float(np.float32(0.1)),
            "c": "x",
            "t": noon,
            "l": [1, 2],
            "__file": str(path),
            "__line": 1,
        },
        {"a": 2, "b": None, "c": None, "t": None, "l": None, "__file": str(path), "__line": 2},
        {"a": 5, "b": 2.0, "c": None, "t": noon, "l": None, "__file": str(path), "__line": 8},
    ]
    assert [key(e) for e in found] == [
        error(
            path,
            4,
            errors.UNPARSEABLE_VALUE,
            "column 'a': expected int64, got \"3\"",
            '{"a": "3", "b": 1}',
        ),
        error(
            path,
            5,
            errors.MALFORMED_RECORD,
            "not valid JSON: Expecting value: line 1 column 1 (char 0)",
            "not json",
        ),
        error(path, 6, errors.MALFORMED_RECORD, "expected a JSON object, got list", "[1, 2]"),
        error(
            path,
            7,
            errors.BAD_ENCODING,
            "line is not valid utf-8: invalid start byte at byte 15",
            '{"a": 4, "c": "\ufffd"}',
        ),
    ]


def test_jsonl_empty_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"")
    assert read_all(path, Source(format="jsonl", schema={"a": "int64"})) == (None, [])


# --- Parquet ---------------------------------------------------------------------------


def test_parquet_round_trip_casts_and_ignores_extra_columns(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table({"a": pa.array([1, 2, 3], pa.int32()), "b": [0.5, None, 2.0], "z": ["q"] * 3}),
        path,
    )
    source = Source(format="parquet", schema={"b": "float32", "a": "int64"}, batch_size=2)
    table, found = read_all(path, source)
    assert found == []
    assert rows(table) == [
        {"b": 0.5, "a": 1, "__file": str(path), "__line": 1},
        {"b": None, "a": 2, "__file": str(path), "__line": 2},
        {"b": 2.0, "a": 3, "__file": str(path), "__line": 3},
    ]


def test_parquet_missing_column_and_not_parquet_raise_naming_file(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(
        InputError, match=r"x\.parquet: column 'b' of the schema is not in the Parquet file"
    ):
        read_all(path, Source(format="parquet", schema={"a": "int64", "b": "string"}))
    bogus = tmp_path / "bogus.parquet"
    bogus.write_text("a,b\n")
    with pytest.raises(InputError, match=r"bogus\.parquet: is not a readable Parquet file"):
        read_all(bogus, Source(format="parquet", schema={"a": "int64"}))


def test_parquet_infer_schema(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1], "s": pa.array(["x"], pa.large_string())}), path)
    schema = resolve_schema(Source(format="parquet", infer_schema=True), [str(path)])
    assert schema == pa.schema([("a", pa.int64()), ("s", pa.string())])


# --- Avro ------------------------------------------------------------------------------


def test_avro_round_trip_and_type_errors(tmp_path):
    path = tmp_path / "x.avro"
    avro_schema = {
        "type": "record",
        "name": "Row",
        "fields": [
            {"name": "a", "type": ["null", "long", "string"]},
            {"name": "b", "type": ["null", "float"]},
            {"name": "c", "type": ["null", "string"]},
        ],
    }
    records = [
        {"a": 1, "b": 0.1, "c": "x"},
        {"a": "two", "b": None, "c": "y"},
        {"a": 3, "b": None, "c": None},
    ]
    with path.open("wb") as handle:
        fastavro.writer(handle, avro_schema, records)
    table, found = read_all(path, Source(format="avro", schema=ABC))
    assert rows(table) == [
        {"a": 1, "b": float(np.float32(0.1)), "c": "x", "__file": str(path), "__line": 1},
        {"a": 3, "b": None, "c": None, "__file": str(path), "__line": 3},
    ]
    assert [key(e) for e in found] == [
        error(
            path,
            2,
            errors.UNPARSEABLE_VALUE,
            "column 'a': expected int64, got \"two\"",
            '{"a": "two", "b": null, "c": "y"}',
        )
    ]


# --- TFRecord --------------------------------------------------------------------------


def test_tfrecord_gzip_round_trip_and_malformed_record(tmp_path):
    batch = pa.RecordBatch.from_pydict(
        {
            "a": pa.array([1, None, 3], pa.int64()),
            "b": pa.array([0.1, 2.0, None], pa.float32()),
            "c": pa.array(["x", "y", None]),
        }
    )
    records = encode_tf_examples(batch)
    records.insert(1, b"\xff\xff\xff")
    path = tmp_path / "x.tfrecord.gz"
    path.write_bytes(gzip.compress(b"".join(tfrecord_frame(r) for r in records)))
    table, found = read_all(path, Source(format="tfrecord", schema=ABC))
    assert rows(table) == [
        {"a": 1, "b": float(np.float32(0.1)), "c": "x", "__file": str(path), "__line": 1},
        {"a": None, "b": 2.0, "c": "y", "__file": str(path), "__line": 3},
        {"a": 3, "b": None, "c": None, "__file": str(path), "__line": 4},
    ]
    assert [(e.reason, e.source, json.loads(e.payload)) for e in found] == [
        (errors.MALFORMED_RECORD, f"{path}:2", {"tf_example_base64": "////"})
    ]
    assert found[0].message.startswith("not a tf.train.Example: ")


def test_tfrecord_truncated_file_raises(tmp_path):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(tfrecord_frame(b"abc")[:-2])
    with pytest.raises(InputError, match=r"x\.tfrecord: is a truncated TFRecord file: record 1"):
        read_all(path, Source(format="tfrecord", schema=ABC))


# --- ReadRecords -----------------------------------------------------------------------


def test_expand_paths_unmatched_pattern_names_it(tmp_path):
    (tmp_path / "a.csv").write_text("a\n")
    assert expand_paths([str(tmp_path / "*.csv")]) == [str(tmp_path / "a.csv")]
    with pytest.raises(InputError, match=r"\*\.json: no file matches this path or pattern$"):
        expand_paths([str(tmp_path / "*.csv"), str(tmp_path / "*.json")])


def test_read_records_construction_fails_on_unmatched_glob(tmp_path):
    source = Source(format="csv", schema=ABC, path=str(tmp_path / "missing-*.csv"))
    with pytest.raises(ValueError, match="no file matches"):
        ReadRecords(source=source, schema=resolve_schema(source, []), pipeline="job")


def test_read_records_over_three_files(tmp_path):
    (tmp_path / "p1.csv").write_text("a,b,c\n1,1.5,x\n2,2.5,y\n")
    (tmp_path / "p2.csv").write_text("a,b,c\n3,bad,z\n4,4.5,w\n")
    (tmp_path / "p3.csv").write_text("a,b,c\n")
    source = Source(format="csv", schema=ABC, path=str(tmp_path / "p*.csv"), batch_size=1)
    read = ReadRecords(source=source, schema=resolve_schema(source, []), pipeline="job")
    p1, p2 = str(tmp_path / "p1.csv"), str(tmp_path / "p2.csv")
    assert read.paths == [p1, p2, str(tmp_path / "p3.csv")]
    pipeline = TestPipeline(runner="DirectRunner")
    result = pipeline | read
    rows_out = result["batches"] | beam.FlatMap(
        lambda b: [tuple(r.values()) for r in b.to_pylist()]
    )
    assert_that(
        rows_out,
        equal_to([(1, 1.5, "x", p1, 2), (2, 2.5, "y", p1, 3), (4, 4.5, "w", p2, 3)]),
        label="rows",
    )
    assert_that(
        result["errors"] | beam.Map(key),
        equal_to(
            [
                error(
                    p2,
                    2,
                    errors.UNPARSEABLE_VALUE,
                    "column 'b': 'bad' is not a valid float32",
                    "3,bad,z",
                )
            ]
        ),
        label="errors",
    )
    outcome = pipeline.run()
    outcome.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in outcome.metrics().query(MetricsFilter().with_namespace("beamforge"))["counters"]
    }
    assert counters == {"rows_read": 3, "read_errors": 1}


def test_read_records_rejects_bad_configuration():
    with pytest.raises(TypeError, match="source must be a Source"):
        ReadRecords(source={"format": "csv"}, schema=pa.schema([]), pipeline="job")  # type: ignore[arg-type]
