"""Deterministic train/eval/... splits of record batches.

Two methods, both pure functions of a row's values, so a row lands in the same split on
every run and every runner:
- ``hash``: a stable hash of the key columns (or the whole visible row) mapped onto [0, 1)
  and compared with the cumulative fractions;
- ``time``: the row's timestamp compared with per-split cutoffs (the last split takes the rest).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.hashing import row_hash, unit_interval
from transforms.schema import HIDDEN_PREFIX
from transforms.steps import Rejection

MISSING_SPLIT_TIME = "missing_split_time"


@dataclasses.dataclass
class Split:
    """The ``split:`` section of a job spec.

    Attributes:
        method: ``hash`` or ``time``.
        fractions: Split names and fractions, in order (hash method); they must sum to 1.
        key: Columns hashed for the hash method; empty means the whole visible row.
        salt: Changes the assignment without changing the key.
        column: Timestamp column for the time method (timestamp type or unix seconds).
        cutoffs: Split names in order with the exclusive upper bound of each (ISO-8601 or unix
            seconds); the last split's cutoff is null (everything later).
    """

    method: Literal["hash", "time"] = "hash"
    fractions: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"train": 0.8, "eval": 0.2}
    )
    key: list[str] = dataclasses.field(default_factory=list)
    salt: str = ""
    column: str | None = None
    cutoffs: dict[str, str | int | None] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if self.method == "hash":
            if not self.fractions:
                raise ValueError("split.fractions must name at least one split")
            if any(f < 0 for f in self.fractions.values()):
                raise ValueError(f"split.fractions must be non-negative, got {self.fractions}")
            total = sum(self.fractions.values())
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"split.fractions must sum to 1, got {total:g} ({self.fractions})")
            if self.column or self.cutoffs:
                raise ValueError("column and cutoffs belong to method 'time', not 'hash'")
        else:
            if not self.column:
                raise ValueError("split method 'time' needs 'column' (a timestamp column)")
            if not self.cutoffs:
                raise ValueError(
                    "split method 'time' needs 'cutoffs', e.g. {train: '2016-01-01', eval: null}"
                )
            values = list(self.cutoffs.values())
            if values[-1] is not None or any(v is None for v in values[:-1]):
                raise ValueError(
                    "split.cutoffs: only the last split has a null cutoff (it takes the rest)"
                )
            bounds = [to_micros(v) for v in values[:-1]]
            if bounds != sorted(bounds):
                raise ValueError(f"split.cutoffs must increase, got {self.cutoffs}")

    @property
    def names(self) -> list[str]:
        return list(self.fractions if self.method == "hash" else self.cutoffs)

    def input_columns(self) -> list[str]:
        return list(self.key) if self.method == "hash" else [str(self.column)]


def to_micros(value: str | int | float | None) -> int:
    """Converts a cutoff (unix seconds or ISO-8601; naive means UTC) to unix microseconds."""
    if value is None:
        raise ValueError("a null cutoff has no time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1_000_000)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"cutoff {value!r} is neither unix seconds nor an ISO-8601 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1_000_000)


def _column_micros(column: pa.Array) -> np.ndarray:
    tp = column.type
    if pa.types.is_timestamp(tp):
        values = column.cast(pa.timestamp("us", tz=tp.tz)).cast(pa.int64())
    elif pa.types.is_date(tp):
        values = pc.multiply(
            column.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), 86_400_000_000
        )
    elif pa.types.is_integer(tp) or pa.types.is_floating(tp):
        values = pc.multiply(column.cast(pa.float64()), 1_000_000.0).cast(pa.int64(), safe=False)
    else:
        raise ValueError(f"split column has type {tp}; expected a timestamp, date or unix seconds")
    return values.fill_null(0).to_numpy(zero_copy_only=False)


def assign(batch: pa.RecordBatch, split: Split) -> tuple[np.ndarray, Rejection | None]:
    """Returns each row's split index (into ``split.names``) and rows that cannot be placed.

    Only the time method can refuse rows: a null timestamp has no split.
    """
    if split.method == "hash":
        key = split.key or [c for c in batch.schema.names if not c.startswith(HIDDEN_PREFIX)]
        hashes = row_hash(batch, key)
        if split.salt:
            import farmhash

            from transforms.hashing import splitmix64  # local: rarely used

            hashes = splitmix64(hashes ^ np.uint64(farmhash.fingerprint64(split.salt)))
        position = unit_interval(hashes)
        bounds = np.cumsum(list(split.fractions.values()))
        bounds[-1] = np.inf  # rounding must never leave a row outside every split
        return np.searchsorted(bounds, position, side="right").astype(np.int64), None
    column = batch.column(str(split.column))
    micros = _column_micros(column)
    cutoffs = np.array([to_micros(v) for v in list(split.cutoffs.values())[:-1]], dtype=np.int64)
    index = np.searchsorted(cutoffs, micros, side="right").astype(np.int64)
    missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not missing.any():
        return index, None
    return index, Rejection(
        mask=missing,
        reason=MISSING_SPLIT_TIME,
        message=f"column {split.column!r} is null; the time split needs a timestamp",
    )


def partition(batch: pa.RecordBatch, index: np.ndarray, count: int) -> list[pa.RecordBatch]:
    """Cuts a batch into one sub-batch per split index (empty ones included)."""
    if count == 1:
        return [batch]
    return [batch.filter(pa.array(index == i)) for i in range(count)]
