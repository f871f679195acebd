"""Check steps: required, range, allowed values and regex rejections and spec validation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.clean_steps import batch, build, rejected, with_source
from transforms.core.config import SpecError
from transforms.core.steps import StepResult
from transforms.ops.checks import Range

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
