"""Cleaning steps: exact batches, rejections, error records and spec validation."""

from __future__ import annotations

import collections
import json
import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.batch_steps import REJECTED, apply_steps
from transforms.core.config import SpecError
from transforms.core.steps import Step, StepResult
from transforms.ops.checks import AllowedValues, Range, Regex, Required
from transforms.ops.clean import Cast, DropColumns, NormalizeText, Rename, cast_array
from transforms.ops.fitted_clean import Clip, FillMissing, clip_array
from transforms.ops.registry import build_step


def batch(**columns: pa.Array | list) -> pa.RecordBatch:
    return pa.record_batch(
        {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()}
    )


def with_source(**columns: pa.Array | list) -> pa.RecordBatch:
    """A batch with hidden source columns: file ``in.csv``, lines 2, 3, ..."""
    n = len(next(iter(columns.values())))
    return batch(**columns, __file=["in.csv"] * n, __line=pa.array(range(2, n + 2), pa.int64()))


def rejected(result: StepResult) -> list[tuple[list[int], str, list[str]]]:
    """Rejections as (rows, reason, messages of those rows)."""
    out = []
    for r in result.rejections:
        rows = [int(i) for i in np.flatnonzero(r.mask)]
        msgs = (
            [r.message] * len(rows) if isinstance(r.message, str) else [r.message[i] for i in rows]
        )
        out.append((rows, r.reason, msgs))
    return out


def build(item: dict, path: str = "clean[0]") -> Step:
    return build_step(item, path)


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


# --- required -------------------------------------------------------------------------------


def test_required_rejects_null_and_empty_strings_naming_columns() -> None:
    step = build({"op": "required", "columns": ["a", "s"]})
    b = batch(a=[1, None, 3, None], s=["x", "y", "", None])
    result = step.apply(b, None)
    assert result.batch.equals(b)
    assert rejected(result) == [
        (
            [1, 2, 3],
            "missing_required",
            [
                "required column 'a' is missing (null or empty)",
                "required column 's' is missing (null or empty)",
                "required columns 'a', 's' are missing (null or empty)",
            ],
        )
    ]


def test_required_empty_string_allowed_when_not_missing() -> None:
    step = build({"op": "required", "columns": ["s"], "empty_is_missing": False})
    result = step.apply(batch(s=["", None, "x"]), None)
    assert rejected(result) == [
        ([1], "missing_required", ["required column 's' is missing (null)"])
    ]


def test_required_without_misses_returns_no_rejections() -> None:
    b = batch(a=[1, 2])
    assert build({"op": "required", "columns": ["a"]}).apply(b, None) == StepResult(b)


def test_missing_column_names_existing_ones() -> None:
    step = build({"op": "required", "columns": ["nope"]})
    with pytest.raises(ValueError, match="column 'nope' is not in the data; columns are a, b"):
        step.apply(with_source(a=[1], b=[2]), None)


# --- range ----------------------------------------------------------------------------------


def test_range_inclusive_rejects_outside_and_nan_passes_nulls() -> None:
    step = build({"op": "range", "column": "v", "min": 0, "max": 10})
    b = batch(v=[-1.0, 0.0, 10.0, 10.5, None, math.nan])
    result = step.apply(b, None)
    assert result.batch is b
    assert rejected(result) == [
        (
            [0, 3, 5],
            "out_of_range",
            [
                "'v' value -1.0 is out of range [0, 10]",
                "'v' value 10.5 is out of range [0, 10]",
                "'v' value nan is out of range [0, 10]",
            ],
        )
    ]


def test_range_exclusive_and_one_sided() -> None:
    step = build({"op": "range", "column": "v", "min": 0, "max": 2.5, "inclusive": False})
    assert rejected(step.apply(batch(v=[0, 1, 2, 3]), None)) == [
        (
            [0, 3],
            "out_of_range",
            ["'v' value 0 is out of range (0, 2.5)", "'v' value 3 is out of range (0, 2.5)"],
        )
    ]
    lower = build({"op": "range", "column": "v", "min": 1})
    assert rejected(lower.apply(batch(v=[0, 1]), None)) == [
        ([0], "out_of_range", ["'v' value 0 is out of range >= 1"])
    ]
    upper = build({"op": "range", "column": "v", "max": 1, "inclusive": False})
    assert rejected(upper.apply(batch(v=[0, 1]), None)) == [
        ([1], "out_of_range", ["'v' value 1 is out of range < 1"])
    ]


def test_range_on_string_column_says_cast_first() -> None:
    step = build({"op": "range", "column": "s", "min": 0})
    with pytest.raises(ValueError, match="range needs a numeric column; 's' is string"):
        step.apply(batch(s=["1"]), None)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min": 5, "max": 1}, "range.min 5 is greater than range.max 1; swap them"),
        ({}, "range needs min, max or both"),
        ({"min": 1, "max": 1, "inclusive": False}, "no value can pass"),
        ({"min": "zero"}, "clean[2].min: got 'zero'; expected a number"),
    ],
)
def test_range_spec_errors(params: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        build({"op": "range", "column": "v", **params}, "clean[2]")
    assert message in str(info.value)
    assert str(info.value).startswith("clean[2]")


@given(
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True, width=64)), max_size=40),
    st.floats(-1e6, 1e6),
    st.floats(0, 1e6),
    st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_range_property(
    values: list[float | None], lo: float, width: float, inclusive: bool
) -> None:
    hi = lo + width
    if not inclusive and lo == hi:
        return
    step = Range(column="v", min=lo, max=hi, inclusive=inclusive)
    step.validate()
    result = step.apply(batch(v=pa.array(values, pa.float64())), None)
    mask = result.rejections[0].mask if result.rejections else np.zeros(len(values), bool)
    for v, refused in zip(values, mask, strict=True):
        if v is None:
            assert not refused
        elif inclusive:
            assert refused == (not lo <= v <= hi)
        else:
            assert refused == (not lo < v < hi)


# --- allowed values -------------------------------------------------------------------------


def test_allowed_values_rejects_others_and_passes_nulls() -> None:
    step = build({"op": "allowed_values", "column": "p", "values": ["Cash", "Credit Card"]})
    result = step.apply(batch(p=["Cash", "cash", None, "Credit Card", "Dispute"]), None)
    assert rejected(result) == [
        (
            [1, 4],
            "not_allowed",
            [
                "'p' value 'cash' is not one of ['Cash', 'Credit Card']",
                "'p' value 'Dispute' is not one of ['Cash', 'Credit Card']",
            ],
        )
    ]


def test_allowed_values_converts_to_column_type_and_shortens_long_lists() -> None:
    step = build({"op": "allowed_values", "column": "h", "values": list(range(12))})
    result = step.apply(batch(h=pa.array([3, 12], pa.int32())), None)
    assert rejected(result) == [
        (
            [1],
            "not_allowed",
            ["'h' value 12 is not one of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... 2 more]"],
        )
    ]


def test_allowed_values_that_do_not_fit_the_column() -> None:
    step = build({"op": "allowed_values", "column": "h", "values": ["a"]})
    with pytest.raises(ValueError, match=r"\['a'\] do not all fit column 'h' of type int64"):
        step.apply(batch(h=[1]), None)


def test_allowed_values_spec_errors() -> None:
    with pytest.raises(SpecError, match="values is empty"):
        build({"op": "allowed_values", "column": "h", "values": []})
    with pytest.raises(SpecError, match="contains null"):
        build({"op": "allowed_values", "column": "h", "values": [1, None]})


# --- regex ----------------------------------------------------------------------------------


def test_regex_full_match() -> None:
    step = build({"op": "regex", "column": "z", "pattern": r"\d{5}|\d{5}-\d{4}"})
    result = step.apply(batch(z=["60601", "60601-1234", "606011", "x60601", None]), None)
    assert rejected(result) == [
        (
            [2, 3],
            "pattern_mismatch",
            [
                "'z' value '606011' does not match pattern '\\\\d{5}|\\\\d{5}-\\\\d{4}'",
                "'z' value 'x60601' does not match pattern '\\\\d{5}|\\\\d{5}-\\\\d{4}'",
            ],
        )
    ]


def test_regex_invalid_pattern_fails_at_spec_load() -> None:
    with pytest.raises(SpecError) as info:
        build({"op": "regex", "column": "z", "pattern": "(ab"}, "clean[4]")
    assert str(info.value).startswith("clean[4]: regex.pattern '(ab' is not a valid RE2 pattern")
    with pytest.raises(SpecError, match="not a valid RE2 pattern"):
        build({"op": "regex", "column": "z", "pattern": r"(a)\1"})


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


# --- fill missing ---------------------------------------------------------------------------


def test_fill_constant_keeps_types() -> None:
    step = build({"op": "fill_missing", "columns": ["i", "f", "s"], "value": 0})
    b = batch(
        i=pa.array([1, None], pa.int32()),
        f=pa.array([None, 2.5], pa.float32()),
        s=pa.array(["", None]),
    )
    with pytest.raises(ValueError, match="fill_missing value 0 does not fit column 's'"):
        step.apply(b, None)
    step = build({"op": "fill_missing", "columns": ["i", "f"], "value": 0})
    out = step.apply(b, None).batch
    assert out.schema == b.schema
    assert out.to_pydict() == {"i": [1, 0], "f": [0.0, 2.5], "s": ["", None]}


def test_fill_constant_string_empty_is_missing() -> None:
    b = batch(s=["", None, "x"])
    keep_empty = build({"op": "fill_missing", "columns": ["s"], "value": "?"}).apply(b, None)
    assert keep_empty.batch.column(0).to_pylist() == ["", "?", "x"]
    fill_empty = build(
        {"op": "fill_missing", "columns": ["s"], "value": "?", "empty_is_missing": True}
    ).apply(b, None)
    assert fill_empty.batch.column(0).to_pylist() == ["?", "?", "x"]


def fit(step: Step, *batches: pa.RecordBatch) -> dict:
    """Fits a step's analyzer over batches, split across two merged accumulators."""
    analyzer = step.analyzer()
    assert analyzer is not None
    accs = []
    for part in (batches[::2], batches[1::2]):
        acc = analyzer.create_accumulator()
        for b in part:
            acc = analyzer.add_batch(acc, b)
        accs.append(pickle.loads(pickle.dumps(acc)))
    out = analyzer.extract_output(analyzer.merge_accumulators(accs))
    return json.loads(json.dumps(out))


def test_fill_mean_rounds_for_int_columns() -> None:
    step = build({"op": "fill_missing", "columns": ["i", "f"], "strategy": "mean"})
    b1 = batch(i=[1, None, 2], f=[1.0, None, 2.0])
    b2 = batch(i=[None, 2, None], f=[None, 4.0, math.nan])
    fitted = fit(step, b1, b2)
    assert step.fill_values(fitted) == {"i": 5 / 3, "f": 7 / 3}
    # The int column gets round(5 / 3).
    out = step.apply(b2, fitted).batch
    assert out.schema == b2.schema
    assert out.column(0).to_pylist() == [2, 2, 2]
    f = out.column(1).to_pylist()
    assert f[:2] == [7 / 3, 4.0] and math.isnan(f[2])


def test_fill_median_and_mode() -> None:
    b1 = batch(i=[5, None, 10, 2], s=["b", "a", None, ""])
    b2 = batch(i=[None, 10, 3, None], s=["a", "", "", None])
    median = build({"op": "fill_missing", "columns": ["i"], "strategy": "median"})
    fitted = fit(median, b1, b2)
    assert fitted == {"i": {"quantiles": [5.0]}}  # median of 2 3 5 10 10
    assert median.apply(b2, fitted).batch.column(0).to_pylist() == [5, 10, 3, 5]
    mode = build({"op": "fill_missing", "columns": ["s", "i"], "strategy": "mode"})
    fitted = fit(mode, b1, b2)
    # Empty strings are values unless empty_is_missing: '' (3) beats 'a' (2).
    assert mode.fill_values(fitted) == {"s": "", "i": "10"}
    assert mode.apply(b1, fitted).batch.to_pydict() == {
        "i": [5, 10, 10, 2],
        "s": ["b", "a", "", ""],
    }
    mode_ne = build(
        {"op": "fill_missing", "columns": ["s"], "strategy": "mode", "empty_is_missing": True}
    )
    fitted = fit(mode_ne, b1, b2)
    assert mode_ne.apply(b2, fitted).batch.column(1).to_pylist() == ["a", "a", "a", "a"]


def test_fill_fitted_column_without_values_keeps_nulls() -> None:
    step = build({"op": "fill_missing", "columns": ["i"], "strategy": "mean"})
    b = batch(i=pa.array([None, None], pa.int64()))
    fitted = fit(step, b)
    assert step.apply(b, fitted).batch.equals(b)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"columns": ["a"]}, "strategy 'constant' needs 'value'"),
        ({"columns": ["a"], "strategy": "mean", "value": 1}, "fill_missing.value 1 is only used"),
        ({"columns": ["a"], "strategy": "avg"}, "clean[0].strategy: got 'avg'; expected one of"),
        ({"columns": ["a", "a"], "value": 1}, "names column 'a' twice"),
        ({"columns": ["a"], "value": [1]}, "must be a single value"),
    ],
)
def test_fill_spec_errors(params: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        build({"op": "fill_missing", **params})
    assert message in str(info.value)


@given(
    st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), min_size=1, max_size=30),
    st.integers(-5, 5),
)
@settings(max_examples=60, deadline=None)
def test_fill_property_no_nulls_left_and_others_unchanged(values: list, constant: int) -> None:
    b = batch(v=pa.array(values, pa.int64()))
    out = FillMissing(columns=["v"], value=constant).apply(b, None).batch.column(0).to_pylist()
    assert out == [constant if v is None else v for v in values]
    mean_step = FillMissing(columns=["v"], strategy="mean")
    fitted = fit(mean_step, b)
    present = [v for v in values if v is not None]
    filled = mean_step.apply(b, fitted).batch.column(0).to_pylist()
    if present:
        assert filled == [round(sum(present) / len(present)) if v is None else v for v in values]
    else:
        assert filled == values


# --- clip -----------------------------------------------------------------------------------


def test_clip_fixed_keeps_type_nulls_and_nan() -> None:
    step = build({"op": "clip", "column": "f", "min": 0, "max": 10})
    b = batch(f=pa.array([-5.0, 5.0, 50.0, None, math.nan], pa.float32()))
    out = step.apply(b, None).batch.column(0)
    assert out.type == pa.float32()
    values = out.to_pylist()
    assert values[:4] == [0.0, 5.0, 10.0, None] and math.isnan(values[4])


def test_clip_int_rounds_bounds_inward() -> None:
    out = clip_array(pa.array([0, 2, 3, 9, None], pa.int16()), 1.5, 8.5)
    assert out.type == pa.int16()
    assert out.to_pylist() == [2, 2, 3, 8, None]
    assert clip_array(pa.array([1, 2], pa.int8()), None, 1e9).to_pylist() == [1, 2]
    assert clip_array(pa.array([1, 2], pa.int8()), 1e9, None).to_pylist() == [127, 127]


def test_clip_quantiles_fitted() -> None:
    step = build({"op": "clip", "column": "v", "lower_quantile": 0.1, "upper_quantile": 0.9})
    assert step.analyzer() is not None
    b1 = batch(v=pa.array(range(1, 51), pa.int64()))
    b2 = batch(v=pa.array(range(51, 101), pa.int64()))
    fitted = fit(step, b1, b2)
    assert fitted == {"quantiles": [10.0, 90.0]}
    assert step.bounds(fitted) == (10.0, 90.0)
    out = step.apply(b1, fitted).batch.column(0).to_pylist()
    assert out == [10] * 10 + list(range(11, 51))
    mixed = build({"op": "clip", "column": "v", "min": 0, "upper_quantile": 0.5})
    assert mixed.bounds(fit(mixed, b1, b2)) == (0.0, 50.0)
    assert build({"op": "clip", "column": "v", "max": 3}).analyzer() is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min": 5, "max": 1}, "clip.min 5 is greater than clip.max 1"),
        ({}, "clip needs a bound"),
        ({"min": 1, "lower_quantile": 0.1}, "give min or lower_quantile, not both"),
        ({"upper_quantile": 1.5}, "clip.upper_quantile 1.5 is outside [0, 1]"),
        ({"lower_quantile": 0.9, "upper_quantile": 0.1}, "lower_quantile 0.9 is greater"),
    ],
)
def test_clip_spec_errors(params: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        build({"op": "clip", "column": "v", **params})
    assert message in str(info.value)


def _clip_reference(v: float, lo: float | None, hi: float | None) -> float:
    if lo is not None:
        v = max(v, lo)
    if hi is not None:
        v = min(v, hi)
    return v


bounds = st.one_of(st.none(), st.floats(-1e3, 1e3))


@given(st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=40), bounds, bounds)
@settings(max_examples=80, deadline=None)
def test_clip_property_floats(values: list, lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    out = clip_array(pa.array(values, pa.float32()), lo, hi)
    assert out.type == pa.float32()
    # Bounds are applied in the column's precision.
    lo32 = None if lo is None else float(np.float32(lo))
    hi32 = None if hi is None else float(np.float32(hi))
    for v, got in zip(values, out.to_pylist(), strict=True):
        if v is None:
            assert got is None
        elif math.isnan(v):
            assert math.isnan(got)
        else:
            assert got == _clip_reference(v, lo32, hi32)


@given(st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), max_size=40), bounds, bounds)
@settings(max_examples=80, deadline=None)
def test_clip_property_ints(values: list, lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    out = clip_array(pa.array(values, pa.int64()), lo, hi)
    assert out.type == pa.int64()
    for v, got in zip(values, out.to_pylist(), strict=True):
        if v is None:
            assert got is None
            continue
        ilo = None if lo is None else math.ceil(lo)
        ihi = None if hi is None else math.floor(hi)
        assert got == _clip_reference(v, ilo, ihi)


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
