"""Tests for transforms.preprocessor: serving rows equal batch apply, errors name the key."""

from __future__ import annotations

import pathlib

import farmhash
import pyarrow as pa
import pytest

from transforms.artifact import Artifact, write_artifact
from transforms.engine import apply_steps
from transforms.preprocessor import Preprocessor
from transforms.steps import build_step

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
    import glob

    import pyarrow.parquet as pq

    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec

    sample = REPO / "examples/chicago_taxi/data/sample.csv"
    out = tmp_path / "out"
    run_job(
        load_spec(str(REPO / "examples/chicago_taxi/pipeline.yaml")),
        inputs=[str(sample)],
        output=str(out),
    )
    written = pa.concat_tables(
        [pq.read_table(f) for f in sorted(glob.glob(f"{out}/*/part-*.parquet"))]
    )

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
