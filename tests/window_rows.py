"""Rows and an aggregation shared by the window tests (the pure model and the Beam DoFn)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from transforms.streaming.windows import Aggregation, Metric, Window

US = 1_000_000


def at(seconds: float) -> dt.datetime:
    """The UTC time ``seconds`` after the epoch."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


def trip_batch(rows: list[tuple[str, float, float, int]]) -> pa.RecordBatch:
    """Rows of (key, event seconds, fare, line), with the hidden source and time columns."""
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
