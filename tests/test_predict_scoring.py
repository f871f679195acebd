"""The pure parts of batch scoring, on record batches without a pipeline."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa

from beam_pipelines.predict.model import feature_matrix, positive_probability
from beam_pipelines.predict.scoring import (
    key_column,
    prediction_batch,
    prediction_schema,
    preprocess_batch,
    preprocessor_keeping_rows,
)
from transforms.core.artifact import Artifact


def _artifact() -> Artifact:
    return Artifact(
        pipeline="trips",
        steps=[
            {"op": "filter", "name": "free", "expr": "fare > 0", "reason": "free"},
            {
                "op": "filter",
                "name": "huge",
                "expr": "fare < 100",
                "reason": "huge",
                "action": "reject",
            },
        ],
        fitted={},
        input_schema={"fare": "float32", "company": "string"},
        output_columns=["fare"],
        output_schema={"fare": "float32"},
    )


def _raw() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "fare": ["5", "0", "200", "twelve", "7.5"],
            "company": ["a", "b", "c", "d", "e"],
            "__file": ["in.csv"] * 5,
            "__line": [2, 3, 4, 5, 6],
        }
    )


def test_keys_follow_the_rows_that_survive() -> None:
    out = preprocess_batch(preprocessor_keeping_rows(_artifact()), _raw(), ["__line", "company"])
    assert out.batch is not None
    assert out.batch.to_pydict() == {
        "fare": [5.0, 7.5],
        key_column(0): [2, 6],
        key_column(1): ["a", "e"],
    }
    assert [(e.step, e.reason, e.source) for e in out.errors] == [
        ("input", "unparseable_value", "in.csv:5"),
        ("huge", "huge", "in.csv:4"),
    ]
    assert out.counts == collections.Counter(
        {
            ("rejected", "input", "unparseable_value"): 1,
            ("rejected", "huge", "huge"): 1,
            ("dropped", "transform", "filtered"): 1,
        }
    )


def test_a_batch_without_survivors() -> None:
    raw = _raw().slice(1, 3)  # 0, 200, twelve
    out = preprocess_batch(preprocessor_keeping_rows(_artifact()), raw, ["__line"])
    assert out.batch is None
    assert sum(out.counts.values()) == 3


def test_prediction_batch_shape_and_label() -> None:
    schema = prediction_schema([pa.field("line", pa.int64())], "tips_xf")
    features = pa.RecordBatch.from_pydict({"fare": [1.0, 2.0, 3.0], key_column(0): [7, 8, 9]})
    batch = prediction_batch(features, np.array([0.2, 0.5, 0.9]), schema)
    assert batch.schema == schema
    assert batch.to_pydict() == {
        "line": [7, 8, 9],
        "tips_xf": [0, 1, 1],
        "probability": [0.2, 0.5, 0.9],
    }


def test_feature_matrix_orders_columns_and_nulls_are_nan() -> None:
    batch = pa.RecordBatch.from_pydict(
        {"b": pa.array([1, None], pa.int64()), "a": pa.array([0.5, 1.5], pa.float32())}
    )
    x = feature_matrix(batch, ["a", "b"])
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, np.array([[0.5, 1.0], [1.5, np.nan]]))


class _Half:
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.full(len(x), 0.25)
        return np.column_stack([1 - p, p])


def test_positive_probability() -> None:
    assert positive_probability(_Half(), np.zeros((2, 3))).tolist() == [0.25, 0.25]
    assert positive_probability(_Half(), np.zeros((0, 3))).tolist() == []
