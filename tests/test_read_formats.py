"""Tests of the JSONL, Parquet, Avro and TFRecord readers through read_file."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.reading import ABC, error, key, read_all, rows
from transforms.core import errors
from transforms.core.errors import InputError
from transforms.io.read import Source, resolve_schema
from transforms.io.tf_example import encode_tf_examples, tfrecord_frame

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
