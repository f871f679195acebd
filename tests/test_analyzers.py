"""Tests for transforms.analyzers: exact outputs, merging and pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.analyzers import (
    Moments,
    Quantiles,
    QuantileSketch,
    ValueCounts,
    quantiles_of,
    string_form,
    vocabulary_order,
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


def test_quantiles_exact_on_small_data():
    batch = pa.record_batch({"x": pa.array([float(v) for v in range(1, 11)] + [None])})
    assert fit(Quantiles("x", 4), batch) == {"boundaries": [3.0, 5.0, 8.0]}
    assert fit(Quantiles("x", 1), batch) == {"boundaries": []}


def test_quantiles_empty_and_repeats_kept():
    assert fit(Quantiles("x", 3), pa.record_batch({"x": pa.array([], pa.float64())})) == {
        "boundaries": []
    }
    batch = pa.record_batch({"x": pa.array([0, 0, 0, 0, 0, 0, 1, 2, 3], pa.int64())})
    assert fit(Quantiles("x", 3), batch) == {"boundaries": [0.0, 0.0]}


def test_quantiles_rejects_bad_num_buckets():
    with pytest.raises(ValueError, match="num_buckets must be at least 1, got 0"):
        Quantiles("x", 0)


def test_quantiles_of_median_and_empty():
    sketch = QuantileSketch()
    sketch.update(np.array([5.0, 1.0, 3.0]))
    assert quantiles_of(sketch, [0.0, 0.5, 1.0]) == [1.0, 3.0, 5.0]
    assert all(math.isnan(v) for v in quantiles_of(QuantileSketch(), [0.5]))


def test_quantile_sketch_large_data_is_accurate():
    rng = np.random.default_rng(7)
    values = rng.normal(size=200_000)
    batches = [
        pa.record_batch({"x": values[i : i + 20_000]}) for i in range(0, len(values), 20_000)
    ]
    boundaries = fit_split(Quantiles("x", 10), *batches)["boundaries"]
    ranks = np.searchsorted(np.sort(values), boundaries, side="right") / len(values)
    np.testing.assert_allclose(ranks, np.arange(1, 10) / 10, atol=0.005)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, max_size=30), min_size=1, max_size=5))
def test_moments_merge_equals_single_pass(chunks):
    batches = [pa.record_batch({"x": pa.array(c, pa.float64())}) for c in chunks]
    whole = pa.record_batch({"x": pa.array([v for c in chunks for v in c], pa.float64())})
    single = fit(Moments("x"), whole)
    merged = fit_split(Moments("x"), *batches)
    assert merged["count"] == single["count"]
    assert merged["min"] == single["min"] and merged["max"] == single["max"]
    values = np.array([v for c in chunks for v in c])
    if len(values):
        scale = max(1.0, float(np.abs(values).max()))
        assert merged["mean"] == pytest.approx(values.mean(), abs=1e-9 * scale)
        assert merged["variance"] == pytest.approx(values.var(), rel=1e-7, abs=1e-9 * scale**2)
        assert single["variance"] == pytest.approx(values.var(), rel=1e-7, abs=1e-9 * scale**2)


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
    values = sorted(v for c in chunks for v in c)
    if values:
        # Below the sketch's k every value is kept, so boundaries are exact order statistics.
        expected = [
            values[math.ceil(i / num_buckets * len(values)) - 1] for i in range(1, num_buckets)
        ]
        assert merged == expected
