"""Tests for transforms.serving.preprocessor: serving rows equal batch apply, errors name the key."""

from __future__ import annotations

import pathlib

import farmhash
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transforms.core.artifact import Artifact, write_artifact
from transforms.core.batch_steps import apply_steps
from transforms.ops.registry import build_step
from transforms.serving.preprocessor import Preprocessor

REPO = pathlib.Path(__file__).resolve().parent.parent

INPUT_SCHEMA = {"fare": "float32", "tips": "float32", "company": "string", "hour": "int64"}
STEPS = [
    {"op": "fill_missing", "name": "fill", "columns": ["fare", "tips"], "value": 0},
    {"op": "z_score", "column": "fare", "output": "fare_xf"},
    {"op": "vocabulary", "column": "company", "output": "company_xf", "num_oov_buckets": 2},
    {"op": "log", "column": "fare", "offset": 1.0, "output": "log_fare"},
    {"op": "expression", "output": "big_tip", "expr": "cast(tips > fare * 0.2, 'int64')"},
    {"op": "copy", "columns": ["hour"]},
]
OUTPUT = ["fare_xf", "company_xf", "log_fare", "big_tip", "hour_xf"]
FITTED = {
    "z_score:fare": {
        "count": 4,
        "mean": 10.0,
        "variance": 4.0,
        "min": 7.0,
        "max": 13.0,
        "sum": 40.0,
    },
    "vocabulary:company": {"vocabulary": ["Flash", "Blue"], "frequencies": [3, 1], "distinct": 2},
}
ROWS = [
    {"fare": 12.0, "tips": 3.0, "company": "Blue", "hour": 7},
    {"fare": 8, "company": "Other", "hour": "9"},
    {"fare": -3.0, "tips": 0.0, "company": "Flash", "hour": 1},
    {"tips": 1.0, "company": None, "hour": 23, "extra": "ignored"},
    {"fare": "twelve", "tips": 1.0, "company": "Flash", "hour": 5},
]


@pytest.fixture
def artifact_dir(tmp_path: pathlib.Path) -> str:
    steps = [build_step(m, f"steps[{i}]").describe() for i, m in enumerate(STEPS)]
    artifact = Artifact(
        pipeline="serve",
        steps=steps,
        fitted=FITTED,
        input_schema=INPUT_SCHEMA,
        output_columns=OUTPUT,
        output_schema={c: "int64" for c in OUTPUT},
    )
    write_artifact(str(tmp_path / "artifact"), artifact)
    return str(tmp_path / "artifact")


def test_transform_rows_exact(artifact_dir):
    rows, errors = Preprocessor.load(artifact_dir).transform_rows(ROWS)
    oov = 2 + farmhash.fingerprint64("Other") % 2
    empty = 2 + farmhash.fingerprint64("") % 2
    assert rows == [
        {
            "fare_xf": 1.0,
            "company_xf": 1,
            "log_fare": pytest.approx(2.564949),
            "big_tip": 1,
            "hour_xf": 7,
        },
        {
            "fare_xf": -1.0,
            "company_xf": oov,
            "log_fare": pytest.approx(2.197225),
            "big_tip": 0,
            "hour_xf": 9,
        },
        {"fare_xf": -5.0, "company_xf": empty, "log_fare": 0.0, "big_tip": 1, "hour_xf": 23},
    ]
    assert [(e.step, e.reason, e.message, e.payload) for e in errors] == [
        (
            "input",
            "unparseable_value",
            "key 'fare': 'twelve' is not a valid float32",
            '{"company": "Flash", "fare": "twelve", "hour": 5, "tips": 1.0}',
        ),
        (
            "log:fare",
            "out_of_domain",
            "log of fare=-3.0 + offset 1.0 is undefined: needs a value + offset > 0",
            '{"company": "Flash", "fare": -3.0, "hour": 1, "tips": 0.0}',
        ),
    ]
    assert all(e.pipeline == "serve" for e in errors)


def test_rows_equal_batch_apply(artifact_dir):
    good = [r for r in ROWS if r.get("fare") != "twelve"]
    preprocessor = Preprocessor.load(artifact_dir)
    rows, _ = preprocessor.transform_rows(good)
    batch = pa.RecordBatch.from_pylist(
        [{k: str(r[k]) if k == "hour" else r.get(k) for k in INPUT_SCHEMA} for r in good],
        schema=pa.schema(
            [
                ("fare", pa.float32()),
                ("tips", pa.float32()),
                ("company", pa.string()),
                ("hour", pa.string()),
            ]
        ),
    )
    out, errors = preprocessor.transform_batch(batch)
    assert out.schema.names == OUTPUT
    assert out.to_pylist() == rows
    assert [e.step for e in errors] == ["log:fare"]
    # And the same as the engine on the typed batch, the dataset run's path.
    typed = batch.set_column(3, "hour", batch.column(3).cast(pa.int64()))
    steps = [build_step(m, f"steps[{i}]") for i, m in enumerate(STEPS)]
    applied = apply_steps(typed, steps, FITTED, pipeline="serve")
    assert applied.batch.select(OUTPUT).to_pylist() == rows


def test_transform_batch_accepts_tables_and_missing_columns(artifact_dir):
    table = pa.table({"fare": pa.array([10.0], pa.float32()), "company": ["Flash"]})
    out, errors = Preprocessor.load(artifact_dir).transform_batch(table)
    assert errors == []
    assert out.to_pylist() == [
        {
            "fare_xf": 0.0,
            "company_xf": 0,
            "log_fare": pytest.approx(2.397895),
            "big_tip": 0,
            "hour_xf": None,
        }
    ]


def test_source_columns_give_error_sources(artifact_dir):
    batch = pa.record_batch(
        {
            "fare": pa.array(["x", "5"]),
            "__file": ["in.csv", "in.csv"],
            "__line": pa.array([2, 3], pa.int64()),
        }
    )
    out, errors = Preprocessor.load(artifact_dir).transform_batch(batch)
    assert out.num_rows == 1
    assert [(e.source, e.payload) for e in errors] == [("in.csv:2", '{"fare": "x"}')]


@pytest.mark.slow
def test_serving_rows_get_exactly_the_dataset_features(tmp_path):
    """The Preprocessor on raw taxi rows gives the rows the pipeline wrote for them."""
    import csv

    import pyarrow.parquet as pq

    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec
    from tests.datasets import dataset_files

    sample = REPO / "examples/chicago_taxi/data/sample.csv"
    out = tmp_path / "out"
    run_job(
        load_spec(str(REPO / "examples/chicago_taxi/pipeline.yaml")),
        inputs=[str(sample)],
        output=str(out),
    )
    written = pa.concat_tables([pq.read_table(f) for f in dataset_files(out)])

    # Raw rows as a client would send them: strings from the CSV, empty fields left out.
    with sample.open() as f:
        raw = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    preprocessor = Preprocessor.load(str(out))
    rows, errors = preprocessor.transform_rows(raw)
    assert errors == []
    assert len(rows) == written.num_rows == 3001

    def key(row: dict) -> tuple:
        return tuple(row[c] for c in written.schema.names)

    assert sorted(rows, key=key) == sorted(written.to_pylist(), key=key)


# --- Serving accepts exactly what the readers accept --------------------------------------


def test_serving_rejects_the_values_the_readers_reject(artifact_dir):
    rows = [
        {"fare": 12.0, "hour": 3.7},  # truncated to 3 before: int64 takes no fraction
        {"fare": 12.0, "hour": "3.7"},
        {"fare": 12.0, "hour": True},
        {"fare": float("nan"), "hour": 1},
        {"fare": "inf", "hour": 1},
        {"fare": 1e39, "hour": 1},  # beyond float32
        {"fare": 12.0, "hour": 3.0},  # an integral number is an int64
    ]
    out, errors = Preprocessor.load(artifact_dir).transform_rows(rows)
    assert [r["hour_xf"] for r in out] == [3]
    non_finite = (
        "is not a finite float32 (NaN, an infinity, or beyond float32's range); list the"
        " column in source.allow_non_finite to accept such values"
    )
    assert [(e.step, e.reason, e.message) for e in errors] == [
        ("input", "unparseable_value", "key 'hour': expected int64, got 3.7"),
        ("input", "unparseable_value", "key 'hour': '3.7' is not a valid int64"),
        ("input", "unparseable_value", "key 'hour': expected int64, got true"),
        ("input", "non_finite", f"key 'fare': nan {non_finite}"),
        ("input", "non_finite", f"key 'fare': 'inf' {non_finite}"),
        ("input", "non_finite", f"key 'fare': 1e+39 {non_finite}"),
    ]


def test_batches_get_the_same_rule_with_their_sources(artifact_dir):
    batch = pa.record_batch(
        {
            "fare": pa.array([float("nan"), 5.0, 3.0], pa.float64()),
            "hour": pa.array([1.0, 2.5, 3.0]),
            "__file": ["in.csv"] * 3,
            "__line": pa.array([2, 3, 4], pa.int64()),
        }
    )
    out, errors = Preprocessor.load(artifact_dir).transform_batch(batch)
    assert out.column("hour_xf").to_pylist() == [3]
    assert [(e.reason, e.source, e.message.split(" is ")[0]) for e in errors] == [
        ("non_finite", "in.csv:2", "key 'fare': nan"),
        ("unparseable_value", "in.csv:3", "key 'hour': 2.5"),
    ]


def test_allow_non_finite_is_recorded_in_the_artifact_and_applied(tmp_path):
    from transforms.core.artifact import content_hash, read_artifact

    plain = Artifact(
        pipeline="p",
        steps=[],
        fitted={},
        input_schema={"x": "float64", "y": "float32"},
        output_columns=["x", "y"],
        output_schema={"x": "float64", "y": "float32"},
    )
    allowing = Artifact(**{**plain.__dict__, "allow_non_finite": ["x"]})
    # An artifact that allows nothing hashes as artifacts written before the field.
    assert "allow_non_finite" not in plain.content()
    assert content_hash(allowing) != content_hash(plain)
    write_artifact(str(tmp_path / "a"), allowing)
    assert read_artifact(str(tmp_path / "a"), build_step).allow_non_finite == ["x"]
    out, errors = Preprocessor.load(str(tmp_path / "a")).transform_rows(
        [{"x": "NaN", "y": 1.0}, {"x": float("inf"), "y": float("inf")}]
    )
    assert len(out) == 1 and np.isnan(out[0]["x"])
    assert [(e.reason, e.message.split(" is ")[0]) for e in errors] == [
        ("non_finite", "key 'y': inf")
    ]


TYPES = ["int32", "int64", "float32", "float64", "bool", "string", "timestamp", "date"]
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 1e16, 3.0, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32),
    st.sampled_from(["2024-01-31T12:00:00Z", "2024-01-31", "1e3", "", " 7 ", "+3", "true"]),
    st.text(max_size=5),
)


def _reader_accepts(tmp_path, fmt: str, text: bytes, tp: str, allowed: list[str]):
    from transforms.core.schema import arrow_schema
    from transforms.io.read import Source, read_file

    path = tmp_path / f"x.{fmt}"
    path.write_bytes(text)
    source = Source(format=fmt, schema={"x": tp}, allow_non_finite=allowed)
    rows, found = [], []
    for batch, errs in read_file(str(path), source, arrow_schema({"x": tp}), pipeline="p"):
        rows += [] if batch is None else batch.column("x").to_pylist()
        found += [e.reason for e in errs]
    return rows, found


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), JSON_VALUES, st.booleans())
# A bare carriage return ends a CSV record unless the field is quoted.
@example(tp="int32", value="0\r0", allow=False)
def test_serving_accepts_exactly_what_training_accepts(tmp_path_factory, tp, value, allow):
    import csv
    import io
    import json

    from transforms.core.artifact import Artifact as Plain

    tmp = tmp_path_factory.mktemp("same")
    allowed = ["x"] if allow and tp.startswith("float") else []
    preprocessor = Preprocessor(
        Plain(
            pipeline="p",
            steps=[],
            fitted={},
            input_schema={"x": tp},
            output_columns=["x"],
            output_schema={"x": tp},
            allow_non_finite=allowed,
        )
    )
    served, errors = preprocessor.transform_rows([{"x": value}])
    served_values = [r["x"] for r in served]
    if isinstance(value, str):
        # A string is read as the CSV reader reads a field (an empty field is null there).
        buffer = io.StringIO()
        # With "\r\n" as the terminator the writer quotes a field holding either character,
        # so the value stays one field (with "\n" alone a bare "\r" would end the record).
        csv.writer(buffer, lineterminator="\r\n").writerows([["x"], [value]])
        read, found = _reader_accepts(tmp, "csv", buffer.getvalue().encode(), tp, allowed)
        if value == "":
            # An empty field is null, but a string column takes "" as a client sends it
            # (written as a quoted "" in CSV).
            read, found = ["" if tp == "string" else None], []
    else:
        # A JSON value is read as the JSONL reader reads it.
        line = json.dumps({"x": value}).encode()
        read, found = _reader_accepts(tmp, "jsonl", line, tp, allowed)
    assert [e.reason for e in errors] == found
    assert _same(served_values, read)


def _same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        both_nan = isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y)
        if not both_nan and x != y:
            return False
    return True
