"""Stable, vectorised row hashing: the same value hashes the same on every run and runner.

Python's ``hash`` is salted per process, so it cannot assign splits or partitions that must
agree across workers. Here numbers are hashed with SplitMix64 over their 64-bit
representation (NumPy, vectorised) and strings with FarmHash Fingerprint64 once per distinct
value; columns are combined with a SplitMix64 mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import farmhash
import numpy as np
import pyarrow as pa

_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_SEED = np.uint64(0x2545F4914F6CDD1D)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64, copy=True)
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def column_hash(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Hashes each value of a column to a uint64; nulls hash to a fixed constant."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    tp = column.type
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_binary(tp):
        encoded = column.dictionary_encode()
        uniques = encoded.dictionary.to_pylist()
        table = np.fromiter(
            (
                farmhash.fingerprint64(v if isinstance(v, str) else v.decode("latin-1"))
                for v in uniques
            ),
            dtype=np.uint64,
            count=len(uniques),
        )
        idx = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        out = table[idx] if len(table) else np.zeros(len(column), dtype=np.uint64)
    elif pa.types.is_floating(tp):
        floats = column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        floats = np.where(floats == 0.0, 0.0, floats)  # -0.0 and 0.0 are the same value
        floats = np.where(np.isnan(floats), np.nan, floats)
        out = splitmix64(floats.view(np.uint64))
    elif pa.types.is_dictionary(tp):
        return column_hash(column.cast(tp.value_type))
    else:
        if pa.types.is_date32(tp):
            column = column.cast(pa.int32())  # days; Arrow has no date32 -> int64 cast
        elif pa.types.is_timestamp(tp) or pa.types.is_date(tp) or pa.types.is_boolean(tp):
            column = column.cast(pa.int64())
        ints = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        out = splitmix64(ints.view(np.uint64))
    return np.where(valid, out, _NULL_HASH)


def row_hash(batch: pa.RecordBatch, columns: Sequence[str]) -> np.ndarray:
    """Hashes the given columns of every row into one uint64 per row."""
    h = np.full(batch.num_rows, _SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            h = splitmix64(h * np.uint64(31) ^ column_hash(batch.column(name)))
    return h


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    """Maps uint64 hashes uniformly onto [0, 1) using their top 53 bits."""
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)
