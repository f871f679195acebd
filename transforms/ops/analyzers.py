"""Mergeable full-pass statistics: moments, value counts and quantile summaries.

Each analyzer turns record batches into an accumulator, merges accumulators from different
workers and extracts JSON-serialisable parameters (the *fit* half of a step, see
:class:`~transforms.core.steps.Analyzer`). Work per batch is vectorised with pyarrow and NumPy.

**Missing and non-finite values.** Nulls are skipped everywhere. The numeric analyzers
(:class:`Moments`, :class:`Quantiles`) also skip NaN, ``inf`` and ``-inf``: a non-finite
value is treated as missing, so one of them cannot turn a fitted mean, variance, range or
boundary into NaN. :class:`ValueCounts` leaves non-finite floats out too (a NaN is never a
vocabulary entry or a fitted mode). ``-0.0`` is counted as ``0.0``.

**Determinism.** Every accumulator here is a function of the multiset of values it has seen,
not of their order or of how they were split into bundles and merged: moments are exact
integer sums, value counts are exact, and quantiles come from :class:`QuantileSummary`
(exact distinct values with counts up to a bound, then a deterministic relative-error
histogram). The same input therefore gives the same fitted parameters, bit for bit, on one
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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.steps import Analyzer


def column_of(batch: pa.RecordBatch, column: str) -> pa.Array:
    """Returns one column of a batch, failing with the columns that exist.

    Raises:
        KeyError: if the batch has no such column (a spec or code error, not a data error).
    """
    index = batch.schema.get_field_index(column)
    if index < 0:
        raise KeyError(f"column {column!r} not in batch; columns are {batch.schema.names}")
    return batch.column(index)


def split_finite(array: pa.Array) -> tuple[np.ndarray, int]:
    """The finite values of a numeric or boolean array as float64, and how many were not.

    Nulls are dropped and not counted. NaN, ``inf`` and ``-inf`` are dropped and counted;
    ``-0.0`` becomes ``0.0`` (so minima, maxima and summaries do not depend on which of the
    two zeros came first). The returned array is always a fresh copy.

    Raises:
        TypeError: for a column that is neither numeric nor boolean.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.int8())
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        raise TypeError(f"expected a numeric column, got {array.type}")
    raw = array.drop_null().to_numpy(zero_copy_only=False)
    if raw.dtype.kind in "iub":
        # Integers are finite and have no -0.0; astype copies.
        return raw.astype(np.float64), 0
    # Adding 0.0 turns -0.0 into 0.0 (and copies: arrays from Arrow may be read-only views).
    values = raw + 0.0 if raw.dtype == np.float64 else raw.astype(np.float64)
    if raw.dtype != np.float64:
        values += 0.0
    finite = np.isfinite(values)
    dropped = len(values) - int(np.count_nonzero(finite))
    if dropped:
        values = values[finite]
    return values, dropped


def precision_of(tp: pa.DataType) -> int:
    """Significant bits of a numeric type's values as float64, for :func:`exact_sums`."""
    if pa.types.is_float64(tp):
        return 53
    if pa.types.is_floating(tp):
        return 24
    return 0


def numeric_values(array: pa.Array) -> np.ndarray:
    """The finite, non-null values of a numeric or boolean array as float64 (see
    :func:`split_finite`)."""
    return split_finite(array)[0]


def finite_floats(array: pa.Array) -> pa.Array:
    """``array`` without its NaN and infinite values if it is a float array (else as is)."""
    if pa.types.is_floating(array.type) and len(array):
        keep = pc.is_finite(array)
        if keep.null_count or not pc.all(keep).as_py():
            return array.filter(keep)
    return array


def string_form(array: pa.Array) -> pa.Array:
    """Returns an array's values as strings, the form vocabularies count and look up.

    Strings pass through; integers and booleans use Arrow's decimal/``true`` forms; floats
    use NumPy's shortest round-trip form of their own precision (``np.float32(0.1)`` ->
    ``'0.1'``, ``1.0`` -> ``'1.0'``), computed once per distinct value. Nulls stay null.
    """
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    if pa.types.is_dictionary(array.type):
        return string_form(array.dictionary_decode())
    if pa.types.is_floating(array.type):
        encoded = pc.dictionary_encode(array)
        dictionary = encoded.dictionary.to_numpy(zero_copy_only=False)
        names = pa.array([str(v) for v in dictionary], pa.string())
        return pc.take(names, encoded.indices)
    if pa.types.is_binary(array.type):
        return array.cast(pa.string())
    return array.cast(pa.string())


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


# --- Quantiles ---------------------------------------------------------------------------

MANTISSA_BITS = 52
# Distinct values a summary keeps exactly; past this it keeps at most this many bins.
DEFAULT_MAX_BINS = 1 << 16
# No summary may be smaller: with 0 mantissa bits left there is one bin per sign and binary
# exponent (2 * 2047 of them, zero and the subnormals included), which must always fit.
MIN_MAX_BINS = 1 << 12
# Values buffered before they are sorted into the bins (amortises the merge): four times
# the bins, at least this many.
_MIN_FOLD_VALUES = 1 << 16
_SIGNLESS = np.int64(0x7FFFFFFFFFFFFFFF)
# Summaries combined in one sort by QuantileSummary.merge (besides the one merged into).
_MERGE_GROUP = 15


def _ordered_keys(values: np.ndarray) -> np.ndarray:
    """Maps finite float64 values (no -0.0) to int64 keys in the same order."""
    bits = values.view(np.int64)
    # Negative floats: flipping every bit but the sign makes larger magnitudes smaller
    # (bits >> 63 is -1 for them, 0 otherwise).
    return bits ^ ((bits >> 63) & _SIGNLESS)


def _coarsen(keys: np.ndarray, bits: int) -> np.ndarray:
    """Keys of the bins of ``bits`` mantissa bits: the lower bits of |x| cleared."""
    drop = MANTISSA_BITS - bits
    if drop <= 0:
        return keys
    mask = np.int64(~((1 << drop) - 1))
    negative = keys < 0
    magnitude = np.where(negative, ~keys, keys) & mask
    return np.where(negative, ~magnitude, magnitude)


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal keys starts (keys sorted)."""
    if not len(keys):
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


class QuantileSummary:
    """A deterministic, mergeable summary of finite values for quantiles.

    **Exact while small.** Up to ``max_bins`` distinct values it holds every distinct value
    with its count, so quantiles are exact order statistics.

    **Bounded beyond.** Past ``max_bins`` distinct values, values that share their sign,
    binary exponent and first ``bits`` mantissa bits share a bin (an HDR-style histogram);
    ``bits`` drops from 52 (exact) one bit at a time, halving the resolution, until at most
    ``max_bins`` bins are left. Each bin keeps its count and its smallest value, and every
    quantile is the smallest value of a bin, so it is a value of the data.

    **Error bound.** A quantile read from the summary lies in the same bin as the exact
    quantile: within a relative ``2**-bits`` of it (for normal numbers; ``relative_error``).
    ``bits`` is the largest resolution at which the data has at most ``max_bins`` distinct
    bins, so it only depends on how spread out the values are: with the default 65,536
    bins, values spanning 7 binary orders of magnitude keep ``bits >= 13`` (0.012%).

    **Order-independent.** The summary is a function of the multiset of values alone:
    coarsening clears bits (so it composes), a part of the data never needs a coarser
    resolution than the whole, and merging adds counts and takes minima. Two summaries of
    the same values are equal whatever the order, bundling or merge tree. Memory is at most
    ``max_bins`` bins (24 bytes each) plus a buffer of ``4 * max_bins`` values (8 bytes
    each; at least 65,536): 4 MB with the default.

    Args:
        max_bins: Most distinct values kept exactly, and most bins kept afterwards (at
            least 4,096).
    """

    def __init__(self, max_bins: int = DEFAULT_MAX_BINS) -> None:
        if max_bins < MIN_MAX_BINS:
            raise ValueError(f"max_bins must be at least {MIN_MAX_BINS}, got {max_bins}")
        self.max_bins = max_bins
        self.bits = MANTISSA_BITS
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.lows = np.zeros(0, dtype=np.float64)
        self._fold_at = max(4 * max_bins, _MIN_FOLD_VALUES)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._pending_parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    # --- building -------------------------------------------------------------------------

    def update(self, values: np.ndarray) -> None:
        """Adds finite float64 values without -0.0 (as :func:`split_finite` returns them)."""
        if len(values):
            self._pending.append(values)
            self._pending_size += len(values)
            if self._pending_size >= self._fold_at:
                self._fold()

    def merge(self, *others: QuantileSummary) -> QuantileSummary:
        """Folds ``others`` into this summary and returns it (they keep their values).

        Summaries are combined 16 at a time, or when the result is read or pickled: one
        sort per group rather than one per summary (Beam merges accumulators one by one),
        with memory bounded by 16 summaries' bins.
        """
        for other in others:
            other._fold()
            if len(other.keys):
                # Arrays are never changed in place, so holding other's is safe.
                self._pending_parts.append((other.bits, other.keys, other.counts, other.lows))
            if len(self._pending_parts) >= _MERGE_GROUP:
                self._fold()
        return self

    def _fold(self) -> None:
        """Sorts the buffered values, and the summaries merged in, into the bins."""
        parts, self._pending_parts = self._pending_parts, []
        if self._pending:
            values = np.sort(np.concatenate(self._pending))
            self._pending = []
            self._pending_size = 0
            keys = _coarsen(_ordered_keys(values), self.bits)
            starts = _group_starts(keys)
            counts = np.diff(np.append(starts, len(keys))).astype(np.int64)
            # Sorted values: the first of each bin is its smallest.
            parts.append((self.bits, keys[starts], counts, values[starts]))
        if parts:
            self._combine(parts)

    def _combine(self, parts: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        bits = min([self.bits, *(p[0] for p in parts)])
        keys = [_coarsen(self.keys, bits), *(_coarsen(p[1], bits) for p in parts)]
        all_keys = np.concatenate(keys)
        counts = np.concatenate([self.counts, *(p[2] for p in parts)])
        lows = np.concatenate([self.lows, *(p[3] for p in parts)])
        order = np.argsort(all_keys, kind="stable")
        all_keys = all_keys[order]
        starts = _group_starts(all_keys)
        self.bits = bits
        self.keys = all_keys[starts]
        self.counts = np.add.reduceat(counts[order], starts) if len(starts) else counts
        self.lows = np.minimum.reduceat(lows[order], starts) if len(starts) else lows
        self._shrink()

    def _distinct_at(self, bits: int) -> int:
        coarse = _coarsen(self.keys, bits)
        return 1 + int(np.count_nonzero(coarse[1:] != coarse[:-1]))

    def _shrink(self) -> None:
        """Coarsens to the finest resolution with at most ``max_bins`` bins."""
        if len(self.keys) <= self.max_bins:
            return
        # The number of bins only falls as bits fall: binary search for the largest fit.
        low, high = 0, self.bits - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self._distinct_at(middle) <= self.max_bins:
                low = middle
            else:
                high = middle - 1
        coarse = _coarsen(self.keys, low)
        starts = _group_starts(coarse)
        self.bits = low
        self.keys = coarse[starts]
        self.counts = np.add.reduceat(self.counts, starts)
        # Bins are in value order, so a coarse bin's smallest value is its first fine bin's.
        self.lows = self.lows[starts]

    # --- reading --------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of values added."""
        self._fold()
        return int(self.counts.sum())

    @property
    def exact(self) -> bool:
        """Whether every distinct value is kept (quantiles are exact)."""
        self._fold()
        return self.bits == MANTISSA_BITS

    @property
    def relative_error(self) -> float:
        """Bound on a quantile's relative distance to the exact one (0 while exact)."""
        self._fold()
        return 0.0 if self.bits == MANTISSA_BITS else 2.0**-self.bits

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """Each bin's smallest value and the number of values up to and including the bin."""
        self._fold()
        return self.lows, np.cumsum(self.counts)

    # --- pickling and comparing -----------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        self._fold()
        return {
            "max_bins": self.max_bins,
            "bits": self.bits,
            "keys": self.keys,
            "counts": self.counts,
            "lows": self.lows,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_bins = state["max_bins"]
        self.bits = state["bits"]
        self.keys = state["keys"]
        self.counts = state["counts"]
        self.lows = state["lows"]
        self._fold_at = max(4 * self.max_bins, _MIN_FOLD_VALUES)
        self._pending = []
        self._pending_size = 0
        self._pending_parts = []

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSummary):
            return NotImplemented
        mine, theirs = self.__getstate__(), other.__getstate__()
        return all(np.array_equal(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # type: ignore[assignment]


def quantiles_of(summary: QuantileSummary, ranks: Sequence[float]) -> list[float]:
    """Returns the values at normalised ``ranks`` (0.5 = median) of a summary.

    The quantile at rank r is the smallest value v with ``#(values <= v) >= r * n`` (so
    the median of 1, 2, 3, 4 is 2; rank 0 is the minimum, rank 1 the maximum).

    Returns:
        One float per rank; NaN for each rank when the summary is empty.
    """
    lows, cumulative = summary.cumulative()
    if not len(lows):
        return [math.nan] * len(ranks)
    n = int(cumulative[-1])
    index = np.searchsorted(cumulative, [r * n for r in ranks], side="left")
    return [float(lows[min(int(i), len(lows) - 1)]) for i in index]


def bucket_boundaries(summary: QuantileSummary, num_buckets: int) -> list[float]:
    """The ``num_buckets - 1`` boundaries of equal-count buckets, as tf.Transform picks them.

    Boundary i is the smallest value v with ``#(values <= v) > i * n / num_buckets``
    (strictly), the rule of tfx_bsl's weighted quantiles summary that ``tft.quantiles``
    reads; the threshold is computed as it is there (``i * n`` then divided, in float64),
    so on exact summaries the boundaries are tf.Transform's. Repeats are kept.
    """
    lows, cumulative = summary.cumulative()
    if not len(lows) or num_buckets < 2:
        return []
    n = float(cumulative[-1])
    thresholds = [i * n / num_buckets for i in range(1, num_buckets)]
    index = np.searchsorted(cumulative, thresholds, side="right")
    return [float(lows[min(int(i), len(lows) - 1)]) for i in index]


class Quantiles(Analyzer[QuantileSummary]):
    """Quantile boundaries splitting a numeric column into equal-count buckets.

    Nulls, NaN, ``inf`` and ``-inf`` are left out (treated as missing). ``extract_output``
    returns ``{"boundaries": [...]}`` with ``num_buckets - 1`` values (see
    :func:`bucket_boundaries`; repeats kept, as in tf.Transform), or an empty list when the
    column has no finite values. Exact up to ``max_bins`` distinct values, within a relative
    ``2**-bits`` of exact beyond (:class:`QuantileSummary`); deterministic either way.
    """

    def __init__(self, column: str, num_buckets: int, max_bins: int = DEFAULT_MAX_BINS) -> None:
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
        self.column = column
        self.num_buckets = num_buckets
        self.max_bins = max_bins

    def create_accumulator(self) -> QuantileSummary:
        return QuantileSummary(self.max_bins)

    def add_batch(self, accumulator: QuantileSummary, batch: pa.RecordBatch) -> QuantileSummary:
        accumulator.update(numeric_values(column_of(batch, self.column)))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[QuantileSummary]) -> QuantileSummary:
        return QuantileSummary(self.max_bins).merge(*accumulators)

    def extract_output(self, accumulator: QuantileSummary) -> dict[str, Any]:
        return {"boundaries": bucket_boundaries(accumulator, self.num_buckets)}
