"""The Arrow <-> BigQuery schema mapping, and whether a dataset's rows fit an existing table.

Pure: no client, no Beam. Fields are REST ``TableFieldSchema`` JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from transforms.core import schema as schema_lib

__all__ = ["arrow_field", "arrow_schema", "bq_field", "bq_schema", "schema_problems"]

_TO_BQ: list[tuple[Any, str]] = [
    (pa.types.is_boolean, "BOOL"),
    (pa.types.is_integer, "INT64"),
    (pa.types.is_floating, "FLOAT64"),
    (pa.types.is_string, "STRING"),
    (pa.types.is_large_string, "STRING"),
    (pa.types.is_binary, "BYTES"),
    (pa.types.is_large_binary, "BYTES"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_timestamp, "TIMESTAMP"),
]
_FROM_BQ: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "INT64": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT64": pa.float64(),
    "FLOAT": pa.float64(),
    "NUMERIC": pa.float64(),
    "BIGNUMERIC": pa.float64(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
}
# Types BigQuery stores the same way, for comparing a wanted schema with an existing table.
_SAME = {"BOOLEAN": "BOOL", "INTEGER": "INT64", "FLOAT": "FLOAT64", "STRUCT": "RECORD"}


def bq_field(field: pa.Field) -> dict[str, Any]:
    """The BigQuery field (REST ``TableFieldSchema`` JSON) for an Arrow field.

    Lists become ``REPEATED`` fields of their value type, structs ``RECORD``s; a
    non-nullable field is ``REQUIRED``.

    Raises:
        ValueError: for a type BigQuery cannot hold (nested lists, maps, ...).
    """
    tp = field.type
    mode = "NULLABLE" if field.nullable else "REQUIRED"
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        if pa.types.is_list(tp.value_type) or pa.types.is_large_list(tp.value_type):
            raise ValueError(f"column {field.name!r}: BigQuery has no list of lists ({tp})")
        inner = bq_field(pa.field(field.name, tp.value_type))
        return {**inner, "mode": "REPEATED"}
    if pa.types.is_struct(tp):
        return {
            "name": field.name,
            "type": "RECORD",
            "mode": mode,
            "fields": [bq_field(tp.field(i)) for i in range(tp.num_fields)],
        }
    for test, name in _TO_BQ:
        if test(tp):
            return {"name": field.name, "type": name, "mode": mode}
    raise ValueError(f"column {field.name!r}: type {tp} has no BigQuery equivalent")


def bq_schema(schema: pa.Schema) -> list[dict[str, Any]]:
    """BigQuery fields for the visible columns of an Arrow schema."""
    return [bq_field(f) for f in schema_lib.visible(schema)]


def arrow_field(field: Mapping[str, Any]) -> pa.Field:
    """The Arrow field for a BigQuery field (inverse of :func:`bq_field`).

    Integers come back as int64 and floats as float64 (BigQuery has one width of each).

    Raises:
        ValueError: for a type not mapped (GEOGRAPHY, JSON, INTERVAL, ...).
    """
    kind = str(field["type"]).upper()
    mode = str(field.get("mode") or "NULLABLE").upper()
    if kind in ("RECORD", "STRUCT"):
        tp: pa.DataType = pa.struct([arrow_field(f) for f in field.get("fields", [])])
    elif kind in _FROM_BQ:
        tp = _FROM_BQ[kind]
    else:
        raise ValueError(f"column {field['name']!r}: BigQuery type {kind} is not supported")
    if mode == "REPEATED":
        return pa.field(field["name"], pa.list_(tp))
    return pa.field(field["name"], tp, nullable=mode != "REQUIRED")


def arrow_schema(fields: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """The Arrow schema of a BigQuery table's fields."""
    return pa.schema([arrow_field(f) for f in fields])


def _normal(field: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = str(field["type"]).upper()
    sub = tuple(_normal(f) for f in field.get("fields", []) or [])
    return (field["name"], _SAME.get(kind, kind), str(field.get("mode") or "NULLABLE"), sub)


def schema_problems(
    existing: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]
) -> list[str]:
    """What stops rows of ``wanted`` from being appended to a table with ``existing`` fields.

    A wanted NULLABLE column may go into a REQUIRED one only if it has no nulls, which is
    not known before the run: it is reported too. Extra NULLABLE columns of the table are
    fine (they stay null).

    Returns:
        One sentence per problem; empty when the schemas fit.
    """
    have = {f["name"]: _normal(f) for f in existing}
    problems = []
    for field in wanted:
        want = _normal(field)
        name = field["name"]
        if name not in have:
            problems.append(f"column {name!r} ({want[1]}) is not in the table")
        elif have[name][1:] != want[1:]:
            got = have[name]
            problems.append(
                f"column {name!r} is {got[1]} {got[2]} in the table but {want[1]} {want[2]} in "
                "the dataset"
            )
    names = {f["name"] for f in wanted}
    for field in existing:
        if field["name"] not in names and str(field.get("mode") or "NULLABLE") == "REQUIRED":
            problems.append(f"the table's REQUIRED column {field['name']!r} is not in the dataset")
    return problems
