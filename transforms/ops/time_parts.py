"""Calendar parts of a timestamp column: the ``timestamp_parts`` feature step.

A null timestamp gives null parts; a naive timestamp is taken as UTC.
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.steps import Fitted, Step, StepResult
from transforms.ops.arrays import column_of
from transforms.ops.columns import put_column

TIME_PARTS = ("hour", "minute", "day_of_week", "day", "month", "year", "day_of_year", "is_weekend")


@dataclasses.dataclass(kw_only=True)
class TimestampParts(Step):
    """Calendar parts (int64) of a timestamp or integer unix-seconds column.

    Parts: ``hour``, ``minute``, ``day_of_week`` (0 = Monday), ``day``, ``month``, ``year``,
    ``day_of_year`` (1-based), ``is_weekend`` (1 on Saturday and Sunday, else 0), in
    ``timezone`` (IANA name). Outputs are ``{prefix}_{part}``; ``prefix`` defaults to the
    column name. The source column is kept.
    """

    op: ClassVar[str] = "timestamp_parts"

    column: str
    parts: list[str] = dataclasses.field(default_factory=lambda: list(TIME_PARTS))
    prefix: str | None = None
    timezone: str = "UTC"

    def validate(self) -> None:
        unknown = [p for p in self.parts if p not in TIME_PARTS]
        if unknown or not self.parts:
            raise ValueError(f"unknown part {unknown[:1]}; valid parts are {', '.join(TIME_PARTS)}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown timezone {self.timezone!r}; use an IANA name like 'America/Chicago'"
            ) from exc

    def input_columns(self) -> list[str]:
        return [self.column]

    def output_columns(self) -> list[str]:
        return [f"{self.prefix or self.column}_{part}" for part in self.parts]

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        array = column_of(batch, self.column)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_integer(array.type):
            array = pc.cast(array.cast(pa.int64()), pa.timestamp("s", tz="UTC"))
        elif not pa.types.is_timestamp(array.type):
            raise ValueError(
                f"column {self.column!r} is {array.type}; timestamp_parts needs a timestamp "
                "or integer unix seconds"
            )
        elif array.type.tz is None:
            # A naive timestamp is taken as UTC, the project's convention for readers.
            array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
        local = array.cast(pa.timestamp(array.type.unit, tz=self.timezone))
        day_of_week = pc.day_of_week(local)
        compute = {
            "hour": lambda: pc.hour(local),
            "minute": lambda: pc.minute(local),
            "day_of_week": lambda: day_of_week,
            "day": lambda: pc.day(local),
            "month": lambda: pc.month(local),
            "year": lambda: pc.year(local),
            "day_of_year": lambda: pc.day_of_year(local),
            "is_weekend": lambda: pc.cast(pc.greater_equal(day_of_week, 5), pa.int64()),
        }
        out = batch
        for part, name in zip(self.parts, self.output_columns(), strict=True):
            out = put_column(out, name, pc.cast(compute[part](), pa.int64()))
        return StepResult(out)


STEPS = (TimestampParts,)
