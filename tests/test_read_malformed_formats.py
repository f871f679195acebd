"""Malformed values degrade per row in every format (issue 11).

A value a column cannot take rejects its row, whatever the format: Parquet, JSON lines, Avro,
TFRecord, BigQuery results and CSV; non-finite numbers are rejected unless the column allows them.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.malformed_reads import TRIPS, read_all
from transforms.core import errors
from transforms.core.config import SpecError, from_mapping
from transforms.core.errors import InputError
from transforms.io.read import Source, resolve_schema
from transforms.io.tf_example import encode_tf_examples, tfrecord_frame

# --- Values: the same rule in every format ---------------------------------------------------


def test_parquet_bad_string_in_a_numeric_column_rejects_its_row_only(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table({"id": [1, 2, 3], "company": ["a", "b", "c"], "fare": ["12.5", "abc", "7"]}),
        path,
    )
    rows, found = read_all(path, Source(format="parquet", schema=dict(TRIPS)))
    assert rows == [
        {"id": 1, "company": "a", "fare": 12.5, "__line": 1},
        {"id": 3, "company": "c", "fare": 7.0, "__line": 3},
    ]
    assert found == [
        (
            2,
            errors.UNPARSEABLE_VALUE,
            "column 'fare': 'abc' is not a valid float64",
            '{"company": "b", "fare": "abc", "id": 2}',
        )
    ]


def test_parquet_values_the_schema_cannot_take_reject_their_rows(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table(
            {
                "i": pa.array([3.0, 3.7, 1.0, 2.0], pa.float64()),
                "small": pa.array([1, 2, 2**40, 3], pa.int64()),
                "x": pa.array([1.5, 2.5, 3.5, float("nan")], pa.float64()),
            }
        ),
        path,
    )
    schema = {"i": "int64", "small": "int32", "x": "float32"}
    rows, found = read_all(path, Source(format="parquet", schema=schema))
    assert rows == [{"i": 3, "small": 1, "x": 1.5, "__line": 1}]
    assert [(line, reason, message) for line, reason, message, _ in found] == [
        (2, errors.UNPARSEABLE_VALUE, "column 'i': 3.7 is not a valid int64"),
        (3, errors.UNPARSEABLE_VALUE, "column 'small': 1099511627776 is not a valid int32"),
        (
            4,
            errors.NON_FINITE,
            "column 'x': nan is not a finite float32 (NaN, an infinity, or beyond float32's"
            " range); list the column in source.allow_non_finite to accept such values",
        ),
    ]


def test_jsonl_rejects_what_the_schema_cannot_take(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"i": 3.7, "x": 1}',
                '{"i": 3.0, "x": 1}',
                '{"i": 9223372036854775808, "x": 1}',
                '{"i": true, "x": 1}',
                '{"i": 1, "x": NaN}',
                '{"i": 1, "x": Infinity}',
                '{"i": 1, "x": -Infinity}',
                '{"i": 1, "x": 1e309}',
                '{"i": 1, "f32": 1e39}',
                '{"i": 1, "f32": 3.4e38, "x": 2.5}',
            ]
        )
    )
    schema = {"i": "int64", "x": "float64", "f32": "float32"}
    rows, found = read_all(path, Source(format="jsonl", schema=schema))
    assert [(r["__line"], r["i"]) for r in rows] == [(2, 3), (10, 1)]
    assert [(line, reason) for line, reason, *_ in found] == [
        (1, errors.UNPARSEABLE_VALUE),
        (3, errors.UNPARSEABLE_VALUE),
        (4, errors.UNPARSEABLE_VALUE),
        (5, errors.NON_FINITE),
        (6, errors.NON_FINITE),
        (7, errors.NON_FINITE),
        (8, errors.NON_FINITE),
        (9, errors.NON_FINITE),
    ]
    assert found[0][2] == "column 'i': expected int64, got 3.7"
    assert found[3][2].startswith("column 'x': nan is not a finite float64")
    assert found[7][2].startswith("column 'f32': 1e39 is not a finite float32")


def test_avro_and_tfrecord_apply_the_same_rule(tmp_path: pathlib.Path) -> None:
    avro = tmp_path / "x.avro"
    with avro.open("wb") as handle:
        fastavro.writer(
            handle,
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "n", "type": "long"}, {"name": "x", "type": "double"}],
            },
            [{"n": 1, "x": 0.5}, {"n": 2**40, "x": 1.5}, {"n": 3, "x": float("inf")}],
        )
    schema = {"n": "int32", "x": "float64"}
    rows, found = read_all(avro, Source(format="avro", schema=schema))
    assert rows == [{"n": 1, "x": 0.5, "__line": 1}]
    assert [(line, reason, message) for line, reason, message, _ in found] == [
        (2, errors.UNPARSEABLE_VALUE, "column 'n': expected int32, got 1099511627776"),
        (3, errors.NON_FINITE, found[1][2]),
    ]
    assert found[1][2].startswith("column 'x': inf is not a finite float64")

    batch = pa.RecordBatch.from_pydict(
        {"n": pa.array([1, 2], pa.int64()), "x": pa.array([float("nan"), 2.0], pa.float32())}
    )
    tfrecord = tmp_path / "x.tfrecord"
    tfrecord.write_bytes(b"".join(tfrecord_frame(r) for r in encode_tf_examples(batch)))
    rows, found = read_all(
        tfrecord, Source(format="tfrecord", schema={"n": "int64", "x": "float32"})
    )
    assert rows == [{"n": 2, "x": 2.0, "__line": 2}]
    assert [(line, reason) for line, reason, *_ in found] == [(1, errors.NON_FINITE)]
    assert json.loads(found[0][3]).keys() == {"tf_example_base64"}


# --- Non-finite numbers -------------------------------------------------------------------


def test_csv_non_finite_values_are_rejected_unless_allowed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,x,y\n1,NaN,1\n2,inf,1\n3,-inf,1\n4,1e309,1\n5,1.5,1e39\n6,2.5,2\n")
    schema = {"a": "int64", "x": "float64", "y": "float32"}
    rows, found = read_all(path, Source(format="csv", schema=schema))
    assert [r["a"] for r in rows] == [6]
    assert [(line, reason, message.split(" is not")[0]) for line, reason, message, _ in found] == [
        (2, errors.NON_FINITE, "column 'x': 'NaN'"),
        (3, errors.NON_FINITE, "column 'x': 'inf'"),
        (4, errors.NON_FINITE, "column 'x': '-inf'"),
        (5, errors.NON_FINITE, "column 'x': '1e309'"),
        (6, errors.NON_FINITE, "column 'y': '1e39'"),
    ]
    allowed, found = read_all(path, Source(format="csv", schema=schema, allow_non_finite=["x"]))
    assert [r["a"] for r in allowed] == [1, 2, 3, 4, 6]
    assert (
        np.isnan(allowed[0]["x"])
        and allowed[1:4]
        and [r["x"] for r in allowed[1:4]]
        == [
            float("inf"),
            float("-inf"),
            float("inf"),
        ]
    )
    assert [(line, reason) for line, reason, *_ in found] == [(6, errors.NON_FINITE)]


def test_parquet_nan_and_float32_overflow_are_allowed_per_column(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": [float("nan"), 1e300, 1.0]}), path)
    rejected, found = read_all(path, Source(format="parquet", schema={"x": "float32"}))
    assert (rejected, [(line, reason) for line, reason, *_ in found]) == (
        [{"x": 1.0, "__line": 3}],
        [(1, errors.NON_FINITE), (2, errors.NON_FINITE)],
    )
    allowed, found = read_all(
        path, Source(format="parquet", schema={"x": "float32"}, allow_non_finite=["x"])
    )
    assert found == [] and [r["x"] for r in allowed][1:] == [float("inf"), 1.0]


@pytest.mark.parametrize(
    ("allowed", "problem"),
    [
        (["nope"], "allow_non_finite: column 'nope' is not in the schema (columns: a, x)"),
        (["a"], "allow_non_finite: column 'a' is int64; only float columns hold non-finite"),
    ],
)
def test_allow_non_finite_names_float_columns_of_the_schema(allowed: list, problem: str) -> None:
    mapping = {"format": "csv", "schema": {"a": "int64", "x": "float64"}}
    with pytest.raises(SpecError, match=re.escape(problem)):
        from_mapping(Source, {**mapping, "allow_non_finite": allowed}, "source")


def test_allow_non_finite_is_checked_against_an_inferred_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,x\n1,2.5\n")
    source = Source(format="csv", infer_schema=True, allow_non_finite=["y"])
    with pytest.raises(InputError, match=r"^source.allow_non_finite: column 'y' is not in"):
        resolve_schema(source, [str(path)])


# --- BigQuery results: the same rule ------------------------------------------------------


@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_bigquery_rows_the_schema_cannot_take_are_rejected(bigquery_emulator: Any) -> None:
    from google.cloud import bigquery

    from transforms.io.bigquery import BigQuerySource, ReadFromBigQuery

    client = bigquery_emulator.client()
    client.create_dataset("malformed", exists_ok=True)
    table = f"{bigquery_emulator.project}.malformed.trips"
    client.create_table(
        bigquery.Table(
            table,
            schema=[
                bigquery.SchemaField("id", "INT64"),
                bigquery.SchemaField("fare", "STRING"),
                bigquery.SchemaField("tips", "FLOAT64"),
            ],
        ),
        exists_ok=True,
    )
    client.insert_rows_json(
        table,
        [
            {"id": 1, "fare": "12.5", "tips": 1.0},
            {"id": 2, "fare": "abc", "tips": 2.0},
            {"id": 3, "fare": "7", "tips": "NaN"},
        ],
    )
    # The declared schema reads the STRING fare as a float, as a CSV field would be.
    schema = pa.schema([("id", pa.int64()), ("fare", pa.float64()), ("tips", pa.float64())])
    with TestPipeline(runner="DirectRunner") as p:
        read = p | ReadFromBigQuery(
            source=BigQuerySource(table=table), schema=schema, pipeline="job"
        )
        assert_that(
            read.batches | beam.FlatMap(lambda b: b.drop_columns(["__file"]).to_pylist()),
            equal_to([{"id": 1, "fare": 12.5, "tips": 1.0, "__line": 1}]),
            label="rows",
        )
        assert_that(
            read.errors | beam.Map(lambda e: (e.reason, e.message.split(" is ")[0])),
            equal_to(
                [
                    (errors.UNPARSEABLE_VALUE, "column 'fare': 'abc'"),
                    (errors.NON_FINITE, "column 'tips': nan"),
                ]
            ),
            label="errors",
        )
