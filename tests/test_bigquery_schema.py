"""The pure parts of transforms.io.bigquery: table names, schema mapping, rows, SQL, errors."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.io import bigquery as bq

SCALARS = [pa.bool_(), pa.int64(), pa.float64(), pa.string(), pa.binary(), pa.date32()]


def test_parse_table_accepts_the_three_forms() -> None:
    want = bq.TableRef("my-proj-1", "ds", "t_1")
    assert bq.parse_table("my-proj-1.ds.t_1") == want
    assert bq.parse_table("my-proj-1:ds.t_1") == want
    assert bq.parse_table("ds.t_1", "my-proj-1") == want


@pytest.mark.parametrize("text", ["ds", "my-proj-1.ds.", "Bad_Proj.ds.t", "a.b.c.d", ""])
def test_parse_table_rejects_malformed_names(text: str) -> None:
    with pytest.raises(ValueError, match="malformed BigQuery table"):
        bq.parse_table(text, "my-proj-1")


def test_bq_schema_maps_types_modes_and_nesting() -> None:
    schema = pa.schema(
        [
            pa.field("id", pa.int32(), nullable=False),
            pa.field("x", pa.float32()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("p", pa.struct([pa.field("a", pa.int64()), pa.field("b", pa.string())])),
            pa.field("__line", pa.int64()),
        ]
    )
    assert bq.bq_schema(schema) == [
        {"name": "id", "type": "INT64", "mode": "REQUIRED"},
        {"name": "x", "type": "FLOAT64", "mode": "NULLABLE"},
        {"name": "tags", "type": "STRING", "mode": "REPEATED"},
        {"name": "at", "type": "TIMESTAMP", "mode": "NULLABLE"},
        {
            "name": "p",
            "type": "RECORD",
            "mode": "NULLABLE",
            "fields": [
                {"name": "a", "type": "INT64", "mode": "NULLABLE"},
                {"name": "b", "type": "STRING", "mode": "NULLABLE"},
            ],
        },
    ]


def test_bq_field_rejects_lists_of_lists() -> None:
    with pytest.raises(ValueError, match="no list of lists"):
        bq.bq_field(pa.field("m", pa.list_(pa.list_(pa.int64()))))


@st.composite
def _fields(draw: st.DrawFn) -> pa.Field:
    tp = draw(st.sampled_from(SCALARS))
    if draw(st.booleans()):
        return pa.field(draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True)), pa.list_(tp))
    return pa.field(draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True)), tp, draw(st.booleans()))


@given(st.lists(_fields(), min_size=1, max_size=6, unique_by=lambda f: f.name))
def test_arrow_to_bigquery_and_back_is_the_identity(fields: list[pa.Field]) -> None:
    schema = pa.schema(fields)
    assert bq.arrow_schema(bq.bq_schema(schema)) == schema
    assert bq.schema_problems(bq.bq_schema(schema), bq.bq_schema(schema)) == []


def test_schema_problems_names_every_mismatch() -> None:
    existing = [
        {"name": "a", "type": "INTEGER", "mode": "NULLABLE"},
        {"name": "b", "type": "STRING", "mode": "NULLABLE"},
        {"name": "req", "type": "STRING", "mode": "REQUIRED"},
    ]
    wanted = [
        {"name": "a", "type": "INT64", "mode": "NULLABLE"},
        {"name": "b", "type": "FLOAT64", "mode": "NULLABLE"},
        {"name": "c", "type": "DATE", "mode": "NULLABLE"},
    ]
    assert bq.schema_problems(existing, wanted) == [
        "column 'b' is STRING NULLABLE in the table but FLOAT64 NULLABLE in the dataset",
        "column 'c' (DATE) is not in the table",
        "the table's REQUIRED column 'req' is not in the dataset",
    ]


def test_json_rows_are_bigquery_json() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "d": pa.array([dt.date(2024, 1, 31), None]),
            "t": pa.array([dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC), None]),
            "f": pa.array([float("nan"), 1.5]),
            "b": pa.array([b"\x00\x01", None]),
            "l": pa.array([[1, 2], []]),
            "__line": pa.array([2, 3]),
        }
    )
    assert bq.json_rows(batch) == [
        {"d": "2024-01-31", "t": "2024-01-31T12:00:00+00:00", "f": None, "b": "AAE=", "l": [1, 2]},
        {"d": None, "t": None, "f": 1.5, "b": None, "l": []},
    ]


def test_source_query_filters_a_half_open_date_range_with_parameters() -> None:
    source = bq.BigQuerySource(
        table="my-proj-1.ds.trips", date_column="day", start="2024-01-01", end="2024-02-01"
    )
    source.validate()
    assert bq.source_query(source) == (
        "SELECT * FROM `my-proj-1.ds.trips` WHERE DATE(`day`) >= @start AND DATE(`day`) < @end",
        {"start": "2024-01-01", "end": "2024-02-01"},
    )
    query = bq.BigQuerySource(query="SELECT 1 AS x", project="my-proj-1")
    assert bq.source_query(query) == ("SELECT * FROM (SELECT 1 AS x)", {})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"table": "my-proj-1.ds.t", "query": "SELECT 1"}, "exactly one of"),
        ({"table": "my-proj-1.ds.t", "start": "2024-01-01"}, "need bigquery.date_column"),
        ({"table": "my-proj-1.ds.t", "date_column": "d", "start": "01/02/2024"}, "ISO date"),
        (
            {
                "table": "my-proj-1.ds.t",
                "date_column": "d",
                "start": "2024-02-01",
                "end": "2024-01-01",
            },
            "must be before",
        ),
        ({"query": "SELECT 1"}, "bigquery.project"),
    ],
)
def test_invalid_sources_say_how_to_fix_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bq.BigQuerySource(**kwargs).validate()


def test_rejected_records_carry_bigquery_error_and_the_row() -> None:
    rows = [{"a": 1}, {"a": "x"}, {"a": 3}]
    errors = [
        {"index": 1, "errors": [{"reason": "invalid", "location": "a", "message": "bad int"}]}
    ]
    (record,) = bq.rejected_records(
        rows, errors, table="p-123456.ds.t", pipeline="job", step="bigquery_train"
    )
    assert (record.pipeline, record.step, record.reason, record.source) == (
        "job",
        "bigquery_train",
        "bigquery_rejected",
        "bigquery:p-123456.ds.t",
    )
    assert record.message == "BigQuery rejected the row for p-123456.ds.t: invalid at a: bad int"
    assert json.loads(record.payload) == {"a": "x"}


def test_sink_schema_and_table_options() -> None:
    schema = pa.schema([pa.field("day", pa.date32()), pa.field("k", pa.string())])
    shared = bq.BigQuerySink(
        table="my-proj-1.ds.data",
        partitioning=bq.Partitioning(field="day"),
        clustering=["k"],
    )
    assert bq.sink_schema(shared, schema).names == ["day", "k", "split"]
    assert bq.table_options(shared, schema) == {
        "timePartitioning": {"type": "DAY", "field": "day"},
        "clustering": {"fields": ["k"]},
    }
    with pytest.raises(ValueError, match="DATE or TIMESTAMP"):
        bq.table_options(
            bq.BigQuerySink(table="my-proj-1.ds.d", partitioning=bq.Partitioning(field="k")), schema
        )
    per_split = bq.BigQuerySink(table="my-proj-1.ds.taxi_{split}")
    assert (per_split.per_split, str(per_split.table_for("eval"))) == (
        True,
        "my-proj-1.ds.taxi_eval",
    )
    assert per_split.resolved_method() == "FILE_LOADS"
    assert per_split.resolved_method(streaming=True) == "STREAMING_INSERTS"
