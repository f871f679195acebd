"""Deterministic splits: hash and time methods, pure functions without Beam."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.config import SpecError, from_mapping
from transforms.core.hashing import column_hash, row_hash
from transforms.core.split import MISSING_SPLIT_TIME, Split, assign, partition, to_micros


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
        (
            {"fractions": {"train": 1.2, "eval": -0.2}},
            "got 1.2; expected a fraction greater than 0 and at most 1",
        ),
        ({"method": "time", "cutoffs": {"a": None}}, "needs 'column'"),
        (
            {"method": "time", "column": "t", "cutoffs": {"a": 5, "b": 1, "c": None}},
            "must increase",
        ),
        (
            {"method": "time", "column": "t", "cutoffs": {"a": 5, "b": 6}},
            "the last split.s cutoff is null",
        ),
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


# --- split names are folder names; fractions and cutoffs must be able to work ---------------


def _split_problem(mapping: dict) -> tuple[str, str]:
    with pytest.raises(SpecError) as info:
        from_mapping(Split, mapping, "split")
    return info.value.path, info.value.problem


NAME_RULE = (
    "cannot be used: split names are folder names, 1 to 63 letters, digits, '_' or '-', "
    "starting with a letter or digit"
)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "..", ".", ".hidden", "_tmp", "-x", "", "a b", "é", "x" * 64, "a\\b"]
)
def test_split_names_must_be_safe_folder_names(name: str) -> None:
    for mapping in (
        {"fractions": {"train": 0.5, name: 0.5}},
        {"method": "time", "column": "t", "cutoffs": {name: 5, "rest": None}},
    ):
        key = "fractions" if "fractions" in mapping else "cutoffs"
        assert _split_problem(mapping) == (
            f"split.{key}.{name}",
            f"split name {name!r} {NAME_RULE}",
        )


@pytest.mark.parametrize("name", ["artifact", "errors", "Errors", "ARTIFACT"])
def test_split_names_cannot_be_what_a_run_writes_beside_its_splits(name: str) -> None:
    assert _split_problem({"fractions": {"train": 0.5, name: 0.5}}) == (
        f"split.fractions.{name}",
        f"split name {name!r} is reserved: a run writes artifact and errors beside its splits; "
        "choose another name",
    )


def test_split_names_must_differ_in_more_than_case() -> None:
    assert _split_problem({"fractions": {"train": 0.5, "Train": 0.5}}) == (
        "split.fractions.Train",
        "split names 'train' and 'Train' differ only in case; they would share a folder on "
        "some file systems",
    )


def test_good_split_names_load() -> None:
    names = ["train", "eval", "test_2024", "holdout-b", "A1", "x" * 63]
    split = from_mapping(Split, {"fractions": dict.fromkeys(names, 1 / len(names))})
    assert split.names == names


@pytest.mark.parametrize(
    ("fractions", "path", "problem"),
    [
        # NaN compares false with everything: it used to pass and send every row to one split.
        (
            {"train": math.nan, "eval": 1.0},
            "split.fractions.train",
            "got nan; expected a finite number",
        ),
        (
            {"train": math.inf, "eval": 0.5},
            "split.fractions.train",
            "got inf; expected a finite number",
        ),
        (
            {"train": 1.0, "eval": 0.0},
            "split.fractions.eval",
            "got 0.0; expected a fraction greater than 0 and at most 1",
        ),
        (
            {"train": 0.8, "eval": 0.2 + 1e-6},
            "split.fractions",
            "must sum to 1, got 1 ({'train': 0.8, 'eval': 0.200001})",
        ),
        ({}, "split.fractions", "must name at least one split, e.g. {train: 0.8, eval: 0.2}"),
    ],
)
def test_fractions_must_be_finite_positive_and_sum_to_one(
    fractions: dict, path: str, problem: str
) -> None:
    assert _split_problem({"fractions": fractions}) == (path, problem)


def test_fractions_summing_to_one_within_rounding_load() -> None:
    split = from_mapping(Split, {"fractions": {"a": 0.1, "b": 0.2, "c": 0.7}})
    assert split.names == ["a", "b", "c"]
    assert (
        len(from_mapping(Split, {"fractions": dict.fromkeys(map(str, range(100)), 0.01)}).names)
        == 100
    )
    assert _split_problem({"fractions": dict.fromkeys(map(str, range(101)), 1 / 101)}) == (
        "split.fractions",
        "names 101 splits; at most 100 are supported",
    )


@pytest.mark.parametrize(
    ("cutoffs", "path", "problem"),
    [
        (
            {"a": "2020-01-01", "b": "2020-01-01", "c": None},
            "split.cutoffs.b",
            "cutoff '2020-01-01' is not after 'a''s cutoff; cutoffs must increase (each split "
            "takes the rows before its cutoff)",
        ),
        (
            {"a": "last tuesday", "b": None},
            "split.cutoffs.a",
            "cutoff 'last tuesday' is neither unix seconds nor an ISO-8601 time; e.g. "
            "'2016-01-01T00:00:00Z'",
        ),
        (
            {"a": 10**15, "b": None},
            "split.cutoffs.a",
            "got 1000000000000000; expected unix seconds from -62135596800 to 253402300799 "
            "(years 1 to 9999)",
        ),
        (
            {"a": 5, "b": 6},
            "split.cutoffs.b",
            "got 6; the last split's cutoff is null (it takes the rest)",
        ),
        (
            {"a": None, "b": None},
            "split.cutoffs.a",
            "only the last split has a null cutoff (it takes the rest); give a time",
        ),
    ],
)
def test_cutoffs_must_be_times_that_increase(cutoffs: dict, path: str, problem: str) -> None:
    assert _split_problem({"method": "time", "column": "t", "cutoffs": cutoffs}) == (path, problem)
