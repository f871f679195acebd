"""Tests of transforms.io.read: the source, schemas, string values and ReadRecords."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reading import ABC, csv_source, error, key
from transforms.core import errors
from transforms.core.config import SpecError, from_mapping
from transforms.core.errors import InputError
from transforms.io.read import ReadRecords, Source, convert_strings, expand_paths, resolve_schema

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
