"""Quantiles: a deterministic, mergeable summary and the bucket boundaries read from it.

:class:`QuantileSummary` keeps exact distinct values with counts up to a bound, then a
deterministic relative-error histogram, so the same multiset of values gives the same
summary however it was split and merged (see :mod:`transforms.ops.analyzers` on
determinism). Boundaries are read with the rule of tf.Transform's quantiles combiner
(tfx_bsl), exact on data with up to about 2,000 distinct values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from transforms.core.steps import Analyzer
from transforms.ops.arrays import column_of, numeric_values

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
        """Adds finite float64 values without -0.0 (as :func:`~transforms.ops.arrays.split_finite` returns them)."""
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
