"""The Beam side of windowed aggregates: a stateful DoFn per shard of keys, and its transform.

:class:`AggregateWindows` wires the pure window model of :mod:`transforms.streaming.windows`
(window assignment, accumulators, the expiry grid) into Beam: rows are split by key, spread
over shards, and each shard keeps its open windows in state, driven by one event-time timer.
The module docstring of :mod:`transforms.streaming.windows` says when panes fire and which
rows are late.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from transforms.core.batch_steps import REJECTED, row_source, visible_row
from transforms.core.errors import ErrorRecord, row_payload
from transforms.streaming.event_time import NO_TIME, event_times_us, iso_time, utc_datetime
from transforms.streaming.windows import (
    AGGREGATED,
    LATE,
    LATE_PANE,
    MISSED_WINDOWS,
    NO_EVENT_TIME,
    ON_TIME,
    PANE,
    ROWS,
    WINDOW_END,
    WINDOW_START,
    Accumulator,
    Aggregation,
    assign_rows,
    next_tick,
    split_by_key,
)

ERRORS = "errors"
COUNTS = "counts"


@dataclasses.dataclass
class _WindowState:
    acc: Accumulator
    emitted: bool = False


class _SplitByKeyDoFn(beam.DoFn):
    def __init__(self, keys: Sequence[str], columns: Sequence[str], shards: int) -> None:
        self._keys = list(keys)
        self._columns = list(columns)
        self._shards = shards

    def process(self, batch: pa.RecordBatch) -> Iterator[tuple[int, list[tuple[str, Any]]]]:
        # Only the columns the aggregation reads travel to the keyed state (plus the source
        # columns, for error records).
        keep = [c for c in batch.schema.names if c in self._columns or c.startswith("__")]
        by_shard: dict[int, list[tuple[str, pa.RecordBatch]]] = {}
        for key, part in split_by_key(batch.select(keep), self._keys):
            # A JSON string is a key with a deterministic coder (tuples of any are not).
            text = json.dumps(list(key), default=str)
            by_shard.setdefault(zlib.crc32(text.encode()) % self._shards, []).append((text, part))
        yield from by_shard.items()


_WINDOWS = ReadModifyWriteStateSpec("windows", PickleCoder())
_WATERMARK = ReadModifyWriteStateSpec("watermark", PickleCoder())
_TICK = TimerSpec("tick", TimeDomain.WATERMARK)
_WINDOWS_PARAM = beam.DoFn.StateParam(_WINDOWS)
_WATERMARK_PARAM = beam.DoFn.StateParam(_WATERMARK)
_TICK_PARAM = beam.DoFn.TimerParam(_TICK)
# When the timer was set for: the portable local runner passes another time as the firing's
# timestamp, so the firing time is also kept in state.
_NEXT = ReadModifyWriteStateSpec("next", PickleCoder())
_NEXT_PARAM = beam.DoFn.StateParam(_NEXT)
# When the shard's last window expired: the expiry grid is followed for a bounded time after.
_EXPIRED = ReadModifyWriteStateSpec("expired", PickleCoder())
_EXPIRED_PARAM = beam.DoFn.StateParam(_EXPIRED)


class _WindowedAggregateDoFn(beam.DoFn):
    """Keeps one key's open windows in state; emits panes and late rows."""

    def __init__(self, aggregation: Aggregation, pipeline: str) -> None:
        self._agg = aggregation
        self._pipeline = pipeline
        self._late = Metrics.counter("beamforge", "late_rows")
        self._missed = Metrics.counter("beamforge", "late_window_assignments")
        self._rows = Metrics.counter("beamforge", "rows_aggregated")
        self._ticks = Metrics.counter("beamforge", "window_ticks")

    def _row(self, key: str, start: int, state: _WindowState, pane: str) -> TimestampedValue:
        end = start + self._agg.window.size_us
        row: dict[str, Any] = dict(zip(self._agg.keys, json.loads(key), strict=True))
        row.update({WINDOW_START: utc_datetime(start), WINDOW_END: utc_datetime(end), PANE: pane})
        row[ROWS] = state.acc.rows
        row.update(state.acc.extract(self._agg.metrics))
        return TimestampedValue(row, Timestamp(micros=end - 1))

    def _error(self, batch: pa.RecordBatch, i: int, reason: str, message: str) -> ErrorRecord:
        times = event_times_us(batch.column(self._agg.time_column))
        return ErrorRecord(
            pipeline=self._pipeline,
            step=self._agg.step,
            reason=reason,
            message=message,
            payload=row_payload(visible_row(batch, i)),
            source=row_source(batch, i),
            event_time=None if times[i] == NO_TIME else iso_time(int(times[i])),
        )

    def _set_tick(
        self,
        timer: Any,
        next_state: Any,
        windows: Mapping[tuple[str, int], _WindowState],
        watermark: int,
        last_expiry: int | None,
    ) -> None:
        # One timer per shard: the next window end (on-time pane) or expiry (end + allowed
        # lateness), or the next instant on the expiry grid within the idle horizon, so that the
        # known watermark stays exact for windows the shard never held. Past the horizon a
        # shard without open windows sets none, so nothing loops on idle shards.
        size, lateness = self._agg.window.size_us, self._agg.lateness_us
        events = [
            start + size + lateness + 1 if state.emitted else start + size
            for (_, start), state in windows.items()
        ]
        if watermark != NO_TIME:
            tick = next_tick(watermark, last_expiry, self._agg.window, lateness)
            events += [] if tick is None else [tick]
        if events and Timestamp(micros=min(events)) < MAX_TIMESTAMP:
            timer.set(Timestamp(micros=min(events)))
            next_state.write(min(events))
        else:
            next_state.clear()

    def process(
        self,
        element: tuple[str, pa.RecordBatch],
        windows_state: Any = _WINDOWS_PARAM,
        watermark_state: Any = _WATERMARK_PARAM,
        tick: Any = _TICK_PARAM,
        next_state: Any = _NEXT_PARAM,
        expired_state: Any = _EXPIRED_PARAM,
    ) -> Iterator[Any]:
        # State is kept per shard of keys, not per key: the local runner's state cache
        # measures every value it stores, which costs far more than the values themselves.
        _, parts = element
        windows: dict[tuple[str, int], _WindowState] = windows_state.read() or {}
        known = watermark_state.read()
        watermark: int = NO_TIME if known is None else known
        for key, batch in parts:
            yield from self._add(key, batch, windows, watermark)
        windows_state.write(windows)
        self._set_tick(tick, next_state, windows, watermark, expired_state.read())

    def _add(
        self,
        key: str,
        batch: pa.RecordBatch,
        windows: dict[tuple[str, int], _WindowState],
        watermark: int,
    ) -> Iterator[Any]:
        decision = assign_rows(batch, self._agg, watermark)
        for i in decision.no_time_rows:
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                self._error(batch, int(i), NO_EVENT_TIME, f"{self._agg.time_column} is null"),
            )
        for i in decision.late_rows:
            yield beam.pvalue.TaggedOutput(
                ERRORS, self._error(batch, int(i), LATE, self._why(batch, int(i), watermark))
            )
        aggregated = batch.num_rows - len(decision.late_rows) - len(decision.no_time_rows)
        self._late.inc(len(decision.late_rows))
        self._missed.inc(decision.missed)
        self._rows.inc(aggregated)
        counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        counts[(AGGREGATED, self._agg.step, "")] += aggregated
        counts[(REJECTED, self._agg.step, LATE)] += len(decision.late_rows)
        counts[(REJECTED, self._agg.step, NO_EVENT_TIME)] += len(decision.no_time_rows)
        counts[(MISSED_WINDOWS, self._agg.step, "")] += decision.missed
        yield beam.pvalue.TaggedOutput(COUNTS, +counts)
        for start, acc in decision.updates.items():
            state = windows.setdefault((key, start), _WindowState(Accumulator()))
            state.acc.merge(acc)
            # A window the watermark is known to have passed the end of gets no on-time pane:
            # like Beam, its first data is emitted at once as a late pane.
            if state.emitted or start + self._agg.window.size_us <= watermark:
                state.emitted = True
                yield self._row(key, start, state, LATE_PANE)

    def _why(self, batch: pa.RecordBatch, i: int, watermark: int) -> str:
        times = event_times_us(batch.column(self._agg.time_column))
        return (
            f"event time {iso_time(int(times[i]))} is too late for aggregation "
            f"{self._agg.name!r}: the watermark was at {iso_time(watermark)}, past the end of its "
            f"windows plus the allowed lateness of {self._agg.allowed_lateness_seconds:g} s"
        )

    @on_timer(_TICK)
    def on_tick(
        self,
        fired: Any = beam.DoFn.TimestampParam,
        windows_state: Any = _WINDOWS_PARAM,
        watermark_state: Any = _WATERMARK_PARAM,
        tick: Any = _TICK_PARAM,
        next_state: Any = _NEXT_PARAM,
        expired_state: Any = _EXPIRED_PARAM,
    ) -> Iterator[TimestampedValue]:
        # The watermark is at least the time this timer was set for (kept in state): trust
        # that lower bound, not the firing timestamp, which local runners may report as a
        # later time (up to the end of time), turning every following row into a late one.
        known = [t for t in (watermark_state.read(), next_state.read()) if t is not None]
        watermark = max(known) if known else fired.micros
        watermark_state.write(watermark)
        self._ticks.inc()
        windows: dict[tuple[str, int], _WindowState] = windows_state.read() or {}
        last_expiry: int | None = expired_state.read()
        size, lateness = self._agg.window.size_us, self._agg.lateness_us
        for key, start in sorted(windows, key=lambda ks: (ks[1], ks[0])):
            state = windows[(key, start)]
            end = start + size
            if not state.emitted and end <= watermark:
                state.emitted = True
                yield self._row(key, start, state, ON_TIME)
            if watermark > end + lateness:
                del windows[(key, start)]
                last_expiry = watermark
        windows_state.write(windows)
        if last_expiry is not None:
            expired_state.write(last_expiry)
        self._set_tick(tick, next_state, windows, watermark, last_expiry)


class AggregateWindows(beam.PTransform):
    """Windowed aggregates of record batches per key.

    Input: ``PCollection[pa.RecordBatch]`` (bounded or unbounded) whose rows carry the key,
    metric and event-time columns; hidden ``__file``/``__line`` columns, if present, give
    error sources.

    Outputs (a tagged tuple): main ``rows``, one dict per key, window and pane
    (``{keys..., window_start, window_end, pane, rows, metrics...}``, timestamped at the
    window's last microsecond); ``errors``: an :class:`~transforms.core.errors.ErrorRecord` per
    row too late for all its windows (reason ``late``) or without event time
    (``no_event_time``), step ``window:{name}``; ``counts``: Counters of
    ``(kind, step, reason)`` with kinds ``aggregated``, ``rejected`` and ``missed_windows``
    (rows in = aggregated + rejected).

    Metrics: ``beamforge/rows_aggregated``, ``beamforge/late_rows``,
    ``beamforge/late_window_assignments``, ``beamforge/window_ticks`` (timer firings: bounded
    after the input ends, see the module docstring).
    """

    def __init__(self, *, aggregation: Aggregation, pipeline: str, shards: int = 16) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self._shards = shards
        if not isinstance(aggregation, Aggregation):
            raise TypeError(f"aggregation must be an Aggregation, got {type(aggregation)}")
        aggregation.validate()
        self._agg = aggregation
        self._pipeline = pipeline

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        agg = self._agg
        return (
            batches
            | "SplitByKey"
            >> beam.ParDo(_SplitByKeyDoFn(agg.keys, agg.input_columns(), self._shards))
            # Its own stage: the portable local runner loses the timers of all but one of
            # several stateful DoFns fused into one stage.
            | "Stage" >> beam.Reshuffle()
            | "KeyType" >> beam.Map(lambda kv: kv).with_output_types(tuple[int, Any])
            | "Aggregate"
            >> beam.ParDo(_WindowedAggregateDoFn(agg, self._pipeline)).with_outputs(
                ERRORS, COUNTS, main="rows"
            )
        )


__all__ = ["COUNTS", "ERRORS", "AggregateWindows"]
