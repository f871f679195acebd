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
import math
import re
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.config import FieldError
from transforms.core.hashing import row_hash, unit_interval
from transforms.core.schema import HIDDEN_PREFIX
from transforms.core.steps import Rejection

MISSING_SPLIT_TIME = "missing_split_time"

# A split's name is a folder name under the run's output ({output}/{run}/{split}/part-*), so it
# must be one safe path segment: no separators, no '..', nothing hidden, at most 63 characters.
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
# Names a run writes beside its split folders.
RESERVED_SPLIT_NAMES = ("artifact", "errors")
# Splits are written as separate folders and Beam branches; a hundred is far beyond any real job.
MAX_SPLITS = 100
# Cutoffs in unix seconds must name a date a timestamp can hold (years 1 to 9999).
_MIN_SECONDS = int(dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp())
_MAX_SECONDS = int(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp())


def check_split_names(names: list[str], key: str) -> None:
    """Checks split names: safe folder names, distinct (also in case), not reserved.

    Args:
        names: The names in order.
        key: The spec key holding them (``fractions`` or ``cutoffs``), for messages.

    Raises:
        FieldError: naming the key and the offending name.
    """
    if len(names) > MAX_SPLITS:
        raise FieldError(key, f"names {len(names)} splits; at most {MAX_SPLITS} are supported")
    seen: dict[str, str] = {}
    for name in names:
        where = f"{key}.{name}"
        if not isinstance(name, str) or not SPLIT_NAME.fullmatch(name):
            raise FieldError(
                where,
                f"split name {name!r} cannot be used: split names are folder names, 1 to 63 "
                "letters, digits, '_' or '-', starting with a letter or digit",
            )
        if name.lower() in RESERVED_SPLIT_NAMES:
            raise FieldError(
                where,
                f"split name {name!r} is reserved: a run writes "
                f"{' and '.join(RESERVED_SPLIT_NAMES)} beside its splits; choose another name",
            )
        if name.lower() in seen:
            raise FieldError(
                where,
                f"split names {seen[name.lower()]!r} and {name!r} differ only in case; "
                "they would share a folder on some file systems",
            )
        seen[name.lower()] = name


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
            self._check_fractions()
            if self.column or self.cutoffs:
                raise ValueError("column and cutoffs belong to method 'time', not 'hash'")
        else:
            self._check_cutoffs()

    def _check_fractions(self) -> None:
        if not self.fractions:
            raise FieldError(
                "fractions", "must name at least one split, e.g. {train: 0.8, eval: 0.2}"
            )
        check_split_names(list(self.fractions), "fractions")
        for name, fraction in self.fractions.items():
            # NaN compares false with everything: without this check it passes the sum test
            # and sends every row to one split.
            if not math.isfinite(fraction) or not 0 < fraction <= 1:
                raise FieldError(
                    f"fractions.{name}",
                    f"got {fraction!r}; expected a fraction greater than 0 and at most 1",
                )
        total = math.fsum(self.fractions.values())
        if abs(total - 1.0) > 1e-9:
            raise FieldError("fractions", f"must sum to 1, got {total:g} ({self.fractions})")

    def _check_cutoffs(self) -> None:
        if not self.column:
            raise FieldError("column", "split method 'time' needs 'column' (a timestamp column)")
        if not self.cutoffs:
            raise FieldError(
                "cutoffs",
                "split method 'time' needs 'cutoffs', e.g. {train: '2016-01-01', eval: null}",
            )
        check_split_names(list(self.cutoffs), "cutoffs")
        items = list(self.cutoffs.items())
        if items[-1][1] is not None:
            raise FieldError(
                f"cutoffs.{items[-1][0]}",
                f"got {items[-1][1]!r}; the last split's cutoff is null (it takes the rest)",
            )
        previous: tuple[str, int] | None = None
        for name, value in items[:-1]:
            where = f"cutoffs.{name}"
            if value is None:
                raise FieldError(
                    where, "only the last split has a null cutoff (it takes the rest); give a time"
                )
            if isinstance(value, int) and not _MIN_SECONDS <= value <= _MAX_SECONDS:
                raise FieldError(
                    where,
                    f"got {value!r}; expected unix seconds from {_MIN_SECONDS} to {_MAX_SECONDS}"
                    " (years 1 to 9999)",
                )
            try:
                micros = to_micros(value)
            except ValueError as exc:
                raise FieldError(where, f"{exc}; e.g. '2016-01-01T00:00:00Z'") from None
            if previous is not None and micros <= previous[1]:
                raise FieldError(
                    where,
                    f"cutoff {value!r} is not after {previous[0]!r}'s cutoff; cutoffs must "
                    "increase (each split takes the rows before its cutoff)",
                )
            previous = (name, micros)

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

            from transforms.core.hashing import splitmix64  # local: rarely used

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
