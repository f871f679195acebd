"""Tests for transforms.ops.features: exact outputs per op, nulls, and the math's properties."""

from __future__ import annotations

import math

import farmhash
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.batch_steps import apply_steps
from transforms.core.config import SpecError
from transforms.core.fingerprint import fingerprint64, hash_buckets
from transforms.ops.features import EMPTY_VOCABULARY_DUMMY
from transforms.ops.registry import build_step


def step(**mapping):
    return build_step(mapping, "features[0]")


def fitted_for(s, batch):
    analyzer = s.analyzer()
    if analyzer is None:
        return None
    return analyzer.extract_output(analyzer.add_batch(analyzer.create_accumulator(), batch))


def run(s, batch):
    result = s.apply(batch, fitted_for(s, batch))
    assert result.batch.num_rows == batch.num_rows
    return result


def f32(values):
    return pa.array(values, pa.float32())


# --- z_score -------------------------------------------------------------------------------


def test_z_score_float32_in_place_keeps_nulls_and_other_columns():
    batch = pa.record_batch({"x": f32([1.0, 3.0, None, 5.0]), "__line": pa.array([2, 3, 4, 5])})
    result = run(step(op="z_score", column="x"), batch)
    std = np.sqrt(np.float32(8 / 3))
    expected = [np.float32(-2) / std, np.float32(0), None, np.float32(2) / std]
    assert result.batch.schema.names == ["x", "__line"]
    assert result.batch.column(0).type == pa.float32()
    assert result.batch.column(0).to_pylist() == [None if v is None else float(v) for v in expected]
    assert result.batch.column(1).to_pylist() == [2, 3, 4, 5]
    assert result.rejections == () and result.drops == ()


def test_z_score_int_input_gives_float32_and_float64_stays():
    ints = pa.record_batch({"n": pa.array([1, 3], pa.int64())})
    out = run(step(op="z_score", column="n", output="z"), ints).batch
    assert out.schema.names == ["n", "z"]
    assert out.column(1).type == pa.float32() and out.column(1).to_pylist() == [-1.0, 1.0]
    doubles = pa.record_batch({"d": pa.array([1.0, 3.0])})
    assert run(step(op="z_score", column="d"), doubles).batch.column(0).type == pa.float64()


def test_z_score_zero_variance_subtracts_mean_only():
    batch = pa.record_batch({"x": f32([7.0, 7.0])})
    s = step(op="z_score", column="x")
    assert s.apply(batch, fitted_for(s, batch)).batch.column(0).to_pylist() == [0.0, 0.0]
    other = pa.record_batch({"x": f32([9.0])})
    assert s.apply(other, fitted_for(s, batch)).batch.column(0).to_pylist() == [2.0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32), min_size=2, max_size=60
    )
)
def test_z_score_has_mean_zero_and_variance_one(values):
    x = np.asarray(values, np.float32)
    if np.ptp(x.astype(np.float64)) < 1e-2:
        return  # float32 cannot resolve a spread this small relative to the values
    batch = pa.record_batch({"x": pa.array(x)})
    z = run(step(op="z_score", column="x"), batch).batch.column(0).to_numpy().astype(np.float64)
    assert abs(z.mean()) < 1e-3
    assert abs(z.var() - 1) < 1e-3


# --- min_max --------------------------------------------------------------------------------


def test_min_max_scales_to_range():
    batch = pa.record_batch({"x": pa.array([2, 4, None, 6], pa.int64())})
    out = run(step(op="min_max", column="x", output="y", output_min=-1.0, output_max=1.0), batch)
    assert out.batch.column(1).type == pa.float32()
    assert out.batch.column(1).to_pylist() == [-1.0, 0.0, None, 1.0]


def test_min_max_single_value_uses_sigmoid():
    batch = pa.record_batch({"x": f32([0.0, 0.0])})
    s = step(op="min_max", column="x")
    assert s.apply(batch, fitted_for(s, batch)).batch.column(0).to_pylist() == [0.5, 0.5]
    out = s.apply(pa.record_batch({"x": f32([2.0])}), fitted_for(s, batch)).batch
    assert out.column(0).to_pylist() == [pytest.approx(1 / (1 + math.exp(-2)), rel=1e-6)]


def test_min_max_rejects_inverted_range():
    with pytest.raises(SpecError, match=r"output_min \(1.0\) must be less than output_max \(0.0\)"):
        step(op="min_max", column="x", output_min=1.0, output_max=0.0)


# --- log ------------------------------------------------------------------------------------


def test_log_with_offset_and_base_rejects_out_of_domain():
    batch = pa.record_batch({"x": pa.array([0.0, 9.0, -1.0, None, -3.0])})
    result = run(step(op="log", column="x", offset=1.0, base=10.0, output="lx"), batch)
    out = result.batch.column(1).to_pylist()
    assert out[0] == 0.0 and out[1] == pytest.approx(1.0) and out[3] is None
    (rejection,) = result.rejections
    assert rejection.reason == "out_of_domain"
    assert rejection.mask.tolist() == [False, False, True, False, True]
    assert rejection.message[2] == (
        "log of x=-1.0 + offset 1.0 is undefined: needs a value + offset > 0"
    )


def test_log_through_engine_sends_rows_to_errors():
    batch = pa.record_batch({"x": pa.array([math.e, 0.0])})
    applied = apply_steps(batch, [step(op="log", column="x")], {}, pipeline="p")
    assert applied.batch.to_pydict() == {"x": [1.0]}
    assert [(e.step, e.reason, e.payload) for e in applied.errors] == [
        ("log:x", "out_of_domain", '{"x": 0.0}')
    ]
    assert applied.counts == {("rejected", "log:x", "out_of_domain"): 1}


# --- bucketize ------------------------------------------------------------------------------


def test_bucketize_fixed_boundaries_value_on_boundary_goes_up():
    batch = pa.record_batch({"x": pa.array([-5.0, 2.0, 4.0, 5.0, 7.5, 10.0, float("nan"), None])})
    out = run(step(op="bucketize", column="x", boundaries=[2.0, 5.0, 10.0]), batch).batch
    assert out.column(0).type == pa.int64()
    assert out.column(0).to_pylist() == [0, 1, 1, 2, 2, 3, 3, None]


def test_bucketize_fitted_quantiles():
    batch = pa.record_batch({"x": f32([float(v) for v in range(1, 11)])})
    s = step(op="bucketize", column="x", num_buckets=4)
    # tf.Transform's boundaries: more than 2.5, 5 and 7.5 of the 10 values at or below.
    assert fitted_for(s, batch) == {"boundaries": [3.0, 6.0, 8.0]}
    assert run(s, batch).batch.column(0).to_pylist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_fitted_features_ignore_non_finite_values():
    values = [1.0, 2.0, 3.0, 4.0, math.nan, math.inf, -math.inf, None]
    batch = pa.record_batch({"x": pa.array(values, pa.float64())})
    z = run(step(op="z_score", column="x", output="z"), batch).batch.column("z").to_pylist()
    # Fitted on 1..4 only: mean 2.5, population std sqrt(1.25); the other rows keep their
    # own value's fate (NaN stays NaN, infinities stay infinite) and nulls stay null.
    assert z[:4] == pytest.approx([(v - 2.5) / math.sqrt(1.25) for v in (1, 2, 3, 4)])
    assert math.isnan(z[4]) and z[5] == math.inf and z[6] == -math.inf and z[7] is None
    scaled = run(step(op="min_max", column="x", output="m"), batch).batch.column("m").to_pylist()
    assert scaled[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    buckets = run(step(op="bucketize", column="x", output="b", num_buckets=2), batch).batch
    assert buckets.column("b").to_pylist()[:4] == [0, 0, 1, 1]


def test_z_score_applies_null_statistics_from_an_artifact():
    batch = pa.record_batch({"x": f32([1.0, -2.0])})
    s = step(op="z_score", column="x")
    # A variance beyond float64's range is recorded as null: every value scales to 0.
    out = s.apply(batch, {"count": 2, "mean": 0.5, "variance": None, "min": -2.0, "max": 1.0})
    assert out.batch.column(0).to_pylist() == [0.0, -0.0]
    out = s.apply(batch, {"count": 2, "mean": None, "variance": 4.0, "min": -2.0, "max": 1.0})
    assert out.batch.column(0).to_pylist() == [0.5, -1.0]


def test_bucketize_compares_in_float32_like_tf_transform():
    # 0.1 as float32 is 0.100000001...; the float64 value 0.1 is below it.
    s = step(op="bucketize", column="x", num_buckets=2)
    fitted = {"boundaries": [0.1]}
    assert s.apply(pa.record_batch({"x": pa.array([0.1])}), fitted).batch.column(0).to_pylist() == [
        0
    ]
    assert s.apply(pa.record_batch({"x": f32([0.1])}), fitted).batch.column(0).to_pylist() == [1]


def test_bucketize_needs_exactly_one_of_num_buckets_or_boundaries():
    with pytest.raises(SpecError, match="give exactly one of num_buckets"):
        step(op="bucketize", column="x")
    with pytest.raises(SpecError, match="boundaries must be ascending"):
        step(op="bucketize", column="x", boundaries=[2.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=50),
    st.integers(2, 10),
)
def test_bucketize_is_monotone_and_in_range(values, num_buckets):
    batch = pa.record_batch({"x": pa.array(values)})
    s = step(op="bucketize", column="x", num_buckets=num_buckets)
    buckets = np.asarray(run(s, batch).batch.column(0).to_pylist())
    order = np.argsort(np.asarray(values, np.float64), kind="stable")
    assert np.all(np.diff(buckets[order]) >= 0)
    assert buckets.min() >= 0 and buckets.max() <= num_buckets - 1


# --- vocabulary -----------------------------------------------------------------------------


def test_vocabulary_ids_oov_and_nulls():
    fit_batch = pa.record_batch({"s": ["b", "a", "a", "c", "b", "a", "", None]})
    s = step(op="vocabulary", column="s", num_oov_buckets=3)
    fitted = fitted_for(s, fit_batch)
    assert fitted["vocabulary"] == ["a", "b", "c"]
    batch = pa.record_batch({"s": ["c", "a", "zebra", "", None, "b"]})
    out = s.apply(batch, fitted).batch.column(0)
    empty = 3 + farmhash.fingerprint64("") % 3
    assert out.type == pa.int64()
    assert out.to_pylist() == [2, 0, 3 + farmhash.fingerprint64("zebra") % 3, empty, empty, 1]


def test_vocabulary_default_value_top_k_and_threshold():
    fit_batch = pa.record_batch({"s": list("aaabbc")})
    s = step(op="vocabulary", column="s", top_k=1, default_value=-7, output="id")
    out = s.apply(pa.record_batch({"s": ["a", "b", None]}), fitted_for(s, fit_batch)).batch
    assert out.to_pydict() == {"s": ["a", "b", None], "id": [0, -7, -7]}
    s = step(op="vocabulary", column="s", frequency_threshold=2)
    assert fitted_for(s, fit_batch)["vocabulary"] == ["a", "b"]


def test_vocabulary_empty_fit_uses_tf_transform_dummy():
    s = step(op="vocabulary", column="s", num_oov_buckets=2)
    out = s.apply(pa.record_batch({"s": ["x"]}), {"vocabulary": []}).batch.column(0)
    assert out.to_pylist() == [1 + farmhash.fingerprint64("x") % 2]
    hit = s.apply(pa.record_batch({"s": [EMPTY_VOCABULARY_DUMMY]}), {"vocabulary": []}).batch
    assert hit.column(0).to_pylist() == [0]


def test_vocabulary_on_integers_uses_string_form():
    batch = pa.record_batch({"n": pa.array([5, 7, 5], pa.int64())})
    s = step(op="vocabulary", column="n")
    assert run(s, batch).batch.column(0).to_pylist() == [0, 1, 0]


# --- hash_bucket, cross, fingerprint --------------------------------------------------------


def test_fingerprint_matches_known_tensorflow_values():
    # tf.strings.to_hash_bucket_fast(["hello", ""], 2**62) == [3786372426573024488,
    # 1936946117179621455] (computed once with TensorFlow 2.21).
    got = hash_buckets(pa.array(["hello", ""]), 2**62).to_pylist()
    assert got == [3786372426573024488, 1936946117179621455]
    assert fingerprint64(pa.array([None, ""])).tolist() == [farmhash.fingerprint64("")] * 2


def test_hash_bucket():
    batch = pa.record_batch({"s": ["hello", None, "hello"], "n": pa.array([1, 2, 3])})
    out = run(step(op="hash_bucket", column="s", num_buckets=10, output="h"), batch).batch
    h = farmhash.fingerprint64("hello") % 10
    assert out.column(2).to_pylist() == [h, farmhash.fingerprint64("") % 10, h]
    out = run(step(op="hash_bucket", column="n", num_buckets=1000), batch).batch
    assert out.column(1).to_pylist() == [farmhash.fingerprint64(str(v)) % 1000 for v in (1, 2, 3)]


def test_cross_joins_string_forms():
    batch = pa.record_batch({"a": ["x", "y", None], "b": pa.array([1, 2, 3])})
    s = step(op="cross", columns=["a", "b"], num_buckets=100)
    assert s.name == "cross:a_X_b"
    out = run(s, batch).batch
    assert out.schema.names == ["a", "b", "a_X_b"]
    expected = [farmhash.fingerprint64(v) % 100 for v in ("x_X_1", "y_X_2", "_X_3")]
    assert out.column(2).to_pylist() == expected


def test_cross_needs_two_columns():
    with pytest.raises(SpecError, match="cross needs at least two columns"):
        step(op="cross", columns=["a"], num_buckets=3)


# --- timestamp_parts ------------------------------------------------------------------------


def test_timestamp_parts_from_unix_seconds_in_a_timezone():
    # 1400269500 = Fri 2014-05-16 19:45 UTC = 14:45 in Chicago (CDT); 1400900000 = Sat
    # 2014-05-24 02:53:20 UTC, still Friday the 23rd in Chicago; 1400950000 = Sat 11:46:40.
    batch = pa.record_batch({"t": pa.array([1400269500, None, 1400900000, 1400950000])})
    s = step(op="timestamp_parts", column="t", timezone="America/Chicago")
    out = run(s, batch).batch.to_pydict()
    assert out == {
        "t": [1400269500, None, 1400900000, 1400950000],
        "t_hour": [14, None, 21, 11],
        "t_minute": [45, None, 53, 46],
        "t_day_of_week": [4, None, 4, 5],
        "t_day": [16, None, 23, 24],
        "t_month": [5, None, 5, 5],
        "t_year": [2014, None, 2014, 2014],
        "t_day_of_year": [136, None, 143, 144],
        "t_is_weekend": [0, None, 0, 1],
    }
    utc = run(step(op="timestamp_parts", column="t", parts=["day"]), batch).batch
    assert utc.column(1).to_pylist() == [16, None, 24, 24]


def test_timestamp_parts_from_timestamp_with_prefix_and_subset():
    ts = pa.array([0], pa.timestamp("us", tz="UTC"))
    s = step(op="timestamp_parts", column="t", parts=["year", "day_of_week"], prefix="pickup")
    assert run(s, pa.record_batch({"t": ts})).batch.to_pydict() == {
        "t": [ts[0].as_py()],
        "pickup_year": [1970],
        "pickup_day_of_week": [3],
    }


def test_timestamp_parts_validation():
    with pytest.raises(SpecError, match="unknown timezone 'Mars/Base'"):
        step(op="timestamp_parts", column="t", timezone="Mars/Base")
    with pytest.raises(SpecError, match="valid parts are hour, minute"):
        step(op="timestamp_parts", column="t", parts=["weekday"])


# --- copy -----------------------------------------------------------------------------------


def test_copy_with_cast_and_rejection():
    batch = pa.record_batch({"a": pa.array([1, 2, None]), "b": ["1", "x", "3"]})
    result = run(step(op="copy", columns=["a", "b"], type="int32"), batch)
    assert result.batch.schema.names == ["a", "b", "a_xf", "b_xf"]
    assert result.batch.column(2).type == pa.int32()
    assert result.batch.column(2).to_pylist() == [1, 2, None]
    assert result.batch.column(3).to_pylist() == [1, None, 3]
    (rejection,) = result.rejections
    assert rejection.reason == "cast_failed" and rejection.mask.tolist() == [False, True, False]
    assert rejection.message[1] == "b='x' does not cast to int32"


def test_copy_without_type_keeps_type():
    batch = pa.record_batch({"a": f32([1.5])})
    out = run(step(op="copy", columns=["a"], suffix="_raw"), batch).batch
    assert out.schema == pa.schema([("a", pa.float32()), ("a_raw", pa.float32())])


# --- parameters that cannot work are refused when the spec loads ---------------------------


def _problem(**mapping) -> tuple[str, str]:
    with pytest.raises(SpecError) as info:
        step(**mapping)
    return info.value.path, info.value.problem


IDS = "the int32 id space of embeddings"


@pytest.mark.parametrize(
    ("mapping", "path", "problem"),
    [
        # Fitted boundaries are num_buckets - 1 floats computed and held in memory.
        (
            {"op": "bucketize", "column": "x", "num_buckets": 10**12},
            "features[0].num_buckets",
            "got 1,000,000,000,000; expected an integer from 1 to 10,000 (finer buckets are "
            "below the sketch's accuracy)",
        ),
        (
            {"op": "bucketize", "column": "x", "num_buckets": 0},
            "features[0].num_buckets",
            "got 0; expected an integer from 1 to 10,000 (finer buckets are below the sketch's "
            "accuracy)",
        ),
        (
            {"op": "bucketize", "column": "x", "boundaries": [0.0, math.nan]},
            "features[0].boundaries[1]",
            "got nan; expected a finite number",
        ),
        (
            {"op": "hash_bucket", "column": "s", "num_buckets": 2**31},
            "features[0].num_buckets",
            f"got 2,147,483,648; expected an integer from 1 to 2,147,483,647 ({IDS})",
        ),
        (
            {"op": "cross", "columns": ["a", "b"], "num_buckets": 10**30},
            "features[0].num_buckets",
            f"got 1,000,000,000,000,000,000,000,000,000,000; expected an integer from 1 to "
            f"2,147,483,647 ({IDS})",
        ),
        (
            {"op": "vocabulary", "column": "s", "top_k": 2**40},
            "features[0].top_k",
            f"got 1,099,511,627,776; expected an integer from 0 to 2,147,483,647 ({IDS})",
        ),
        (
            {"op": "vocabulary", "column": "s", "num_oov_buckets": -1},
            "features[0].num_oov_buckets",
            f"got -1; expected an integer from 0 to 2,147,483,647 ({IDS})",
        ),
        (
            {"op": "vocabulary", "column": "s", "default_value": 2**63},
            "features[0].default_value",
            "got 9223372036854775808; expected an integer from -9,223,372,036,854,775,808 to "
            "9,223,372,036,854,775,807 (64 bits)",
        ),
        (
            {"op": "min_max", "column": "x", "output_min": -math.inf},
            "features[0].output_min",
            "got -inf; expected a finite number",
        ),
        (
            {"op": "log", "column": "x", "offset": math.nan},
            "features[0].offset",
            "got nan; expected a finite number",
        ),
        (
            {"op": "log", "column": "x", "base": math.inf},
            "features[0].base",
            "got inf; expected a finite number, or null for none",
        ),
    ],
)
def test_sizes_and_non_finite_numbers_are_refused(mapping: dict, path: str, problem: str) -> None:
    assert _problem(**mapping) == (path, problem)


def test_sizes_at_their_limits_are_accepted() -> None:
    assert step(op="bucketize", column="x", num_buckets=10_000).num_buckets == 10_000
    assert step(op="hash_bucket", column="s", num_buckets=2**31 - 1).num_buckets == 2**31 - 1
    vocab = step(op="vocabulary", column="s", top_k=0, num_oov_buckets=2**31 - 1)
    assert (vocab.top_k, vocab.num_oov_buckets) == (0, 2**31 - 1)
