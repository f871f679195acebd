"""Tests for the analyzers and quantiles: exact outputs, merging, pickling, non-finite values."""

from __future__ import annotations

import math
import pickle
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.ops.analyzers import (
    SUM_EXPONENT,
    Moments,
    ValueCounts,
    exact_sums,
    vocabulary_order,
)
from transforms.ops.arrays import split_finite, string_form
from transforms.ops.quantiles import (
    DEFAULT_MAX_BINS,
    MIN_MAX_BINS,
    Quantiles,
    QuantileSummary,
    bucket_boundaries,
    quantiles_of,
)


def fit(analyzer, *batches):
    acc = analyzer.create_accumulator()
    for batch in batches:
        acc = analyzer.add_batch(acc, batch)
    return analyzer.extract_output(acc)


def fit_split(analyzer, *batches):
    """Fits each batch separately, pickles the accumulators and merges them."""
    accs = []
    for batch in batches:
        acc = analyzer.add_batch(analyzer.create_accumulator(), batch)
        accs.append(pickle.loads(pickle.dumps(acc)))
    return analyzer.extract_output(analyzer.merge_accumulators(accs))


def test_moments_exact_and_skips_nulls_and_nan():
    batch = pa.record_batch({"x": pa.array([1.0, None, 3.0, float("nan"), 8.0], pa.float32())})
    assert fit(Moments("x"), batch) == {
        "count": 3,
        "mean": 4.0,
        "variance": pytest.approx(26.0 / 3, rel=1e-12),
        "min": 1.0,
        "max": 8.0,
        "sum": 12.0,
    }


def test_moments_skip_nan_and_infinities_like_nulls():
    # One NaN, inf or -inf (1e309 parses to inf) used to make the mean NaN for every row.
    values = [1.0, None, math.nan, 3.0, math.inf, -math.inf, float("1e309"), 8.0]
    for tp in (pa.float32(), pa.float64()):
        out = fit(Moments("x"), pa.record_batch({"x": pa.array(values, tp)}))
        assert out == {
            "count": 3,
            "mean": 4.0,
            "variance": pytest.approx(26.0 / 3, rel=1e-15),
            "min": 1.0,
            "max": 8.0,
            "sum": 12.0,
        }
    only_bad = pa.record_batch({"x": pa.array([math.nan, math.inf], pa.float64())})
    assert fit(Moments("x"), only_bad) == fit(
        Moments("x"), pa.record_batch({"x": pa.array([], pa.float64())})
    )


def test_moments_variance_beyond_float64_is_null():
    batch = pa.record_batch({"x": pa.array([-1e300, 1e300, 1e300], pa.float64())})
    out = fit(Moments("x"), batch)
    assert out["mean"] == pytest.approx(1e300 / 3)
    assert out["variance"] is None and out["sum"] == 1e300
    huge = fit(Moments("x"), pa.record_batch({"x": pa.array([1.7e308, 1.7e308])}))
    assert huge["sum"] is None and huge["mean"] == 1.7e308 and huge["variance"] == 0.0


def test_split_finite_counts_drops_and_normalises_negative_zero():
    values, dropped = split_finite(pa.array([-0.0, math.nan, None, -2.5, math.inf], pa.float32()))
    assert values.tolist() == [0.0, -2.5] and dropped == 2
    assert not np.signbit(values[0])
    ints, dropped = split_finite(pa.array([3, None, -4], pa.int16()))
    assert ints.dtype == np.float64 and ints.tolist() == [3.0, -4.0] and dropped == 0
    with pytest.raises(TypeError, match="expected a numeric column"):
        split_finite(pa.array(["a"]))


def _exact(values: np.ndarray) -> tuple[Fraction, Fraction]:
    return sum(map(Fraction, values.tolist()), Fraction(0)), sum(
        (Fraction(v) ** 2 for v in values.tolist()), Fraction(0)
    )


any_finite = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(any_finite, max_size=40))
def test_exact_sums_are_exact_for_any_float64(values):
    array = np.array(values, dtype=np.float64)
    s1, s2 = exact_sums(array)
    f1, f2 = _exact(array)
    assert Fraction(s1) * Fraction(2) ** SUM_EXPONENT == f1
    assert Fraction(s2) * Fraction(2) ** (2 * SUM_EXPONENT) == f2


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=40),
    st.lists(st.integers(-(2**53), 2**53), max_size=40),
)
def test_exact_sums_fast_paths_agree_with_the_general_one(floats, ints):
    as32 = np.array(floats, dtype=np.float32).astype(np.float64)
    assert exact_sums(as32, precision=24) == exact_sums(as32, precision=53)
    whole = np.array(ints, dtype=np.float64)
    assert exact_sums(whole, precision=0) == exact_sums(whole, precision=53)
    f1, f2 = _exact(whole)
    s1, s2 = exact_sums(whole, precision=0)
    assert Fraction(s1) * Fraction(2) ** SUM_EXPONENT == f1
    assert Fraction(s2) * Fraction(2) ** (2 * SUM_EXPONENT) == f2


def test_exact_sums_large_batches_and_extremes():
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(size=150_000) * 1e200, [5e-324, -5e-324, 1.7e308, -1.7e308, 0.0, 2.0**-1022]]
    )
    f1, f2 = _exact(values)
    s1, s2 = exact_sums(values)
    assert Fraction(s1) * Fraction(2) ** SUM_EXPONENT == f1
    assert Fraction(s2) * Fraction(2) ** (2 * SUM_EXPONENT) == f2
    integers = rng.integers(-(2**41), 2**41, size=200_000).astype(np.float64)
    assert exact_sums(integers, precision=0) == exact_sums(integers)


def test_value_counts_leave_out_non_finite_floats():
    batch = pa.record_batch(
        {"f": pa.array([1.5, math.nan, math.inf, -math.inf, 1.5, None, 2.0], pa.float64())}
    )
    assert fit(ValueCounts("f"), batch) == {
        "vocabulary": ["1.5", "2.0"],
        "frequencies": [2, 1],
        "distinct": 2,
    }
    # As a fitted mode: never NaN, even when NaN is the most frequent value.
    mostly_nan = pa.record_batch({"f": pa.array([math.nan] * 5 + [3.0], pa.float32())})
    assert fit(ValueCounts("f", top_k=1), mostly_nan)["vocabulary"] == ["3.0"]


def test_quantiles_leave_out_non_finite_values():
    values = [float(v) for v in range(1, 11)] + [math.nan, math.inf, -math.inf, float("1e309")]
    batch = pa.record_batch({"x": pa.array(values)})
    assert fit(Quantiles("x", 4), batch) == {"boundaries": [3.0, 6.0, 8.0]}
    assert fit(Quantiles("x", 4), pa.record_batch({"x": pa.array([math.nan, math.inf])})) == {
        "boundaries": []
    }


def test_quantile_summary_exact_up_to_max_bins_then_bounded():
    summary = QuantileSummary(MIN_MAX_BINS)
    summary.update(np.arange(MIN_MAX_BINS, dtype=np.float64))
    assert summary.exact and summary.relative_error == 0.0
    summary.update(np.array([0.5]))
    assert not summary.exact
    lows, cumulative = summary.cumulative()
    assert len(lows) <= MIN_MAX_BINS and cumulative[-1] == MIN_MAX_BINS + 1
    assert summary.relative_error == 2.0**-summary.bits
    with pytest.raises(ValueError, match="max_bins must be at least 4096"):
        QuantileSummary(100)
    assert QuantileSummary().max_bins == DEFAULT_MAX_BINS


def test_quantile_summary_orders_negative_numbers_and_zero():
    summary = QuantileSummary()
    values = np.array([-1e300, -2.0, -1.0, -5e-324, 0.0, 5e-324, 1.0, 2.0, 1e300])
    summary.update(np.random.default_rng(0).permutation(values))
    lows, cumulative = summary.cumulative()
    assert lows.tolist() == values.tolist() and cumulative.tolist() == list(range(1, 10))


def test_bucket_boundaries_match_tfx_bsl_on_exact_data():
    sketches = pytest.importorskip("tfx_bsl.sketches")
    rng = np.random.default_rng(11)
    for _ in range(300):
        pool = rng.normal(size=int(rng.integers(1, 50))).astype(np.float32)
        values = rng.choice(pool, size=int(rng.integers(1, 300))).astype(np.float64)
        num_buckets = int(rng.integers(2, 12))
        reference = sketches.QuantilesSketch(min(1.0 / num_buckets, 0.01), 1 << 32, 1)
        for part in np.array_split(values, 3):
            if len(part):
                reference.AddValues(pa.array(part))
        theirs = reference.GetQuantiles(num_buckets).to_pylist()[0][1:-1]
        summary = QuantileSummary()
        summary.update(values + 0.0)
        assert bucket_boundaries(summary, num_buckets) == theirs

    batch = pa.record_batch({"x": pa.array([1.0, None, 3.0, float("nan"), 8.0], pa.float32())})
    assert fit(Moments("x"), batch) == {
        "count": 3,
        "mean": 4.0,
        "variance": pytest.approx(26.0 / 3, rel=1e-12),
        "min": 1.0,
        "max": 8.0,
        "sum": 12.0,
    }


def test_moments_integer_column():
    batch = pa.record_batch({"n": pa.array([2, 4, 4, 4, 5, 5, 7, 9], pa.int64())})
    out = fit(Moments("n"), batch)
    assert out == {"count": 8, "mean": 5.0, "variance": 4.0, "min": 2.0, "max": 9.0, "sum": 40.0}


def test_moments_empty():
    batch = pa.record_batch({"x": pa.array([None, None], pa.float64())})
    assert fit(Moments("x"), batch) == {
        "count": 0,
        "mean": 0.0,
        "variance": 0.0,
        "min": None,
        "max": None,
        "sum": 0.0,
    }


def test_missing_column_names_columns():
    batch = pa.record_batch({"x": [1.0]})
    with pytest.raises(KeyError, match=r"'y' not in batch; columns are \['x'\]"):
        fit(Moments("y"), batch)


def test_value_counts_order_empty_newline_and_nulls():
    batch = pa.record_batch({"s": ["b", "a", "", "c", "a", None, "b", "x\ny", "", "  "]})
    assert fit(ValueCounts("s"), batch) == {
        # a and b tie at 2: descending byte-wise value puts b first.
        "vocabulary": ["b", "a", "c", "  "],
        "frequencies": [2, 2, 1, 1],
        "distinct": 4,
    }
    with_empty = fit(ValueCounts("s", include_empty=True, exclude_newlines=False), batch)
    assert with_empty == {
        "vocabulary": ["b", "a", "", "x\ny", "c", "  "],
        "frequencies": [2, 2, 2, 1, 1, 1],
        "distinct": 6,
    }


def test_value_counts_top_k_and_threshold():
    batch = pa.record_batch({"s": list("aaaabbbccd")})
    assert fit(ValueCounts("s", top_k=2), batch)["vocabulary"] == ["a", "b"]
    out = fit(ValueCounts("s", frequency_threshold=2), batch)
    assert out == {"vocabulary": ["a", "b", "c"], "frequencies": [4, 3, 2], "distinct": 4}
    out = fit(ValueCounts("s", top_k=1, frequency_threshold=5), batch)
    assert out == {"vocabulary": [], "frequencies": [], "distinct": 4}


def test_value_counts_numbers_by_string_form():
    batch = pa.record_batch({"n": pa.array([3, 10, 3, None], pa.int64())})
    assert fit(ValueCounts("n"), batch)["vocabulary"] == ["3", "10"]
    floats = pa.record_batch({"f": pa.array([0.1, 1.0, 0.1], pa.float32())})
    assert fit(ValueCounts("f"), floats)["vocabulary"] == ["0.1", "1.0"]


def test_string_form():
    assert string_form(pa.array([1, None, -2], pa.int32())).to_pylist() == ["1", None, "-2"]
    assert string_form(pa.array([True, False])).to_pylist() == ["true", "false"]
    assert string_form(pa.array([2.5, None], pa.float64())).to_pylist() == ["2.5", None]
    assert string_form(pa.array(["a"], pa.large_string())).type == pa.string()


def test_vocabulary_order_bytewise_not_unicode_collation():
    # "é" (0xC3 0xA9) sorts above "z" (0x7A) byte-wise.
    assert vocabulary_order({"z": 1, "é": 1, "a": 2}) == [("a", 2), ("é", 1), ("z", 1)]


def test_quantiles_exact_on_small_data_with_tf_transform_rule():
    # Boundary i is the smallest value with more than i * n / num_buckets values at or
    # below it (tfx_bsl's rule): 2.5 -> 3, 5 -> 6 (not 5: exactly 5 values are <= 5), 7.5 -> 8.
    batch = pa.record_batch({"x": pa.array([float(v) for v in range(1, 11)] + [None])})
    assert fit(Quantiles("x", 4), batch) == {"boundaries": [3.0, 6.0, 8.0]}
    assert fit(Quantiles("x", 1), batch) == {"boundaries": []}


def test_quantiles_empty_and_repeats_kept():
    assert fit(Quantiles("x", 3), pa.record_batch({"x": pa.array([], pa.float64())})) == {
        "boundaries": []
    }
    batch = pa.record_batch({"x": pa.array([0, 0, 0, 0, 0, 0, 0, 1, 2, 3], pa.int64())})
    assert fit(Quantiles("x", 3), batch) == {"boundaries": [0.0, 0.0]}


def test_quantiles_rejects_bad_num_buckets():
    with pytest.raises(ValueError, match="num_buckets must be at least 1, got 0"):
        Quantiles("x", 0)


def test_quantiles_of_median_and_empty():
    summary = QuantileSummary()
    summary.update(np.array([5.0, 1.0, 3.0]))
    assert quantiles_of(summary, [0.0, 0.5, 1.0]) == [1.0, 3.0, 5.0]
    four = QuantileSummary()
    four.update(np.array([4.0, 3.0, 2.0, 1.0]))
    # The lower median: the smallest v with #(values <= v) >= n / 2.
    assert quantiles_of(four, [0.5]) == [2.0]
    assert all(math.isnan(v) for v in quantiles_of(QuantileSummary(), [0.5]))


def test_quantiles_on_large_data_are_within_the_stated_error():
    rng = np.random.default_rng(7)
    values = rng.normal(size=200_000)
    batches = [
        pa.record_batch({"x": values[i : i + 20_000]}) for i in range(0, len(values), 20_000)
    ]
    analyzer = Quantiles("x", 10, max_bins=MIN_MAX_BINS)
    boundaries = fit_split(analyzer, *batches)["boundaries"]
    summary = analyzer.create_accumulator()
    summary.update(values)
    assert not summary.exact
    bound = summary.relative_error
    assert 0 < bound <= 2.0**-5
    ordered = np.sort(values)
    for i, b in enumerate(boundaries, start=1):
        # The exact boundary (same rule) and the summary's share a bin: relative error.
        exact = ordered[
            np.searchsorted(np.arange(1, len(ordered) + 1), i * len(values) / 10, "right")
        ]
        assert abs(b - exact) <= bound * abs(exact)
        assert b in values  # a value of the data, not an interpolation


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, max_size=30), min_size=1, max_size=5))
def test_moments_merge_equals_single_pass(chunks):
    batches = [pa.record_batch({"x": pa.array(c, pa.float64())}) for c in chunks]
    whole = pa.record_batch({"x": pa.array([v for c in chunks for v in c], pa.float64())})
    single = fit(Moments("x"), whole)
    merged = fit_split(Moments("x"), *batches)
    reversed_ = fit_split(Moments("x"), *batches[::-1])
    # Exact sums: not close, identical, whatever the split and the order.
    assert merged == single == reversed_
    values = [Fraction(v) for c in chunks for v in c]
    if values:
        mean = sum(values) / len(values)
        assert single["mean"] == float(mean)
        assert single["variance"] == float(sum((v - mean) ** 2 for v in values) / len(values))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "", None, "d e"]), max_size=20),
        min_size=1,
        max_size=5,
    )
)
def test_value_counts_merge_equals_single_pass(chunks):
    batches = [pa.record_batch({"s": pa.array(c, pa.string())}) for c in chunks]
    whole = pa.record_batch({"s": pa.array([v for c in chunks for v in c], pa.string())})
    analyzer = ValueCounts("s", top_k=3)
    assert fit_split(analyzer, *batches) == fit(analyzer, whole)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(finite, max_size=40), min_size=1, max_size=5), st.integers(2, 8))
def test_quantiles_merge_equals_single_pass_and_sorted(chunks, num_buckets):
    batches = [pa.record_batch({"x": pa.array(c, pa.float64())}) for c in chunks]
    whole = pa.record_batch({"x": pa.array([v for c in chunks for v in c], pa.float64())})
    analyzer = Quantiles("x", num_buckets)
    merged = fit_split(analyzer, *batches)["boundaries"]
    assert merged == fit(analyzer, whole)["boundaries"]
    assert merged == sorted(merged)
    values = sorted(v + 0.0 for c in chunks for v in c)
    if values:
        # Below max_bins every value is kept, so boundaries are exact order statistics: the
        # smallest value with more than i * n / num_buckets values at or below it.
        n = len(values)
        expected = [
            values[min(math.floor(i * n / num_buckets), n - 1)] for i in range(1, num_buckets)
        ]
        assert merged == expected
