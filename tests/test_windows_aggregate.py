"""Windowed aggregates in Beam: the stateful DoFn on TestStream with explicit watermarks."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP

from tests.window_rows import AGG, at, trip_batch
from transforms.streaming.aggregate_windows import AggregateWindows
from transforms.streaming.windows import END_OF_TIME_US


def test_the_model_end_of_time_is_beams() -> None:
    assert MAX_TIMESTAMP.micros == END_OF_TIME_US


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
                    trip_batch([("a", 1, 10, 2), ("a", 2, 20, 3), ("b", 3, 5, 4), ("a", 12, 7, 5)]),
                    1,
                )
            ]
        )
        .advance_watermark_to(10)
        # On time for nothing, within the allowed lateness of [0, 10): a late pane.
        .add_elements([TimestampedValue(trip_batch([("a", 4, 30, 6)]), 4)])
        .advance_watermark_to(16)
        # [0, 10) expired at 15 s for both keys: late rows. a@15 is on time for [10, 20).
        .add_elements(
            [TimestampedValue(trip_batch([("a", 5, 1, 7), ("b", 8, 2, 8), ("a", 15, 3, 9)]), 16)]
        )
        # The local runner's watermark does not wait for user timers: a source closes the
        # last windows with a finite watermark before it ends (as the stream sources do).
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )


def _pane(key: str, start: int, pane: str, rows: int, mean: float, high: float) -> dict:
    return {
        "area": key,
        "window_start": at(start),
        "window_end": at(start + 10),
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
        f"event time {at(seconds).isoformat()} is too late for aggregation 'fares': the "
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
        .add_elements([TimestampedValue(trip_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(30)
        .add_elements([TimestampedValue(trip_batch([("a", 8, 5, 4), ("a", 12, 7, 5)]), 30)])
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
        .add_elements([TimestampedValue(trip_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(37)
        .add_elements([TimestampedValue(trip_batch([("a", 25, 4, 4)]), 37)])
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
        .add_elements([TimestampedValue(trip_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(32)
        .add_elements([TimestampedValue(trip_batch([("a", 25, 4, 4)]), 32)])
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
        .add_elements([TimestampedValue(trip_batch([("a", 1, 10, 2), ("a", 2, 20, 3)]), 1)])
        .advance_watermark_to(100)
        .add_elements([TimestampedValue(trip_batch([("a", 18, 5, 4), ("a", 50, 6, 5)]), 100)])
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
    batch = trip_batch([("a", 1, 10, 2), ("a", 2, 20, 3), ("b", 3, 5, 4)])
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
