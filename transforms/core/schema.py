"""Column types in specs, and the Arrow schema they map to."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

# Hidden columns readers attach to every batch so any later step can say where a row came
# from. Writers never write them.
FILE_COLUMN = "__file"
LINE_COLUMN = "__line"
HIDDEN_PREFIX = "__"

TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
ALIASES = {
    "str": "string",
    "int": "int64",
    "float": "float64",
    "double": "float64",
    "bytes": "binary",
}


def parse_type(name: str) -> pa.DataType:
    """Returns the Arrow type for a spec type name, e.g. ``float32`` or ``list<int64>``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    text = name.strip()
    if text.startswith("list<") and text.endswith(">"):
        return pa.list_(parse_type(text[5:-1]))
    key = ALIASES.get(text, text)
    if key not in TYPES:
        raise ValueError(
            f"unknown type {name!r}; valid types are {', '.join(TYPES)} and list<TYPE>"
        )
    return TYPES[key]


def type_name(tp: pa.DataType) -> str:
    """Inverse of :func:`parse_type` for the types it knows; Arrow's name otherwise."""
    if pa.types.is_list(tp):
        return f"list<{type_name(tp.value_type)}>"
    for name, known in TYPES.items():
        if known == tp:
            return name
    if pa.types.is_timestamp(tp):
        return "timestamp"
    if pa.types.is_large_string(tp):
        return "string"
    return str(tp)


def arrow_schema(columns: Mapping[str, str]) -> pa.Schema:
    """Builds an Arrow schema from a ``{column: type name}`` mapping, in order."""
    return pa.schema([pa.field(name, parse_type(tp)) for name, tp in columns.items()])


def with_source_columns(schema: pa.Schema) -> pa.Schema:
    """Appends the hidden ``__file`` and ``__line`` columns readers attach."""
    return schema.append(pa.field(FILE_COLUMN, pa.string())).append(
        pa.field(LINE_COLUMN, pa.int64())
    )


def visible(schema: pa.Schema) -> pa.Schema:
    """Returns the schema without hidden (``__``-prefixed) columns."""
    return pa.schema([f for f in schema if not f.name.startswith(HIDDEN_PREFIX)])


def drop_hidden(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Removes hidden columns from a batch."""
    keep = [i for i, n in enumerate(batch.schema.names) if not n.startswith(HIDDEN_PREFIX)]
    if len(keep) == batch.num_columns:
        return batch
    return batch.select(keep)
