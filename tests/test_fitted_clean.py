"""Fitted cleaning steps: fill_missing and clip, fixed and fitted, with spec validation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.clean_steps import batch, build, fit
from transforms.core.config import SpecError
from transforms.ops.fitted_clean import FillMissing, clip_array

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
