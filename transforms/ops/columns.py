"""Columns of record batches as the steps read and write them.

Lookups that fail with the columns that exist (a spec error, not a data error), the masks
and per-row messages that rejections are built from, and the checks of a step's column
parameters shared by the clean steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import HIDDEN_PREFIX, type_name
from transforms.core.steps import Rejection


def column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """Returns a column of ``batch`` by name.

    Raises:
        ValueError: if the batch has no such column (a spec error: the message lists the
            columns that exist).
    """
    names = batch.schema.names
    if name not in names:
        visible = [n for n in names if not n.startswith(HIDDEN_PREFIX)]
        raise ValueError(f"column {name!r} is not in the data; columns are {', '.join(visible)}")
    return batch.column(names.index(name))


def replace_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    """Returns ``batch`` with column ``name`` replaced by ``values`` (same position)."""
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, pa.field(name, values.type), values)


def to_mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Boolean Arrow array -> NumPy bool array with nulls as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def row_messages(mask: np.ndarray, values: pa.Array, describe: Callable[[str], str]) -> np.ndarray:
    """Builds one message per refused row; ``describe`` gets the value's repr."""
    out = np.empty(len(mask), dtype=object)
    for i in np.flatnonzero(mask):
        out[i] = describe(repr(values[int(i)].as_py()))
    return out


def rejection_of(
    mask: np.ndarray, reason: str, values: pa.Array, describe: Callable[[str], str]
) -> Rejection:
    """A rejection of the rows in ``mask``, one message per row (see :func:`row_messages`)."""
    return Rejection(mask, reason, row_messages(mask, values, describe))


def is_string(tp: pa.DataType) -> bool:
    """True for Arrow's string and large string types."""
    return pa.types.is_string(tp) or pa.types.is_large_string(tp)


def require_string(name: str, values: pa.Array, op: str) -> None:
    """Raises ValueError, naming ``op`` and the column's type, unless ``values`` are strings."""
    if not is_string(values.type):
        raise ValueError(
            f"{op} needs a string column; {name!r} is {type_name(values.type)} (cast it first)"
        )


def require_numeric(name: str, values: pa.Array, op: str) -> None:
    """Raises ValueError, naming ``op`` and the column's type, unless ``values`` are numbers."""
    tp = values.type
    if not (pa.types.is_integer(tp) or pa.types.is_floating(tp)):
        raise ValueError(
            f"{op} needs a numeric column; {name!r} is {type_name(tp)} (cast it first)"
        )


def missing_mask(values: pa.Array, empty_is_missing: bool) -> np.ndarray:
    """True where a value is null, or an empty string when ``empty_is_missing``."""
    missing = values.is_null()
    if empty_is_missing and is_string(values.type):
        missing = pc.or_kleene(missing, pc.equal(values, ""))
    return to_mask(missing)


def check_columns(columns: Sequence[str], what: str) -> None:
    """Raises ValueError unless ``columns`` is a non-empty list of distinct, non-empty names.

    Args:
        columns: The column names a step's parameter gives.
        what: The parameter's name in messages, e.g. ``cast.columns``.
    """
    if not columns:
        raise ValueError(f"{what} must name at least one column")
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise ValueError(f"{what} has an empty column name")
        if name in seen:
            raise ValueError(f"{what} names column {name!r} twice")
        seen.add(name)


def format_number(x: float) -> str:
    """Formats a bound without a trailing ``.0`` for whole numbers (``5``, ``2.5``)."""
    return f"{x:g}" if math.isfinite(x) else str(x)


def put_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    """Returns ``batch`` with column ``name`` replaced in place, or appended if new."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    index = batch.schema.get_field_index(name)
    if index >= 0:
        return batch.set_column(index, pa.field(name, values.type), values)
    return batch.append_column(pa.field(name, values.type), values)
