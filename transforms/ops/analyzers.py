"""Mergeable full-pass statistics: moments and value counts.

Each analyzer turns record batches into an accumulator, merges accumulators from different
workers and extracts JSON-serialisable parameters (the *fit* half of a step, see
:class:`~transforms.core.steps.Analyzer`). Work per batch is vectorised with pyarrow and NumPy.

**Missing and non-finite values.** Nulls are skipped everywhere. The numeric analyzers
(:class:`Moments`, :class:`~transforms.ops.quantiles.Quantiles`) also skip NaN, ``inf`` and ``-inf``: a non-finite
value is treated as missing, so one of them cannot turn a fitted mean, variance, range or
boundary into NaN. :class:`ValueCounts` leaves non-finite floats out too (a NaN is never a
vocabulary entry or a fitted mode). ``-0.0`` is counted as ``0.0``.

**Determinism.** Every accumulator here is a function of the multiset of values it has seen,
not of their order or of how they were split into bundles and merged: moments are exact
integer sums, value counts are exact, and quantiles come from
:class:`~transforms.ops.quantiles.QuantileSummary` (exact distinct values with counts up to a
bound, then a deterministic relative-error histogram). The same input therefore gives the same fitted parameters, bit for bit, on one
worker or many.

The numbers follow tf.Transform where it has the same analyzer: the variance is the
population variance, vocabularies are ordered by descending frequency with ties broken by
descending byte-wise value, the empty string and values containing a line break are left
out of vocabularies, and bucket boundaries are read from the summary with the rule of
tf.Transform's quantiles combiner (tfx_bsl), which is exact on data with up to about 2,000
distinct values, as the summary is exact up to its bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.steps import Analyzer
from transforms.ops.arrays import (
    column_of,
    finite_floats,
    numeric_values,
    precision_of,
    string_form,
)

# --- Exact sums --------------------------------------------------------------------------

# Every finite float64 is an integer multiple of 2**SUM_EXPONENT: a normal number is
# (2**52 + fraction bits) * 2**(exponent field - 1075), a subnormal fraction bits * 2**-1074.
SUM_EXPONENT = -1074
_FRACTION_MASK = np.int64((1 << 52) - 1)
# np.bincount adds float64 weights: integers stay exact while every partial sum is below
# 2**53, so weights below 2**(53 - 16) may be added 2**16 at a time.
_CHUNK = 1 << 16


def _binned(index: np.ndarray, weights: list[np.ndarray], length: int) -> list[np.ndarray]:
    """Per-bin sums of each weight array (integers below 2**37), exactly, as int64."""
    if len(index) <= _CHUNK:
        return [np.bincount(index, w, length).astype(np.int64) for w in weights]
    totals = [np.zeros(length, dtype=np.int64) for _ in weights]
    for start in range(0, len(index), _CHUNK):
        part = index[start : start + _CHUNK]
        for total, w in zip(totals, weights, strict=True):
            total += np.bincount(part, w[start : start + _CHUNK], length).astype(np.int64)
    return totals


def exact_sums(values: np.ndarray, *, precision: int = 53) -> tuple[int, int]:
    """The exact sum and sum of squares of finite float64 values, as integers.

    Args:
        values: Finite float64 values.
        precision: Significant bits the values have at most: 53 for any float64, 24 for
            values that came from float32 (a faster path), 0 for integers (the fastest
            path while the sums fit in int64; larger ones take the float64 path).

    Returns:
        ``(s1, s2)`` with ``sum(values) == s1 * 2**SUM_EXPONENT`` and
        ``sum(values**2) == s2 * 2**(2 * SUM_EXPONENT)`` exactly (no rounding at all), so
        adding the results of any split of the values, in any order, gives the same
        integers. Vectorised: significands are cut into limbs, limbs and their pairwise
        products are added per binary exponent with ``np.bincount`` (exact in float64 at
        these sizes), and only the per-exponent totals become Python integers.
    """
    n = len(values)
    if not n:
        return 0, 0
    if precision == 0:
        largest = max(-float(values.min()), float(values.max()))
        whole = values.astype(np.int64)
        if largest * largest * n < 2.0**62:
            s1, s2 = int(whole.sum()), int((whole * whole).sum())
            return s1 << -SUM_EXPONENT, s2 << (-2 * SUM_EXPONENT)
        if largest < 2.0**42 and n <= 1 << 20:
            # x = high * 2**21 + low with 0 <= low < 2**21: every product is below 2**42,
            # so a million of them add up in int64.
            upper, lower = whole >> 21, whole & ((1 << 21) - 1)
            s1 = int(whole.sum())
            s2 = (
                (int((upper * upper).sum()) << 42)
                + (int((upper * lower).sum()) << 22)
                + int((lower * lower).sum())
            )
            return s1 << -SUM_EXPONENT, s2 << (-2 * SUM_EXPONENT)
    bits = values.view(np.int64)
    field = (bits >> 52) & 0x7FF
    significand = (bits & _FRACTION_MASK) | ((field > 0).astype(np.int64) << 52)
    # A subnormal has the exponent of the smallest normal numbers, without the hidden bit.
    exponent = np.maximum(field, 1)
    low = int(exponent.min())
    index = exponent - low
    length = int(index.max()) + 1
    if 0 < precision <= 24:
        # From float32: the low 29 bits are zero, 24 are left; their sums fit float64
        # exactly, and squares are taken in two 12-bit limbs.
        shift, width = 29, 12
        whole = significand >> 29
        first = [np.copysign(whole.astype(np.float64), values)]
        a0 = (whole & 0xFFF).astype(np.float64)
        a1 = (whole >> 12).astype(np.float64)
        squares = [a0 * a0, 2.0 * a0 * a1, a1 * a1]
    else:
        # Sums in two limbs of 26 and 27 bits, squares in three of 18, 18 and 17 bits.
        shift, width = 0, 18
        a0 = (significand & 0x3FFFF).astype(np.float64)
        a1 = ((significand >> 18) & 0x3FFFF).astype(np.float64)
        a2 = (significand >> 36).astype(np.float64)
        first = [
            np.copysign((significand & 0xFFFFFFFFF).astype(np.float64), values),
            np.copysign(a2, values),
        ]
        squares = [a0 * a0, 2.0 * a0 * a1, 2.0 * a0 * a2 + a1 * a1, 2.0 * a1 * a2, a2 * a2]
    firsts = _binned(index, first, length)
    seconds = _binned(index, squares, length)
    # Exponent field f weighs 2**(f - 1075) = 2**(f - 1) * 2**SUM_EXPONENT.
    s1 = 0
    s2 = 0
    for j in np.flatnonzero(np.bincount(index, minlength=length)).tolist():
        at = j + low - 1 + shift
        if len(firsts) == 1:
            s1 += int(firsts[0][j]) << at
        else:
            s1 += (int(firsts[0][j]) + (int(firsts[1][j]) << 36)) << at
        s2 += sum(int(t[j]) << (width * k) for k, t in enumerate(seconds)) << (2 * at)
    return s1, s2


def _ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator`` correctly rounded, or None beyond float64's range."""
    try:
        return numerator / denominator
    except OverflowError:
        return None


# --- Moments -----------------------------------------------------------------------------


class MomentsAccumulator:
    """Count, exact sums, minimum and maximum of finite values: mergeable in any order.

    ``sum`` and ``sum_squares`` are the integers of :func:`exact_sums`; merging adds them,
    which is exact, so the mean and variance do not depend on how values were bundled.
    """

    __slots__ = ("count", "maximum", "minimum", "sum", "sum_squares")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0
        self.sum_squares = 0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, values: np.ndarray, precision: int = 53) -> MomentsAccumulator:
        """Folds finite float64 values in and returns this accumulator.

        ``precision`` is :func:`exact_sums`'s hint (:func:`precision_of` the column type).
        """
        if len(values):
            s1, s2 = exact_sums(values, precision=precision)
            self.count += len(values)
            self.sum += s1
            self.sum_squares += s2
            self.minimum = min(self.minimum, float(values.min()))
            self.maximum = max(self.maximum, float(values.max()))
        return self

    def merge(self, other: MomentsAccumulator) -> MomentsAccumulator:
        """Folds ``other`` into this accumulator and returns it."""
        self.count += other.count
        self.sum += other.sum
        self.sum_squares += other.sum_squares
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        return self

    def mean(self) -> float | None:
        """The mean, correctly rounded (None without values)."""
        if not self.count:
            return None
        return _ratio(self.sum, self.count << -SUM_EXPONENT)

    def variance(self) -> float | None:
        """The population variance, correctly rounded (None without values, or beyond
        float64's range)."""
        if not self.count:
            return None
        spread = self.sum_squares * self.count - self.sum * self.sum
        return _ratio(spread, (self.count * self.count) << (-2 * SUM_EXPONENT))

    def total(self) -> float | None:
        """The sum, correctly rounded (None beyond float64's range)."""
        return _ratio(self.sum, 1 << -SUM_EXPONENT)

    def __getstate__(self) -> tuple[int, int, int, float, float]:
        return (self.count, self.sum, self.sum_squares, self.minimum, self.maximum)

    def __setstate__(self, state: tuple[int, int, int, float, float]) -> None:
        self.count, self.sum, self.sum_squares, self.minimum, self.maximum = state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MomentsAccumulator):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    __hash__ = None  # type: ignore[assignment]


class Moments(Analyzer[MomentsAccumulator]):
    """Count, mean, population variance, min, max and sum of a numeric column.

    Nulls, NaN, ``inf`` and ``-inf`` are left out (treated as missing); ``count`` is the
    number of finite values. The mean, variance and sum are computed exactly and rounded
    once, so they are the same however the data was split and merged.

    ``extract_output`` returns ``{"count", "mean", "variance", "min", "max", "sum"}``. With
    no values ``min``/``max`` are None and the rest 0. A variance or sum beyond float64's
    range (values beyond about 1e154) is None: JSON has no infinity.
    """

    def __init__(self, column: str) -> None:
        self.column = column

    def create_accumulator(self) -> MomentsAccumulator:
        return MomentsAccumulator()

    def add_batch(
        self, accumulator: MomentsAccumulator, batch: pa.RecordBatch
    ) -> MomentsAccumulator:
        column = column_of(batch, self.column)
        return accumulator.add(numeric_values(column), precision_of(column.type))

    def merge_accumulators(self, accumulators: Iterable[MomentsAccumulator]) -> MomentsAccumulator:
        result = MomentsAccumulator()
        for accumulator in accumulators:
            result.merge(accumulator)
        return result

    def extract_output(self, accumulator: MomentsAccumulator) -> dict[str, Any]:
        if not accumulator.count:
            return {"count": 0, "mean": 0.0, "variance": 0.0, "min": None, "max": None, "sum": 0.0}
        return {
            "count": accumulator.count,
            "mean": accumulator.mean(),
            "variance": accumulator.variance(),
            "min": accumulator.minimum,
            "max": accumulator.maximum,
            "sum": accumulator.total(),
        }


# --- Value counts ------------------------------------------------------------------------


def vocabulary_order(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Orders ``(value, count)`` pairs by descending count, ties by descending UTF-8 bytes.

    This is tf.Transform's order (it sorts ``(count, bytes)`` tuples largest first).
    """
    return sorted(counts.items(), key=lambda kv: (kv[1], kv[0].encode("utf-8")), reverse=True)


class ValueCounts(Analyzer[dict[str, int]]):
    """Frequencies of the distinct values of a column, as a vocabulary.

    ``extract_output`` returns ``{"vocabulary": [...], "frequencies": [...], "distinct": n}``
    where ``distinct`` counts the eligible distinct values before ``top_k`` and
    ``frequency_threshold`` are applied. Non-string values are counted by
    :func:`string_form`. Nulls are not counted, and neither are NaN, ``inf`` and ``-inf`` in
    float columns (treated as missing: they never become a vocabulary entry or a fitted
    mode; at apply time they are out-of-vocabulary values). Counts are exact and the order
    is total, so the output does not depend on how the data was split or merged.

    Args:
        column: Column to count.
        top_k: Keep only the most frequent values (after the threshold).
        frequency_threshold: Keep only values seen at least this many times.
        include_empty: Count the empty string (tf.Transform leaves it out).
        exclude_newlines: Leave out values containing ``\\n`` or ``\\r``, as tf.Transform
            does for text vocabulary files.
    """

    def __init__(
        self,
        column: str,
        top_k: int | None = None,
        frequency_threshold: int | None = None,
        include_empty: bool = False,
        exclude_newlines: bool = True,
    ) -> None:
        self.column = column
        self.top_k = top_k
        self.frequency_threshold = frequency_threshold
        self.include_empty = include_empty
        self.exclude_newlines = exclude_newlines

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_batch(self, accumulator: dict[str, int], batch: pa.RecordBatch) -> dict[str, int]:
        column = column_of(batch, self.column)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        values = string_form(finite_floats(column)).drop_null()
        if not len(values):
            return accumulator
        counted = pc.value_counts(values)
        names = counted.field("values").to_pylist()
        freqs = counted.field("counts").to_pylist()
        for name, freq in zip(names, freqs, strict=True):
            accumulator[name] = accumulator.get(name, 0) + freq
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        # Folds into the first accumulator (the Analyzer contract allows it): Beam merges
        # one partial at a time, and copying the whole vocabulary each time is quadratic.
        result: dict[str, int] | None = None
        for accumulator in accumulators:
            if result is None:
                result = accumulator
                continue
            for name, freq in accumulator.items():
                result[name] = result.get(name, 0) + freq
        return {} if result is None else result

    def _eligible(self, value: str) -> bool:
        if value == "" and not self.include_empty:
            return False
        return not (self.exclude_newlines and ("\n" in value or "\r" in value))

    def extract_output(self, accumulator: dict[str, int]) -> dict[str, Any]:
        eligible = {k: v for k, v in accumulator.items() if self._eligible(k)}
        kept = eligible
        if self.frequency_threshold is not None:
            kept = {k: v for k, v in kept.items() if v >= self.frequency_threshold}
        ordered = vocabulary_order(kept)
        if self.top_k is not None:
            ordered = ordered[: self.top_k]
        return {
            "vocabulary": [k for k, _ in ordered],
            "frequencies": [v for _, v in ordered],
            "distinct": len(eligible),
        }
