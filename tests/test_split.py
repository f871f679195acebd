"""Deterministic splits: hash and time methods, pure functions without Beam."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.config import SpecError, from_mapping
from transforms.hashing import column_hash, row_hash
from transforms.split import MISSING_SPLIT_TIME, Split, assign, partition, to_micros


def _batch(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"id": list(range(n)), "name": [f"n{i % 7}" for i in range(n)], "__line": list(range(n))}
    )


def test_hash_split_fractions_are_respected_within_sampling_error() -> None:
    split = Split(fractions={"train": 0.7, "eval": 0.2, "test": 0.1}, key=["id"])
    index, rejection = assign(_batch(100_000), split)
    assert rejection is None
    shares = np.bincount(index, minlength=3) / 100_000
    assert np.allclose(shares, [0.7, 0.2, 0.1], atol=0.006)


def test_hash_split_depends_only_on_the_key_values() -> None:
    split = Split(fractions={"train": 0.5, "eval": 0.5}, key=["id"])
    a = pa.RecordBatch.from_pydict({"id": [5, 6, 7], "other": [1, 2, 3]})
    b = pa.RecordBatch.from_pydict({"id": [7, 6, 5], "other": [9, 9, 9]})
    ia, _ = assign(a, split)
    ib, _ = assign(b, split)
    assert ia.tolist() == ib.tolist()[::-1]


def test_hash_split_values_are_stable_across_releases() -> None:
    # Fixed expected assignments: a change here reshuffles every user's splits.
    split = Split(fractions={"train": 0.5, "eval": 0.5}, key=["id", "name"])
    index, _ = assign(_batch(12), split)
    assert index.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert row_hash(_batch(3), ["id", "name"]).tolist() == [
        7742972880204232506,
        11660025557876128767,
        6904860900343381312,
    ]


def test_whole_row_key_ignores_hidden_columns() -> None:
    split = Split(fractions={"a": 0.5, "b": 0.5})
    one = pa.RecordBatch.from_pydict({"v": [1, 2, 3], "__line": [1, 2, 3]})
    two = pa.RecordBatch.from_pydict({"v": [1, 2, 3], "__line": [10, 20, 30]})
    assert assign(one, split)[0].tolist() == assign(two, split)[0].tolist()


def test_salt_changes_the_assignment() -> None:
    plain = Split(fractions={"a": 0.5, "b": 0.5}, key=["id"])
    salted = Split(fractions={"a": 0.5, "b": 0.5}, key=["id"], salt="v2")
    assert assign(_batch(200), plain)[0].tolist() != assign(_batch(200), salted)[0].tolist()


def test_nulls_hash_alike_and_strings_hash_by_value() -> None:
    col = pa.array(["x", None, "x", None, "y"])
    h = column_hash(col)
    assert h[0] == h[2] and h[1] == h[3] and h[0] != h[4]
    assert column_hash(pa.array([0.0]))[0] == column_hash(pa.array([-0.0]))[0]


def test_time_split_uses_cutoffs_and_rejects_missing_times() -> None:
    split = from_mapping(
        Split,
        {
            "method": "time",
            "column": "ts",
            "cutoffs": {"train": "2020-01-01T00:00:00Z", "eval": None},
        },
    )
    boundary = to_micros("2020-01-01T00:00:00Z") // 1_000_000
    batch = pa.RecordBatch.from_pydict({"ts": [boundary - 1, boundary, None, boundary + 5]})
    index, rejection = assign(batch, split)
    assert index.tolist()[:2] == [0, 1] and index.tolist()[3] == 1
    assert rejection is not None
    assert rejection.mask.tolist() == [False, False, True, False]
    assert rejection.reason == MISSING_SPLIT_TIME


def test_time_split_on_timestamp_type() -> None:
    split = Split(method="time", column="ts", cutoffs={"old": 1_000, "new": None}, fractions={})
    ts = pa.array([999_000_000, 1_000_000_000], type=pa.timestamp("us", tz="UTC"))
    index, _ = assign(pa.RecordBatch.from_pydict({"ts": ts}), split)
    assert index.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"fractions": {"train": 0.5, "eval": 0.4}}, "must sum to 1"),
        ({"fractions": {"train": 1.2, "eval": -0.2}}, "non-negative"),
        ({"method": "time", "cutoffs": {"a": None}}, "needs 'column'"),
        (
            {"method": "time", "column": "t", "cutoffs": {"a": 5, "b": 1, "c": None}},
            "must increase",
        ),
        ({"method": "time", "column": "t", "cutoffs": {"a": 5, "b": 6}}, "only the last split"),
        ({"method": "random"}, "expected one of 'hash', 'time'"),
    ],
)
def test_invalid_split_sections_fail_with_the_reason(mapping: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        from_mapping(Split, mapping, "split")


def test_partition_keeps_every_row_exactly_once() -> None:
    batch = _batch(50)
    index, _ = assign(batch, Split(fractions={"a": 0.3, "b": 0.3, "c": 0.4}, key=["id"]))
    parts = partition(batch, index, 3)
    assert sum(p.num_rows for p in parts) == 50
    assert sorted(v for p in parts for v in p.column("id").to_pylist()) == list(range(50))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-(2**62), 2**62)), min_size=1, max_size=50),
    st.floats(0.01, 0.99),
)
def test_hash_split_is_a_pure_function_of_each_row(values: list, fraction: float) -> None:
    split = Split(fractions={"a": fraction, "b": 1 - fraction}, key=["v"])
    batch = pa.RecordBatch.from_pydict({"v": pa.array(values, type=pa.int64())})
    whole, _ = assign(batch, split)
    singles = [assign(batch.slice(i, 1), split)[0][0] for i in range(len(values))]
    assert whole.tolist() == singles
    assert set(whole.tolist()) <= {0, 1}


def test_dates_timestamps_and_bools_hash_by_value() -> None:
    dates = pa.array([1, 2, 1, None], pa.date32())
    h = column_hash(dates)
    assert h[0] == h[2] and h[0] != h[1] and h[3] != h[0]
    ts = column_hash(pa.array([5, 5, 6], pa.timestamp("us", tz="UTC")))
    assert ts[0] == ts[1] != ts[2]
    flags = column_hash(pa.array([True, False, True]))
    assert flags[0] == flags[2] != flags[1]
