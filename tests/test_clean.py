"""Cleaning steps: cast, text, drop and rename; error records through the engine; spec validation."""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.clean_steps import batch, build, fit, rejected, with_source
from transforms.core.batch_steps import REJECTED, apply_steps
from transforms.core.config import SpecError
from transforms.ops.checks import AllowedValues, Regex, Required
from transforms.ops.clean import Cast, DropColumns, NormalizeText, Rename, cast_array
from transforms.ops.fitted_clean import Clip, FillMissing

# --- cast -----------------------------------------------------------------------------------


def test_cast_converts_and_rejects_bad_values() -> None:
    step = build({"op": "cast", "columns": {"n": "int64", "x": "float32"}})
    b = batch(n=["1", "x", None, "4"], x=["1.5", "2", "3", "abc"], keep=[1, 2, 3, 4])
    result = step.apply(b, None)
    assert result.batch.schema == pa.schema(
        [("n", pa.int64()), ("x", pa.float32()), ("keep", pa.int64())]
    )
    assert result.batch.column(0).to_pylist() == [1, None, None, 4]
    assert result.batch.column(1).to_pylist() == [1.5, 2.0, 3.0, None]
    assert result.batch.column(2).to_pylist() == [1, 2, 3, 4]
    assert rejected(result) == [
        ([1], "cast_failed", ["cannot cast 'n' value 'x' to int64"]),
        ([3], "cast_failed", ["cannot cast 'x' value 'abc' to float32"]),
    ]


def test_cast_float_to_int_refuses_truncation_and_overflow() -> None:
    step = build({"op": "cast", "columns": {"v": "int32"}})
    result = step.apply(batch(v=[1.0, 1.5, 3e10, -2.0]), None)
    assert result.batch.column(0).to_pylist() == [1, None, None, -2]
    assert rejected(result) == [
        (
            [1, 2],
            "cast_failed",
            [
                "cannot cast 'v' value 1.5 to int32",
                "cannot cast 'v' value 30000000000.0 to int32",
            ],
        )
    ]


def test_cast_array_isolates_every_failure() -> None:
    values = pa.array([str(i) if i % 7 else f"bad{i}" for i in range(100)])
    cast, failed = cast_array(values, pa.int64())
    assert list(np.flatnonzero(failed)) == list(range(0, 100, 7))
    assert cast.to_pylist() == [None if i % 7 == 0 else i for i in range(100)]


def test_cast_without_any_arrow_cast_is_a_spec_error() -> None:
    with pytest.raises(ValueError, match="cannot cast date to bool"):
        cast_array(pa.array([None], pa.date32()), pa.bool_())


@given(st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40).map(str), st.text(max_size=3))))
@settings(max_examples=60, deadline=None)
def test_cast_array_matches_per_value_cast(values: list[str | None]) -> None:
    cast, failed = cast_array(pa.array(values, pa.string()), pa.int64())
    for i, v in enumerate(values):
        try:
            expected = None if v is None else pa.scalar(v).cast(pa.int64()).as_py()
            ok = True
        except pa.ArrowInvalid:
            expected, ok = None, False
        assert failed[i] == (not ok)
        assert cast[i].as_py() == expected


def test_cast_spec_errors_name_path_and_value() -> None:
    with pytest.raises(SpecError) as info:
        build({"op": "cast", "columns": {"fare": "flaot"}}, "clean[3]")
    assert info.value.path == "clean[3]"
    assert "cast.columns.fare" in str(info.value)
    assert "'flaot'" in str(info.value)
    with pytest.raises(SpecError, match=r"clean\[1\].columns: got \['a'\]; expected mapping"):
        build({"op": "cast", "columns": ["a"]}, "clean[1]")
    with pytest.raises(SpecError, match="must name at least one column"):
        build({"op": "cast", "columns": {}})


# --- normalize text -------------------------------------------------------------------------


def test_normalize_text_options() -> None:
    b = batch(s=["  Taxi \t Affiliation  ", None, "X"], n=[1, 2, 3])
    default = build({"op": "normalize_text", "columns": ["s"]}).apply(b, None)
    assert default.batch.column(0).to_pylist() == ["Taxi \t Affiliation", None, "X"]
    full = build(
        {"op": "normalize_text", "columns": ["s"], "lowercase": True, "collapse_whitespace": True}
    ).apply(b, None)
    assert full.batch.column(0).to_pylist() == ["taxi affiliation", None, "x"]
    assert full.batch.column(1).to_pylist() == [1, 2, 3]
    assert full.rejections == ()


def test_normalize_text_that_does_nothing_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="set trim, lowercase or collapse_whitespace"):
        build({"op": "normalize_text", "columns": ["s"], "trim": False})


# --- drop and rename ------------------------------------------------------------------------


def test_drop_columns_keeps_hidden_columns() -> None:
    step = build({"op": "drop_columns", "columns": ["b"]})
    assert step.removed_columns() == ["b"]
    assert step.input_columns() == []
    out = step.apply(with_source(a=[1], b=[2]), None).batch
    assert out.schema.names == ["a", "__file", "__line"]
    with pytest.raises(SpecError, match="hidden source column '__line'"):
        build({"op": "drop_columns", "columns": ["__line"]})


def test_rename_keeps_positions_and_refuses_clashes() -> None:
    step = build({"op": "rename", "columns": {"a": "x", "b": "a"}})
    assert (step.input_columns(), step.output_columns(), step.removed_columns()) == (
        ["a", "b"],
        ["x", "a"],
        ["b"],
    )
    out = step.apply(batch(a=[1], b=[2], c=[3]), None).batch
    assert out.schema.names == ["x", "a", "c"]
    assert out.to_pylist() == [{"x": 1, "a": 2, "c": 3}]
    clash = build({"op": "rename", "columns": {"a": "c"}})
    with pytest.raises(ValueError, match="duplicate column 'c'"):
        clash.apply(batch(a=[1], c=[3]), None)
    with pytest.raises(SpecError, match="gives the name 'x' to several columns"):
        build({"op": "rename", "columns": {"a": "x", "b": "x"}})


# --- through the engine ---------------------------------------------------------------------


def test_steps_through_engine_produce_error_records() -> None:
    steps = [
        build({"op": "normalize_text", "columns": ["company"]}, "clean[0]"),
        build({"op": "cast", "columns": {"fare": "float64"}}, "clean[1]"),
        build({"op": "required", "columns": ["company"]}, "clean[2]"),
        build({"op": "range", "column": "fare", "min": 0, "max": 100}, "clean[3]"),
        build({"op": "fill_missing", "columns": ["fare"], "value": 0}, "clean[4]"),
        build({"op": "rename", "columns": {"fare": "fare_usd"}}, "clean[5]"),
    ]
    b = with_source(
        company=[" Flash Cab ", "  ", "Sun Taxi", "Blue", "Red"],
        fare=["10", "5", "abc", "500", None],
    )
    applied = apply_steps(b, steps, {}, pipeline="taxi")
    assert applied.batch.to_pylist() == [
        {"company": "Flash Cab", "fare_usd": 10.0, "__file": "in.csv", "__line": 2},
        {"company": "Red", "fare_usd": 0.0, "__file": "in.csv", "__line": 6},
    ]
    records = [
        (e.pipeline, e.step, e.reason, e.message, json.loads(e.payload), e.source)
        for e in applied.errors
    ]
    assert records == [
        (
            "taxi",
            "cast:fare",
            "cast_failed",
            "cannot cast 'fare' value 'abc' to float64",
            {"company": "Sun Taxi", "fare": "abc"},
            "in.csv:4",
        ),
        (
            "taxi",
            "required:company",
            "missing_required",
            "required column 'company' is missing (null or empty)",
            {"company": "  ", "fare": "5"},
            "in.csv:3",
        ),
        (
            "taxi",
            "range:fare",
            "out_of_range",
            "'fare' value 500.0 is out of range [0, 100]",
            {"company": "Blue", "fare": "500"},
            "in.csv:5",
        ),
    ]
    assert applied.counts == collections.Counter(
        {
            (REJECTED, "cast:fare", "cast_failed"): 1,
            (REJECTED, "required:company", "missing_required"): 1,
            (REJECTED, "range:fare", "out_of_range"): 1,
        }
    )


def test_fitted_fill_through_engine() -> None:
    step = build({"op": "fill_missing", "columns": ["v"], "strategy": "mean"}, "clean[0]")
    b = with_source(v=[1.0, None, 4.0])
    fitted = fit(step, b)
    applied = apply_steps(b, [step], {step.name: fitted}, pipeline="p")
    assert step.name == "fill_missing:v"
    assert applied.batch.column(0).to_pylist() == [1.0, 2.5, 4.0]
    assert applied.errors == [] and applied.counts == collections.Counter()


def test_columns_are_declared_for_fit_planning() -> None:
    cast = Cast(columns={"a": "int64"})
    assert (cast.input_columns(), cast.output_columns()) == (["a"], ["a"])
    assert Required(columns=["a"]).output_columns() == []
    assert AllowedValues(column="a", values=[1]).input_columns() == ["a"]
    assert Regex(column="a", pattern="x").input_columns() == ["a"]
    assert NormalizeText(columns=["a"]).output_columns() == ["a"]
    assert Clip(column="a", max=1).output_columns() == ["a"]
    assert FillMissing(columns=["a", "b"], value=1).output_columns() == ["a", "b"]
    assert DropColumns(columns=["a"]).output_columns() == []
    assert Rename(columns={"a": "b"}).removed_columns() == ["a"]


def test_unknown_op_lists_clean_ops() -> None:
    with pytest.raises(SpecError) as info:
        build({"op": "trim"}, "clean[7]")
    for op in ("allowed_values", "cast", "clip", "drop_columns", "fill_missing", "normalize_text"):
        assert op in str(info.value)
    assert info.value.path == "clean[7].op"


# --- numbers that cannot work are refused when the spec loads ------------------------------


@pytest.mark.parametrize(
    ("item", "path", "problem"),
    [
        (
            {"op": "range", "column": "v", "min": -math.inf},
            "clean[0].min",
            "got -inf; expected a finite number, or null for none",
        ),
        (
            {"op": "range", "column": "v", "max": math.nan},
            "clean[0].max",
            "got nan; expected a finite number, or null for none",
        ),
        (
            {"op": "clip", "column": "v", "max": math.inf},
            "clean[0].max",
            "got inf; expected a finite number, or null for none",
        ),
        (
            {"op": "clip", "column": "v", "lower_quantile": math.nan},
            "clean[0].lower_quantile",
            "got nan; expected a finite number, or null for none",
        ),
        (
            {"op": "fill_missing", "columns": ["v"], "value": math.nan},
            "clean[0].value",
            "got nan; expected a finite number",
        ),
        (
            {"op": "fill_missing", "columns": ["v"], "value": -math.inf},
            "clean[0].value",
            "got -inf; expected a finite number",
        ),
        (
            {"op": "allowed_values", "column": "v", "values": [1, math.nan]},
            "clean[0].values[1]",
            "got nan; expected a finite number",
        ),
        (
            {"op": "allowed_values", "column": "v", "values": ["a", ["b", "c"]]},
            "clean[0].values[1]",
            "got ['b', 'c']; expected a single value (string or number)",
        ),
    ],
)
def test_non_finite_and_non_scalar_parameters_are_refused(
    item: dict, path: str, problem: str
) -> None:
    with pytest.raises(SpecError) as info:
        build(item)
    assert (info.value.path, info.value.problem) == (path, problem)
