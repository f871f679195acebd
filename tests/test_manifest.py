"""Row accounting: nested counts, the balance check and the per-step table."""

from __future__ import annotations

import collections

import pytest

from transforms.core.manifest import (
    CountsMismatchError,
    check_balance,
    nest_counts,
    step_table,
    sum_counts,
)


def _counts() -> collections.Counter:
    return collections.Counter(
        {
            ("read", "read", ""): 100,
            ("rejected", "read", "wrong_field_count"): 2,
            ("rejected", "range:fare", "out_of_range"): 3,
            ("dropped", "dedupe", "duplicate"): 5,
            ("written", "train", ""): 60,
            ("written", "eval", ""): 30,
        }
    )


def test_nest_counts() -> None:
    assert nest_counts(_counts()) == {
        "read": 100,
        "written": {"eval": 30, "train": 60},
        "rejected": {"range:fare": {"out_of_range": 3}, "read": {"wrong_field_count": 2}},
        "dropped": {"dedupe": {"duplicate": 5}},
        "total_rejected": 5,
        "total_dropped": 5,
        "total_written": 90,
    }


def test_balanced_counts_pass_and_unbalanced_fail_with_the_figures() -> None:
    check_balance(nest_counts(_counts()))
    missing = _counts()
    missing[("written", "eval", "")] -= 1
    with pytest.raises(
        CountsMismatchError, match=r"read 100 but written 89 \+ rejected 5 \+ dropped 5 = 99"
    ):
        check_balance(nest_counts(missing))


def test_step_table_derives_rows_in_and_out() -> None:
    table = step_table(["range:fare", "dedupe", "split"], nest_counts(_counts()))
    assert table == [
        {"step": "read", "rows_in": 100, "rejected": 2, "dropped": 0, "rows_out": 98},
        {"step": "range:fare", "rows_in": 98, "rejected": 3, "dropped": 0, "rows_out": 95},
        {"step": "dedupe", "rows_in": 95, "rejected": 0, "dropped": 5, "rows_out": 90},
        {"step": "split", "rows_in": 90, "rejected": 0, "dropped": 0, "rows_out": 90},
    ]


def test_sum_counts() -> None:
    a = collections.Counter({("read", "read", ""): 1})
    assert sum_counts([a, a, collections.Counter()]) == {("read", "read", ""): 2}


def test_unknown_count_kind_is_a_code_error() -> None:
    with pytest.raises(ValueError, match="unknown count kind"):
        nest_counts({("bogus", "x", ""): 1})
