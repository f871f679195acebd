"""The per-batch engine: row accounting, error records and fit-pass planning."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from transforms.core.batch_steps import (
    DROPPED,
    REJECTED,
    apply_steps,
    fit_groups,
    fit_inputs,
    segments,
)
from transforms.core.steps import Analyzer, Rejection, Step, StepResult


class _Sum(Analyzer[float]):
    def __init__(self, column: str) -> None:
        self.column = column

    def create_accumulator(self) -> float:
        return 0.0

    def add_batch(self, acc: float, batch: pa.RecordBatch) -> float:
        return acc + float(pc.sum(batch.column(self.column)).as_py() or 0)

    def merge_accumulators(self, accs: Any) -> float:
        return float(sum(accs))

    def extract_output(self, acc: float) -> dict[str, Any]:
        return {"sum": acc}


@dataclasses.dataclass(kw_only=True)
class _Positive(Step):
    """Rejects rows whose column is not positive; drops rows equal to 99."""

    op = "_test_positive"
    column: str

    def input_columns(self) -> list[str]:
        return [self.column]

    def apply(self, batch: pa.RecordBatch, fitted: Any) -> StepResult:
        values = batch.column(self.column).to_numpy(zero_copy_only=False)
        bad = values <= 0
        return StepResult(
            batch,
            rejections=(
                Rejection(
                    bad, "not_positive", np.array([f"{v} <= 0" for v in values], dtype=object)
                ),
            ),
            drops=(Rejection(values == 99, "is_99", "99 dropped"),),
        )


@dataclasses.dataclass(kw_only=True)
class _DivideBySum(Step):
    """Writes column / fitted sum to output."""

    op = "_test_divide"
    column: str
    output: str

    def input_columns(self) -> list[str]:
        return [self.column]

    def output_columns(self) -> list[str]:
        return [self.output]

    def analyzer(self) -> Analyzer[Any]:
        return _Sum(self.column)

    def apply(self, batch: pa.RecordBatch, fitted: Any) -> StepResult:
        col = pc.divide(batch.column(self.column).cast(pa.float64()), fitted["sum"])
        return StepResult(
            batch.append_column(self.output, col)
            if self.output not in batch.schema.names
            else batch.set_column(batch.schema.get_field_index(self.output), self.output, col)
        )


@dataclasses.dataclass(kw_only=True)
class _Barrier(Step):
    op = "_test_barrier"
    is_barrier = True

    def apply(self, batch: pa.RecordBatch, fitted: Any) -> StepResult:
        raise AssertionError("a barrier step is never applied per batch")


def _batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "x": [1, -2, 3, 99, 0],
            "__file": ["a.csv"] * 5,
            "__line": [2, 3, 4, 5, 6],
        }
    )


def test_apply_steps_rejects_and_drops_with_original_payload_and_source() -> None:
    step = _Positive(name="positive", column="x")
    out = apply_steps(_batch(), [step], {}, pipeline="job")
    assert out.batch.column("x").to_pylist() == [1, 3]
    assert out.counts == {
        (REJECTED, "positive", "not_positive"): 2,
        (DROPPED, "positive", "is_99"): 1,
    }
    assert [(e.step, e.reason, e.message, e.payload, e.source, e.pipeline) for e in out.errors] == [
        ("positive", "not_positive", "-2 <= 0", '{"x": -2}', "a.csv:3", "job"),
        ("positive", "not_positive", "0 <= 0", '{"x": 0}', "a.csv:6", "job"),
    ]


def test_payload_is_the_row_as_read_not_as_transformed() -> None:
    divide = _DivideBySum(name="div", column="x", output="x")
    positive = _Positive(name="positive", column="x")
    batch = pa.RecordBatch.from_pydict({"x": [4.0, -8.0], "__file": ["f"] * 2, "__line": [7, 8]})
    out = apply_steps(batch, [divide, positive], {"div": {"sum": 2.0}}, pipeline="job")
    assert out.batch.column("x").to_pylist() == [2.0]
    assert [(e.payload, e.source) for e in out.errors] == [('{"x": -8.0}', "f:8")]


def test_record_errors_false_keeps_counts_only() -> None:
    out = apply_steps(
        _batch(), [_Positive(name="p", column="x")], {}, pipeline="job", record_errors=False
    )
    assert out.errors == []
    assert out.counts[(REJECTED, "p", "not_positive")] == 2


def test_fitted_step_without_parameters_is_a_code_error() -> None:
    with pytest.raises(ValueError, match="needs fitted parameters"):
        apply_steps(_batch(), [_DivideBySum(name="d", column="x", output="y")], {}, pipeline="job")


def test_barrier_steps_cannot_run_per_batch() -> None:
    with pytest.raises(ValueError, match="regroups"):
        apply_steps(_batch(), [_Barrier(name="b")], {}, pipeline="job")


def test_segments_split_at_barriers() -> None:
    a, b, c = _Positive(name="a", column="x"), _Barrier(name="b"), _Positive(name="c", column="x")
    assert segments([a, b, c]) == [([a], b), ([c], None)]
    assert segments([a]) == [([a], None)]


def test_fit_groups_share_a_pass_unless_a_step_reads_a_fitted_output() -> None:
    s1 = _DivideBySum(name="s1", column="x", output="y")
    s2 = _DivideBySum(name="s2", column="x", output="z")
    s3 = _DivideBySum(name="s3", column="y", output="w")
    assert fit_groups([s1, s2, s3]) == [["s1", "s2"], ["s3"]]


def test_fit_groups_split_after_a_static_step_reading_a_fitted_output() -> None:
    s1 = _DivideBySum(name="s1", column="x", output="y")
    static = _Positive(name="p", column="y")  # may reject rows depending on s1's output
    s2 = _DivideBySum(name="s2", column="x", output="z")
    assert fit_groups([s1, static, s2]) == [["s1"], ["s2"]]


def test_fit_inputs_show_each_fitted_step_the_rows_it_will_see() -> None:
    positive = _Positive(name="p", column="x")
    s1 = _DivideBySum(name="s1", column="x", output="y")
    views = dict(fit_inputs(_batch(), [positive, s1], {}, ["s1"], pipeline="job"))
    assert views["s1"].column("x").to_pylist() == [1, 3]
