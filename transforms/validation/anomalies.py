"""Anomalies: where a run's statistics break its data schema.

:func:`find_anomalies` checks each column's ``stats.json`` entry against its
:class:`~transforms.validation.schema.ColumnSchema` and reports, like TFDV's
``validate_statistics``:

==================  ====================================================  =====================
kind                when                                                  TFDV's anomaly
==================  ====================================================  =====================
missing_column      in the schema, not in the statistics                  SCHEMA_MISSING_COLUMN
new_column          in the statistics, not in the schema                  SCHEMA_NEW_COLUMN
type_change         another type than the schema's                        UNEXPECTED_DATA_TYPE
low_presence        share of non-null rows below ``presence`` (any null   FEATURE_TYPE_LOW_
                    with ``presence: 1.0``; no row at all with any        FRACTION_PRESENT
                    ``presence`` above 0)
out_of_range        observed min below ``min`` or max above ``max``       *_SMALL/LARGE_*
unexpected_values   values outside ``values`` over a share of more than   ENUM_TYPE_UNEXPECTED_
                    ``max_unexpected_share`` (any, when it is 0)          STRING_VALUES
==================  ====================================================  =====================

Each anomaly names the column, what was observed, what the schema expects and says so in
one line. A column whose type changed is not checked further (its range or values would
be compared with the wrong kind of data). Unexpected values are read from the column's
rank histogram (its 1000 most frequent values), and their share is of the column's non-null
values, as in TFDV. Drift and skew anomalies come from
:func:`transforms.validation.result.validate`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from transforms.validation.schema import ColumnSchema, DataSchema

__all__ = ["KINDS", "Anomaly", "find_anomalies", "percentage"]

KINDS = (
    "missing_column",
    "new_column",
    "type_change",
    "low_presence",
    "out_of_range",
    "unexpected_values",
    "drift",
    "skew",
)
# Unexpected values named in a message; all of them are in the anomaly's "observed".
_NAMED_IN_MESSAGE = 5


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One broken expectation.

    Attributes:
        column: The column's name.
        kind: One of :data:`KINDS`.
        observed: What the statistics show (JSON-serialisable).
        expected: What the schema expects (JSON-serialisable).
        message: One line saying it, naming the column.
    """

    column: str
    kind: str
    observed: Any
    expected: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The anomaly as ``validation.json`` holds it."""
        return {
            "column": self.column,
            "kind": self.kind,
            "observed": self.observed,
            "expected": self.expected,
            "message": self.message,
        }


def percentage(count: float, total: float) -> str:
    """A share as TFDV writes it in anomaly messages: ``<1%`` or ``~x%`` (x rounded down)."""
    if total == 0:
        return "?"
    percent = 100 * count / total
    return "<1%" if percent < 1.0 else f"~{math.floor(percent)}%"


def _number(value: float) -> str:
    return f"{value:g}"


def _presence(name: str, col_stats: Mapping[str, Any], column: ColumnSchema) -> list[Anomaly]:
    if column.presence is None:
        return []
    count, missing = int(col_stats.get("count") or 0), int(col_stats.get("missing") or 0)
    total = count + missing
    if total == 0:
        # No row at all: nothing is present, which any presence above 0 rules out.
        if column.presence == 0:
            return []
        return [
            Anomaly(
                name,
                "low_presence",
                0.0,
                column.presence,
                f"{name}: present in 0 of 0 rows: the data is empty, the schema expects"
                f" at least {column.presence:.2%}",
            )
        ]
    fraction = count / total
    # With presence 1.0, a few nulls among very many rows can round the share to 1.0: any
    # null is an anomaly then (as in TFDV).
    if fraction < column.presence or (column.presence == 1.0 and missing):
        return [
            Anomaly(
                name,
                "low_presence",
                fraction,
                column.presence,
                f"{name}: present in {fraction:.2%} of rows ({missing} of {total} null),"
                f" the schema expects at least {column.presence:.2%}",
            )
        ]
    return []


def _range(name: str, col_stats: Mapping[str, Any], column: ColumnSchema) -> list[Anomaly]:
    low, high = col_stats.get("min"), col_stats.get("max")
    below = column.min is not None and low is not None and low < column.min
    above = column.max is not None and high is not None and high > column.max
    if not (below or above):
        return []
    sides = []
    if below:
        sides.append(f"min {_number(low)} is below {_number(column.min)}")  # type: ignore[arg-type]
    if above:
        sides.append(f"max {_number(high)} is above {_number(column.max)}")  # type: ignore[arg-type]
    return [
        Anomaly(
            name,
            "out_of_range",
            {"min": low, "max": high},
            {"min": column.min, "max": column.max},
            f"{name}: {' and '.join(sides)}, outside the schema's range",
        )
    ]


def _values(name: str, col_stats: Mapping[str, Any], column: ColumnSchema) -> list[Anomaly]:
    if column.values is None:
        return []
    total = float(col_stats.get("count") or 0)
    ranked = col_stats.get("rank_histogram") or []
    if total == 0:
        return []
    allowed = set(column.values)
    unexpected = [
        (str(item["value"]), item["count"]) for item in ranked if str(item["value"]) not in allowed
    ]
    unexpected_count = float(sum(count for _, count in unexpected))
    share = unexpected_count / total
    limit = column.max_unexpected_share or 0.0
    if not (share > limit or (limit == 0 and unexpected)):
        return []
    listed = ", ".join(
        f"{value!r} ({percentage(count, total)})" for value, count in unexpected[:_NAMED_IN_MESSAGE]
    )
    more = len(unexpected) - _NAMED_IN_MESSAGE
    if more > 0:
        listed += f" and {more} more"
    return [
        Anomaly(
            name,
            "unexpected_values",
            {"share": share, "values": [{"value": v, "count": n} for v, n in unexpected]},
            {"values": list(column.values), "max_unexpected_share": limit},
            f"{name}: values outside the schema's: {listed}; {share:.2%} of values,"
            f" the schema tolerates {limit:.2%}",
        )
    ]


def find_anomalies(
    columns_stats: Mapping[str, Mapping[str, Any]], schema: DataSchema
) -> list[Anomaly]:
    """Checks statistics against a schema.

    Args:
        columns_stats: Column -> ``stats.json`` entry (e.g. ``stats["input"]["all"]``).
        schema: The expectations.

    Returns:
        The anomalies, column by column in the schema's order (each column's in the order
        of the table above), then the new columns in the statistics' order.
    """
    found: list[Anomaly] = []
    for name, column in schema.columns.items():
        col_stats = columns_stats.get(name)
        if col_stats is None:
            found.append(
                Anomaly(
                    name,
                    "missing_column",
                    None,
                    column.type,
                    f"{name}: in the schema ({column.type}) but not in the data",
                )
            )
            continue
        observed_type = col_stats.get("type")
        if observed_type != column.type:
            found.append(
                Anomaly(
                    name,
                    "type_change",
                    observed_type,
                    column.type,
                    f"{name}: type {observed_type}, the schema expects {column.type}",
                )
            )
            found += _presence(name, col_stats, column)
            continue
        found += _presence(name, col_stats, column)
        found += _range(name, col_stats, column)
        found += _values(name, col_stats, column)
    for name, col_stats in columns_stats.items():
        if name not in schema.columns:
            observed_type = col_stats.get("type")
            found.append(
                Anomaly(
                    name,
                    "new_column",
                    observed_type,
                    None,
                    f"{name}: in the data ({observed_type}) but not in the schema",
                )
            )
    return found
