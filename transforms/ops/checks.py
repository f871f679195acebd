"""Validity checks: steps that reject the rows whose values break a rule.

The steps never remove rows themselves: they return :class:`~transforms.core.steps.Rejection`s
whose per-row messages name the column, the value and what was expected (messages are built
only for the rejected rows). Nulls pass every check except ``required``, so each rule says
one thing.

Reason codes: ``missing_required``, ``out_of_range``, ``not_allowed``, ``pattern_mismatch``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.config import FieldError
from transforms.core.schema import type_name
from transforms.core.steps import Fitted, Rejection, Step, StepResult
from transforms.ops.columns import (
    check_columns,
    column,
    format_number,
    missing_mask,
    rejection_of,
    require_numeric,
    require_string,
    to_mask,
)

MISSING_REQUIRED = "missing_required"
OUT_OF_RANGE = "out_of_range"
NOT_ALLOWED = "not_allowed"
PATTERN_MISMATCH = "pattern_mismatch"

# Longest list of allowed values quoted in full in a rejection message.
_QUOTED_VALUES = 10


# --- required -------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Required(Step):
    """Rejects rows where any of ``columns`` is missing (reason ``missing_required``).

    Missing means null, or for string columns the empty string unless ``empty_is_missing``
    is false. One rejection per row, naming every missing column.
    """

    op: ClassVar[str] = "required"

    columns: list[str]
    empty_is_missing: bool = True

    def validate(self) -> None:
        check_columns(self.columns, "required.columns")

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        masks = [missing_mask(column(batch, name), self.empty_is_missing) for name in self.columns]
        stacked = np.vstack(masks) if masks else np.zeros((0, batch.num_rows), dtype=bool)
        refused = np.asarray(stacked.any(axis=0), dtype=bool)
        if not refused.any():
            return StepResult(batch)
        messages = np.empty(batch.num_rows, dtype=object)
        what = "null or empty" if self.empty_is_missing else "null"
        for i in np.flatnonzero(refused):
            names = [repr(n) for n, m in zip(self.columns, masks, strict=True) if m[i]]
            if len(names) == 1:
                messages[i] = f"required column {names[0]} is missing ({what})"
            else:
                messages[i] = f"required columns {', '.join(names)} are missing ({what})"
        return StepResult(batch, (Rejection(refused, MISSING_REQUIRED, messages),))


# --- range ----------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Range(Step):
    """Rejects rows whose ``column`` lies outside ``[min, max]`` (reason ``out_of_range``).

    Either bound may be left out. ``inclusive: false`` makes both bounds strict. Nulls pass
    (use ``required`` for them); NaN is never within a range, so it is rejected.
    """

    op: ClassVar[str] = "range"

    column: str
    min: float | None = None
    max: float | None = None
    inclusive: bool = True

    def validate(self) -> None:
        if not self.column:
            raise ValueError("range.column must name a column")
        if self.min is None and self.max is None:
            raise ValueError("range needs min, max or both")
        for key, bound in (("min", self.min), ("max", self.max)):
            if bound is not None and math.isnan(bound):
                raise ValueError(f"range.{key} is NaN; give a number")
        if self.min is not None and self.max is not None:
            if self.min > self.max:
                raise ValueError(
                    f"range.min {format_number(self.min)} is greater than range.max {format_number(self.max)};"
                    " swap them"
                )
            if not self.inclusive and self.min == self.max:
                raise ValueError(
                    f"range.min and range.max are both {format_number(self.min)} with inclusive: false,"
                    " so no value can pass; set inclusive: true or widen the range"
                )

    def input_columns(self) -> list[str]:
        return [self.column]

    def interval(self) -> str:
        """The accepted interval in words, e.g. ``[0, 100]`` or ``> 0``."""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            left, right = ("[", "]") if self.inclusive else ("(", ")")
            return f"{left}{format_number(lo)}, {format_number(hi)}{right}"
        if lo is not None:
            return f"{'>=' if self.inclusive else '>'} {format_number(lo)}"
        assert hi is not None
        return f"{'<=' if self.inclusive else '<'} {format_number(hi)}"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        values = column(batch, self.column)
        require_numeric(self.column, values, "range")
        inside = pa.array(np.ones(len(values), dtype=bool))
        lower = pc.greater_equal if self.inclusive else pc.greater
        upper = pc.less_equal if self.inclusive else pc.less
        if self.min is not None:
            inside = pc.and_(inside, lower(values, pa.scalar(self.min, pa.float64())))
        if self.max is not None:
            inside = pc.and_(inside, upper(values, pa.scalar(self.max, pa.float64())))
        # A null comparison is null: nulls pass, everything else not inside is refused.
        refused = to_mask(pc.invert(inside))
        if not refused.any():
            return StepResult(batch)
        interval = self.interval()

        def describe(v: str) -> str:
            return f"{self.column!r} value {v} is out of range {interval}"

        return StepResult(batch, (rejection_of(refused, OUT_OF_RANGE, values, describe),))


# --- allowed values -------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class AllowedValues(Step):
    """Rejects rows whose ``column`` is not one of ``values`` (reason ``not_allowed``).

    Values are compared after converting the list to the column's type; nulls pass.
    """

    op: ClassVar[str] = "allowed_values"

    column: str
    values: list[Any]

    def validate(self) -> None:
        if not self.column:
            raise ValueError("allowed_values.column must name a column")
        if not self.values:
            raise ValueError("allowed_values.values is empty; list the values to accept")
        if any(v is None for v in self.values):
            raise ValueError(
                "allowed_values.values contains null; nulls always pass (use 'required')"
            )
        for i, value in enumerate(self.values):
            if isinstance(value, list | dict):
                raise FieldError(
                    f"values[{i}]", f"got {value!r}; expected a single value (string or number)"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise FieldError(f"values[{i}]", f"got {value!r}; expected a finite number")

    def input_columns(self) -> list[str]:
        return [self.column]

    def _quoted(self) -> str:
        shown = ", ".join(repr(v) for v in self.values[:_QUOTED_VALUES])
        more = len(self.values) - _QUOTED_VALUES
        return f"[{shown}, ... {more} more]" if more > 0 else f"[{shown}]"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        values = column(batch, self.column)
        try:
            value_set = pa.array(self.values, type=values.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise ValueError(
                f"allowed_values.values {self._quoted()} do not all fit column {self.column!r}"
                f" of type {type_name(values.type)}: {exc}"
            ) from exc
        refused = to_mask(pc.and_(values.is_valid(), pc.invert(pc.is_in(values, value_set))))
        if not refused.any():
            return StepResult(batch)
        quoted = self._quoted()

        def describe(v: str) -> str:
            return f"{self.column!r} value {v} is not one of {quoted}"

        return StepResult(batch, (rejection_of(refused, NOT_ALLOWED, values, describe),))


# --- regex ----------------------------------------------------------------------------------


def _check_regex(pattern: str) -> None:
    # Arrow matches with RE2, whose syntax differs from Python's re (no backreferences or
    # lookaround), so the pattern is checked by the engine that will run it.
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"regex.pattern {pattern!r} is not a valid RE2 pattern: {exc}") from None


@dataclasses.dataclass(kw_only=True)
class Regex(Step):
    """Rejects rows whose string ``column`` does not fully match ``pattern``.

    The pattern is RE2 syntax (as Python's ``re`` without backreferences and lookaround)
    and must match the whole value. Reason ``pattern_mismatch``; nulls pass.
    """

    op: ClassVar[str] = "regex"

    column: str
    pattern: str

    def validate(self) -> None:
        if not self.column:
            raise ValueError("regex.column must name a column")
        _check_regex(self.pattern)

    def input_columns(self) -> list[str]:
        return [self.column]

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        values = column(batch, self.column)
        require_string(self.column, values, "regex")
        matched = pc.match_substring_regex(values, rf"\A(?:{self.pattern})\z")
        refused = to_mask(pc.invert(matched))
        if not refused.any():
            return StepResult(batch)

        def describe(v: str) -> str:
            return f"{self.column!r} value {v} does not match pattern {self.pattern!r}"

        return StepResult(batch, (rejection_of(refused, PATTERN_MISMATCH, values, describe),))


STEPS = (Required, Range, AllowedValues, Regex)
