"""L-infinity and Jensen-Shannon distances (TFDV's metrics.cc), values worked out by hand."""

from __future__ import annotations

import math

import pytest

from transforms.validation.distances import (
    EmptyHistogramError,
    column_distance,
    column_kind,
    jensen_shannon_counts,
    jensen_shannon_histograms,
    l_infinity,
    rank_counts,
)


def _jsd(p: list[float], q: list[float]) -> float:
    """JSD of two distributions written out term by term (for expected values)."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl_p = sum(a * math.log2(a / c) for a, c in zip(p, m, strict=True) if a > 0)
    kl_q = sum(b * math.log2(b / c) for b, c in zip(q, m, strict=True) if b > 0)
    return (kl_p + kl_q) / 2


# --- L-infinity ------------------------------------------------------------------------------


def test_l_infinity_normalises_each_side_and_a_tie_names_the_last_value() -> None:
    # Shares 0.75, 0.25, 0 against 0.25, 0.25, 0.5: differences 0.5, 0, -0.5. "a" and "c"
    # tie at 0.5; TFDV keeps the later one in sorted order.
    assert l_infinity({"a": 3, "b": 1}, {"a": 1, "b": 1, "c": 2}) == (0.5, "c")
    assert l_infinity({"b": 1, "a": 3}, {"c": 2, "b": 1, "a": 1}) == (0.5, "c")


def test_l_infinity_names_the_value_with_the_largest_difference() -> None:
    # Shares 0.6, 0.1, 0.3 against 0.5, 0.5, 0: differences 0.1, -0.4, 0.3.
    value, key = l_infinity({"Cash": 6, "Dispute": 1, "Mobile": 3}, {"Cash": 5, "Dispute": 5})
    assert (value, key) == (pytest.approx(0.4), "Dispute")


def test_l_infinity_equal_shares_name_the_last_value() -> None:
    assert l_infinity({"x": 1, "y": 1}, {"x": 2, "y": 2}) == (0.0, "y")


def test_l_infinity_of_empty_and_zero_maps() -> None:
    assert l_infinity({}, {}) == (0.0, None)
    assert l_infinity({}, {"k": 4}) == (1.0, "k")
    # A map summing to zero is left as it is (TFDV's Normalize).
    assert l_infinity({"k": 0}, {"k": 5}) == (1.0, "k")


def test_l_infinity_orders_values_by_code_point() -> None:
    # "Z" < "a" < "é": the tie goes to "é", as std::map's byte order would have it.
    assert l_infinity({"a": 1, "Z": 1}, {"é": 2}) == (1.0, "é")


# --- Jensen-Shannon over value counts -----------------------------------------------------------


def test_jensen_shannon_counts_by_hand() -> None:
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # KL(P||M) = 1/2 log2(2/3) + 1/2 log2(2) = 1 - log2(3)/2, KL(Q||M) = log2(4/3) = 2 - log2(3)
    # JSD = (3 - 3/2 log2 3) / 2.
    expected = 1.5 - 0.75 * math.log2(3)
    assert jensen_shannon_counts({"x": 1, "y": 1}, {"x": 1}) == pytest.approx(expected, abs=1e-15)
    assert jensen_shannon_counts({"x": 1}, {"y": 7}) == 1.0
    assert jensen_shannon_counts({"x": 2, "y": 6}, {"y": 3, "x": 1}) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ({}, {"x": 1}, "two non-empty value counts"),
        ({"x": 1}, {"x": 0}, "positive counts"),
        ({"x": -1}, {"x": 1}, "positive counts"),
    ],
)
def test_jensen_shannon_counts_refuses_empty_or_non_positive(
    a: dict[str, float], b: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        jensen_shannon_counts(a, b)


# --- Jensen-Shannon over histograms -------------------------------------------------------------


def test_same_boundaries_are_compared_bucket_by_bucket() -> None:
    h1 = {"boundaries": [0.0, 1.0, 2.0], "counts": [1.0, 1.0]}
    h2 = {"boundaries": [0.0, 1.0, 2.0], "counts": [3.0, 1.0]}
    # P = (1/2, 1/2), Q = (3/4, 1/4), M = (5/8, 3/8).
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.625) + 0.5 * math.log2(0.5 / 0.375)) + 0.5 * (
        0.75 * math.log2(0.75 / 0.625) + 0.25 * math.log2(0.25 / 0.375)
    )
    assert jensen_shannon_histograms(h1, h2) == pytest.approx(expected, abs=1e-15)
    assert jensen_shannon_histograms(h1, h1) == 0.0


def test_partially_overlapping_buckets_are_spread_uniformly() -> None:
    # [0, 2] holding 4 and [1, 3] holding 2, on the union 0, 1, 2, 3: (2, 2, 0) and
    # (0, 1, 1). P = (1/2, 1/2, 0), Q = (0, 1/2, 1/2), M = (1/4, 1/2, 1/4):
    # KL(P||M) = 1/2 log2 2 = 1/2 = KL(Q||M), so JSD = 1/2.
    h1 = {"boundaries": [0.0, 2.0], "counts": [4.0]}
    h2 = {"boundaries": [1.0, 3.0], "counts": [2.0]}
    assert jensen_shannon_histograms(h1, h2) == 0.5
    assert jensen_shannon_histograms(h2, h1) == 0.5


def test_a_coarse_bucket_split_evenly_matches_the_fine_one() -> None:
    coarse = {"boundaries": [0.0, 4.0], "counts": [4.0]}
    fine = {"boundaries": [0.0, 1.0, 2.0, 3.0, 4.0], "counts": [1.0, 1.0, 1.0, 1.0]}
    assert jensen_shannon_histograms(coarse, fine) == 0.0


def test_disjoint_ranges_with_a_gap_diverge_fully() -> None:
    # [0, 1] and [2, 3] on 0, 1, 2, 3: (2, 0, 0) and (0, 0, 2).
    h1 = {"boundaries": [0.0, 1.0], "counts": [2.0]}
    h2 = {"boundaries": [2.0, 3.0], "counts": [2.0]}
    assert jensen_shannon_histograms(h1, h2) == 1.0


def test_rebucketing_with_interleaved_boundaries() -> None:
    # h1: [0, 3] holds 3, [3, 6] holds 6; h2: [0, 2] holds 2, [2, 6] holds 8.
    # Union 0, 2, 3, 6. h1 -> (2, 1, 6); h2 -> (2, 2, 6) (its [2, 6] split 1:3).
    h1 = {"boundaries": [0.0, 3.0, 6.0], "counts": [3.0, 6.0]}
    h2 = {"boundaries": [0.0, 2.0, 6.0], "counts": [2.0, 8.0]}
    expected = _jsd([2 / 9, 1 / 9, 6 / 9], [2 / 10, 2 / 10, 6 / 10])
    assert jensen_shannon_histograms(h1, h2) == pytest.approx(expected, abs=1e-15)


def test_point_buckets_are_their_own_buckets() -> None:
    # A constant column ([5, 5]) against values spread over [0, 10]: the point at 5 is
    # compared with no point mass on the other side, the ranged buckets with zeros.
    point = {"boundaries": [5.0, 5.0], "counts": [4.0]}
    spread = {"boundaries": [0.0, 5.0, 10.0], "counts": [1.0, 1.0]}
    assert jensen_shannon_histograms(point, spread) == 1.0
    assert jensen_shannon_histograms(point, {"boundaries": [5.0, 5.0], "counts": [1.0]}) == 0.0
    # Two different points.
    assert jensen_shannon_histograms(point, {"boundaries": [6.0, 6.0], "counts": [1.0]}) == 1.0


def test_nan_is_compared_as_two_separate_buckets() -> None:
    # Points (3) and (1); NaN buckets (0, 1) and (1, 0): P = (3/4, 0, 1/4),
    # Q = (1/2, 1/2, 0). The same NaN count on both sides still counts as a difference.
    h1 = {"boundaries": [5.0, 5.0], "counts": [3.0], "nan": 1}
    h2 = {"boundaries": [5.0, 5.0], "counts": [1.0], "nan": 1}
    expected = (0.75 * math.log2(1.2) + 0.25 + 0.5 * math.log2(0.8) + 0.5) / 2
    assert jensen_shannon_histograms(h1, h2) == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx(_jsd([0.75, 0, 0.25], [0.5, 0.5, 0]), abs=1e-15)


def test_nan_is_dropped_when_the_boundaries_differ() -> None:
    # TFDV rebuckets into new histograms that do not carry num_nan over: with different
    # boundaries, NaN counts are ignored on both sides. [0, 2] holding 4 and [1, 3]
    # holding 2 give 0.5 (test_partially_overlapping_buckets_are_spread_uniformly).
    h1 = {"boundaries": [0.0, 2.0], "counts": [4.0], "nan": 3}
    h2 = {"boundaries": [1.0, 3.0], "counts": [2.0], "nan": 1}
    assert jensen_shannon_histograms(h1, h2) == 0.5
    assert jensen_shannon_histograms(h1, {**h2, "nan": 0}) == 0.5


def test_infinite_values_of_each_side_are_separate_buckets() -> None:
    # (1, 1, inf_1 = 2, 0) against (1, 1, 0, inf_2 = 2): P = (1/4, 1/4, 1/2, 0),
    # Q = (1/4, 1/4, 0, 1/2), M = (1/4, 1/4, 1/4, 1/4): JSD = 1/2.
    h1 = {"boundaries": [0.0, 1.0, 2.0], "counts": [1.0, 1.0], "pos_inf": 2}
    h2 = {"boundaries": [0.0, 1.0, 2.0], "counts": [1.0, 1.0], "neg_inf": 2}
    assert jensen_shannon_histograms(h1, h2) == 0.5
    # -inf and inf of a side are summed into one bucket, and the two sides' infinite
    # buckets never match, even for the same mass.
    h3 = {"boundaries": [0.0, 1.0, 2.0], "counts": [1.0, 1.0], "neg_inf": 1, "pos_inf": 1}
    assert jensen_shannon_histograms(h1, h3) == 0.5
    assert jensen_shannon_histograms(h3, {**h3, "neg_inf": 2, "pos_inf": 0}) == 0.5


def test_a_histogram_of_nan_only_against_values() -> None:
    nan_only = {"boundaries": [], "counts": [], "nan": 2}
    values = {"boundaries": [0.0, 1.0], "counts": [3.0]}
    # Different boundaries: rebucketed, the NaN count is dropped and nothing is left.
    with pytest.raises(EmptyHistogramError):
        jensen_shannon_histograms(nan_only, values)
    # Same (no) boundaries: (0, 2) against (1, 0) after the NaN buckets.
    assert jensen_shannon_histograms(nan_only, {**nan_only, "nan": 1}) == 1.0


def test_empty_and_malformed_histograms_are_refused() -> None:
    empty = {"boundaries": [0.0, 1.0, 2.0], "counts": [0.0, 0.0]}
    with pytest.raises(EmptyHistogramError):
        jensen_shannon_histograms(empty, {"boundaries": [0.0, 1.0], "counts": [1.0]})
    with pytest.raises(ValueError, match="one boundary more than counts, got 2 boundaries and 2"):
        jensen_shannon_histograms({"boundaries": [0.0, 1.0], "counts": [1.0, 2.0]}, empty)


# --- per column ---------------------------------------------------------------------------------


def _categorical(type_: str, counts: dict[object, int]) -> dict[str, object]:
    return {"type": type_, "rank_histogram": [{"value": v, "count": n} for v, n in counts.items()]}


def test_column_distance_of_a_string_column_is_l_infinity() -> None:
    now = _categorical("string", {"Cash": 6, "Credit Card": 4})
    before = _categorical("string", {"Cash": 5, "Credit Card": 5})
    out = column_distance(now, before, threshold=0.05)
    # Differences 0.1 and -0.1: the tie names the later value.
    assert out == {
        "measure": "l_infinity",
        "value": pytest.approx(0.1),
        "threshold": 0.05,
        "over": True,
        "max_difference_value": "Credit Card",
    }
    assert column_distance(now, before, threshold=0.2)["over"] is False
    assert column_distance(now, before)["over"] is False


def test_column_distance_of_booleans_and_dates_names_json_values() -> None:
    out = column_distance(
        _categorical("bool", {True: 3, False: 1}), _categorical("bool", {True: 1, False: 1})
    )
    assert (out["value"], out["max_difference_value"]) == (0.25, "true")
    out = column_distance(
        _categorical("date", {"2024-01-01": 1}), _categorical("date", {"2024-01-02": 1})
    )
    assert (out["value"], out["max_difference_value"]) == (1.0, "2024-01-02")


def test_column_distance_of_a_numeric_column_is_jensen_shannon() -> None:
    now = {"type": "float32", "histogram": {"boundaries": [0.0, 2.0], "counts": [4.0]}}
    before = {"type": "float32", "histogram": {"boundaries": [1.0, 3.0], "counts": [2.0]}}
    assert column_distance(now, before, threshold=0.3) == {
        "measure": "jensen_shannon",
        "value": 0.5,
        "threshold": 0.3,
        "over": True,
        "max_difference_value": None,
    }


def test_column_distance_without_a_histogram_has_no_value() -> None:
    # Infinities only: values, but no finite one to draw a histogram from.
    now = {"type": "int64", "count": 2, "non_finite": 2}
    before = {"type": "int64", "histogram": {"boundaries": [1.0, 3.0], "counts": [2.0]}}
    assert column_distance(now, before, threshold=0.1) == {
        "measure": "jensen_shannon",
        "value": None,
        "threshold": 0.1,
        "over": False,
        "max_difference_value": None,
    }
    assert column_distance({"type": "int64"}, before)["value"] is None
    nothing = {"type": "int64", "count": 0, "missing": 5}
    assert column_distance(nothing, {"type": "int64", "count": 0, "missing": 0})["value"] is None
    empty = {"type": "int64", "histogram": {"boundaries": [1.0, 3.0], "counts": [0.0]}}
    assert column_distance(empty, empty)["value"] is None
    # A numeric column against a categorical one (a type change) has no value either.
    assert column_distance(before, _categorical("string", {"a": 1}))["value"] is None


def test_a_column_with_values_on_one_side_only_is_as_far_as_can_be() -> None:
    gone = {"type": "float32", "count": 0, "missing": 3001}
    before = {
        "type": "float32",
        "count": 4,
        "missing": 0,
        "histogram": {"boundaries": [1.0, 3.0], "counts": [4.0]},
    }
    expected = {
        "measure": "jensen_shannon",
        "value": 1.0,
        "threshold": 0.3,
        "over": True,
        "max_difference_value": None,
    }
    assert column_distance(gone, before, threshold=0.3) == expected
    assert column_distance(before, gone, threshold=0.3) == expected
    assert column_distance(gone, before, threshold=1.0)["over"] is False
    # Counts alone say a side has values when its statistics give no count.
    histogram_only = {"type": "float32", "histogram": before["histogram"]}
    assert column_distance(gone, histogram_only)["value"] == 1.0
    empty_strings = {"type": "string", "count": 0, "missing": 10, "rank_histogram": []}
    cash = {
        "type": "string",
        "count": 4,
        "missing": 0,
        "rank_histogram": [{"value": "Cash", "count": 3}, {"value": "Card", "count": 1}],
    }
    assert column_distance(empty_strings, cash, threshold=0.3) == {
        "measure": "l_infinity",
        "value": 1.0,
        "threshold": 0.3,
        "over": True,
        "max_difference_value": None,
    }


def test_jensen_shannon_of_a_categorical_column_compares_value_counts() -> None:
    out = column_distance(
        _categorical("string", {"x": 1, "y": 1}),
        _categorical("string", {"x": 1}),
        measure="jensen_shannon",
    )
    assert out["value"] == pytest.approx(1.5 - 0.75 * math.log2(3), abs=1e-15)
    assert out["max_difference_value"] is None


def test_column_distance_refusals() -> None:
    with pytest.raises(ValueError, match="column type 'binary' has no drift measure"):
        column_distance({"type": "binary"}, {"type": "binary"})
    with pytest.raises(ValueError, match="unknown measure 'psi'; valid measures are l_infinity"):
        column_distance({"type": "string"}, {"type": "string"}, measure="psi")


def test_column_kinds_and_rank_counts() -> None:
    assert [column_kind(t) for t in ("int32", "float64", "string", "bool", "date")] == [
        "numeric",
        "numeric",
        "categorical",
        "categorical",
        "categorical",
    ]
    assert column_kind("timestamp") == "categorical"
    assert column_kind("binary") is None
    assert column_kind("list<int64>") is None
    assert rank_counts({"type": "string"}) is None
    assert rank_counts(_categorical("bool", {True: 2, False: 1})) == {"true": 2.0, "false": 1.0}


def test_jensen_shannon_of_the_quantiles_histograms() -> None:
    # The STANDARD histograms are identical; the QUANTILES ones are those of
    # test_partially_overlapping_buckets_are_spread_uniformly (0.5).
    same = {"boundaries": [0.0, 1.0], "counts": [1.0]}
    now = {
        "type": "int64",
        "histogram": same,
        "quantiles_histogram": {"boundaries": [0.0, 2.0], "counts": [4.0]},
    }
    before = {
        "type": "int64",
        "histogram": same,
        "quantiles_histogram": {"boundaries": [1.0, 3.0], "counts": [2.0]},
    }
    assert column_distance(now, before, threshold=0.1)["value"] == 0.0
    assert column_distance(now, before, threshold=0.1, source="quantiles") == {
        "measure": "jensen_shannon",
        "value": 0.5,
        "threshold": 0.1,
        "over": True,
        "max_difference_value": None,
        "source": "quantiles",
    }
    with pytest.raises(
        ValueError, match="unknown source 'deciles'; valid sources are standard, quantiles"
    ):
        column_distance(now, before, source="deciles")


def test_quantiles_histograms_with_repeated_boundaries_and_infinities() -> None:
    # Boundaries 1, 1, 3, 3, 3: point buckets at 1 and 3 between ranged ones, and
    # infinite masses beside (stats of -inf, 1, 3, inf; see test_stats).
    h1 = {
        "boundaries": [1.0, 1.0, 3.0, 3.0, 3.0],
        "counts": [0.5, 1 / 3, 1 / 3, 1 / 3],
        "neg_inf": 1.5,
        "pos_inf": 1,
    }
    h2 = {"boundaries": [1.0, 3.0], "counts": [4.0]}
    # h1: ranged (1, 3) 1/3; points 1 -> 0.5, 3 -> 2/3; infinite 2.5. h2: ranged (1, 3) 4.
    # Aligned: (1/3, 0.5, 2/3, 2.5) against (4, 0, 0, 0).
    expected = _jsd([1 / 12, 0.5 / 4, (2 / 3) / 4, 2.5 / 4], [1.0, 0.0, 0.0, 0.0])
    assert jensen_shannon_histograms(h1, h2) == pytest.approx(expected, abs=1e-15)
