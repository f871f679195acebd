"""Dataset statistics: per-column counts, moments, quantiles and most frequent values.

:class:`DatasetStats` is an :class:`~transforms.core.steps.Analyzer`, so pipelines combine it
over the whole data set like any fitted step (per split, then merged). Its output is the
``stats.json`` written next to a dataset. Every batch is summarised with vectorised
pyarrow/NumPy calls; per-value Python runs only over the distinct values of a batch.

Numeric statistics are deterministic: moments are exact sums and quantiles come from the
order-independent :class:`~transforms.ops.quantiles.QuantileSummary`, so the same data gives
the same numbers however it was bundled and merged. NaN and infinities are counted per
column (``non_finite``) and left out of every other numeric statistic.

Two distributions feed data validation (:mod:`transforms.validation`), built as TensorFlow
Data Validation builds them so that drift and skew measures agree with TFDV's: the
STANDARD histogram of numeric columns (:func:`standard_histogram`, TFDV's
``quantiles_util.generate_equi_width_histogram`` over 1000 quantiles) and the rank
histogram (most frequent values) of string, boolean, date and time columns.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from typing import Any

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import HIDDEN_PREFIX, type_name
from transforms.core.steps import Analyzer
from transforms.ops.analyzers import MomentsAccumulator
from transforms.ops.arrays import precision_of, split_finite
from transforms.ops.quantiles import QuantileSummary, quantiles_of

# Map size (log2) of the frequent-strings sketch: counts are exact while a column has fewer
# than 0.75 * 2**13 = 6144 distinct values, and estimates (with a known bound) beyond.
_FREQUENT_LG_MAX = 13
# Distinct values a numeric column's quantile summary keeps exactly; beyond, quantiles are
# within a relative 2**-bits of exact (QuantileSummary), about 0.4% for data spanning 30
# binary orders of magnitude. Smaller than the fitting default: stats cover every column.
STATS_MAX_BINS = 1 << 14
# TFDV's defaults: 10 equal-width buckets (num_histogram_buckets), read from
# _NUM_QUANTILES_FACTOR_FOR_STD_HISTOGRAM (100) * num_quantiles_histogram_buckets (10)
# quantiles, and a rank histogram of the 1000 most frequent values.
HISTOGRAM_BUCKETS = 10
HISTOGRAM_QUANTILES = 1000
RANK_HISTOGRAM_SIZE = 1000
# Distinct values a boolean, date or time column is counted exactly for its rank histogram
# (as many as the string sketch counts exactly); past this it has none.
_DISCRETE_MAX_COUNTS = 6144


def _kind(tp: pa.DataType) -> str:
    if pa.types.is_integer(tp) or pa.types.is_floating(tp):
        return "numeric"
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return "string"
    if (
        pa.types.is_boolean(tp)
        or pa.types.is_date(tp)
        or pa.types.is_timestamp(tp)
        or pa.types.is_time(tp)
    ):
        return "discrete"
    return "other"


class FrequentStrings:
    """A picklable frequent-items sketch of strings (datasketches' object is not picklable)."""

    def __init__(self, lg_max_map_size: int = _FREQUENT_LG_MAX) -> None:
        self.lg_max_map_size = lg_max_map_size
        self.sketch = datasketches.frequent_strings_sketch(lg_max_map_size)

    def update(self, values: Iterable[str], counts: Iterable[int]) -> None:
        """Adds each value ``count`` times."""
        for value, count in zip(values, counts, strict=True):
            self.sketch.update(value, int(count))

    def merge(self, other: FrequentStrings) -> FrequentStrings:
        """Folds ``other`` into this sketch and returns it."""
        if not other.sketch.is_empty():
            self.sketch.merge(other.sketch)
        return self

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` most frequent values with their (estimated) counts, ties by value."""
        if self.sketch.is_empty():
            return []
        items = self.sketch.get_frequent_items(
            datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES
        )
        ranked = sorted(((item[0], int(item[1])) for item in items), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:k]

    def __getstate__(self) -> dict[str, Any]:
        return {"lg": self.lg_max_map_size, "sketch": self.sketch.serialize()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.lg_max_map_size = state["lg"]
        self.sketch = datasketches.frequent_strings_sketch.deserialize(state["sketch"])


@dataclasses.dataclass
class ColumnAccumulator:
    """Everything :class:`DatasetStats` keeps for one column.

    Attributes:
        count: Non-null values.
        missing: Nulls.
        empty: Empty strings (string columns).
        non_finite: NaN, inf and -inf values (float columns); counted in ``count``, left out
            of the moments, quantiles and top values.
        nan: NaN values among ``non_finite``.
        pos_inf: ``inf`` values among ``non_finite`` (the rest are ``-inf``).
        moments: Exact count, sums, min and max of the finite values (numeric columns).
        summary: Quantile summary of the finite values (numeric columns); while exact it
            also gives their most frequent values.
        counts: Exact value counts while the column has at most 6144 distinct values;
            None once it has more (boolean, date and time columns).
        frequent: Frequent-values sketch (string columns).
    """

    count: int = 0
    missing: int = 0
    empty: int = 0
    non_finite: int = 0
    nan: int = 0
    pos_inf: int = 0
    moments: MomentsAccumulator | None = None
    summary: QuantileSummary | None = None
    counts: dict[Any, int] | None = None
    frequent: FrequentStrings | None = None


Accumulator = dict[str, ColumnAccumulator]


class DatasetStats(Analyzer[Accumulator]):
    """Per-column statistics of a data set, mergeable across workers.

    ``extract_output`` returns, for each visible column of ``schema`` in order::

        {"type": spec type name, "count": non-null values, "missing": nulls,
         # string columns
         "empty": empty strings,
         # numeric columns: NaN, inf and -inf are counted in "count" and "non_finite"
         # (float columns) and left out of everything below
         "non_finite": NaN and infinite values, "mean", "std" (population), "min", "max",
         "quantiles": [q0, q1/quantiles, ..., q1] (the ends are the exact min and max),
         # TFDV's STANDARD histogram of the values (numeric columns with a finite value)
         "histogram": {"boundaries": [min, ..., max], "counts": [...],
                       # only when not zero (float columns)
                       "nan": n, "neg_inf": n, "pos_inf": n},
         # TFDV's QUANTILES histogram: 10 equal-count buckets (boundaries may repeat)
         "quantiles_histogram": {"boundaries": [...], "counts": [...], ...},
         # most frequent values, ties by value
         "top_values": [{"value": v, "count": n}, ...],
         # string, boolean, date and time columns: TFDV's rank histogram
         "rank_histogram": [{"value": v, "count": n}, ...]}

    Quantiles are exact while a column has at most 16,384 distinct finite values, and
    within a relative ``2**-bits`` of exact beyond (:class:`QuantileSummary`); the quantile
    at rank r is the smallest value v with ``#(values <= v) >= r * n``. ``top_values`` is
    exact for string columns with fewer than 6144 distinct values (an estimate beyond);
    numeric, boolean, date and time columns have it only while they have at most
    ``max_distinct`` distinct values (it is left out otherwise). Dates and times are given
    as ISO-8601 strings. Statistics that do not exist (the mean of an empty column, a
    variance beyond float64's range) are null, so the output is valid JSON. Hidden ``__``
    columns are skipped. Everything but string ``top_values`` past 6144 distinct values is
    independent of how the data was bundled and merged.

    ``histogram`` has 10 equal-width buckets from the finite minimum to the finite maximum
    (one bucket ``[v, v]`` when every finite value is ``v``), with fractional counts: it is
    read from 1000 quantiles as TFDV reads it (:func:`standard_histogram`). NaN and
    infinite values are counted beside it, as TFDV's histogram keeps them (``num_nan`` and
    its ``-inf``/``inf`` buckets). ``quantiles_histogram`` is TFDV's QUANTILES histogram
    (:func:`quantiles_histogram`), read from the same quantiles. ``rank_histogram`` holds the 1000 most frequent values,
    ties by value: exact while a column has fewer than 6144 distinct values; past that,
    estimates for strings and left out for boolean, date and time columns.

    Args:
        schema: Columns to describe (a batch may carry more; those are ignored).
        top_k: How many most frequent values to report.
        quantiles: Number of quantile intervals; ``quantiles + 1`` values are reported.
        max_distinct: Most distinct values a non-string column may have to get
            ``top_values``.
    """

    def __init__(
        self, schema: pa.Schema, top_k: int = 10, quantiles: int = 10, max_distinct: int = 100
    ) -> None:
        if top_k < 0:
            raise ValueError(f"top_k must be 0 or more, got {top_k}")
        if quantiles < 1:
            raise ValueError(f"quantiles must be at least 1, got {quantiles}")
        if max_distinct < 0:
            raise ValueError(f"max_distinct must be 0 or more, got {max_distinct}")
        self.schema = pa.schema([f for f in schema if not f.name.startswith(HIDDEN_PREFIX)])
        self.top_k = top_k
        self.quantiles = quantiles
        self.max_distinct = max_distinct
        # Top values of a numeric column are read from its summary while it is exact.
        self.max_bins = max(STATS_MAX_BINS, max_distinct)
        # Value counts of boolean, date and time columns feed top_values (up to max_distinct
        # values) and the rank histogram (up to _DISCRETE_MAX_COUNTS).
        self._max_counts = max(_DISCRETE_MAX_COUNTS, max_distinct)

    # --- accumulation ----------------------------------------------------------------------

    def _new_column(self, tp: pa.DataType) -> ColumnAccumulator:
        kind = _kind(tp)
        acc = ColumnAccumulator()
        if kind == "numeric":
            acc.moments = MomentsAccumulator()
            acc.summary = QuantileSummary(self.max_bins)
        if kind == "discrete":
            acc.counts = {}
        if kind == "string":
            acc.frequent = FrequentStrings()
        return acc

    def create_accumulator(self) -> Accumulator:
        return {f.name: self._new_column(f.type) for f in self.schema}

    def add_batch(self, accumulator: Accumulator, batch: pa.RecordBatch) -> Accumulator:
        names = batch.schema.names
        for field in self.schema:
            if field.name not in names:
                raise ValueError(
                    f"column {field.name!r} of the stats schema is not in the batch;"
                    f" batch columns are {', '.join(names)}"
                )
            values = batch.column(names.index(field.name))
            self._add_column(accumulator[field.name], values)
        return accumulator

    def _add_column(self, acc: ColumnAccumulator, values: pa.Array) -> None:
        nulls = values.null_count
        acc.missing += nulls
        acc.count += len(values) - nulls
        if len(values) == nulls:
            return
        if acc.moments is not None and acc.summary is not None:
            finite, dropped = split_finite(values)
            acc.non_finite += dropped
            if dropped:
                raw = values.drop_null().to_numpy(zero_copy_only=False)
                acc.nan += int(np.count_nonzero(np.isnan(raw)))
                acc.pos_inf += int(np.count_nonzero(np.isposinf(raw)))
            acc.moments.add(finite, precision_of(values.type))
            acc.summary.update(finite)
            return
        present = values.drop_null()
        if acc.frequent is not None:
            acc.empty += int(pc.sum(pc.equal(present, "")).as_py() or 0)
            counted = pc.value_counts(present)
            acc.frequent.update(
                counted.field("values").to_pylist(), counted.field("counts").to_pylist()
            )
        if acc.counts is not None:
            counted = pc.value_counts(present)
            batch_counts = dict(
                zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                )
            )
            acc.counts = self._merge_counts(acc.counts, batch_counts)

    def _merge_counts(
        self, left: dict[Any, int] | None, right: dict[Any, int] | None
    ) -> dict[Any, int] | None:
        if left is None or right is None:
            return None
        merged = dict(left)
        for value, count in right.items():
            merged[value] = merged.get(value, 0) + count
        # Beyond this the column is not "a few values": stop counting for good.
        return merged if len(merged) <= self._max_counts else None

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        result = self.create_accumulator()
        accumulators = list(accumulators)
        for name, into in result.items():
            summaries = []
            for accumulator in accumulators:
                other = accumulator[name]
                into.count += other.count
                into.missing += other.missing
                into.empty += other.empty
                into.non_finite += other.non_finite
                into.nan += other.nan
                into.pos_inf += other.pos_inf
                if into.moments is not None and other.moments is not None:
                    into.moments.merge(other.moments)
                if other.summary is not None:
                    summaries.append(other.summary)
                if into.frequent is not None and other.frequent is not None:
                    into.frequent.merge(other.frequent)
                if into.counts is not None:
                    into.counts = self._merge_counts(into.counts, other.counts)
            if into.summary is not None:
                into.summary.merge(*summaries)
        return result

    # --- output ----------------------------------------------------------------------------

    def extract_output(self, accumulator: Accumulator) -> dict[str, Any]:
        return {f.name: self._column_output(f.type, accumulator[f.name]) for f in self.schema}

    def _column_output(self, tp: pa.DataType, acc: ColumnAccumulator) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type_name(tp), "count": acc.count, "missing": acc.missing}
        if acc.frequent is not None:
            out["empty"] = acc.empty
        if acc.moments is not None and acc.summary is not None:
            integer = pa.types.is_integer(tp)
            if pa.types.is_floating(tp):
                out["non_finite"] = acc.non_finite
            m = acc.moments
            if m.count:
                variance = m.variance()
                std = math.sqrt(variance) if variance is not None else None
                ranks = [i / self.quantiles for i in range(self.quantiles + 1)]
                quantiles = quantiles_of(acc.summary, ranks)
                # Past its exact size the summary holds bin minima; the extremes are known.
                quantiles[0], quantiles[-1] = m.minimum, m.maximum
                out.update(
                    mean=_number(m.mean(), False),
                    std=_number(std, False),
                    min=_number(m.minimum, integer),
                    max=_number(m.maximum, integer),
                    quantiles=[_number(q, integer) for q in quantiles],
                )
            else:
                out.update(mean=None, std=None, min=None, max=None, quantiles=[])
            lows, cumulative = acc.summary.cumulative()
            if m.count:
                out["histogram"] = standard_histogram(
                    lows,
                    cumulative,
                    m.minimum,
                    m.maximum,
                    nan=acc.nan,
                    neg_inf=acc.non_finite - acc.nan - acc.pos_inf,
                    pos_inf=acc.pos_inf,
                )
                if out["histogram"] is None:
                    del out["histogram"]
                out["quantiles_histogram"] = quantiles_histogram(
                    lows,
                    cumulative,
                    nan=acc.nan,
                    neg_inf=acc.non_finite - acc.nan - acc.pos_inf,
                    pos_inf=acc.pos_inf,
                )
            if acc.summary.exact and len(lows) <= self.max_distinct:
                counts = np.diff(cumulative, prepend=0)
                ranked = sorted(zip(lows.tolist(), counts.tolist(), strict=True), key=_by_count)
                out["top_values"] = [
                    {"value": _number(v, integer), "count": int(n)} for v, n in ranked[: self.top_k]
                ]
        if acc.frequent is not None:
            ranked_strings = acc.frequent.top(max(self.top_k, RANK_HISTOGRAM_SIZE))
            out["top_values"] = [{"value": v, "count": n} for v, n in ranked_strings[: self.top_k]]
            out["rank_histogram"] = [
                {"value": v, "count": n} for v, n in ranked_strings[:RANK_HISTOGRAM_SIZE]
            ]
        elif acc.counts is not None:
            ranked = sorted(acc.counts.items(), key=_by_count)
            if len(ranked) <= self.max_distinct:
                out["top_values"] = [
                    {"value": _json_value(v), "count": n} for v, n in ranked[: self.top_k]
                ]
            out["rank_histogram"] = [
                {"value": _json_value(v), "count": n} for v, n in ranked[:RANK_HISTOGRAM_SIZE]
            ]
        return out


def _tfdv_quantiles(
    lows: np.ndarray, cumulative: np.ndarray, num_quantiles: int
) -> tuple[np.ndarray, np.ndarray]:
    """``num_quantiles + 1`` quantiles and their cumulative counts, as tfx_bsl returns them.

    tfx_bsl's ``QuantilesSketch.GetQuantilesAndCumulativeWeights`` (TFDV's sketch) gives,
    for rank i, the smallest value v with ``#(values <= v) > i * n / num_quantiles`` (the
    last value for i = num_quantiles), and ``#(values <= v)``.
    """
    total = float(cumulative[-1])
    targets = [i * total / num_quantiles for i in range(num_quantiles + 1)]
    index = np.minimum(np.searchsorted(cumulative, targets, side="right"), len(lows) - 1)
    return lows[index], cumulative[index].astype(np.float64)


def _sketch_quantiles(
    lows: np.ndarray, cumulative: np.ndarray, neg_inf: int, pos_inf: int, num_quantiles: int
) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of the finite values plus the infinities, as TFDV's sketch holds them."""
    values = np.asarray(lows, dtype=np.float64)
    cum = np.asarray(cumulative, dtype=np.float64)
    # -inf first, inf last.
    if neg_inf:
        values = np.concatenate(([-math.inf], values))
        cum = np.concatenate(([float(neg_inf)], cum + neg_inf))
    if pos_inf:
        values = np.concatenate((values, [math.inf]))
        cum = np.concatenate((cum, [cum[-1] + pos_inf]))
    return _tfdv_quantiles(values, cum, num_quantiles)


def _bin_weights(
    boundaries: np.ndarray, cumulative: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TFDV's ``quantiles_util._get_bin_weights``: the quantiles histogram's buckets.

    Returns each bucket's low and high bound and its count: buckets with the same high
    bound share their counts evenly, and the count of the first quantile (the minimum's) is
    spread over the leading buckets identical to the first.
    """
    low, high = boundaries[:-1], boundaries[1:]
    counts = np.diff(cumulative)
    size = len(low)
    i = 0
    while i < size:
        j = i + 1
        while j < size and high[i] == high[j]:
            j += 1
        if j > i + 1:
            counts[i:j] = counts[i:j].sum() / (j - i)
        i = j
    same = 0
    while same < size and low[0] == low[same] and high[0] == high[same]:
        same += 1
    if same:
        counts[:same] += cumulative[0] / same
    return low, high, counts


def _overlap(
    low: float, high: float, low_bound: float, high_bound: float, first: bool
) -> tuple[float, bool, bool]:
    """TFDV's ``quantiles_util._overlap``: the share of bucket [low, high] in an interval.

    Returns the share (values uniform within the bucket), whether the bucket lies wholly
    before the interval and whether it lies wholly after. A point bucket on the interval's
    low bound belongs to the interval only for the first interval (it was counted in the
    previous one otherwise).
    """
    if high == low == low_bound:
        return (1.0, False, False) if first else (0.0, True, False)
    if high < low_bound:
        return 0.0, True, False
    if low > high_bound:
        return 0.0, False, True
    if low_bound <= low and high_bound >= high:
        return 1.0, False, False
    if low_bound <= low:
        return (high_bound - low) / (high - low), False, False
    if high_bound >= high:
        return (high - low_bound) / (high - low), False, False
    return (high_bound - low_bound) / (high - low), False, False


def standard_histogram(
    lows: np.ndarray,
    cumulative: np.ndarray,
    minimum: float,
    maximum: float,
    *,
    nan: int = 0,
    neg_inf: int = 0,
    pos_inf: int = 0,
    num_buckets: int = HISTOGRAM_BUCKETS,
    num_quantiles: int = HISTOGRAM_QUANTILES,
) -> dict[str, Any] | None:
    """TFDV's STANDARD histogram of a numeric column, built as TFDV builds it.

    TFDV (``basic_stats_generator``) reads ``num_quantiles + 1`` quantiles with their
    cumulative counts from its sketch of the non-NaN values, infinities included, and
    ``quantiles_util.generate_equi_width_histogram`` turns them into ``num_buckets``
    equal-width buckets from the finite minimum to the finite maximum: infinite quantiles
    are stripped (and counted apart), the quantiles make a histogram of their own, and
    each equal-width bucket takes the share of every quantile bucket it overlaps, values
    being assumed uniform within a bucket. This function does the same on a
    :class:`~transforms.ops.quantiles.QuantileSummary` of the finite values, with the
    infinities put back at its ends.

    Args:
        lows: Sorted distinct finite values (bin minima), as
            :meth:`QuantileSummary.cumulative` returns them.
        cumulative: Number of finite values up to and including each of ``lows``.
        minimum: Smallest finite value.
        maximum: Largest finite value.
        nan: NaN values (kept beside the buckets, as TFDV's ``num_nan``).
        neg_inf: ``-inf`` values.
        pos_inf: ``inf`` values.
        num_buckets: Equal-width buckets.
        num_quantiles: Quantile intervals read first.

    Returns:
        ``{"boundaries": [...], "counts": [...]}`` (``num_buckets + 1`` boundaries, or
        ``[v, v]`` and one count when ``minimum == maximum``), with ``"nan"``, ``"neg_inf"``
        and ``"pos_inf"`` counts when not zero; None when there is no finite value or the
        bucket width overflows float64 (TFDV then has no buckets either).
    """
    if not len(lows):
        return None
    quantiles, counts = _sketch_quantiles(lows, cumulative, neg_inf, pos_inf, num_quantiles)
    # quantiles_util._strip_infinities.
    stripped_neg = 0.0
    neg_index = int(np.searchsorted(quantiles, -math.inf, side="right"))
    if neg_index:
        stripped_neg = float(counts[neg_index - 1])
        quantiles, counts = quantiles[neg_index:], counts[neg_index:] - stripped_neg
    if pos_inf:
        pos_index = int(np.searchsorted(quantiles, math.inf, side="left"))
        finite_count = counts[-1] - pos_inf
        quantiles = np.concatenate((quantiles[:pos_index], [maximum]))
        counts = np.concatenate((counts[:pos_index], [finite_count]))
    low, high, weights = _bin_weights(quantiles, counts)
    if minimum == maximum:
        boundaries = np.array([minimum, maximum], dtype=np.float64)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            boundaries = np.linspace(minimum, maximum, num_buckets + 1)
        if not np.isfinite(boundaries).all():
            return None
    out_counts: list[float] = []
    start = 0
    for i in range(len(boundaries) - 1):
        low_bound, high_bound = float(boundaries[i]), float(boundaries[i + 1])
        count = 0.0
        for current in range(start, len(low)):
            share, precedes, follows = _overlap(
                float(low[current]), float(high[current]), low_bound, high_bound, i == 0
            )
            if follows:
                break
            if precedes:
                start = current
            count += share * float(weights[current])
        out_counts.append(count)
    histogram: dict[str, Any] = {"boundaries": boundaries.tolist(), "counts": out_counts}
    for key, value in (("nan", nan), ("neg_inf", stripped_neg), ("pos_inf", pos_inf)):
        if value:
            histogram[key] = _count(value)
    return histogram


def quantiles_histogram(
    lows: np.ndarray,
    cumulative: np.ndarray,
    *,
    nan: int = 0,
    neg_inf: int = 0,
    pos_inf: int = 0,
    num_buckets: int = HISTOGRAM_BUCKETS,
    num_quantiles: int = HISTOGRAM_QUANTILES,
) -> dict[str, Any] | None:
    """TFDV's QUANTILES histogram of a numeric column: ``num_buckets`` equal-count buckets.

    TFDV reads it from the same ``num_quantiles + 1`` quantiles as the STANDARD histogram
    (:func:`standard_histogram`), keeping every ``num_quantiles / num_buckets``-th
    (``quantiles_util.rebin_quantiles``) and weighting the buckets as
    ``generate_quantiles_histogram`` does: buckets with the same high bound share their
    count, the minimum's count goes to the leading buckets equal to the first. Repeated
    boundaries make point buckets ``[v, v]`` (a value holding more than a tenth of the
    data). It is what TFDV's Jensen-Shannon divergence compares with ``source: QUANTILES``:
    less sensitive than the STANDARD histogram to a few extreme values, whose equal-width
    buckets move with the maximum.

    The buckets are read from the quantiles of the finite values; the infinities are
    counted apart, exactly (``"neg_inf"`` and ``"pos_inf"``), as the STANDARD histogram
    strips them. Quantiles taken with the infinities would give the end buckets an infinite
    bound and lump the finite values sharing those buckets in with the infinities (with a
    tenth of the values infinite at each end, about twice as many).

    Returns:
        ``{"boundaries": [...], "counts": [...]}`` (boundaries may repeat; the counts sum
        to the number of finite values), with ``"nan"``, ``"neg_inf"`` and ``"pos_inf"``
        when not zero; None without a finite value.
    """
    if not len(lows) or num_quantiles % num_buckets:
        return None
    quantiles, counts = _tfdv_quantiles(
        np.asarray(lows, dtype=np.float64), np.asarray(cumulative, dtype=np.float64), num_quantiles
    )
    step = num_quantiles // num_buckets
    low, high, weights = _bin_weights(quantiles[::step], counts[::step])
    boundaries = low.tolist()[:1] + high.tolist()
    histogram: dict[str, Any] = {"boundaries": boundaries, "counts": weights.tolist()}
    for key, value in (("nan", nan), ("neg_inf", neg_inf), ("pos_inf", pos_inf)):
        if value:
            histogram[key] = _count(value)
    return histogram


def _count(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _by_count(item: tuple[Any, int]) -> tuple[int, Any]:
    return (-item[1], item[0])


def _number(x: float | None, integer: bool) -> float | int | None:
    if x is None or not math.isfinite(x):
        return None
    return int(x) if integer else float(x)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def json_safe(obj: Any) -> Any:
    """Returns ``obj`` with NaN and infinities replaced by None, recursively.

    NumPy scalars become Python numbers; tuples become lists.
    """
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def stats_to_json(stats: dict[str, Any]) -> str:
    """Serialises :meth:`DatasetStats.extract_output` as stable, indented, strict JSON."""
    return json.dumps(json_safe(stats), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
