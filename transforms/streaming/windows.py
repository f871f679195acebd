"""Windowed aggregate features per key, with late data detected instead of dropped.

An :class:`Aggregation` (the spec's ``streaming.aggregations[]``) computes count, sum,
mean, min and max of columns per key over fixed or sliding event-time windows, e.g. trips
per pickup area in the last hour or the mean fare per company.

Beam's own windowing drops data that arrives later than the allowed lateness without a
trace (Dataflow counts it in a system metric at best). Here the windows are kept in the
state of a stateful DoFn per key, driven by one event-time timer:

- a row is added to every window it falls in that has not expired; a window's *on-time*
  row (``pane: on_time``) is emitted once the watermark reaches the window's end, and an
  updated row (``pane: late``) for every batch that adds to it afterwards;
- a window expires when the watermark passes ``end + allowed lateness``; a row whose
  windows have all expired is routed to the error output with reason ``late`` and counted
  (``beamforge/late_rows``); a row that still fits some windows of a sliding window but
  not others is aggregated into the open ones and the missed windows are counted
  (``beamforge/late_window_assignments``).

The watermark a shard of keys knows is a lower bound: the time its timer was last set for.
The timer is set for the next of its windows' ends (on-time pane) and expiries (``end +
allowed lateness``), and, for ``size + allowed lateness`` past the shard's last expiry (its
*idle horizon*), for every instant on the grid of expiries (``start + size + allowed
lateness`` plus one microsecond, for every grid-aligned window start), whether or not the
shard still has open windows. So after a quiet spell the shard still knows the watermark
exactly at the expiry of every window that starts before its last expiry, and a row for such
a window arriving after it expired is routed ``late``, as Beam would drop it. The ticks stop
at the horizon, so when the watermark jumps to the end of time (a bounded run ends, a
Dataflow drain) an idle shard fires at most ``(size + allowed lateness) / period + 1`` more
times and never loops. A row opening a window whose end the known watermark has passed is
emitted at once in a ``late`` pane, as Beam emits data arriving after the watermark passed
its window's end.

What remains approximate (decided differently from Beam, never lost: such rows are aggregated
and counted as aggregated):

- a row arriving after the shard went more than the idle horizon without an expiry, for a
  window that starts after the shard's last expiry and that the watermark passed meanwhile,
  is aggregated and emitted in a pane instead of being routed ``late``;
- a shard knows no watermark before its first timer fires: every row it receives until then
  is taken as on time;
- a row opening a window whose end the watermark has passed but the shard's known watermark
  has not (the expiry grid need not fall between a window's end and its expiry) is emitted in
  an ``on_time`` pane at the next firing rather than a ``late`` one.

Everything is in microseconds since the epoch (UTC), as Arrow timestamps.

The pure pieces (window assignment, accumulators, per-key splitting, the next tick) are tested
without Beam.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from transforms.core.engine import REJECTED, row_source, visible_row
from transforms.core.errors import ErrorRecord, row_payload

# Hidden column stream sources attach to every row: its event time.
EVENT_TIME_COLUMN = "__event_time"
LATE = "late"
NO_EVENT_TIME = "no_event_time"
ON_TIME = "on_time"
LATE_PANE = "late"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
PANE = "pane"
ROWS = "rows"
STEP_PREFIX = "window:"

Op = Literal["count", "sum", "mean", "min", "max"]
_US = 1_000_000
# Marks a missing event time in microsecond arrays.
NO_TIME = -(2**62)


@dataclasses.dataclass
class Metric:
    """One aggregate output column.

    Attributes:
        op: ``count`` (rows, or non-null values of ``column``), ``sum``, ``mean``, ``min``,
            ``max``.
        output: Name of the output column.
        column: Input column; required for every op but ``count``.
    """

    op: Op
    output: str
    column: str | None = None

    def validate(self) -> None:
        if self.op != "count" and not self.column:
            raise ValueError(f"metric {self.output!r}: op {self.op} needs a column")


@dataclasses.dataclass
class Window:
    """Event-time windows.

    Attributes:
        kind: ``fixed`` (tumbling) or ``sliding``.
        size_seconds: Window length.
        period_seconds: How often a sliding window starts (sliding only).
        offset_seconds: Windows start at ``offset + k * period`` since the epoch.
    """

    size_seconds: float
    kind: Literal["fixed", "sliding"] = "fixed"
    period_seconds: float | None = None
    offset_seconds: float = 0.0

    def validate(self) -> None:
        if self.size_seconds <= 0:
            raise ValueError(f"window.size_seconds must be > 0, got {self.size_seconds}")
        if self.kind == "sliding":
            if self.period_seconds is None or self.period_seconds <= 0:
                raise ValueError("a sliding window needs window.period_seconds > 0")
            size, period = round(self.size_seconds * _US), round(self.period_seconds * _US)
            if size % period:
                raise ValueError(
                    f"window.size_seconds ({self.size_seconds}) must be a multiple of "
                    f"period_seconds ({self.period_seconds})"
                )
        elif self.period_seconds is not None:
            raise ValueError("window.period_seconds is for kind: sliding only")

    @property
    def size_us(self) -> int:
        return round(self.size_seconds * _US)

    @property
    def period_us(self) -> int:
        return round((self.period_seconds or self.size_seconds) * _US)

    @property
    def offset_us(self) -> int:
        return round(self.offset_seconds * _US) % self.period_us


@dataclasses.dataclass
class Aggregation:
    """A windowed aggregate table: ``metrics`` per ``keys`` per window.

    Attributes:
        name: Table name (also the step name in error records: ``window:{name}``).
        keys: Key columns; rows with the same values are aggregated together.
        window: The windows.
        metrics: Output columns.
        allowed_lateness_seconds: How long after a window's end rows are still added to it.
        time_column: Event-time column: a timestamp, or int/float seconds since the epoch.
    """

    name: str
    keys: list[str]
    window: Window
    metrics: list[Metric]
    allowed_lateness_seconds: float = 0.0
    time_column: str = EVENT_TIME_COLUMN

    def validate(self) -> None:
        if not self.keys:
            raise ValueError(f"aggregation {self.name!r} needs at least one key column")
        if not self.metrics:
            raise ValueError(f"aggregation {self.name!r} needs at least one metric")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        names = [*self.keys, WINDOW_START, WINDOW_END, PANE, ROWS]
        for metric in self.metrics:
            if metric.output in names:
                raise ValueError(f"metric output {metric.output!r} is used twice or reserved")
            names.append(metric.output)

    @property
    def lateness_us(self) -> int:
        return round(self.allowed_lateness_seconds * _US)

    @property
    def step(self) -> str:
        return STEP_PREFIX + self.name

    def input_columns(self) -> list[str]:
        cols = [*self.keys, self.time_column]
        cols += [m.column for m in self.metrics if m.column and m.column not in cols]
        return cols

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """Schema of the aggregate rows for rows of ``input_schema``."""
        fields = [input_schema.field(k) for k in self.keys]
        ts = pa.timestamp("us", tz="UTC")
        fields += [pa.field(WINDOW_START, ts), pa.field(WINDOW_END, ts)]
        fields += [pa.field(PANE, pa.string()), pa.field(ROWS, pa.int64())]
        for m in self.metrics:
            if m.op == "count":
                tp: pa.DataType = pa.int64()
            elif m.op in ("min", "max"):
                tp = input_schema.field(m.column).type
            else:
                tp = pa.float64()
            fields.append(pa.field(m.output, tp))
        return pa.schema(fields)


# ---------------------------------------------------------------------------------------
# Pure functions.


def event_times_us(column: pa.Array) -> np.ndarray:
    """Event times in microseconds since the epoch; ``NO_TIME`` marks nulls.

    Timestamps are converted from their unit; integers and floats are seconds.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    tp = column.type
    if pa.types.is_timestamp(tp):
        values = column.cast(pa.timestamp("us", tz=tp.tz)).cast(pa.int64())
        out = values.fill_null(NO_TIME).to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(tp):
        out = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False) * _US
        out = np.where(column.is_valid().to_numpy(zero_copy_only=False), out, NO_TIME)
    elif pa.types.is_floating(tp):
        seconds = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        valid = column.is_valid().to_numpy(zero_copy_only=False) & np.isfinite(seconds)
        out = np.where(valid, np.round(np.nan_to_num(seconds) * _US), NO_TIME).astype(np.int64)
    else:
        raise ValueError(f"event-time column must be a timestamp or a number, not {tp}")
    return np.asarray(out, dtype=np.int64)


def window_starts(times_us: np.ndarray, window: Window) -> np.ndarray:
    """Start of every window each time falls in, as an ``(n, k)`` array (latest first).

    ``k`` is the number of windows a time belongs to: 1 for fixed windows,
    ``ceil(size / period)`` for sliding ones (a start ``s`` covers ``[s, s + size)``).
    """
    period, size = window.period_us, window.size_us
    times = np.asarray(times_us, dtype=np.int64)
    last = times - np.mod(times - window.offset_us, period)
    k = -(-size // period)
    starts = last[:, None] - np.arange(k, dtype=np.int64)[None, :] * period
    return starts


@dataclasses.dataclass
class Accumulator:
    """Mergeable partial aggregate of one key in one window."""

    rows: int = 0
    count: dict[str, int] = dataclasses.field(default_factory=dict)
    sum: dict[str, float] = dataclasses.field(default_factory=dict)
    min: dict[str, Any] = dataclasses.field(default_factory=dict)
    max: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, columns: Mapping[str, pa.Array]) -> None:
        """Adds rows given as equally long columns (``rows`` counts their length)."""
        n = None
        for name, values in columns.items():
            n = len(values)
            valid = values.drop_null()
            self.count[name] = self.count.get(name, 0) + len(valid)
            if not len(valid):
                continue
            if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
                total = pc.sum(valid.cast(pa.float64())).as_py()
                self.sum[name] = self.sum.get(name, 0.0) + total
            low, high = pc.min_max(valid).values()
            low, high = low.as_py(), high.as_py()
            self.min[name] = low if name not in self.min else min(self.min[name], low)
            self.max[name] = high if name not in self.max else max(self.max[name], high)
        self.rows += n or 0

    def merge(self, other: Accumulator) -> Accumulator:
        """Adds ``other`` into this accumulator; returns it."""
        self.rows += other.rows
        for name, n in other.count.items():
            self.count[name] = self.count.get(name, 0) + n
        for name, s in other.sum.items():
            self.sum[name] = self.sum.get(name, 0.0) + s
        for name, v in other.min.items():
            self.min[name] = v if name not in self.min else min(self.min[name], v)
        for name, v in other.max.items():
            self.max[name] = v if name not in self.max else max(self.max[name], v)
        return self

    def extract(self, metrics: Sequence[Metric]) -> dict[str, Any]:
        """The metric values (None where a column had no value)."""
        out: dict[str, Any] = {}
        for m in metrics:
            if m.op == "count":
                out[m.output] = self.rows if m.column is None else self.count.get(m.column, 0)
                continue
            col = m.column or ""
            if m.op == "sum":
                out[m.output] = self.sum.get(col, 0.0) if self.count.get(col) else None
            elif m.op == "mean":
                n = self.count.get(col, 0)
                out[m.output] = self.sum.get(col, 0.0) / n if n else None
            else:
                out[m.output] = getattr(self, m.op).get(col)
        return out


def split_by_key(batch: pa.RecordBatch, keys: Sequence[str]) -> list[tuple[tuple, pa.RecordBatch]]:
    """Splits a batch into one sub-batch per distinct key, in first-seen order."""
    if not batch.num_rows:
        return []
    # Arrow groups the row numbers by key (no Python loop over rows); the groups are then put
    # in the order of their first row.
    index = "__row"
    table = pa.table(
        [*(batch.column(k) for k in keys), pa.array(np.arange(batch.num_rows), pa.int64())],
        names=[*keys, index],
    )
    grouped = (
        table.group_by(list(keys), use_threads=False)
        .aggregate([(index, "list"), (index, "min")])
        .sort_by(f"{index}_min")
    )
    key_values = zip(*(grouped.column(k).to_pylist() for k in keys), strict=True)
    rows = grouped.column(f"{index}_list")
    return [(tuple(key), batch.take(rows[i].values)) for i, key in enumerate(key_values)]


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def _ts(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))


@dataclasses.dataclass
class _WindowState:
    acc: Accumulator
    emitted: bool = False


@dataclasses.dataclass
class Decision:
    """What :func:`assign_rows` decided for one key's rows.

    Attributes:
        updates: Accumulator of the accepted rows per window start.
        late_rows: Indices of rows whose windows have all expired.
        no_time_rows: Indices of rows without an event time.
        missed: Window assignments skipped because that window expired (sliding windows).
    """

    updates: dict[int, Accumulator]
    late_rows: np.ndarray
    no_time_rows: np.ndarray
    missed: int


def assign_rows(batch: pa.RecordBatch, aggregation: Aggregation, watermark_us: int) -> Decision:
    """Assigns one key's rows to windows given a watermark lower bound.

    A window ``[s, e)`` has expired when ``watermark > e + allowed_lateness``.
    """
    times = event_times_us(batch.column(aggregation.time_column))
    no_time = times == NO_TIME
    starts = window_starts(np.where(no_time, 0, times), aggregation.window)
    ends = starts + aggregation.window.size_us
    open_ = (watermark_us <= ends + aggregation.lateness_us) & ~no_time[:, None]
    late = ~no_time & ~open_.any(axis=1)
    missed = int((~open_ & ~late[:, None] & ~no_time[:, None]).sum())
    columns = {m.column for m in aggregation.metrics if m.column}
    updates: dict[int, Accumulator] = {}
    for start in np.unique(starts[open_]):
        rows = np.flatnonzero((open_ & (starts == start)).any(axis=1))
        acc = Accumulator()
        picked = batch.take(pa.array(rows, pa.int64()))
        if columns:
            acc.add({c: picked.column(c) for c in sorted(columns)})
        else:
            acc.rows += len(rows)
        updates[int(start)] = acc
    return Decision(updates, np.flatnonzero(late), np.flatnonzero(no_time), missed)


def next_tick(
    watermark_us: int, last_expiry_us: int | None, window: Window, lateness_us: int
) -> int | None:
    """The next instant after the watermark at which some window expires, within the horizon.

    Windows start at ``offset + k * period`` and expire once the watermark passes ``start +
    size + lateness``, i.e. at the instants ``start + size + lateness + 1`` (microseconds): the
    expiry grid. A shard whose timer fires at each of them knows, at every moment, whether any
    window on the grid has expired, whether it held data or not. The grid is only followed up
    to ``last_expiry + size + lateness`` (the idle horizon), the last instant at which a window
    starting before the last expiry can expire, so that a watermark jumping to the end of time
    fires a bounded number of ticks.

    Args:
        watermark_us: The watermark the shard knows (the time its timer was last set for).
        last_expiry_us: When the shard's last window expired (the watermark of that firing);
            None if none has yet, in which case there is nothing to follow.
        window: The windows.
        lateness_us: The allowed lateness.

    Returns:
        The smallest grid instant greater than ``watermark_us``, or None if it lies beyond
        the horizon or at or after the end of time.
    """
    if last_expiry_us is None:
        return None
    period = window.period_us
    first = window.offset_us + window.size_us + lateness_us + 1
    tick = watermark_us + period - (watermark_us - first) % period
    horizon = last_expiry_us + window.size_us + lateness_us
    if tick > horizon or tick >= MAX_TIMESTAMP.micros:
        return None
    return tick


# ---------------------------------------------------------------------------------------
# Beam.

ERRORS = "errors"
COUNTS = "counts"
# Count kinds of the aggregation ledger: rows in = aggregated + rejected (late, no time).
AGGREGATED = "aggregated"
MISSED_WINDOWS = "missed_windows"


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
        row.update({WINDOW_START: _ts(start), WINDOW_END: _ts(end), PANE: pane})
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
            event_time=None if times[i] == NO_TIME else _iso(int(times[i])),
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
            f"event time {_iso(int(times[i]))} is too late for aggregation "
            f"{self._agg.name!r}: the watermark was at {_iso(watermark)}, past the end of its "
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


def rows_to_batch(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Aggregate rows (dicts) as one record batch of ``schema``."""
    return pa.RecordBatch.from_pylist(list(rows), schema=schema)


__all__ = [
    "EVENT_TIME_COLUMN",
    "LATE",
    "Accumulator",
    "AggregateWindows",
    "Aggregation",
    "Decision",
    "Metric",
    "Window",
    "assign_rows",
    "event_times_us",
    "next_tick",
    "rows_to_batch",
    "split_by_key",
    "window_starts",
]
