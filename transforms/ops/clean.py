"""Cleaning steps: casts, validity checks, imputation, clipping and column housekeeping.

Every step here is a registered :class:`~transforms.core.steps.Step` whose ``apply`` is a
vectorised ``pyarrow.compute`` function of one batch. Steps that check values never remove
rows themselves: they return :class:`~transforms.core.steps.Rejection`s whose per-row messages
name the column, the value and what was expected (messages are built only for the rejected
rows). Nulls pass every check except ``required``, so each rule says one thing.

Reason codes: ``cast_failed``, ``missing_required``, ``out_of_range``, ``not_allowed``,
``pattern_mismatch``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.config import FieldError
from transforms.core.schema import HIDDEN_PREFIX, parse_type, type_name
from transforms.core.steps import Analyzer, Fitted, Rejection, Step, StepResult, register

CAST_FAILED = "cast_failed"
MISSING_REQUIRED = "missing_required"
OUT_OF_RANGE = "out_of_range"
NOT_ALLOWED = "not_allowed"
PATTERN_MISMATCH = "pattern_mismatch"

# Longest list of allowed values quoted in full in a rejection message.
_QUOTED_VALUES = 10


# --- helpers over batches -------------------------------------------------------------------


def column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """Returns a column of ``batch`` by name.

    Raises:
        ValueError: if the batch has no such column (a spec error: the message lists the
            columns that exist).
    """
    names = batch.schema.names
    if name not in names:
        visible = [n for n in names if not n.startswith(HIDDEN_PREFIX)]
        raise ValueError(f"column {name!r} is not in the data; columns are {', '.join(visible)}")
    return batch.column(names.index(name))


def replace_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    """Returns ``batch`` with column ``name`` replaced by ``values`` (same position)."""
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, pa.field(name, values.type), values)


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Boolean Arrow array -> NumPy bool array with nulls as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _messages(mask: np.ndarray, values: pa.Array, describe: Callable[[str], str]) -> np.ndarray:
    """Builds one message per refused row; ``describe`` gets the value's repr."""
    out = np.empty(len(mask), dtype=object)
    for i in np.flatnonzero(mask):
        out[i] = describe(repr(values[int(i)].as_py()))
    return out


def _rejection(
    mask: np.ndarray, reason: str, values: pa.Array, describe: Callable[[str], str]
) -> Rejection:
    return Rejection(mask, reason, _messages(mask, values, describe))


def _is_string(tp: pa.DataType) -> bool:
    return pa.types.is_string(tp) or pa.types.is_large_string(tp)


def _require_string(name: str, values: pa.Array, op: str) -> None:
    if not _is_string(values.type):
        raise ValueError(
            f"{op} needs a string column; {name!r} is {type_name(values.type)} (cast it first)"
        )


def _require_numeric(name: str, values: pa.Array, op: str) -> None:
    tp = values.type
    if not (pa.types.is_integer(tp) or pa.types.is_floating(tp)):
        raise ValueError(
            f"{op} needs a numeric column; {name!r} is {type_name(tp)} (cast it first)"
        )


def _missing(values: pa.Array, empty_is_missing: bool) -> np.ndarray:
    """True where a value is null, or an empty string when ``empty_is_missing``."""
    missing = values.is_null()
    if empty_is_missing and _is_string(values.type):
        missing = pc.or_kleene(missing, pc.equal(values, ""))
    return _mask(missing)


def _check_columns(columns: Sequence[str], what: str) -> None:
    if not columns:
        raise ValueError(f"{what} must name at least one column")
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise ValueError(f"{what} has an empty column name")
        if name in seen:
            raise ValueError(f"{what} names column {name!r} twice")
        seen.add(name)


def _fmt(x: float) -> str:
    """Formats a bound without a trailing ``.0`` for whole numbers (``5``, ``2.5``)."""
    return f"{x:g}" if math.isfinite(x) else str(x)


# --- cast -----------------------------------------------------------------------------------


def cast_array(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Casts ``values`` to ``target`` (safe: no truncation or overflow).

    Values that do not convert become null and are flagged. The whole array is cast in one
    call; only when that fails is it split in halves until the failing values are isolated,
    so a batch with k bad values costs O(k log n) vectorised casts.

    Args:
        values: Any Arrow array.
        target: The Arrow type to cast to.

    Returns:
        The cast array (failures null) and a bool mask of the values that failed.

    Raises:
        ValueError: if Arrow has no cast between the two types at all (a spec error).
    """
    failed = np.zeros(len(values), dtype=bool)
    try:
        parts = _cast_parts(values, target, failed, 0)
    except pa.ArrowNotImplementedError as exc:
        raise ValueError(
            f"cannot cast {type_name(values.type)} to {type_name(target)}: {exc}"
        ) from exc
    if len(parts) == 1:
        return parts[0], failed
    return pa.concat_arrays(parts), failed


def _cast_parts(
    values: pa.Array, target: pa.DataType, failed: np.ndarray, offset: int
) -> list[pa.Array]:
    try:
        return [pc.cast(values, target, safe=True)]
    except pa.ArrowInvalid:
        if len(values) == 1:
            failed[offset] = True
            return [pa.nulls(1, target)]
    half = len(values) // 2
    return _cast_parts(values.slice(0, half), target, failed, offset) + _cast_parts(
        values.slice(half), target, failed, offset + half
    )


def _cast_message(name: str, tp: str, value: str) -> str:
    return f"cannot cast {name!r} value {value} to {tp}"


@register
@dataclasses.dataclass(kw_only=True)
class Cast(Step):
    """Casts columns to spec types (``{fare: float32, trip_seconds: int64}``).

    A non-null value that does not convert (``'abc'`` to a number, ``1.5`` to an integer, an
    out-of-range integer) rejects the row with reason ``cast_failed``. Strings are not
    trimmed first: put a ``normalize_text`` step before the cast for padded input.
    """

    op: ClassVar[str] = "cast"

    columns: dict[str, str]

    def validate(self) -> None:
        _check_columns(list(self.columns), "cast.columns")
        for name, tp in self.columns.items():
            try:
                parse_type(tp)
            except ValueError as exc:
                raise ValueError(f"cast.columns.{name}: {exc}") from None

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        rejections = []
        for name, tp in self.columns.items():
            values = column(batch, name)
            target = parse_type(tp)
            cast, failed = cast_array(values, target)
            if failed.any():
                messages = _messages(failed, values, functools.partial(_cast_message, name, tp))
                rejections.append(Rejection(failed, CAST_FAILED, messages))
            batch = replace_column(batch, name, cast)
        return StepResult(batch, tuple(rejections))


# --- required -------------------------------------------------------------------------------


@register
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
        _check_columns(self.columns, "required.columns")

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        masks = [_missing(column(batch, name), self.empty_is_missing) for name in self.columns]
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


@register
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
                    f"range.min {_fmt(self.min)} is greater than range.max {_fmt(self.max)};"
                    " swap them"
                )
            if not self.inclusive and self.min == self.max:
                raise ValueError(
                    f"range.min and range.max are both {_fmt(self.min)} with inclusive: false,"
                    " so no value can pass; set inclusive: true or widen the range"
                )

    def input_columns(self) -> list[str]:
        return [self.column]

    def interval(self) -> str:
        """The accepted interval in words, e.g. ``[0, 100]`` or ``> 0``."""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            left, right = ("[", "]") if self.inclusive else ("(", ")")
            return f"{left}{_fmt(lo)}, {_fmt(hi)}{right}"
        if lo is not None:
            return f"{'>=' if self.inclusive else '>'} {_fmt(lo)}"
        assert hi is not None
        return f"{'<=' if self.inclusive else '<'} {_fmt(hi)}"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        values = column(batch, self.column)
        _require_numeric(self.column, values, "range")
        inside = pa.array(np.ones(len(values), dtype=bool))
        lower = pc.greater_equal if self.inclusive else pc.greater
        upper = pc.less_equal if self.inclusive else pc.less
        if self.min is not None:
            inside = pc.and_(inside, lower(values, pa.scalar(self.min, pa.float64())))
        if self.max is not None:
            inside = pc.and_(inside, upper(values, pa.scalar(self.max, pa.float64())))
        # A null comparison is null: nulls pass, everything else not inside is refused.
        refused = _mask(pc.invert(inside))
        if not refused.any():
            return StepResult(batch)
        interval = self.interval()

        def describe(v: str) -> str:
            return f"{self.column!r} value {v} is out of range {interval}"

        return StepResult(batch, (_rejection(refused, OUT_OF_RANGE, values, describe),))


# --- allowed values -------------------------------------------------------------------------


@register
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
        refused = _mask(pc.and_(values.is_valid(), pc.invert(pc.is_in(values, value_set))))
        if not refused.any():
            return StepResult(batch)
        quoted = self._quoted()

        def describe(v: str) -> str:
            return f"{self.column!r} value {v} is not one of {quoted}"

        return StepResult(batch, (_rejection(refused, NOT_ALLOWED, values, describe),))


# --- regex ----------------------------------------------------------------------------------


def _check_regex(pattern: str) -> None:
    # Arrow matches with RE2, whose syntax differs from Python's re (no backreferences or
    # lookaround), so the pattern is checked by the engine that will run it.
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"regex.pattern {pattern!r} is not a valid RE2 pattern: {exc}") from None


@register
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
        _require_string(self.column, values, "regex")
        matched = pc.match_substring_regex(values, rf"\A(?:{self.pattern})\z")
        refused = _mask(pc.invert(matched))
        if not refused.any():
            return StepResult(batch)

        def describe(v: str) -> str:
            return f"{self.column!r} value {v} does not match pattern {self.pattern!r}"

        return StepResult(batch, (_rejection(refused, PATTERN_MISMATCH, values, describe),))


# --- normalize text -------------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class NormalizeText(Step):
    """Trims, lower-cases and collapses runs of whitespace in string columns.

    ``collapse_whitespace`` turns every run of Unicode whitespace into one space; with
    ``trim`` the ends are stripped afterwards. Nulls stay null.
    """

    op: ClassVar[str] = "normalize_text"

    columns: list[str]
    trim: bool = True
    lowercase: bool = False
    collapse_whitespace: bool = False

    def validate(self) -> None:
        _check_columns(self.columns, "normalize_text.columns")
        if not (self.trim or self.lowercase or self.collapse_whitespace):
            raise ValueError(
                "normalize_text does nothing: set trim, lowercase or collapse_whitespace to true"
            )

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name in self.columns:
            values = column(batch, name)
            _require_string(name, values, "normalize_text")
            if self.collapse_whitespace:
                values = pc.replace_substring_regex(values, r"\s+", " ")
            if self.trim:
                values = pc.utf8_trim_whitespace(values)
            if self.lowercase:
                values = pc.utf8_lower(values)
            batch = replace_column(batch, name, values)
        return StepResult(batch)


# --- drop and rename ------------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class DropColumns(Step):
    """Removes columns from the data."""

    op: ClassVar[str] = "drop_columns"

    columns: list[str]

    def validate(self) -> None:
        _check_columns(self.columns, "drop_columns.columns")
        hidden = [c for c in self.columns if c.startswith(HIDDEN_PREFIX)]
        if hidden:
            raise ValueError(
                f"drop_columns cannot drop hidden source column {hidden[0]!r}; writers omit it"
            )

    # No input_columns: dropping reads no values, so it never changes which rows later
    # fitted steps see and must not split fit passes.

    def removed_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name in self.columns:
            column(batch, name)  # a clear error for a column that is not there
        return StepResult(batch.drop_columns(self.columns))


@register
@dataclasses.dataclass(kw_only=True)
class Rename(Step):
    """Renames columns (``{old: new}``), keeping their position."""

    op: ClassVar[str] = "rename"

    columns: dict[str, str]

    def validate(self) -> None:
        _check_columns(list(self.columns), "rename.columns")
        targets = list(self.columns.values())
        for old, new in self.columns.items():
            if not new:
                raise ValueError(f"rename.columns.{old} is empty; give the new name")
            if old.startswith(HIDDEN_PREFIX) or new.startswith(HIDDEN_PREFIX):
                raise ValueError(
                    f"rename {old!r} -> {new!r}: names starting with {HIDDEN_PREFIX!r} are"
                    " reserved for hidden source columns"
                )
            if targets.count(new) > 1:
                raise ValueError(f"rename.columns gives the name {new!r} to several columns")

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns.values())

    def removed_columns(self) -> list[str]:
        return [old for old in self.columns if old not in self.columns.values()]

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name in self.columns:
            column(batch, name)
        names = [self.columns.get(n, n) for n in batch.schema.names]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(
                f"rename would create duplicate column {clash[0]!r}; drop or rename the"
                " existing column first"
            )
        return StepResult(batch.rename_columns(names))


# --- fitted helpers -------------------------------------------------------------------------


class ColumnAnalyzers(Analyzer[dict[str, Any]]):
    """Runs one analyzer per column in a single pass; outputs ``{column: output}``.

    Lets a step over several columns (``fill_missing``) fit them all in one accumulator
    instead of one pass each.
    """

    def __init__(self, analyzers: Mapping[str, Analyzer[Any]]) -> None:
        self.analyzers = dict(analyzers)

    def create_accumulator(self) -> dict[str, Any]:
        return {name: a.create_accumulator() for name, a in self.analyzers.items()}

    def add_batch(self, accumulator: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        for name, a in self.analyzers.items():
            accumulator[name] = a.add_batch(accumulator[name], batch)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, Any]]) -> dict[str, Any]:
        accs = list(accumulators)
        return {
            name: a.merge_accumulators([acc[name] for acc in accs])
            for name, a in self.analyzers.items()
        }

    def extract_output(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        return {name: a.extract_output(accumulator[name]) for name, a in self.analyzers.items()}


class RankQuantiles(Analyzer[Any]):
    """Approximate quantiles of one column at given ranks: ``{"quantiles": [...]}``.

    Wraps :class:`transforms.ops.analyzers.Quantiles` (a mergeable sketch) and reads it at
    arbitrary ranks rather than at equal-width bucket boundaries. The quantile at rank r is
    the smallest value v with ``#(values <= v) >= r * n`` (so the median of 1, 2, 3, 4 is 2).
    A column with no values gives ``null`` quantiles.
    """

    def __init__(self, column: str, ranks: Sequence[float]) -> None:
        from transforms.ops.analyzers import Quantiles

        self.column = column
        self.ranks = [float(r) for r in ranks]
        self.inner = Quantiles(column, num_buckets=2)

    def create_accumulator(self) -> Any:
        return self.inner.create_accumulator()

    def add_batch(self, accumulator: Any, batch: pa.RecordBatch) -> Any:
        return self.inner.add_batch(accumulator, batch)

    def merge_accumulators(self, accumulators: Iterable[Any]) -> Any:
        return self.inner.merge_accumulators(accumulators)

    def extract_output(self, accumulator: Any) -> dict[str, Any]:
        from transforms.ops.analyzers import quantiles_of

        values = quantiles_of(accumulator, self.ranks)
        return {"quantiles": [_finite_or_none(v) for v in values]}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _to_column_type(value: Any, tp: pa.DataType, *, rounded: bool) -> pa.Scalar:
    """Converts a fill value or bound to a column's type.

    Integer columns get ``round(value)`` (halves to even) when ``rounded``, so a fitted mean
    or median keeps the column an integer column.
    """
    if rounded and pa.types.is_integer(tp) and isinstance(value, float):
        value = round(value)
    if (pa.types.is_integer(tp) or pa.types.is_floating(tp)) and isinstance(value, str):
        # Mode vocabularies hold strings; read them back as numbers.
        return pc.cast(pa.scalar(value), tp)
    return pa.scalar(value, type=tp)


# --- fill missing ---------------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class FillMissing(Step):
    """Replaces missing values in ``columns``, keeping each column's type.

    Strategies:
        constant: ``value``, converted to each column's type.
        mean: the column's mean over the whole data set (fitted).
        median: its approximate median (fitted, quantile sketch).
        mode: its most frequent value (fitted; ties as the vocabulary orders them).

    Integer columns get the mean or median rounded to the nearest integer (halves to even),
    so they stay integer columns. Missing means null; for string columns also the empty
    string when ``empty_is_missing`` is true (then empty strings are also left out when the
    mode is fitted). A fitted column with no values at all has nothing to fill with and keeps
    its nulls.
    """

    op: ClassVar[str] = "fill_missing"

    columns: list[str]
    strategy: Literal["constant", "mean", "median", "mode"] = "constant"
    value: Any = None
    empty_is_missing: bool = False

    def validate(self) -> None:
        _check_columns(self.columns, "fill_missing.columns")
        if self.strategy == "constant" and self.value is None:
            raise ValueError(
                "fill_missing with strategy 'constant' needs 'value' (the value to fill in)"
            )
        if self.strategy != "constant" and self.value is not None:
            raise ValueError(
                f"fill_missing.value {self.value!r} is only used with strategy 'constant';"
                f" remove it or set strategy: constant (strategy is {self.strategy!r})"
            )
        if isinstance(self.value, list | dict):
            raise ValueError(f"fill_missing.value {self.value!r} must be a single value")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            # NaN is itself a missing value; infinity is no stand-in for one.
            raise FieldError("value", f"got {self.value!r}; expected a finite number")

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns)

    def analyzer(self) -> Analyzer[Any] | None:
        if self.strategy == "constant":
            return None
        from transforms.ops.analyzers import Moments, ValueCounts

        per_column: dict[str, Analyzer[Any]] = {}
        for name in self.columns:
            if self.strategy == "mean":
                per_column[name] = Moments(name)
            elif self.strategy == "median":
                per_column[name] = RankQuantiles(name, [0.5])
            else:
                per_column[name] = ValueCounts(
                    name, top_k=1, include_empty=not self.empty_is_missing
                )
        return ColumnAnalyzers(per_column)

    def fill_values(self, fitted: Fitted | None) -> dict[str, Any]:
        """The value each column is filled with (None: nothing to fill with)."""
        if self.strategy == "constant":
            return dict.fromkeys(self.columns, self.value)
        if fitted is None:
            raise ValueError(f"fill_missing strategy {self.strategy!r} needs fitted parameters")
        out: dict[str, Any] = {}
        for name in self.columns:
            stats = fitted[name]
            if self.strategy == "mean":
                out[name] = _finite_or_none(stats.get("mean")) if stats.get("count") else None
            elif self.strategy == "median":
                out[name] = stats["quantiles"][0]
            else:
                vocabulary = stats.get("vocabulary") or []
                out[name] = vocabulary[0] if vocabulary else None
        return out

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name, fill in self.fill_values(fitted).items():
            values = column(batch, name)
            if fill is None:
                continue
            if self.strategy in ("mean", "median"):
                _require_numeric(name, values, f"fill_missing strategy {self.strategy!r}")
            try:
                scalar = _to_column_type(fill, values.type, rounded=self.strategy != "constant")
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                raise ValueError(
                    f"fill_missing value {fill!r} does not fit column {name!r} of type"
                    f" {type_name(values.type)}: {exc}"
                ) from exc
            missing = _missing(values, self.empty_is_missing)
            if missing.any():
                batch = replace_column(batch, name, pc.if_else(pa.array(missing), scalar, values))
        return StepResult(batch)


# --- clip -----------------------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class Clip(Step):
    """Limits ``column`` to bounds, keeping its type.

    Each bound is either fixed (``min``/``max``) or fitted as a quantile of the whole data
    set (``lower_quantile``/``upper_quantile`` in [0, 1], from a quantile sketch). On integer
    columns a fractional lower bound is rounded up and an upper bound down, so clipped
    values stay within the bounds. Nulls and NaN are left as they are.
    """

    op: ClassVar[str] = "clip"

    column: str
    min: float | None = None
    max: float | None = None
    lower_quantile: float | None = None
    upper_quantile: float | None = None

    def validate(self) -> None:
        if not self.column:
            raise ValueError("clip.column must name a column")
        if self.min is not None and self.lower_quantile is not None:
            raise ValueError("clip: give min or lower_quantile, not both")
        if self.max is not None and self.upper_quantile is not None:
            raise ValueError("clip: give max or upper_quantile, not both")
        if all(b is None for b in (self.min, self.max, self.lower_quantile, self.upper_quantile)):
            raise ValueError("clip needs a bound: min, max, lower_quantile or upper_quantile")
        for key in ("min", "max"):
            bound = getattr(self, key)
            if bound is not None and math.isnan(bound):
                raise ValueError(f"clip.{key} is NaN; give a number")
        for key in ("lower_quantile", "upper_quantile"):
            q = getattr(self, key)
            if q is not None and not 0.0 <= q <= 1.0:
                raise ValueError(f"clip.{key} {q:g} is outside [0, 1]; give a rank such as 0.01")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"clip.min {_fmt(self.min)} is greater than clip.max {_fmt(self.max)}; swap them"
            )
        lo, hi = self.lower_quantile, self.upper_quantile
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(
                f"clip.lower_quantile {lo:g} is greater than clip.upper_quantile {hi:g}; swap them"
            )

    def input_columns(self) -> list[str]:
        return [self.column]

    def output_columns(self) -> list[str]:
        return [self.column]

    def _ranks(self) -> list[float]:
        return [q for q in (self.lower_quantile, self.upper_quantile) if q is not None]

    def analyzer(self) -> Analyzer[Any] | None:
        if not self._ranks():
            return None
        return RankQuantiles(self.column, self._ranks())

    def bounds(self, fitted: Fitted | None) -> tuple[float | None, float | None]:
        """The (lower, upper) bounds, fixed or read from the fitted quantiles."""
        lo, hi = self.min, self.max
        if self._ranks():
            if fitted is None:
                raise ValueError("clip with quantile bounds needs fitted parameters")
            quantiles = list(fitted["quantiles"])
            if self.lower_quantile is not None:
                lo = quantiles.pop(0)
            if self.upper_quantile is not None:
                hi = quantiles.pop(0)
        return lo, hi

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        values = column(batch, self.column)
        _require_numeric(self.column, values, "clip")
        lo, hi = self.bounds(fitted)
        return StepResult(replace_column(batch, self.column, clip_array(values, lo, hi)))


def clip_array(values: pa.Array, lower: float | None, upper: float | None) -> pa.Array:
    """Clips a numeric array to ``[lower, upper]`` (either may be None), keeping its type.

    Nulls stay null and NaN stays NaN. Integer arrays use ``ceil(lower)`` and
    ``floor(upper)``; a bound beyond the type's range leaves that side unclipped.
    """
    tp = values.type
    out = values
    for bound, pick, round_ in (
        (lower, pc.max_element_wise, math.ceil),
        (upper, pc.min_element_wise, math.floor),
    ):
        if bound is None:
            continue
        if pa.types.is_integer(tp):
            info = np.iinfo(tp.to_pandas_dtype())
            # A bound beyond the type's range clips to the range's end.
            whole = min(max(round_(bound), int(info.min)), int(info.max))
            scalar = pa.scalar(whole, type=tp)
        else:
            scalar = pa.scalar(bound, type=tp)
        out = pick(out, scalar, skip_nulls=False)
    if pa.types.is_floating(tp):
        # Arrow's element-wise min/max prefer the number over NaN; keep NaN visible.
        out = pc.if_else(pc.is_nan(values), values, out)
    return out
