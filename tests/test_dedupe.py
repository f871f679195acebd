"""Deduplication: the pure mask, partitioning, and the Beam transform end to end."""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.beam.dedupe import DeduplicateBatches
from transforms.core.batch_steps import apply_steps, segments
from transforms.core.config import SpecError
from transforms.ops.dedupe import Deduplicate, dedupe_partition, duplicate_mask, partition_batch
from transforms.ops.registry import build_step


def rows(file: str, lines: list[int], **columns: list) -> pa.RecordBatch:
    return pa.record_batch(
        {
            **{k: pa.array(v) for k, v in columns.items()},
            "__file": pa.array([file] * len(lines)),
            "__line": pa.array(lines, pa.int64()),
        }
    )


def test_duplicate_mask_keeps_first_or_last_in_source_order() -> None:
    # Rows are listed out of source order on purpose: order comes from (__file, __line).
    t = pa.Table.from_batches(
        [
            rows(
                "b.csv",
                [2, 3],
                k=[1, 2],
                v=["b2", "b3"],
            ),
            rows("a.csv", [9, 2, 5], k=[1, 1, 2], v=["a9", "a2", "a5"]),
        ]
    )
    assert duplicate_mask(t, ["k"], "first").tolist() == [True, True, True, False, False]
    assert duplicate_mask(t, ["k"], "last").tolist() == [False, False, True, True, True]


def test_duplicate_mask_nulls_and_nans_compare_equal() -> None:
    t = pa.table({"k": [None, 1.0, None, math.nan, math.nan, 1.0], "s": ["x"] * 6})
    assert duplicate_mask(t, ["k"], "first").tolist() == [False, False, True, False, True, True]


def test_duplicate_mask_whole_visible_row_ignores_hidden_columns() -> None:
    b = rows("f", [1, 2, 3, 4], a=[1, 1, 1, 2], s=["x", "x", "y", "x"])
    t = pa.Table.from_batches([b])
    assert duplicate_mask(t, [], "first").tolist() == [False, True, False, False]
    assert duplicate_mask(t, [], "last").tolist() == [True, False, False, False]
    assert duplicate_mask(t.slice(0, 0), [], "first").tolist() == []


def test_duplicate_mask_unknown_key() -> None:
    with pytest.raises(ValueError, match="dedupe key column 'z' is not in the data; columns are a"):
        duplicate_mask(pa.table({"a": [1]}), ["z"], "first")


def reference_mask(keys: list[tuple], order: list[int], keep: str) -> list[bool]:
    """Straightforward Python: walk rows in source order, remember the chosen one per key."""
    chosen: dict[tuple, int] = {}
    walk = sorted(range(len(keys)), key=lambda i: (order[i], i))
    if keep == "last":
        walk = walk[::-1]
    for i in walk:
        norm = tuple("NaN" if isinstance(x, float) and math.isnan(x) else x for x in keys[i])
        chosen.setdefault(norm, i)
    kept = set(chosen.values())
    return [i not in kept for i in range(len(keys))]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 3)),
            st.one_of(st.none(), st.sampled_from(["a", "b", ""])),
            st.one_of(st.none(), st.sampled_from([0.5, math.nan])),
            st.integers(1, 6),
        ),
        max_size=40,
    ),
    st.sampled_from(["first", "last"]),
    st.sampled_from([["i"], ["s", "f"], ["i", "s", "f"], []]),
)
@settings(max_examples=150, deadline=None)
def test_duplicate_mask_matches_reference(rows_: list[tuple], keep: str, key: list[str]) -> None:
    table = pa.table(
        {
            "i": pa.array([r[0] for r in rows_], pa.int64()),
            "s": pa.array([r[1] for r in rows_], pa.string()),
            "f": pa.array([r[2] for r in rows_], pa.float64()),
            "__file": pa.array(["f.csv"] * len(rows_)),
            "__line": pa.array([r[3] for r in rows_], pa.int64()),
        }
    )
    names = key or ["i", "s", "f"]
    keys = [tuple(r[["i", "s", "f"].index(n)] for n in names) for r in rows_]
    expected = reference_mask(keys, [r[3] for r in rows_], keep)
    assert duplicate_mask(table, key, keep).tolist() == expected  # type: ignore[arg-type]


def test_partition_batch_is_stable_and_complete() -> None:
    b = rows("f", list(range(1, 101)), k=[i % 13 for i in range(100)])
    parts = list(partition_batch(b, ["k"], 7))
    assert sum(p.num_rows for _, p in parts) == 100
    assert len({pid for pid, _ in parts}) == len(parts)
    where = {}
    for pid, p in parts:
        assert 0 <= pid < 7
        for k in p.column(0).to_pylist():
            assert where.setdefault(k, pid) == pid
    # Another batch with the same keys lands the same way.
    other = rows("g", [1, 2], k=[3, 12])
    for pid, p in partition_batch(other, ["k"], 7):
        for k in p.column(0).to_pylist():
            assert where[k] == pid


def test_dedupe_partition_orders_survivors_and_counts() -> None:
    b1 = rows("f", [4, 1], k=[1, 2], v=["x", "y"])
    b2 = rows("f", [2, 3], k=[1, 2], v=["z", "w"])
    survivors, dropped = dedupe_partition([b1, b2], ["k"], "first")
    assert dropped == 2
    assert [r for b in survivors for r in b.to_pylist()] == [
        {"k": 2, "v": "y", "__file": "f", "__line": 1},
        {"k": 1, "v": "z", "__file": "f", "__line": 2},
    ]
    assert dedupe_partition([b1.slice(0, 0)], ["k"], "first") == ([], 0)


def test_step_spec_and_barrier() -> None:
    step = build_step({"op": "dedupe", "key": ["trip_id"], "keep": "last"}, "clean[5]")
    assert isinstance(step, Deduplicate)
    assert (step.name, step.key, step.keep, step.is_barrier) == (
        "dedupe",
        ["trip_id"],
        "last",
        True,
    )
    assert step.input_columns() == ["trip_id"]
    with pytest.raises(ValueError, match="cannot run per batch"):
        step.apply(rows("f", [1], trip_id=[1]), None)
    with pytest.raises(ValueError, match="regroups the data set"):
        apply_steps(rows("f", [1], trip_id=[1]), [step], {}, pipeline="p")
    assert segments([step]) == [([], step), ([], None)]
    with pytest.raises(SpecError) as info:
        build_step({"op": "dedupe", "keep": "middle"}, "clean[5]")
    assert str(info.value).startswith("clean[5].keep: got 'middle'")
    with pytest.raises(SpecError, match="'__line' is a hidden source column"):
        build_step({"op": "dedupe", "key": ["__line"]}, "clean[5]")
    with pytest.raises(SpecError, match="names column 'a' twice"):
        build_step({"op": "dedupe", "key": ["a", "a"]}, "clean[5]")


def test_transform_validates_configuration() -> None:
    with pytest.raises(ValueError, match="num_partitions must be at least 1, got 0"):
        DeduplicateBatches(step=Deduplicate(key=["k"]), num_partitions=0)
    with pytest.raises(TypeError, match="must be a Deduplicate step"):
        DeduplicateBatches(step="dedupe")  # type: ignore[arg-type]


def _explode(batch: pa.RecordBatch) -> list[tuple]:
    return [tuple(r.values()) for r in batch.to_pylist()]


@pytest.mark.parametrize(("keep", "num_partitions"), [("first", 4), ("last", 1), ("first", 64)])
def test_deduplicate_batches_pipeline(keep: str, num_partitions: int) -> None:
    # 3 files spread over 5 elements; trip ids repeat within and across batches.
    inputs = [
        rows("a.csv", [2, 3, 4], trip=["t1", "t2", "t1"], fare=[1.0, 2.0, 3.0]),
        rows("a.csv", [5, 6], trip=["t3", "t2"], fare=[4.0, 5.0]),
        rows("b.csv", [2, 3, 4], trip=["t1", "t4", None], fare=[6.0, 7.0, 8.0]),
        rows("b.csv", [5], trip=[None], fare=[9.0]),
        rows("c.csv", [2, 3], trip=["t4", "t5"], fare=[10.0, 11.0]),
    ]
    if keep == "first":
        expected = [
            ("t1", 1.0, "a.csv", 2),
            ("t2", 2.0, "a.csv", 3),
            ("t3", 4.0, "a.csv", 5),
            ("t4", 7.0, "b.csv", 3),
            (None, 8.0, "b.csv", 4),
            ("t5", 11.0, "c.csv", 3),
        ]
    else:
        expected = [
            ("t3", 4.0, "a.csv", 5),
            ("t2", 5.0, "a.csv", 6),
            ("t1", 6.0, "b.csv", 2),
            (None, 9.0, "b.csv", 5),
            ("t4", 10.0, "c.csv", 2),
            ("t5", 11.0, "c.csv", 3),
        ]
    step = Deduplicate(key=["trip"], keep=keep)  # type: ignore[arg-type]
    with TestPipeline(runner="DirectRunner") as p:
        result = (
            p
            | beam.Create(inputs, reshuffle=False)
            | DeduplicateBatches(step=step, num_partitions=num_partitions)
        )
        assert_that(
            result.batches | "Rows" >> beam.FlatMap(_explode), equal_to(expected), label="rows"
        )
        assert_that(
            result.dropped | beam.CombineGlobally(sum), equal_to([5]), label="dropped total"
        )
        assert_that(
            result[DeduplicateBatches.BATCHES]
            | beam.Map(lambda b: tuple(b.schema.names))
            | beam.Distinct(),
            equal_to([("trip", "fare", "__file", "__line")]),
            label="schema",
        )


def test_deduplicate_whole_rows_pipeline() -> None:
    inputs = [
        rows("a.csv", [2, 3], a=[1, 1], b=["x", "x"]),
        rows("a.csv", [4, 5], a=[1, 2], b=["x", "x"]),
    ]
    with TestPipeline(runner="DirectRunner") as p:
        result = (
            p
            | beam.Create(inputs, reshuffle=False)
            | DeduplicateBatches(step=Deduplicate(), num_partitions=3)
        )
        assert_that(
            result.batches | beam.FlatMap(_explode),
            equal_to([(1, "x", "a.csv", 2), (2, "x", "a.csv", 5)]),
            label="rows",
        )
        assert_that(result.dropped | beam.CombineGlobally(sum), equal_to([2]), label="dropped")


def test_mask_on_unordered_table_uses_position() -> None:
    t = pa.table({"k": [1, 1, 1]})
    assert duplicate_mask(t, ["k"], "first").tolist() == [False, True, True]
    assert duplicate_mask(t, ["k"], "last").tolist() == [True, True, False]
    assert np.asarray(duplicate_mask(t, ["k"])).dtype == bool
