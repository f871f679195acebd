"""Drift and skew measures between two columns' statistics, as TFDV computes them.

Ports of TensorFlow Data Validation's ``anomalies/metrics.cc``, so that the values agree
with TFDV's (and Vertex Model Monitoring's) for the same statistics:

- :func:`l_infinity`: the L-infinity distance of two value-count maps, each normalised by
  its own total (TFDV's ``LInftyDistance``, ``MaxNormalizedDifference`` with
  ``kSeparateTotal``), with the value whose share differs most.
- :func:`jensen_shannon_histograms`: the Jensen-Shannon divergence of two STANDARD
  histograms (:func:`transforms.ops.stats.standard_histogram`): aligned on the union of
  their boundaries (counts spread uniformly within a bucket), point buckets, infinite
  values and NaN kept as buckets of their own, base-2 logarithms, capped at 1.0.
- :func:`jensen_shannon_counts`: the same divergence over two value-count maps.
- :func:`column_distance`: the measure of one column against its baseline, chosen by the
  column's type (L-infinity for string, boolean, date and time columns, Jensen-Shannon for
  numeric ones), as a ``validation.json`` measurement.

TFDV's quirks are kept on purpose, since agreeing with it is the point: infinite values of
the two histograms (``-inf`` and ``inf`` together) and their NaN values are compared as
separate buckets, so two columns with the same share of NaN still differ by it; NaN values
are dropped altogether when the two histograms' boundaries differ (TFDV's rebucketing does
not carry ``num_nan`` over), which for STANDARD histograms is whenever the minimum or the
maximum moved; when every share is equal, L-infinity names the last value in sorted order.

A column with values on one side and none on the other (null in every row of this run while
the baseline has values, or the reverse) is as far apart as two columns get: 1.0 for both
measures, as for disjoint distributions, rather than "not measured", so a column that
stopped arriving is drift over any threshold below 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "JENSEN_SHANNON",
    "L_INFINITY",
    "MEASURES",
    "QUANTILES",
    "SOURCES",
    "STANDARD",
    "EmptyHistogramError",
    "column_distance",
    "column_kind",
    "jensen_shannon_counts",
    "jensen_shannon_histograms",
    "l_infinity",
    "rank_counts",
]

L_INFINITY = "l_infinity"
JENSEN_SHANNON = "jensen_shannon"
MEASURES = (L_INFINITY, JENSEN_SHANNON)
# The histogram Jensen-Shannon compares for a numeric column (TFDV's HistogramSelection):
# the STANDARD one (TFDV's default) or the QUANTILES one.
STANDARD = "standard"
QUANTILES = "quantiles"
SOURCES = (STANDARD, QUANTILES)
_HISTOGRAM_KEYS = {STANDARD: "histogram", QUANTILES: "quantiles_histogram"}


class EmptyHistogramError(ValueError):
    """A histogram holds no values, so it has no distribution to compare."""


_NUMERIC_TYPES = frozenset(
    {
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "halffloat",
        "float16",
        "float32",
        "float64",
        "float",
        "double",
    }
)
_CATEGORICAL_TYPES = frozenset(
    {"string", "large_string", "bool", "date", "date32[day]", "date64[ms]", "timestamp"}
)
# Arrow's names of timestamps and times with a unit: timestamp[us, tz=UTC], time64[us].
_CATEGORICAL_PREFIXES = ("timestamp[", "time32[", "time64[")


def column_kind(type_name: str) -> str | None:
    """``"numeric"``, ``"categorical"`` or None (no measure) for a stats type name.

    Integers and floats are numeric; strings, booleans, dates, timestamps and times are
    categorical; binary and list columns have neither histogram.
    """
    if type_name in _NUMERIC_TYPES:
        return "numeric"
    if type_name in _CATEGORICAL_TYPES or type_name.startswith(_CATEGORICAL_PREFIXES):
        return "categorical"
    return None


# --- L-infinity ----------------------------------------------------------------------------


def _normalize(counts: Mapping[str, float]) -> dict[str, float]:
    # map_util.cc Normalize: a map summing to 0 is returned as it is.
    total = math.fsum(counts.values()) if counts else 0.0
    if total == 0.0:
        return dict(counts)
    return {k: v / total for k, v in counts.items()}


def l_infinity(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float, str | None]:
    """L-infinity distance between two value-count maps, each normalised by its own total.

    TFDV's ``LInftyDistance``: the largest ``|a[v] / sum(a) - b[v] / sum(b)|`` over the
    values of either map (a value missing from one map counts 0 there), and that value.
    Values are visited in sorted order and a later value wins a tie (TFDV's
    ``GetLInftyNorm`` compares with ``>=``), so when every share is equal the last value
    is named.

    Args:
        a: Value -> count of one data set (e.g. this run).
        b: Value -> count of the other (e.g. the baseline).

    Returns:
        The distance (0 to 1) and the value with the largest difference; ``(0.0, None)``
        when both maps are empty.
    """
    shares_a, shares_b = _normalize(a), _normalize(b)
    difference = dict(shares_a)
    for key, value in shares_b.items():
        difference[key] = difference.get(key, 0.0) - value
    best_key: str | None = None
    best = 0.0
    # Python orders str by code point, as std::map orders UTF-8 bytes.
    for key in sorted(difference):
        value = abs(difference[key])
        if value >= best:
            best_key, best = key, value
    return best, best_key


# --- Jensen-Shannon over value counts --------------------------------------------------------


def jensen_shannon_counts(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, capped at 1.0) of two value-count maps.

    TFDV's ``JensenShannonDivergence`` over string value counts: each map normalised by
    its total, ``M = (P + Q) / 2``, ``(KL(P || M) + KL(Q || M)) / 2``.

    Raises:
        ValueError: when a map is empty or holds a count that is not positive.
    """
    if not a or not b:
        raise ValueError("Jensen-Shannon divergence needs two non-empty value counts")
    for counts in (a, b):
        if any(count <= 0 for count in counts.values()):
            raise ValueError("Jensen-Shannon divergence needs positive counts")
    total_a, total_b = sum(a.values()), sum(b.values())
    divergence = 0.0
    for key in sorted(set(a) | set(b)):
        p, q = a.get(key, 0.0) / total_a, b.get(key, 0.0) / total_b
        m = (p + q) / 2
        if p != 0:
            divergence += p * math.log2(p / m)
        if q != 0:
            divergence += q * math.log2(q / m)
    return min(divergence / 2, 1.0)


# --- Jensen-Shannon over histograms ----------------------------------------------------------

# A bucket: (low, high, count).
_Bucket = tuple[float, float, float]


def _buckets(histogram: Mapping[str, Any]) -> tuple[list[_Bucket], float]:
    """TFDV's histogram proto from a ``stats.json`` histogram: buckets and NaN count."""
    boundaries = [float(x) for x in histogram.get("boundaries", [])]
    counts = [float(x) for x in histogram.get("counts", [])]
    if len(boundaries) != len(counts) + 1 and (boundaries or counts):
        raise ValueError(
            f"a histogram needs one boundary more than counts, got {len(boundaries)}"
            f" boundaries and {len(counts)} counts"
        )
    buckets: list[_Bucket] = []
    if histogram.get("neg_inf"):
        buckets.append((-math.inf, -math.inf, float(histogram["neg_inf"])))
    buckets += [(boundaries[i], boundaries[i + 1], counts[i]) for i in range(len(counts))]
    if histogram.get("pos_inf"):
        buckets.append((math.inf, math.inf, float(histogram["pos_inf"])))
    return buckets, float(histogram.get("nan") or 0)


def _strip(buckets: Sequence[_Bucket]) -> tuple[list[_Bucket], dict[float, float], float]:
    """``StripPointAndInfiniteBuckets``: ranged buckets, point masses, infinite mass."""
    ranged: list[_Bucket] = []
    points: dict[float, float] = {}
    infinite = 0.0
    for low, high, count in buckets:
        if not (math.isfinite(low) and math.isfinite(high)):
            infinite += count
        elif low == high:
            points[low] = points.get(low, 0.0) + count
        else:
            ranged.append((low, high, count))
    return ranged, points, infinite


def _rebucket(boundaries: Sequence[float], buckets: Sequence[_Bucket]) -> list[_Bucket]:
    """``RebucketHistogram``: counts spread over ``boundaries`` (a superset of the bounds).

    Values are assumed uniform within a bucket; a bucket spanning several new buckets
    gives each the share of its width.
    """
    out: list[_Bucket] = []
    last = len(boundaries) - 1
    index = 0
    for low, high, count in buckets:
        while low > boundaries[index]:
            if index + 1 > last:
                raise ValueError(f"bucket [{low}, {high}] lies past the boundaries")
            out.append((boundaries[index], boundaries[index + 1], 0.0))
            index += 1
        if low == high and low == boundaries[index]:
            out.append((boundaries[index], boundaries[index + 1], count))
            index += 1
            continue
        covered = []
        while high > boundaries[index]:
            covered.append(boundaries[index])
            index += 1
        covered.append(boundaries[index])
        width = high - low
        for i in range(len(covered) - 1):
            share = (covered[i + 1] - covered[i]) / width
            out.append((covered[i], covered[i + 1], share * count))
    for i in range(index, last):
        out.append((boundaries[i], boundaries[i + 1], 0.0))
    return out


def _bounds(buckets: Sequence[_Bucket]) -> set[float]:
    return {b for low, high, _ in buckets for b in (low, high)}


def _aligned(
    histogram_1: Mapping[str, Any], histogram_2: Mapping[str, Any]
) -> tuple[list[float], list[float]]:
    """``AlignHistograms``: the two histograms' counts over common buckets.

    Ranged buckets are rebucketed onto the union of both histograms' boundaries (unless
    the boundaries are the same); then come one bucket per point mass of either, the
    infinite mass of the first (against 0), of the second (against 0), and when either
    has NaN values two buckets: (0, nan_1) and (nan_2, 0). As in TFDV, NaN values only
    count when the two histograms have the same boundaries (rebucketing drops them).
    """
    buckets_1, nan_1 = _buckets(histogram_1)
    buckets_2, nan_2 = _buckets(histogram_2)
    ranged_1, points_1, inf_1 = _strip(buckets_1)
    ranged_2, points_2, inf_2 = _strip(buckets_2)
    bounds_1, bounds_2 = _bounds(ranged_1), _bounds(ranged_2)
    if bounds_1 != bounds_2:
        boundaries = sorted(bounds_1 | bounds_2)
        ranged_1 = _rebucket(boundaries, ranged_1)
        ranged_2 = _rebucket(boundaries, ranged_2)
        # TFDV's RebucketHistogram builds new histograms without num_nan: once rebucketed,
        # neither side has NaN values left to compare.
        nan_1 = nan_2 = 0.0
    counts_1 = [count for _, _, count in ranged_1]
    counts_2 = [count for _, _, count in ranged_2]
    for point in sorted(set(points_1) | set(points_2)):
        counts_1.append(points_1.get(point, 0.0))
        counts_2.append(points_2.get(point, 0.0))
    if inf_1 != 0:
        counts_1.append(inf_1)
        counts_2.append(0.0)
    if inf_2 != 0:
        counts_1.append(0.0)
        counts_2.append(inf_2)
    if nan_1 > 0 or nan_2 > 0:
        counts_1 += [0.0, nan_1]
        counts_2 += [nan_2, 0.0]
    return counts_1, counts_2


def _normalized(counts: Sequence[float]) -> list[float]:
    total = 0.0
    for count in counts:
        total += count
    if total == 0:
        raise EmptyHistogramError("a histogram without values has no distribution")
    return [count / total for count in counts]


def _kl(p: Sequence[float], q: Sequence[float]) -> float:
    result = 0.0
    for pi, qi in zip(p, q, strict=True):
        if pi > 0 and qi > 0:
            result += pi * math.log2(pi / qi)
    return result


def jensen_shannon_histograms(h1: Mapping[str, Any], h2: Mapping[str, Any]) -> float:
    """Jensen-Shannon divergence (base 2, capped at 1.0) of two histograms.

    TFDV's ``JensenShannonDivergence`` over two STANDARD histograms: aligned on common
    buckets (see the module docstring), each normalised to sum 1, ``M = (P + Q) / 2`` and
    ``(KL(P || M) + KL(Q || M)) / 2`` with base-2 logarithms; rounding can push it a hair
    over 1, so it is capped there.

    Args:
        h1: ``{"boundaries": [...], "counts": [...]}`` with optional ``"nan"``,
            ``"neg_inf"`` and ``"pos_inf"`` counts (a ``stats.json`` histogram).
        h2: The other histogram, same shape.

    Raises:
        EmptyHistogramError: when a histogram holds no values (TFDV: "Unable to normalize
            an empty histogram").
        ValueError: when a histogram is malformed.
    """
    counts_1, counts_2 = _aligned(h1, h2)
    p, q = _normalized(counts_1), _normalized(counts_2)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
    return min((_kl(p, m) + _kl(q, m)) / 2, 1.0)


# --- per column --------------------------------------------------------------------------------


def _key(value: Any) -> str:
    """A rank histogram value as a map key: strings as they are, JSON spelling otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def rank_counts(col_stats: Mapping[str, Any]) -> dict[str, float] | None:
    """Value -> count from a column's ``rank_histogram`` (None when it has none)."""
    ranked = col_stats.get("rank_histogram")
    if ranked is None:
        return None
    counts: dict[str, float] = {}
    for item in ranked:
        key = _key(item["value"])
        counts[key] = counts.get(key, 0.0) + float(item["count"])
    return counts


def _has_values(col_stats: Mapping[str, Any]) -> bool | None:
    """Whether a column has a non-null value (None when its statistics do not say)."""
    count = col_stats.get("count")
    if isinstance(count, int | float) and not isinstance(count, bool):
        return count > 0
    histogram = col_stats.get("histogram")
    if col_stats.get("rank_histogram") or (histogram and any(histogram.get("counts") or [])):
        return True
    return None


def _measure_for(col_stats: Mapping[str, Any]) -> str | None:
    kind = column_kind(str(col_stats.get("type", "")))
    if kind == "numeric":
        return JENSEN_SHANNON
    if kind == "categorical":
        return L_INFINITY
    return None


def column_distance(
    col_stats: Mapping[str, Any],
    baseline_col_stats: Mapping[str, Any],
    measure: str | None = None,
    threshold: float | None = None,
    *,
    source: str = STANDARD,
) -> dict[str, Any]:
    """The drift or skew measurement of one column against its baseline.

    Args:
        col_stats: The column's ``stats.json`` entry in this run (or the first split).
        baseline_col_stats: Its entry in the baseline (or the other split).
        measure: ``"l_infinity"`` or ``"jensen_shannon"``; by default L-infinity for
            string, boolean, date and time columns and Jensen-Shannon for numeric ones.
            Jensen-Shannon of a categorical column compares value counts, as TFDV does.
        threshold: Value above which the column counts as drifted (``over``).
        source: Histogram Jensen-Shannon compares for a numeric column: ``"standard"``
            (``histogram``, 10 equal-width buckets; TFDV's default) or ``"quantiles"``
            (``quantiles_histogram``, 10 equal-count buckets; TFDV's ``source:
            QUANTILES``), which a few extreme values do not move.

    Returns:
        ``{"measure", "value", "threshold", "over", "max_difference_value"}``, plus
        ``"source": "quantiles"`` when the quantiles histograms were compared. ``value``
        is 1.0, the largest distance, when one side has values and the other none (its
        ``count`` is 0: null in every row, or no row at all), whatever the threshold
        below 1 says that is drift. ``value`` is None when it cannot be computed (no value
        on either side, a column without a histogram on either side, such as one with no
        finite value, or columns of different kinds); ``max_difference_value`` is the
        value named by L-infinity (None otherwise, and for a side without values).

    Raises:
        ValueError: for an unknown measure or source, or a column of a type without a
            measure.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid sources are {', '.join(SOURCES)}")
    if measure is None:
        measure = _measure_for(col_stats) or _measure_for(baseline_col_stats)
        if measure is None:
            raise ValueError(
                f"column type {col_stats.get('type')!r} has no drift measure;"
                " string, bool, date and time columns have l_infinity, numeric ones"
                " jensen_shannon"
            )
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; valid measures are {', '.join(MEASURES)}")
    value: float | None = None
    max_difference: str | None = None
    counts, baseline_counts = rank_counts(col_stats), rank_counts(baseline_col_stats)
    present, baseline_present = _has_values(col_stats), _has_values(baseline_col_stats)
    if present is not None and baseline_present is not None and present != baseline_present:
        # Values on one side, none on the other (null in every row): the distributions
        # share nothing, which both measures rate 1.0 (TFDV's "disjoint").
        value = 1.0
    elif measure == L_INFINITY:
        if counts is not None and baseline_counts is not None:
            value, max_difference = l_infinity(counts, baseline_counts)
    elif counts and baseline_counts:
        value = jensen_shannon_counts(counts, baseline_counts)
    else:
        key = _HISTOGRAM_KEYS[source]
        histogram, baseline = col_stats.get(key), baseline_col_stats.get(key)
        if histogram is not None and baseline is not None:
            try:
                value = jensen_shannon_histograms(histogram, baseline)
            except EmptyHistogramError:
                # Both histograms empty of values: TFDV records no measurement either.
                value = None
    out = {
        "measure": measure,
        "value": value,
        "threshold": threshold,
        "over": value is not None and threshold is not None and value > threshold,
        "max_difference_value": max_difference,
    }
    if source != STANDARD:
        out["source"] = source
    return out
