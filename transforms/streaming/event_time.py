"""Event times of streamed rows: the hidden ``__event_time`` column, parsed and converted.

Every stream source attaches an event time to each row (the ``__event_time`` column, an
Arrow UTC timestamp in microseconds); windows read it, or another time column, as
microseconds since the epoch. No Beam here: these are plain functions on values and Arrow
arrays.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

# Hidden column stream sources attach to every row: its event time.
EVENT_TIME_COLUMN = "__event_time"
# Marks a missing event time in microsecond arrays.
NO_TIME = -(2**62)
_US = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_event_time(value: Any) -> int | None:
    """Microseconds since the epoch from an attribute or field value, or None if unusable.

    Accepts what Beam's ``timestamp_attribute`` accepts (milliseconds since the epoch as a
    number or digit string, or an RFC 3339 string), datetimes, and numbers of seconds when
    they are floats (``1.5e9``).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return round(value.timestamp() * _US)
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, float):
        return round(value * _US) if np.isfinite(value) else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text) * 1000
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parse_event_time(parsed)
    return None


def with_event_time(batch: pa.RecordBatch, times_us: Sequence[int] | np.ndarray) -> pa.RecordBatch:
    """Appends (or replaces) the hidden ``__event_time`` column."""
    column = pa.array(np.asarray(times_us, dtype=np.int64), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    names = batch.schema.names
    if EVENT_TIME_COLUMN in names:
        batch = batch.drop_columns([EVENT_TIME_COLUMN])
    return batch.append_column(EVENT_TIME_COLUMN, column)


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


def utc_datetime(us: int) -> dt.datetime:
    """The UTC datetime ``us`` microseconds after the epoch."""
    return _EPOCH + dt.timedelta(microseconds=int(us))


def iso_time(us: int) -> str:
    """``us`` microseconds after the epoch in ISO 8601 (UTC), as error records show times."""
    return utc_datetime(us).isoformat()


__all__ = [
    "EVENT_TIME_COLUMN",
    "NO_TIME",
    "event_times_us",
    "iso_time",
    "parse_event_time",
    "utc_datetime",
    "with_event_time",
]
