"""Analyzer input read from Arrow arrays: finite numbers and the strings vocabularies count.

Shared by the analyzers (:mod:`transforms.ops.analyzers`, :mod:`transforms.ops.quantiles`),
the data set statistics and the feature steps, so a value is read the same way when it is
fitted and when it is applied.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def column_of(batch: pa.RecordBatch, column: str) -> pa.Array:
    """Returns one column of a batch, failing with the columns that exist.

    Raises:
        KeyError: if the batch has no such column (a spec or code error, not a data error).
    """
    index = batch.schema.get_field_index(column)
    if index < 0:
        raise KeyError(f"column {column!r} not in batch; columns are {batch.schema.names}")
    return batch.column(index)


def split_finite(array: pa.Array) -> tuple[np.ndarray, int]:
    """The finite values of a numeric or boolean array as float64, and how many were not.

    Nulls are dropped and not counted. NaN, ``inf`` and ``-inf`` are dropped and counted;
    ``-0.0`` becomes ``0.0`` (so minima, maxima and summaries do not depend on which of the
    two zeros came first). The returned array is always a fresh copy.

    Raises:
        TypeError: for a column that is neither numeric nor boolean.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.int8())
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        raise TypeError(f"expected a numeric column, got {array.type}")
    raw = array.drop_null().to_numpy(zero_copy_only=False)
    if raw.dtype.kind in "iub":
        # Integers are finite and have no -0.0; astype copies.
        return raw.astype(np.float64), 0
    # Adding 0.0 turns -0.0 into 0.0 (and copies: arrays from Arrow may be read-only views).
    values = raw + 0.0 if raw.dtype == np.float64 else raw.astype(np.float64)
    if raw.dtype != np.float64:
        values += 0.0
    finite = np.isfinite(values)
    dropped = len(values) - int(np.count_nonzero(finite))
    if dropped:
        values = values[finite]
    return values, dropped


def precision_of(tp: pa.DataType) -> int:
    """Significant bits of a numeric type's values as float64, for :func:`~transforms.ops.analyzers.exact_sums`."""
    if pa.types.is_float64(tp):
        return 53
    if pa.types.is_floating(tp):
        return 24
    return 0


def numeric_values(array: pa.Array) -> np.ndarray:
    """The finite, non-null values of a numeric or boolean array as float64 (see
    :func:`split_finite`)."""
    return split_finite(array)[0]


def finite_floats(array: pa.Array) -> pa.Array:
    """``array`` without its NaN and infinite values if it is a float array (else as is)."""
    if pa.types.is_floating(array.type) and len(array):
        keep = pc.is_finite(array)
        if keep.null_count or not pc.all(keep).as_py():
            return array.filter(keep)
    return array


def string_form(array: pa.Array) -> pa.Array:
    """Returns an array's values as strings, the form vocabularies count and look up.

    Strings pass through; integers and booleans use Arrow's decimal/``true`` forms; floats
    use NumPy's shortest round-trip form of their own precision (``np.float32(0.1)`` ->
    ``'0.1'``, ``1.0`` -> ``'1.0'``), computed once per distinct value. Nulls stay null.
    """
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    if pa.types.is_dictionary(array.type):
        return string_form(array.dictionary_decode())
    if pa.types.is_floating(array.type):
        encoded = pc.dictionary_encode(array)
        dictionary = encoded.dictionary.to_numpy(zero_copy_only=False)
        names = pa.array([str(v) for v in dictionary], pa.string())
        return pc.take(names, encoded.indices)
    if pa.types.is_binary(array.type):
        return array.cast(pa.string())
    return array.cast(pa.string())
