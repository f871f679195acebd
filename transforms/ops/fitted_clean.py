"""Clean steps whose values can be fitted on the whole data set: ``fill_missing`` and ``clip``.

A fill value (mean, median, mode) or a clip bound (a quantile) is fitted by an analyzer over
the whole data set and applied batch by batch, keeping each column's type.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.config import FieldError
from transforms.core.schema import type_name
from transforms.core.steps import Analyzer, Fitted, Step, StepResult
from transforms.ops.analyzers import Moments, ValueCounts
from transforms.ops.columns import (
    check_columns,
    column,
    format_number,
    missing_mask,
    replace_column,
    require_numeric,
)
from transforms.ops.quantiles import Quantiles, quantiles_of

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

    Wraps :class:`transforms.ops.quantiles.Quantiles` (a mergeable sketch) and reads it at
    arbitrary ranks rather than at equal-width bucket boundaries. The quantile at rank r is
    the smallest value v with ``#(values <= v) >= r * n`` (so the median of 1, 2, 3, 4 is 2).
    A column with no values gives ``null`` quantiles.
    """

    def __init__(self, column: str, ranks: Sequence[float]) -> None:
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
        check_columns(self.columns, "fill_missing.columns")
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
                require_numeric(name, values, f"fill_missing strategy {self.strategy!r}")
            try:
                scalar = _to_column_type(fill, values.type, rounded=self.strategy != "constant")
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                raise ValueError(
                    f"fill_missing value {fill!r} does not fit column {name!r} of type"
                    f" {type_name(values.type)}: {exc}"
                ) from exc
            missing = missing_mask(values, self.empty_is_missing)
            if missing.any():
                batch = replace_column(batch, name, pc.if_else(pa.array(missing), scalar, values))
        return StepResult(batch)


# --- clip -----------------------------------------------------------------------------------


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
                f"clip.min {format_number(self.min)} is greater than clip.max {format_number(self.max)}; swap them"
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
        require_numeric(self.column, values, "clip")
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


STEPS = (FillMissing, Clip)
