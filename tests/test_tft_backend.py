"""The tf.Transform backend: conversions, spec and plan validation, and the transform.

The taxi example run both ways is in ``tests/test_tft_taxi.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.dataset import plan
from beam_pipelines.spec import parse_spec
from examples.chicago_taxi import taxi_preprocessing as taxi
from tests.tft_example import FN_WITH_ROW_ID, _tft_spec, taxi_with_row_id
from transforms.core.config import SpecError
from transforms.tft import backend as tft_backend

pytestmark = [pytest.mark.tft, pytest.mark.slow]


def small_fn(inputs: dict[str, Any]) -> dict[str, Any]:
    """A z-score, a vocabulary, a list output and a passthrough."""
    import tensorflow as tf
    import tensorflow_transform as tft

    x = taxi.fill_in_missing(inputs["x"])
    return {
        "x_z": tft.scale_to_z_score(x),
        "s_id": tft.compute_and_apply_vocabulary(taxi.fill_in_missing(inputs["s"])),
        "s_list": tf.RaggedTensor.from_sparse(inputs["s"]),
        "n": taxi.fill_in_missing(inputs["n"]),
    }


# Spec and plan validation.


@pytest.mark.parametrize(
    "reference", ["taxi_preprocessing", "a.b:", ":fn", "a b:fn", "a:b:c", "a.:fn", "1a:fn"]
)
def test_malformed_reference_is_a_spec_error(reference):
    with pytest.raises(SpecError) as info:
        parse_spec(_tft_spec(preprocessing_fn=reference))
    assert info.value.path.startswith("transform")
    assert "package.module:function" in info.value.problem


def test_features_and_preprocessing_fn_is_a_spec_error():
    data = _tft_spec()
    data["features"] = [{"op": "z_score", "column": "fare", "output": "fare_xf"}]
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.path == "transform.preprocessing_fn"
    assert "remove 'features'" in info.value.problem


def test_label_expression_with_preprocessing_fn_is_a_spec_error():
    data = _tft_spec()
    data["label"] = {"column": "big", "expr": "tips > 1", "type": "int64"}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.path == "label"


def test_valid_tft_spec_parses_with_no_feature_steps():
    spec = parse_spec(_tft_spec())
    assert spec.transform.preprocessing_fn == (
        "examples.chicago_taxi.taxi_preprocessing:preprocessing_fn"
    )
    assert spec.features == []
    assert [s.name for s in spec.steps] == ["fill_numbers", "fill_strings"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("examples.chicago_taxi.no_such_module:fn", "does not import"),
        ("examples.chicago_taxi.taxi_preprocessing:no_such_fn", "has no function"),
        ("examples.chicago_taxi.taxi_preprocessing:VOCAB_SIZE", "has no function"),
    ],
)
def test_unloadable_function_fails_the_plan(reference, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        plan(parse_spec(_tft_spec(preprocessing_fn=reference)), output=str(tmp_path))


def test_plan_traces_the_output_schema(tmp_path):
    the_plan = plan(parse_spec(_tft_spec()), output=str(tmp_path))
    expected = (
        [f"{k}_xf" for k in taxi.DENSE_FLOAT_FEATURE_KEYS]
        + [f"{k}_xf" for k in taxi.VOCAB_FEATURE_KEYS]
        + [f"{k}_xf" for k in taxi.BUCKET_FEATURE_KEYS]
        + [f"{k}_xf" for k in taxi.CATEGORICAL_FEATURE_KEYS]
        + ["tips_xf"]
    )
    assert the_plan.output_columns == expected
    types = {n: the_plan.output_schema.field(n).type for n in expected}
    assert types == {n: pa.float32() if i < 3 else pa.int64() for i, n in enumerate(expected)}


def test_label_not_an_output_fails_the_plan(tmp_path):
    data = _tft_spec()
    data["label"] = {"column": "tips"}
    with pytest.raises(ValueError, match="label column 'tips' is not an output"):
        plan(parse_spec(data), output=str(tmp_path))


def test_unknown_output_column_fails_the_plan(tmp_path):
    data = _tft_spec()
    data["output"]["columns"] = ["fare_xf", "fare"]
    with pytest.raises(ValueError, match=r"output.columns \['fare'\] are not outputs"):
        plan(parse_spec(data), output=str(tmp_path))


def test_artifact_with_preprocessing_fn_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"not supported with transform\.preprocessing_fn"):
        plan(parse_spec(_tft_spec()), output=str(tmp_path), artifact_dir=str(tmp_path))


# Pure functions, no pipeline.

SMALL = pa.schema(
    [
        pa.field("x", pa.float64()),
        pa.field("s", pa.string()),
        pa.field("n", pa.int32()),
        pa.field("__line", pa.int64()),
        pa.field("__split", pa.int32()),
    ]
)


def test_input_value_types_and_tft_schema():
    assert tft_backend.input_value_types(SMALL) == {
        "x": pa.float32(),
        "s": pa.binary(),
        "n": pa.int64(),
    }
    assert tft_backend.tft_arrow_schema(SMALL) == pa.schema(
        [
            pa.field("x", pa.list_(pa.float32())),
            pa.field("s", pa.list_(pa.binary())),
            pa.field("n", pa.list_(pa.int64())),
            pa.field("__line", pa.list_(pa.int64())),
            pa.field("__split", pa.list_(pa.int32())),
        ]
    )


def test_unsupported_input_type_names_the_column():
    schema = pa.schema([pa.field("when", pa.timestamp("s"))])
    with pytest.raises(ValueError, match="column 'when' has type timestamp"):
        tft_backend.input_value_types(schema)


def test_to_tft_batch_nulls_become_empty_lists():
    batch = pa.RecordBatch.from_pydict(
        {
            "x": [1.5, None, 3.0],
            "s": ["a", "b", None],
            "n": pa.array([None, 2, 3], pa.int32()),
            "__line": [2, 3, 4],
            "__split": pa.array([0, 1, 0], pa.int32()),
        },
        schema=SMALL,
    )
    out = tft_backend.to_tft_batch(batch, tft_backend.tft_arrow_schema(SMALL))
    assert out.to_pydict() == {
        "x": [[1.5], [], [3.0]],
        "s": [[b"a"], [b"b"], []],
        "n": [[], [2], [3]],
        "__line": [[2], [3], [4]],
        "__split": [[0], [1], [0]],
    }


def test_from_tft_batch_flattens_scalars_and_restores_hidden_columns():
    batch = pa.RecordBatch.from_pydict(
        {
            "z": pa.array([[0.5], [-0.5]], pa.large_list(pa.float32())),
            "v": pa.array([[1, 2], []], pa.large_list(pa.int64())),
            "__split": pa.array([[1], [0]], pa.list_(pa.int32())),
        }
    )
    outputs = pa.schema([pa.field("z", pa.float32()), pa.field("v", pa.list_(pa.int64()))])
    hidden = pa.schema([pa.field("__split", pa.int32())])
    out = tft_backend.from_tft_batch(batch, outputs, hidden)
    expected = pa.RecordBatch.from_pydict(
        {"z": [0.5, -0.5], "v": [[1, 2], []], "__split": [1, 0]},
        schema=pa.schema([*outputs, *hidden]),
    )
    assert out.equals(expected)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), max_size=30),
    st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=30),
)
def test_to_tft_batch_keeps_every_value_in_its_row(ints, texts):
    n = min(len(ints), len(texts))
    schema = pa.schema([pa.field("i", pa.int64()), pa.field("t", pa.string())])
    batch = pa.RecordBatch.from_pydict({"i": ints[:n], "t": texts[:n]}, schema=schema)
    out = tft_backend.to_tft_batch(batch, tft_backend.tft_arrow_schema(schema)).to_pydict()
    assert out["i"] == [[] if v is None else [v] for v in ints[:n]]
    assert out["t"] == [[] if v is None else [v.encode()] for v in texts[:n]]


def test_output_schema_scalars_lists_and_order():
    outputs = tft_backend.output_schema(small_fn, SMALL)
    assert outputs == pa.schema(
        [
            pa.field("x_z", pa.float32()),
            pa.field("s_id", pa.int64()),
            pa.field("s_list", pa.list_(pa.string())),
            pa.field("n", pa.int64()),
        ]
    )


def test_output_named_like_a_hidden_column_is_refused():
    def fn(inputs):
        return {"__split": taxi.fill_in_missing(inputs["n"])}

    with pytest.raises(ValueError, match="'__split' starts with '__'"):
        tft_backend.output_schema(fn, SMALL)


def test_load_preprocessing_fn():
    assert tft_backend.load_preprocessing_fn(FN_WITH_ROW_ID) is taxi_with_row_id
    with pytest.raises(ValueError, match=r"must be 'package\.module:function'"):
        tft_backend.load_preprocessing_fn("no_colon")


# The transform on a pipeline.


def test_analyze_and_transform_whole_output(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    rows = {
        "x": [1.0, 2.0, None, 3.0],
        "s": ["a", "b", "a", None],
        "n": pa.array([7, None, 9, 10], pa.int32()),
        "__line": [2, 3, 4, 5],
        "__split": pa.array([0, 1, 0, 0], pa.int32()),
    }
    batch = pa.RecordBatch.from_pydict(rows, schema=SMALL)
    outputs = tft_backend.output_schema(small_fn, SMALL)

    def plain(out: pa.RecordBatch) -> list[tuple]:
        return [
            (round(r["x_z"], 4), r["s_id"], tuple(r["s_list"]), r["n"], r["__line"], r["__split"])
            for r in out.to_pylist()
        ]

    with TestPipeline(runner="DirectRunner") as p:
        run = tft_backend.AnalyzeAndTransform(
            preprocessing_fn=small_fn,
            schema=SMALL,
            outputs=outputs,
            transform_fn_dir=str(tmp_path / "transform_fn_dir"),
            temp_dir=str(tmp_path / "tmp"),
            fit_column="__split",
            fit_value=0,
        )
        out = p | beam.Create([batch.slice(0, 2), batch.slice(2)]) | run
        assert_that(out | beam.FlatMap(plain), equal_to(_expected_small()), label="rows")
        assert_that(
            out | beam.Map(lambda b: b.schema),
            equal_to([outputs.append(SMALL.field("__line")).append(SMALL.field("__split"))] * 2),
            label="schemas",
        )
        assert_that(run.written, equal_to([str(tmp_path / "transform_fn_dir")]), label="written")
    assert not (tmp_path / "tmp").exists()
    assert (tmp_path / "transform_fn_dir" / "transform_fn" / "saved_model.pb").exists()


def _expected_small() -> list[tuple]:
    # Fitted on split 0 only: x in {1, 0 (filled), 3}, s in {a, a, ''}.
    x = np.array([1.0, 0.0, 3.0], np.float32)
    z = lambda v: round(float((np.float32(v) - x.mean()) / x.std()), 4)  # noqa: E731
    # tf.Transform leaves the empty string out of vocabularies: a=0; b and '' get -1.
    return [
        (z(1.0), 0, ("a",), 7, 2, 0),
        (z(2.0), -1, ("b",), 0, 3, 1),
        (z(0.0), 0, ("a",), 9, 4, 0),
        (z(3.0), -1, (), 10, 5, 0),
    ]
