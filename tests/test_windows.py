"""The pure window model: window assignment, accumulators, per-key splitting, the next tick."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from hypothesis import given
from hypothesis import strategies as st

from tests.window_rows import AGG, US, trip_batch
from transforms.core.config import SpecError, from_mapping
from transforms.streaming.event_time import event_times_us
from transforms.streaming.windows import (
    Accumulator,
    Aggregation,
    Metric,
    Window,
    assign_rows,
    next_tick,
    split_by_key,
    window_starts,
)

# --- pure -------------------------------------------------------------------------------


def test_fixed_window_starts() -> None:
    times = np.array([0, 9_999_999, 10_000_000, -1], dtype=np.int64)
    assert window_starts(times, Window(size_seconds=10)).tolist() == [
        [0],
        [0],
        [10 * US],
        [-10 * US],
    ]


def test_sliding_window_starts_latest_first() -> None:
    window = Window(size_seconds=30, kind="sliding", period_seconds=10)
    assert window_starts(np.array([25 * US]), window).tolist() == [[20 * US, 10 * US, 0]]


@given(
    t=st.integers(min_value=-(10**15), max_value=10**15),
    period=st.integers(min_value=1, max_value=10**7),
    k=st.integers(min_value=1, max_value=5),
    offset=st.integers(min_value=0, max_value=10**7),
)
def test_every_window_contains_its_time(t: int, period: int, k: int, offset: int) -> None:
    window = Window(
        size_seconds=period * k / US,
        kind="sliding",
        period_seconds=period / US,
        offset_seconds=offset / US,
    )
    starts = window_starts(np.array([t], dtype=np.int64), window)[0]
    assert len(starts) == k
    for s in starts:
        assert s <= t < s + window.size_us
        assert (s - window.offset_us) % window.period_us == 0


def test_window_spec_validation() -> None:
    # Each problem is reported at its own key, with the value and what is expected.
    cases = [
        (
            Window,
            {"kind": "sliding", "size_seconds": 25, "period_seconds": 10},
            "w.size_seconds: got 25.0; expected a multiple of period_seconds (10.0)",
        ),
        (Metric, {"op": "sum", "output": "x"}, "w.column: op sum needs a column (metric 'x')"),
        (
            Window,
            {"size_seconds": 10, "period_seconds": 5},
            "w.period_seconds: only a sliding window has one (kind: sliding)",
        ),
        (
            Window,
            {"size_seconds": -1},
            "w.size_seconds: got -1.0; expected a number greater than 0",
        ),
        (
            Window,
            {"kind": "sliding", "size_seconds": 10},
            "w.period_seconds: got None; a sliding window needs a number greater than 0",
        ),
    ]
    late = {
        "name": "a",
        "keys": ["k"],
        "window": {"size_seconds": 60},
        "metrics": [{"op": "count", "output": "n"}],
        "allowed_lateness_seconds": -1,
    }
    cases.append(
        (Aggregation, late, "w.allowed_lateness_seconds: got -1.0; expected a number of at least 0")
    )
    for cls, mapping, message in cases:
        with pytest.raises(SpecError) as caught:
            from_mapping(cls, mapping, "w")
        assert str(caught.value) == message


def test_event_times_from_seconds_and_timestamps() -> None:
    assert event_times_us(pa.array([1, None], pa.int64()))[0] == US
    assert event_times_us(pa.array([1.5], pa.float64())).tolist() == [1_500_000]
    ts = pa.array([1_000], pa.timestamp("ms", "UTC"))
    assert event_times_us(ts).tolist() == [US]


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=30), st.data())
def test_accumulator_merge_equals_whole(values: list[float], data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(values)))
    whole, left, right = Accumulator(), Accumulator(), Accumulator()
    whole.add({"x": pa.array(values, pa.float64())})
    left.add({"x": pa.array(values[:cut], pa.float64())})
    right.add({"x": pa.array(values[cut:], pa.float64())})
    merged = left.merge(right)
    metrics = [Metric(op=o, column="x", output=o) for o in ("count", "min", "max")]
    assert merged.extract(metrics) == whole.extract(metrics)
    assert merged.rows == whole.rows == len(values)
    assert merged.sum["x"] == pytest.approx(sum(values), abs=1e-6)


def test_accumulator_ignores_nulls_and_reports_none_for_empty() -> None:
    acc = Accumulator()
    acc.add({"x": pa.array([None, 2.0, None], pa.float64())})
    metrics = [
        Metric(op="count", output="rows"),
        Metric(op="count", column="x", output="n"),
        Metric(op="mean", column="x", output="mean"),
    ]
    assert acc.extract(metrics) == {"rows": 3, "n": 1, "mean": 2.0}
    empty = Accumulator()
    empty.add({"x": pa.array([None], pa.float64())})
    assert empty.extract([Metric(op="sum", column="x", output="s")]) == {"s": None}


def test_split_by_key_keeps_first_seen_order() -> None:
    parts = split_by_key(trip_batch([("b", 1, 1, 2), ("a", 2, 2, 3), ("b", 3, 3, 4)]), ["area"])
    assert [(k, p.column("__line").to_pylist()) for k, p in parts] == [
        (("b",), [2, 4]),
        (("a",), [3]),
    ]


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "", None]), st.integers(0, 3) | st.none()),
        max_size=40,
    )
)
def test_split_by_key_groups_every_row_once_in_first_seen_order(rows: list[tuple]) -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "k1": pa.array([r[0] for r in rows], pa.string()),
            "k2": pa.array([r[1] for r in rows], pa.int64()),
            "n": pa.array(range(len(rows)), pa.int64()),
        }
    )
    expected: dict[tuple, list[int]] = {}
    for i, key in enumerate(rows):
        expected.setdefault(key, []).append(i)
    parts = split_by_key(batch, ["k1", "k2"])
    assert [(k, p.column("n").to_pylist()) for k, p in parts] == list(expected.items())


def test_assign_rows_against_a_watermark() -> None:
    batch = trip_batch([("a", 1, 10, 2), ("a", 12, 20, 3), ("a", None or 0, 5, 4)])
    # Watermark 16 s: [0, 10) expired at 15 s; [10, 20) is open.
    decision = assign_rows(batch, AGG, 16 * US)
    assert decision.late_rows.tolist() == [0, 2]
    assert list(decision.updates) == [10 * US]
    assert decision.updates[10 * US].rows == 1
    # Exactly at end + lateness the window still takes rows (Beam drops only past it).
    assert assign_rows(batch, AGG, 15 * US).late_rows.tolist() == []


def test_sliding_row_partly_late_counts_missed_windows() -> None:
    agg = Aggregation(
        name="s",
        keys=["area"],
        window=Window(size_seconds=20, kind="sliding", period_seconds=10),
        metrics=[Metric(op="count", output="n")],
    )
    decision = assign_rows(trip_batch([("a", 15, 1, 2)]), agg, 21 * US)
    # Windows [10, 30) and [0, 20): the second has expired.
    assert list(decision.updates) == [10 * US]
    assert decision.missed == 1
    assert decision.late_rows.tolist() == []


def test_next_tick_follows_the_expiry_grid_up_to_the_horizon() -> None:
    # 10 s windows, 5 s lateness: windows expire at k * 10 s + 15 s + 1 us.
    window, lateness = Window(size_seconds=10), 5 * US
    expired = 15 * US + 1  # [0, 10) expired: the horizon is 30 s + 1 us.
    assert next_tick(expired, expired, window, lateness) == 25 * US + 1
    assert next_tick(25 * US, expired, window, lateness) == 25 * US + 1
    assert next_tick(25 * US + 1, expired, window, lateness) is None
    assert next_tick(-3 * US, expired, window, lateness) == 5 * US + 1
    assert next_tick(0, None, window, lateness) is None
    # Never at or beyond the end of time: 1 s windows without lateness expire at k s + 1 us.
    end = MAX_TIMESTAMP.micros
    last = end - end % US + 1
    assert next_tick(last - 1, end, Window(size_seconds=1), 0) == last
    assert next_tick(last, end, Window(size_seconds=1), 0) is None


@given(
    period=st.integers(min_value=1, max_value=10**7),
    k=st.integers(min_value=1, max_value=5),
    offset=st.integers(min_value=0, max_value=10**7),
    lateness=st.integers(min_value=0, max_value=3 * 10**7),
    expired=st.integers(min_value=-(10**14), max_value=10**14),
    behind=st.integers(min_value=0, max_value=10**8),
)
def test_next_tick_is_the_next_expiry_within_the_horizon(
    period: int, k: int, offset: int, lateness: int, expired: int, behind: int
) -> None:
    window = Window(
        size_seconds=period * k / US,
        kind="sliding",
        period_seconds=period / US,
        offset_seconds=offset / US,
    )
    size = window.size_us
    horizon = expired + size + lateness
    watermark = expired + behind
    tick = next_tick(watermark, expired, window, lateness)
    # The first grid instant after the watermark, by walking the grid.
    first = window.offset_us + size + lateness + 1
    candidate = first + ((watermark - first) // period) * period
    while candidate <= watermark:
        candidate += period
    if candidate > horizon:
        assert tick is None
    else:
        assert tick == candidate
        assert (tick - window.offset_us - size - lateness - 1) % period == 0
        assert watermark < tick <= horizon


@given(
    period=st.integers(min_value=1, max_value=10**6),
    k=st.integers(min_value=1, max_value=5),
    offset=st.integers(min_value=0, max_value=10**6),
    periods=st.integers(min_value=0, max_value=20),
    extra=st.integers(min_value=0, max_value=10**6),
    expired=st.integers(min_value=-(10**12), max_value=10**12),
)
def test_ticks_after_the_last_expiry_cover_every_earlier_window_and_stop(
    period: int, k: int, offset: int, periods: int, extra: int, expired: int
) -> None:
    # Any lateness, in a bounded number of periods so that walking the ticks stays quick.
    lateness = periods * period + extra % period
    window = Window(
        size_seconds=period * k / US,
        kind="sliding",
        period_seconds=period / US,
        offset_seconds=offset / US,
    )
    size = window.size_us
    # What an idle shard fires when the watermark jumps to the end of time.
    ticks, watermark = [], expired
    while (tick := next_tick(watermark, expired, window, lateness)) is not None:
        ticks.append(tick)
        watermark = tick
    assert len(ticks) <= (size + lateness) // period + 1
    # Every window that starts before the last expiry and has not expired by then expires
    # exactly at one of the ticks: the shard knows when it does.
    start = expired - 1 - (expired - 1 - window.offset_us) % period
    while start + size + lateness + 1 > expired:
        assert start + size + lateness + 1 in ticks
        start -= period
