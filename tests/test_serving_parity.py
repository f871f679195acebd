"""Serving's compiled plan against the dataset run and against the batch path.

Every row of the full 15,002-row taxi file, sent to ``transform_rows`` as the CSV's strings
and as JSON-typed values, gets exactly the features the dataset run wrote; bad values get
the same error records (reason, message, payload, step) from the compiled plan as from the
batch path (``compiled=False``), for one row and for many.
"""

from __future__ import annotations

import csv
import pathlib
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from tests.conftest import REPO
from tests.datasets import dataset_files, run_root
from transforms.core.artifact import Artifact, write_artifact
from transforms.core.errors import ErrorRecord
from transforms.ops.registry import build_step
from transforms.serving import Preprocessor
from transforms.serving.preprocessor import PLANNED_BATCH_ROWS


@pytest.fixture(scope="module")
def taxi_run(taxi_csv: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    output = tmp_path_factory.mktemp("taxi") / "ds"
    run_job(
        load_spec(str(REPO / "examples/chicago_taxi/pipeline.yaml")),
        output=str(output),
        inputs=[str(taxi_csv)],
    )
    return output


@pytest.fixture(scope="module")
def served(taxi_run: pathlib.Path) -> Preprocessor:
    return Preprocessor.load(str(run_root(taxi_run) / "artifact"))


@pytest.fixture(scope="module")
def batch_path(taxi_run: pathlib.Path) -> Preprocessor:
    return Preprocessor.load(str(run_root(taxi_run) / "artifact"), compiled=False)


@pytest.fixture(scope="module")
def string_rows(taxi_csv: pathlib.Path) -> list[dict[str, str]]:
    with taxi_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def typed_rows(taxi_csv: pathlib.Path, served: Preprocessor) -> list[dict[str, Any]]:
    options = pacsv.ConvertOptions(column_types=served.input_schema)
    return pacsv.read_csv(taxi_csv, convert_options=options).to_pylist()


def _written(taxi_run: pathlib.Path, columns: list[str]) -> list[tuple[Any, ...]]:
    table = pa.concat_tables(pq.read_table(p) for p in dataset_files(taxi_run))
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def _tuples(rows: list[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in columns) for row in rows]


def _key(error: ErrorRecord) -> tuple[str, str, str, str, str, str]:
    return (error.pipeline, error.step, error.reason, error.message, error.payload, error.source)


def test_the_taxi_artifact_is_compiled(served: Preprocessor) -> None:
    assert served.plan is not None
    assert [s.name for s in served.plan.steps] == [s.name for s in served.steps]


@pytest.mark.parametrize("shape", ["strings", "typed"])
def test_every_served_row_has_the_features_the_run_wrote(
    shape: str,
    served: Preprocessor,
    taxi_run: pathlib.Path,
    string_rows: list[dict[str, str]],
    typed_rows: list[dict[str, Any]],
) -> None:
    rows = string_rows if shape == "strings" else typed_rows
    assert len(rows) == 15_002
    result = served.transform_instances(rows)
    assert result.errors == []
    assert result.row_index == list(range(15_002))
    columns = served.output_columns
    assert all(list(row) == columns for row in result.rows)
    # The run splits rows by hash into train and eval; together they are every row once.
    assert Counter(_tuples(result.rows, columns)) == Counter(_written(taxi_run, columns))


def test_the_written_splits_keep_the_served_order(
    served: Preprocessor, taxi_run: pathlib.Path, string_rows: list[dict[str, str]]
) -> None:
    columns = served.output_columns
    every = _tuples(served.transform_rows(string_rows)[0], columns)
    for path in dataset_files(taxi_run):
        table = pq.read_table(path)
        written = list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
        assert len(written) > 4000
        # Each split is a subsequence of the served rows, in file order.
        rows = iter(every)
        assert all(any(row == want for row in rows) for want in written)


def test_compiled_rows_equal_the_batch_path_row_for_row(
    served: Preprocessor,
    batch_path: Preprocessor,
    string_rows: list[dict[str, str]],
    typed_rows: list[dict[str, Any]],
) -> None:
    for rows in (string_rows[:3000], typed_rows[:3000], string_rows[:1], typed_rows[:7]):
        assert served.transform_rows(rows) == batch_path.transform_rows(rows)


def test_compiled_batches_equal_the_batch_path(
    served: Preprocessor, batch_path: Preprocessor, taxi_csv: pathlib.Path
) -> None:
    typed = pacsv.read_csv(
        taxi_csv, convert_options=pacsv.ConvertOptions(column_types=served.input_schema)
    )
    strings = pacsv.read_csv(
        taxi_csv,
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in served.input_schema.names},
            strings_can_be_null=True,
        ),
    )
    sources = {
        "__file": pa.array(["trips.csv"] * strings.num_rows),
        "__line": pa.array(range(2, strings.num_rows + 2), pa.int64()),
    }
    fare = strings.schema.get_field_index("fare")
    bad = strings.set_column(
        fare,
        "fare",
        pa.array(
            ["x" if i % 1000 == 7 else v for i, v in enumerate(strings.column("fare").to_pylist())]
        ),
    )
    for name, values in sources.items():
        bad = bad.append_column(name, values)
    # Up to PLANNED_BATCH_ROWS rows a batch goes through the plan, above through the steps.
    small = [t.slice(0, PLANNED_BATCH_ROWS) for t in (typed, strings, bad)]
    for table in (typed, bad, *small, typed.slice(0, 1), bad.slice(7, 1)):
        ours, our_errors = served.transform_batch(table)
        theirs, their_errors = batch_path.transform_batch(table)
        assert ours.equals(theirs)
        assert [_key(e) for e in our_errors] == [_key(e) for e in their_errors]
    assert len(batch_path.transform_batch(bad)[1]) == 15


BAD_VALUES: list[tuple[str, Any]] = [
    ("fare", "twelve"),
    ("fare", "nan"),
    ("fare", float("nan")),
    ("fare", float("inf")),
    ("fare", 1e39),
    ("fare", "1e39"),
    ("fare", True),
    ("fare", [1.0]),
    ("fare", " 1.5 "),
    ("fare", 2**60 + 1),
    ("fare", 1.5e-45),
    ("fare", "٣"),
    # float64 exactly halfway between two float32s: its shortest text lies above the tie.
    ("fare", 1.0000000596046448),
    ("fare", "1.0000000596046448"),
    ("fare", 16777217),
    ("fare", "Infinity"),
    ("fare", "1e-50"),
    ("fare", ".5"),
    ("fare", "5."),
    ("trip_seconds", "0x10"),
    ("trip_seconds", "007"),
    ("trip_miles", 3.4028235677973366e38),
    ("trip_seconds", 3.7),
    ("trip_seconds", 3.0),
    ("trip_seconds", "3.0"),
    ("trip_seconds", True),
    ("trip_seconds", 2**70),
    ("trip_seconds", " 7 "),
    ("trip_seconds", "+7"),
    ("trip_seconds", "99999999999999999999"),
    ("company", 5),
    ("company", None),
    ("payment_type", b"Cash"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
@pytest.mark.parametrize("shape", ["strings", "typed"])
@pytest.mark.parametrize("size", [1, 50])
def test_bad_values_get_the_batch_paths_errors(
    key: str,
    value: Any,
    shape: str,
    size: int,
    served: Preprocessor,
    batch_path: Preprocessor,
    string_rows: list[dict[str, str]],
    typed_rows: list[dict[str, Any]],
) -> None:
    good = (string_rows if shape == "strings" else typed_rows)[: size - 1]
    bad = {**good[0], key: value} if good else {key: value}
    rows = [*good[: size // 2], bad, *good[size // 2 :]]
    compiled = served.transform_instances(rows)
    general = batch_path.transform_instances(rows)
    assert [_key(e) for e in compiled.errors] == [_key(e) for e in general.errors]
    assert compiled.rows == general.rows
    assert (compiled.row_index, compiled.error_index) == (general.row_index, general.error_index)


def test_a_float32_tie_is_rounded_from_its_text(served: Preprocessor) -> None:
    # 1 + 2**-24 is a float32 tie; its text 1.0000000596046448 is above it, so the column
    # holds 1 + 2**-23, as the CSV reader gives (NumPy's cast of the float64 would give 1.0).
    for value in (1.0000000596046448, "1.0000000596046448"):
        rows = [{"fare": value, "tips": 0.0}] * 40
        for size in (1, 40):
            features = served.transform_rows(rows[:size])[0]
            mean, variance = 11.768216239306826, 133.13619587961313
            want = (np.float32(1 + 2**-23) - np.float32(mean)) / np.sqrt(np.float32(variance))
            assert [f["fare_xf"] for f in features] == [float(want)] * size


def test_a_bad_value_is_named_with_its_key_and_row(served: Preprocessor) -> None:
    rows: list[dict[str, Any]] = [
        {"fare": "1.5"},
        {"fare": "twelve", "trip_seconds": 3.7},
        {"fare": float("inf")},
    ]
    result = served.transform_instances(rows)
    assert [(e.step, e.reason, e.message, e.payload) for e in result.errors] == [
        (
            "input",
            "unparseable_value",
            "key 'fare': 'twelve' is not a valid float32; "
            "key 'trip_seconds': expected int64, got 3.7",
            '{"fare": "twelve", "trip_seconds": 3.7}',
        ),
        (
            "input",
            "non_finite",
            "key 'fare': inf is not a finite float32 (NaN, an infinity, or beyond float32's"
            " range); list the column in source.allow_non_finite to accept such values",
            '{"fare": "Infinity"}',
        ),
    ]
    assert result.error_index == [1, 2]
    assert result.row_index == [0]
    assert result.rows[0]["fare_xf"] == pytest.approx((1.5 - 11.768216) / 133.136196**0.5)


FILTERED_STEPS = [
    {"op": "fill_missing", "name": "fill", "columns": ["fare"], "value": 0},
    {"op": "filter", "expr": "fare < 100", "reason": "too_dear"},
    {"op": "log", "column": "fare", "offset": 1.0, "output": "log_fare"},
    {"op": "z_score", "column": "fare", "output": "fare_xf"},
]


@pytest.mark.parametrize("compiled", [True, False])
def test_each_error_and_drop_names_its_instance(tmp_path: pathlib.Path, compiled: bool) -> None:
    steps = [build_step(m, f"steps[{i}]").describe() for i, m in enumerate(FILTERED_STEPS)]
    fitted = {
        "z_score:fare": {
            "count": 4,
            "mean": 10.0,
            "variance": 4.0,
            "min": 7.0,
            "max": 13.0,
            "sum": 40.0,
        }
    }
    artifact = Artifact(
        pipeline="serve",
        steps=steps,
        fitted=fitted,
        input_schema={"fare": "float32"},
        output_columns=["log_fare", "fare_xf"],
        output_schema={"log_fare": "float32", "fare_xf": "float32"},
    )
    write_artifact(str(tmp_path / "artifact"), artifact)
    preprocessor = Preprocessor.load(str(tmp_path / "artifact"), compiled=compiled)
    assert (preprocessor.plan is not None) == compiled
    rows: list[dict[str, Any]] = [{"fare": 12.0}, {"fare": 500}, {"fare": -3.0}, {"fare": "x"}, {}]
    result = preprocessor.transform_instances(rows)
    assert result.rows == [
        {"log_fare": pytest.approx(2.564949), "fare_xf": 1.0},
        {
            "log_fare": 0.0,
            "fare_xf": -5.0,
        },
    ]
    assert result.row_index == [0, 4]
    assert [(e.step, e.reason) for e in result.errors] == [
        ("input", "unparseable_value"),
        ("log:fare", "out_of_domain"),
    ]
    assert result.errors[1].payload == '{"fare": -3.0}'
    assert result.error_index == [3, 2]
    assert result.dropped(len(rows)) == [1]
    table = pa.table(
        {
            "fare": pa.array([12.0, 500.0, -3.0, None], pa.float32()),
            "__file": ["a.csv"] * 4,
            "__line": pa.array([2, 3, 4, 5], pa.int64()),
        }
    )
    out, errors = preprocessor.transform_batch(table)
    assert out.to_pylist() == result.rows
    assert [(e.step, e.reason, e.payload, e.source) for e in errors] == [
        ("log:fare", "out_of_domain", '{"fare": -3.0}', "a.csv:4")
    ]
