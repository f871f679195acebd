"""Tests of transforms.io.write: encoders and the WriteBatches transform."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import pathlib
import re

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.io.read import Source, read_file
from transforms.io.tf_example import decode_tf_examples
from transforms.io.write import WriteBatches, conform, csv_header, encode_csv, encode_jsonl

SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("f", pa.float32()),
        ("s", pa.string()),
        ("t", pa.timestamp("us", tz="UTC")),
    ]
)
NOON = dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC)


def batch_of(rows: list[dict], line_start: int = 1) -> pa.RecordBatch:
    batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
    lines = pa.array(range(line_start, line_start + len(rows)), pa.int64())
    return batch.append_column("__file", pa.array(["in.csv"] * len(rows))).append_column(
        "__line", lines
    )


FIRST = batch_of(
    [
        {"i": 1, "f": 12.45, "s": 'a,"b"', "t": NOON},
        {"i": None, "f": None, "s": None, "t": None},
    ]
)
SECOND = batch_of([{"i": -3, "f": 0.1, "s": "é", "t": NOON}], line_start=3)
EXPECTED = [
    {"i": 1, "f": float(np.float32(12.45)), "s": 'a,"b"', "t": NOON},
    {"i": None, "f": None, "s": None, "t": None},
    {"i": -3, "f": float(np.float32(0.1)), "s": "é", "t": NOON},
]


def check_files_reported(tmp_path, fmt, batches, expected_count, **kwargs):
    prefix = str(tmp_path / "train" / "part")
    ext = {"parquet": ".parquet", "tfrecord": ".tfrecord.gz", "csv": ".csv", "jsonl": ".jsonl"}[fmt]
    expected = [f"{prefix}-{k:05d}-of-{expected_count:05d}{ext}" for k in range(expected_count)]
    with TestPipeline(runner="DirectRunner") as p:
        files = (
            p
            | beam.Create(batches, reshuffle=False)
            | WriteBatches(path_prefix=prefix, format=fmt, schema=SCHEMA, **kwargs)
        )
        assert_that(files, equal_to(expected))
    assert sorted(str(f) for f in (tmp_path / "train").iterdir()) == expected
    return expected


def read_back(paths: list[str], fmt: str) -> list[dict]:
    out: list[dict] = []
    for path in paths:
        if fmt == "parquet":
            table = pq.read_table(path)
            assert table.schema == SCHEMA
            out.extend(table.to_pylist())
        elif fmt == "tfrecord":
            data = gzip.decompress(pathlib.Path(path).read_bytes())
            records = []
            while data:
                length = int.from_bytes(data[:8], "little")
                records.append(data[12 : 12 + length])
                data = data[16 + length :]
            batch, problems = decode_tf_examples(records, SCHEMA)
            assert problems == []
            out.extend(batch.to_pylist())
        else:
            source = Source(
                format=fmt, schema={"i": "int64", "f": "float32", "s": "string", "t": "timestamp"}
            )
            for batch, found in read_file(path, source, SCHEMA, pipeline="job"):
                assert found == []
                if batch is not None:
                    out.extend(
                        {k: v for k, v in r.items() if not k.startswith("__")}
                        for r in batch.to_pylist()
                    )
    return out


def sort_key(row: dict) -> tuple:
    return (row["i"] is None, row["i"] or 0)


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord", "csv", "jsonl"])
def test_each_format_round_trips(tmp_path, fmt):
    paths = check_files_reported(tmp_path, fmt, [FIRST, SECOND], 1, num_shards=1)
    assert sorted(read_back(paths, fmt), key=sort_key) == sorted(EXPECTED, key=sort_key)


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord", "csv", "jsonl"])
def test_empty_input_still_writes_one_valid_file(tmp_path, fmt):
    paths = check_files_reported(tmp_path, fmt, [], 1)
    assert read_back(paths, fmt) == []
    if fmt == "csv":
        assert pathlib.Path(paths[0]).read_text() == '"i","f","s","t"\n'
    if fmt == "parquet":
        assert pq.read_schema(paths[0]) == SCHEMA


def test_shard_naming_and_csv_header_in_every_shard(tmp_path):
    paths = check_files_reported(tmp_path, "csv", [FIRST, SECOND], 3, num_shards=3)
    for path in paths:
        assert re.fullmatch(r".*/train/part-0000[0-2]-of-00003\.csv", path)
        assert pathlib.Path(path).read_text().startswith('"i","f","s","t"\n')
    assert sorted(read_back(paths, "csv"), key=sort_key) == sorted(EXPECTED, key=sort_key)


def test_null_typed_column_keeps_declared_type(tmp_path):
    loose = pa.RecordBatch.from_pydict(
        {"i": [1], "f": pa.nulls(1), "s": pa.nulls(1), "t": pa.nulls(1), "__line": [1]}
    )
    assert conform(loose, SCHEMA).schema == SCHEMA
    paths = check_files_reported(tmp_path, "parquet", [loose], 1, num_shards=1)
    table = pq.read_table(paths[0])
    assert table.schema == SCHEMA
    assert table.to_pylist() == [{"i": 1, "f": None, "s": None, "t": None}]


def test_conform_missing_column_is_an_error():
    with pytest.raises(ValueError, match="column 't' of the output schema is not in the batch"):
        conform(FIRST.select(["i", "f", "s"]), SCHEMA)


def test_encode_csv_drops_hidden_columns_and_quotes():
    assert encode_csv(FIRST, header=True) == (
        b'"i","f","s","t"\n1,12.45,"a,""b""",2024-01-31 12:00:00.000000Z\n,,,\n'
    )
    assert encode_csv(FIRST.slice(0, 0), header=False) == b""
    assert csv_header(FIRST.schema) == '"i","f","s","t"'


def test_encode_jsonl_shortest_float32_and_iso_timestamps():
    assert encode_jsonl(FIRST).decode().splitlines() == [
        '{"i": 1, "f": 12.45, "s": "a,\\"b\\"", "t": "2024-01-31T12:00:00+00:00"}',
        '{"i": null, "f": null, "s": null, "t": null}',
    ]


def test_encode_jsonl_lists_and_binary():
    batch = pa.RecordBatch.from_pydict(
        {
            "l": pa.array([[1.5, 2.0], None, []], pa.list_(pa.float32())),
            "b": pa.array([b"\x00\xff", None, b""], pa.binary()),
        }
    )
    assert encode_jsonl(batch).decode().splitlines() == [
        '{"l": [1.5, 2.0], "b": "AP8="}',
        '{"l": null, "b": null}',
        '{"l": [], "b": ""}',
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path_prefix": "", "format": "csv"}, "path_prefix must be given"),
        ({"path_prefix": "x", "format": "xml"}, "unknown format 'xml'"),
        ({"path_prefix": "x", "format": "csv", "num_shards": -1}, "num_shards must be >= 0"),
    ],
)
def test_write_batches_validates_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WriteBatches(schema=SCHEMA, **kwargs)


def test_write_batches_rejects_list_columns_in_csv():
    with pytest.raises(ValueError, match="list columns cannot be written as csv: l"):
        WriteBatches(path_prefix="x", format="csv", schema=pa.schema([("l", pa.list_(pa.int64()))]))


def _reference_jsonl(batch: pa.RecordBatch) -> bytes:
    """json.dumps of each row's dict: what encode_jsonl must write, byte for byte."""
    from transforms.io.write import _json_column

    names = batch.schema.names
    columns = [_json_column(batch.column(i)) for i in range(batch.num_columns)]
    rows = zip(*columns, strict=True)
    return "".join(
        json.dumps(dict(zip(names, r, strict=True)), ensure_ascii=False) + "\n" for r in rows
    ).encode()


_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.none()


@settings(max_examples=60, deadline=None)
@given(
    ints=st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=1, max_size=20),
    data=st.data(),
)
def test_encode_jsonl_writes_what_json_dumps_writes(ints: list, data: st.DataObject) -> None:
    n = len(ints)
    batch = pa.RecordBatch.from_pydict(
        {
            "i": pa.array(ints, pa.int64()),
            "f32": pa.array(data.draw(st.lists(_FLOATS, min_size=n, max_size=n)), pa.float32()),
            "f64": pa.array(
                data.draw(st.lists(st.floats() | st.none(), min_size=n, max_size=n)), pa.float64()
            ),
            "s": pa.array(data.draw(st.lists(st.text() | st.none(), min_size=n, max_size=n))),
            "b": pa.array(data.draw(st.lists(st.booleans() | st.none(), min_size=n, max_size=n))),
            'quote "key"': pa.array([None] * n, pa.int32()),
        }
    )
    assert encode_jsonl(batch) == _reference_jsonl(batch)


def test_encode_jsonl_of_no_rows_and_no_columns() -> None:
    assert encode_jsonl(FIRST.slice(0, 0)) == b""
    assert encode_jsonl(pa.RecordBatch.from_pydict({"__line": [1, 2]})) == b"{}\n{}\n"
