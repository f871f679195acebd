"""Deduplication: keep one row per key over the whole data set.

Deduplication regroups the data set, so it cannot run batch by batch: the ``dedupe`` step is
a *barrier* (:attr:`~transforms.core.steps.Step.is_barrier`) that pipelines run with
:class:`transforms.beam.dedupe.DeduplicateBatches`, built on the pure functions here. Rows are ordered by their hidden source columns
(``__file``, ``__line``), so which duplicate survives is the same on every run and runner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.hashing import row_hash
from transforms.core.schema import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN
from transforms.core.steps import Fitted, Step, StepResult

# Reason under which dropped duplicates are counted in the manifest.
DUPLICATE = "duplicate"

Keep = Literal["first", "last"]

_ORDER = "__order"
_ROW = "__row"
# Output batches are cut to this many rows so downstream steps see batch-sized elements.
_MAX_BATCH_ROWS = 8192


@dataclasses.dataclass(kw_only=True)
class Deduplicate(Step):
    """Drops rows whose key was already seen (the ``dedupe`` op).

    Attributes:
        key: Columns that identify a row; empty means every visible column.
        keep: ``first`` keeps the earliest row of each key in (``__file``, ``__line``)
            order, ``last`` the latest.
    """

    op: ClassVar[str] = "dedupe"
    is_barrier: ClassVar[bool] = True

    key: list[str] = dataclasses.field(default_factory=list)
    keep: Keep = "first"

    def validate(self) -> None:
        seen: set[str] = set()
        for name in self.key:
            if not name:
                raise ValueError("dedupe.key has an empty column name")
            if name.startswith(HIDDEN_PREFIX):
                raise ValueError(
                    f"dedupe.key column {name!r} is a hidden source column; rows from"
                    " different lines always differ in it, so nothing would be deduplicated"
                )
            if name in seen:
                raise ValueError(f"dedupe.key names column {name!r} twice")
            seen.add(name)

    def input_columns(self) -> list[str]:
        return list(self.key)

    def default_name(self) -> str:
        return "dedupe"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        raise ValueError(
            f"step {self.name!r} deduplicates the whole data set and cannot run per batch;"
            " pipelines run it with DeduplicateBatches"
        )


def key_columns(schema: pa.Schema, key: Sequence[str]) -> list[str]:
    """The columns a key compares: ``key``, or every visible column when it is empty.

    Raises:
        ValueError: if a key column is not in the schema.
    """
    if not key:
        return [n for n in schema.names if not n.startswith(HIDDEN_PREFIX)]
    missing = [k for k in key if k not in schema.names]
    if missing:
        visible = [n for n in schema.names if not n.startswith(HIDDEN_PREFIX)]
        raise ValueError(
            f"dedupe key column {missing[0]!r} is not in the data; columns are {', '.join(visible)}"
        )
    return list(key)


def duplicate_mask(table: pa.Table, key: Sequence[str], keep: Keep = "first") -> np.ndarray:
    """Marks the rows to drop so that one row per distinct key remains.

    Rows are ordered by ``__file`` then ``__line`` when the table has them (rows without
    them keep their position order as a tie-break). Nulls in key columns compare equal to
    each other, as do NaNs; ``-0.0`` and ``0.0`` are different keys.

    Args:
        table: The rows (a table or a single record batch's worth).
        key: Key columns; empty means every visible column.
        keep: Which row of each key survives: the ``first`` or the ``last`` in order.

    Returns:
        A bool array, one per row of ``table``: True = drop.
    """
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=bool)
    columns = key_columns(table.schema, key)
    order_keys = [c for c in (FILE_COLUMN, LINE_COLUMN) if c in table.schema.names]
    position = pa.array(np.arange(n, dtype=np.int64))
    if order_keys:
        # Rank of each row in source order; the position breaks ties between equal sources.
        sort_by = [(c, "ascending", "at_end") for c in [*order_keys, _ROW]]
        sorted_idx = pc.sort_indices(
            table.select(order_keys).append_column(_ROW, position), sort_keys=sort_by
        ).to_numpy()
        rank = np.empty(n, dtype=np.int64)
        rank[sorted_idx] = np.arange(n, dtype=np.int64)
    else:
        rank = np.arange(n, dtype=np.int64)
    if not columns:
        # No visible columns: every row has the same (empty) key.
        keep_mask = np.zeros(n, dtype=bool)
        keep_mask[int(np.argmin(rank) if keep == "first" else np.argmax(rank))] = True
        return ~keep_mask
    keyed = table.select(columns).append_column(_ORDER, pa.array(rank))
    agg = "min" if keep == "first" else "max"
    kept = keyed.group_by(columns, use_threads=False).aggregate([(_ORDER, agg)])
    survivors = kept.column(f"{_ORDER}_{agg}").to_numpy()
    keep_mask = np.zeros(n, dtype=bool)
    # ``rank`` is a permutation of 0..n-1, so the kept ranks map back to row positions.
    by_rank = np.empty(n, dtype=np.int64)
    by_rank[rank] = np.arange(n, dtype=np.int64)
    keep_mask[by_rank[survivors]] = True
    return ~keep_mask


def partition_batch(
    batch: pa.RecordBatch, key: Sequence[str], num_partitions: int
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Splits a batch by a stable hash of its key columns into ``(partition, rows)``.

    Rows with equal keys always land in the same partition, whichever batch or worker they
    come from (the hash is deterministic, see :mod:`transforms.core.hashing`).
    """
    if batch.num_rows == 0:
        return
    columns = key_columns(batch.schema, key)
    part = (row_hash(batch, columns) % np.uint64(num_partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    sorted_parts = part[order]
    starts = np.flatnonzero(np.r_[True, sorted_parts[1:] != sorted_parts[:-1]])
    ends = np.r_[starts[1:], len(order)]
    taken = batch.take(pa.array(order))
    for start, end in zip(starts, ends, strict=True):
        yield int(sorted_parts[start]), taken.slice(int(start), int(end - start))


def dedupe_partition(
    batches: Sequence[pa.RecordBatch], key: Sequence[str], keep: Keep
) -> tuple[list[pa.RecordBatch], int]:
    """Deduplicates the rows of one partition.

    Returns:
        The surviving rows in source order, cut into batches, and the number dropped.
    """
    nonempty = [b for b in batches if b.num_rows]
    if not nonempty:
        return [], 0
    schema = nonempty[0].schema
    table = pa.Table.from_batches([b.cast(schema) for b in nonempty], schema=schema)
    drop = duplicate_mask(table, key, keep)
    survivors = table.filter(pa.array(~drop))
    order_keys = [c for c in (FILE_COLUMN, LINE_COLUMN) if c in schema.names]
    if order_keys:
        survivors = survivors.sort_by([(c, "ascending") for c in order_keys])
    survivors = survivors.combine_chunks()
    return survivors.to_batches(max_chunksize=_MAX_BATCH_ROWS), int(drop.sum())


STEPS = (Deduplicate,)
