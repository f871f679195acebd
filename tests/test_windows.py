"""Windowed aggregates: window assignment, accumulators, and the stateful DoFn on TestStream."""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from hypothesis import given
from hypothesis import strategies as st

from transforms.core.config import SpecError, from_mapping
from transforms.streaming.windows import (
    Accumulator,
    AggregateWindows,
    Aggregation,
    Metric,
    Window,
    assign_rows,
    event_times_us,
    next_tick,
    split_by_key,
    window_starts,
)

US = 1_000_000


def _t(seconds: float) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


def _batch(rows: list[tuple[str, float, float, int]]) -> pa.RecordBatch:
    """Rows of (key, event seconds, fare, line)."""
    return pa.RecordBatch.from_pydict(
        {
            "area": [r[0] for r in rows],
            "fare": pa.array([r[2] for r in rows], pa.float64()),
            "__event_time": pa.array([int(r[1] * US) for r in rows], pa.timestamp("us", "UTC")),
            "__file": ["trips.csv"] * len(rows),
            "__line": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


AGG = Aggregation(
    name="fares",
    keys=["area"],
    window=Window(size_seconds=10),
    metrics=[
        Metric(op="count", output="trips"),
        Metric(op="mean", column="fare", output="fare_mean"),
        Metric(op="max", column="fare", output="fare_max"),
    ],
    allowed_lateness_seconds=5,
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
    with pytest.raises(SpecError, match="multiple of"):
        from_mapping(Window, {"kind": "sliding", "size_seconds": 25, "period_seconds": 10})
    with pytest.raises(SpecError, match="needs a column"):
        from_mapping(Metric, {"op": "sum", "output": "x"})
    with pytest.raises(SpecError, match="period_seconds is for kind: sliding"):
        from_mapping(Window, {"size_seconds": 10, "period_seconds": 5})


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
    parts = split_by_key(_batch([("b", 1, 1, 2), ("a", 2, 2, 3), ("b", 3, 3, 4)]), ["area"])
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
    batch = _batch([("a", 1, 10, 2), ("a", 12, 20, 3), ("a", None or 0, 5, 4)])
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
    decision = assign_rows(_batch([("a", 15, 1, 2)]), agg, 21 * US)
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


# --- Beam: TestStream with explicit watermarks --------------------------------------------


def _pipeline() -> TestPipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(runner=BundleBasedDirectRunner(), options=options)


def _stream() -> TestStream:
    return (
        TestStream()
        .add_elements(
            [
                TimestampedValue(
                    _batch([("a", 1, 10, 2), ("a", 2, 20, 3), ("b", 3, 5, 4), ("a", 12, 7, 5)]),
                    1,
                )
            ]
        )
        .advance_watermark_to(10)
        # On time for nothing, within the allowed lateness of [0, 10): a late pane.
        .add_elements([TimestampedValue(_batch([("a", 4, 30, 6)]), 4)])
        .advance_watermark_to(16)
        # [0, 10) expired at 15 s for both keys: late rows. a@15 is on time for [10, 20).
        .add_elements(
            [TimestampedValue(_batch([("a", 5, 1, 7), ("b", 8, 2, 8), ("a", 15, 3, 9)]), 16)]
        )
        # The local runner's watermark does not wait for user timers: a source closes the
        # last windows with a finite watermark before it ends (as the stream sources do).
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )


def _pane(key: str, start: int, pane: str, rows: int, mean: float, high: float) -> dict:
    return {
        "area": key,
        "window_start": _t(start),
        "window_end": _t(start + 10),
        "pane": pane,
        "rows": rows,
        "trips": rows,
        "fare_mean": mean,
        "fare_max": high,
    }


def test_panes_late_rows_and_counters_on_test_stream() -> None:
    p = _pipeline()
    out = p | _stream() | AggregateWindows(aggregation=AGG, pipeline="job")
    assert_that(
        out.rows,
        equal_to(
            [
                _pane("a", 0, "on_time", 2, 15.0, 20.0),
                _pane("b", 0, "on_time", 1, 5.0, 5.0),
                _pane("a", 0, "late", 3, 20.0, 30.0),
                _pane("a", 10, "on_time", 2, 5.0, 7.0),
            ]
        ),
        label="Panes",
    )
    errors = out.errors | beam.Map(lambda e: (e.step, e.reason, e.source, e.event_time, e.payload))
    assert_that(
        errors,
        equal_to(
            [
                (
                    "window:fares",
                    "late",
                    "trips.csv:7",
                    "1970-01-01T00:00:05+00:00",
                    '{"area": "a", "fare": 1.0}',
                ),
                (
                    "window:fares",
                    "late",
                    "trips.csv:8",
                    "1970-01-01T00:00:08+00:00",
                    '{"area": "b", "fare": 2.0}',
                ),
            ]
        ),
        label="Late",
    )
    # One Counter per key and batch: (kind, step, reason) -> rows.
    agg, late = ("aggregated", "window:fares", ""), ("rejected", "window:fares", "late")
    assert_that(
        out.counts | beam.Map(lambda c: sorted(c.items())),
        equal_to(
            [
                [(agg, 3)],  # a, batch 1
                [(agg, 1)],  # b, batch 1
                [(agg, 1)],  # a, batch 2 (late pane)
                [(agg, 1), (late, 1)],  # a, batch 3
                [(late, 1)],  # b, batch 3
            ]
        ),
        label="Counts",
    )
    p.run().wait_until_finish()


# --- quiet spells: the shard keeps ticking on the expiry grid for a bounded time -----------


def _errors(out: beam.pvalue.DoOutputsTuple) -> beam.PCollection:
    return out.errors | beam.Map(
        lambda e: (e.step, e.reason, e.source, e.event_time, e.payload, e.message)
    )


def _late_message(seconds: int, watermark: str, lateness: int = 5) -> str:
    return (
        f"event time {_t(seconds).isoformat()} is too late for aggregation 'fares': the "
        f"watermark was at 1970-01-01T00:00:{watermark}+00:00, past the end of its windows "
        f"plus the allowed lateness of {lateness} s"
    )


def test_row_for_a_window_that_expired_during_a_quiet_spell_is_late() -> None:
    # a's only window [0, 10) fires at 10 s and expires at 15 s + 1 us; the shard then has no
    # open window. The watermark reaches 30 s: [10, 20) expired at 25 s + 1 us although the
    # shard never held it. Without ticks on the expiry grid the shard would still believe the
    # watermark was at 15 s and aggregate the row at 12 s into an on-time pane.
    stream = (
        TestStream()
        .add_elements([TimestampedValue(_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(30)
        .add_elements([TimestampedValue(_batch([("a", 8, 5, 4), ("a", 12, 7, 5)]), 30)])
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )
    p = _pipeline()
    out = p | stream | AggregateWindows(aggregation=AGG, pipeline="job")
    assert_that(out.rows, equal_to([_pane("a", 0, "on_time", 2, 15.0, 20.0)]), label="Panes")
    assert_that(
        _errors(out),
        equal_to(
            [
                (
                    "window:fares",
                    "late",
                    "trips.csv:4",
                    "1970-01-01T00:00:08+00:00",
                    '{"area": "a", "fare": 5.0}',
                    _late_message(8, "25.000001"),
                ),
                (
                    "window:fares",
                    "late",
                    "trips.csv:5",
                    "1970-01-01T00:00:12+00:00",
                    '{"area": "a", "fare": 7.0}',
                    _late_message(12, "25.000001"),
                ),
            ]
        ),
        label="Late",
    )
    agg, late = ("aggregated", "window:fares", ""), ("rejected", "window:fares", "late")
    assert_that(
        out.counts | beam.Map(lambda c: sorted(c.items())),
        equal_to([[(agg, 2)], [(late, 2)]]),
        label="Counts",
    )
    p.run().wait_until_finish()


def test_first_row_of_a_window_whose_end_has_passed_is_a_late_pane() -> None:
    # Lateness 15 s: [0, 10) expires at 25 s + 1 us, the grid then ticks at 35 s + 1 us, so at
    # a watermark of 37 s the shard knows [20, 30) has ended but not expired (45 s + 1 us).
    # Beam emits data arriving after its window's end at once, in a late pane: so does this.
    agg = dataclasses.replace(AGG, allowed_lateness_seconds=15)
    stream = (
        TestStream()
        .add_elements([TimestampedValue(_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(37)
        .add_elements([TimestampedValue(_batch([("a", 25, 4, 4)]), 37)])
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )
    p = _pipeline()
    out = p | stream | AggregateWindows(aggregation=agg, pipeline="job")
    assert_that(
        out.rows,
        equal_to([_pane("a", 0, "on_time", 2, 15.0, 20.0), _pane("a", 20, "late", 1, 4.0, 4.0)]),
        label="Panes",
    )
    assert_that(out.errors, equal_to([]), label="NoErrors")
    agg_count = ("aggregated", "window:fares", "")
    assert_that(
        out.counts | beam.Map(lambda c: sorted(c.items())),
        equal_to([[(agg_count, 2)], [(agg_count, 1)]]),
        label="Counts",
    )
    p.run().wait_until_finish()


def test_row_past_its_window_end_between_grid_ticks_gets_an_on_time_pane() -> None:
    # The documented approximation: with 5 s lateness the grid (…, 25 s, 35 s, + 1 us) never
    # falls within [end, end + lateness], so at a watermark of 32 s the shard only knows
    # 25 s + 1 us. The row at 25 s opens [20, 30) (not expired: 35 s) and is emitted at the
    # next firing as on time, where Beam would say late. It is still aggregated, never lost.
    stream = (
        TestStream()
        .add_elements([TimestampedValue(_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(32)
        .add_elements([TimestampedValue(_batch([("a", 25, 4, 4)]), 32)])
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )
    p = _pipeline()
    out = p | stream | AggregateWindows(aggregation=AGG, pipeline="job")
    assert_that(
        out.rows,
        equal_to([_pane("a", 0, "on_time", 2, 15.0, 20.0), _pane("a", 20, "on_time", 1, 4.0, 4.0)]),
        label="Panes",
    )
    assert_that(out.errors, equal_to([]), label="NoErrors")
    p.run().wait_until_finish()


def test_quiet_spell_longer_than_the_horizon() -> None:
    # a's last expiry is at 15 s + 1 us: the grid is followed up to 30 s + 1 us (25 s + 1 us is
    # its last tick). At a watermark of 100 s a row for [10, 20), which started before the
    # last expiry, is still known late; a row for [50, 60), which starts after it and expired
    # at 65 s + 1 us unseen, is aggregated into a pane (the documented approximation).
    stream = (
        TestStream()
        .add_elements([TimestampedValue(_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(100)
        .add_elements([TimestampedValue(_batch([("a", 18, 5, 4), ("a", 50, 6, 5)]), 100)])
        .advance_watermark_to(200)
        .advance_watermark_to_infinity()
    )
    p = _pipeline()
    out = p | stream | AggregateWindows(aggregation=AGG, pipeline="job")
    assert_that(
        out.rows,
        equal_to([_pane("a", 0, "on_time", 2, 15.0, 20.0), _pane("a", 50, "on_time", 1, 6.0, 6.0)]),
        label="Panes",
    )
    assert_that(
        _errors(out),
        equal_to(
            [
                (
                    "window:fares",
                    "late",
                    "trips.csv:4",
                    "1970-01-01T00:00:18+00:00",
                    '{"area": "a", "fare": 5.0}',
                    _late_message(18, "25.000001"),
                )
            ]
        ),
        label="Late",
    )
    agg, late = ("aggregated", "window:fares", ""), ("rejected", "window:fares", "late")
    assert_that(
        out.counts | beam.Map(lambda c: sorted(c.items())),
        equal_to([[(agg, 2)], [(agg, 1), (late, 1)]]),
        label="Counts",
    )
    p.run().wait_until_finish()


def test_a_bounded_run_ends_after_a_bounded_number_of_ticks() -> None:
    # At the end of a bounded run the watermark jumps to the end of time and each shard fires
    # through its timers one by one. With 10 s windows and 5 s lateness shard a (and b, in
    # another shard) fires at 10 s (on-time pane), at 15 s + 1 us ([0, 10) expires) and at the
    # one grid instant left within 15 s of that expiry, 25 s + 1 us: three ticks each.
    p = beam.Pipeline(runner="DirectRunner", options=PipelineOptions())
    batch = _batch([("a", 1, 10, 2), ("a", 2, 20, 3), ("b", 3, 5, 4)])
    out = (
        p
        | beam.Create([batch])
        | beam.Map(lambda b: TimestampedValue(b, 1))
        | AggregateWindows(aggregation=AGG, pipeline="job")
    )
    assert_that(
        out.rows,
        equal_to([_pane("a", 0, "on_time", 2, 15.0, 20.0), _pane("b", 0, "on_time", 1, 5.0, 5.0)]),
    )
    result = p.run()
    result.wait_until_finish()
    ticks = result.metrics().query(MetricsFilter().with_name("window_ticks"))["counters"]
    assert [c.committed for c in ticks] == [6]
