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

The pure pieces (window assignment, accumulators, per-key splitting, the next tick) are here,
without Beam, and tested without a pipeline; the stateful DoFn and the ``AggregateWindows``
transform that wire them are in :mod:`transforms.streaming.aggregate_windows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.config import FieldError
from transforms.streaming.event_time import EVENT_TIME_COLUMN, NO_TIME, event_times_us

LATE = "late"
NO_EVENT_TIME = "no_event_time"
ON_TIME = "on_time"
LATE_PANE = "late"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
PANE = "pane"
ROWS = "rows"
STEP_PREFIX = "window:"
# Count kinds of the aggregation ledger: rows in = aggregated + rejected (late, no time).
AGGREGATED = "aggregated"
MISSED_WINDOWS = "missed_windows"
# The end of Beam's time (``apache_beam.utils.timestamp.MAX_TIMESTAMP``) in microseconds:
# no timer is set at or after it.
END_OF_TIME_US = 9_223_372_036_854_775_000

Op = Literal["count", "sum", "mean", "min", "max"]
_US = 1_000_000


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
            raise FieldError("column", f"op {self.op} needs a column (metric {self.output!r})")


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
            raise FieldError(
                "size_seconds", f"got {self.size_seconds}; expected a number greater than 0"
            )
        if self.kind == "sliding":
            if self.period_seconds is None or self.period_seconds <= 0:
                raise FieldError(
                    "period_seconds",
                    f"got {self.period_seconds}; a sliding window needs a number greater than 0",
                )
            size, period = round(self.size_seconds * _US), round(self.period_seconds * _US)
            if size % period:
                raise FieldError(
                    "size_seconds",
                    f"got {self.size_seconds}; expected a multiple of period_seconds "
                    f"({self.period_seconds})",
                )
        elif self.period_seconds is not None:
            raise FieldError("period_seconds", "only a sliding window has one (kind: sliding)")

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
            raise FieldError("keys", f"aggregation {self.name!r} needs at least one key column")
        if not self.metrics:
            raise FieldError("metrics", f"aggregation {self.name!r} needs at least one metric")
        if self.allowed_lateness_seconds < 0:
            raise FieldError(
                "allowed_lateness_seconds",
                f"got {self.allowed_lateness_seconds}; expected a number of at least 0",
            )
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
    if tick > horizon or tick >= END_OF_TIME_US:
        return None
    return tick


def rows_to_batch(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Aggregate rows (dicts) as one record batch of ``schema``."""
    return pa.RecordBatch.from_pylist(list(rows), schema=schema)


__all__ = [
    "AGGREGATED",
    "END_OF_TIME_US",
    "EVENT_TIME_COLUMN",
    "LATE",
    "MISSED_WINDOWS",
    "NO_TIME",
    "STEP_PREFIX",
    "Accumulator",
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
