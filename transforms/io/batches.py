"""What the readers yield: record batches with their source columns, and error records.

Every reader yields ``(batch, errors)`` pairs (:data:`Yielded`): a batch holds the schema's
columns plus ``__file`` and ``__line``, and a row with a value its column cannot take is not
in it but in ``errors``, one :class:`~transforms.core.errors.ErrorRecord` per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from transforms.core import schema as schema_lib
from transforms.core.errors import ErrorRecord, row_payload
from transforms.core.values import (
    Converted,
    Rejection,
    convert_batch,
    convert_values,
    describe,
    rejected_mask,
)

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = [
    "RowBuilder",
    "Yielded",
    "batched",
    "drain",
    "line_of",
    "row_payloads",
    "typed_batch",
    "with_source",
]

Yielded = tuple[pa.RecordBatch | None, list[ErrorRecord]]


def line_of(record: ErrorRecord) -> int:
    """The line (or record number) in the file of an error record."""
    return int(record.source.rsplit(":", 1)[1])


def with_source(table: pa.Table, path: str, lines: np.ndarray) -> pa.Table:
    """Appends the hidden ``__file`` and ``__line`` columns to ``table``."""
    n = table.num_rows
    file_column = pa.array([path], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64)))
    table = table.append_column(pa.field(schema_lib.FILE_COLUMN, pa.string()), file_column)
    return table.append_column(
        pa.field(schema_lib.LINE_COLUMN, pa.int64()), pa.array(lines, pa.int64())
    )


def batched(table: pa.Table | None, found: list[ErrorRecord], size: int) -> Iterator[Yielded]:
    """Splits a table into batches of at most ``size`` rows; errors go with the first."""
    if table is None or table.num_rows == 0:
        if found:
            yield None, found
        return
    first = True
    whole = table.combine_chunks()
    for batch in whole.to_batches(max_chunksize=size):
        if batch.num_rows < whole.num_rows:
            # A slice shares its parent's buffers, and pickling it (which Beam does to
            # estimate element sizes, and to move elements between workers) copies them
            # all: compact it so each batch costs its own size.
            batch = pa.concat_batches([batch])
        yield batch, (found if first else [])
        first = False


# ---------------------------------------------------------------------------------------
# Records as Python values (JSONL, Avro): converted column by column at each flush.


class RowBuilder:
    """Collects records, then converts them column by column; bad rows become errors."""

    def __init__(
        self, target: pa.Schema, path: str, pipeline: str, binary_base64: bool, source: Source
    ):
        self.target = target
        self.path = path
        self.pipeline = pipeline
        self.binary_base64 = binary_base64
        self.allowed = set(source.allow_non_finite)
        self.records: list[Mapping[str, Any]] = []
        self.payloads: list[Callable[[], str]] = []
        self.lines: list[int] = []
        self.errors: list[ErrorRecord] = []

    def error(self, line: int, reason: str, message: str, payload: str) -> None:
        """Records a malformed record, found before conversion."""
        self.errors.append(
            ErrorRecord(
                pipeline=self.pipeline,
                step="read",
                reason=reason,
                message=message,
                payload=payload,
                source=f"{self.path}:{line}",
            )
        )

    def add(self, record: Mapping[str, Any], line: int, payload: Callable[[], str]) -> None:
        """Adds a record; ``payload`` gives its text if one of its values is rejected."""
        self.records.append(record)
        self.payloads.append(payload)
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.lines)

    def flush(self) -> Yielded:
        """Converts the records collected so far; returns their batch and all errors."""
        found, self.errors = self.errors, []
        if not self.lines:
            return None, found
        arrays: list[pa.Array] = []
        problems: dict[int, list[tuple[str, Rejection]]] = {}
        for field in self.target:
            converted: Converted = convert_values(
                [r.get(field.name) for r in self.records],
                field.type,
                allow_non_finite=field.name in self.allowed,
                binary_base64=self.binary_base64,
            )
            arrays.append(converted.array)
            for row, rejection in converted.rejected.items():
                problems.setdefault(row, []).append((field.name, rejection))
        lines = np.asarray(self.lines, dtype=np.int64)
        table = with_source(pa.Table.from_arrays(arrays, schema=self.target), self.path, lines)
        for row in sorted(problems):
            reason, message = describe(problems[row])
            self.error(int(lines[row]), reason, message, self.payloads[row]())
        found += self.errors
        self.errors = []
        if problems:
            bad = np.zeros(len(lines), dtype=bool)
            bad[list(problems)] = True
            table = table.filter(pa.array(~bad))
        found.sort(key=line_of)
        self.records, self.payloads, self.lines = [], [], []
        if table.num_rows == 0:
            return None, found
        return table.combine_chunks().to_batches()[0], found


def drain(builder: RowBuilder, size: int, final: bool) -> Iterator[Yielded]:
    """Flushes ``builder`` once it holds ``size`` records, or at the end (``final``)."""
    if len(builder) >= size or (final and (len(builder) or builder.errors)):
        batch, found = builder.flush()
        if batch is not None or found:
            yield batch, found


def row_payloads(batch: pa.RecordBatch | pa.Table, rows: Sequence[int]) -> list[str]:
    """The rows of ``batch`` at ``rows`` as error payloads (JSON)."""
    return [row_payload(batch.slice(int(i), 1).to_pylist()[0]) for i in rows]


def typed_batch(
    batch: pa.RecordBatch | pa.Table,
    target: pa.Schema,
    allowed: set[str],
    path: str,
    pipeline: str,
    lines: np.ndarray,
    payloads: Callable[[pa.RecordBatch | pa.Table, Sequence[int]], list[str]],
) -> Yielded:
    """Converts a typed batch to ``target`` value by value: bad values reject their row."""
    converted, problems = convert_batch(batch, target, allow_non_finite=allowed)
    table = with_source(converted, path, lines)
    found: list[ErrorRecord] = []
    if problems:
        rows = sorted(problems)
        for row, payload in zip(rows, payloads(batch, rows), strict=True):
            reason, message = describe(problems[row])
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=reason,
                    message=message,
                    payload=payload,
                    source=f"{path}:{int(lines[row])}",
                )
            )
        table = table.filter(pa.array(~rejected_mask(len(lines), problems)))
    if table.num_rows == 0:
        return None, found
    return table.combine_chunks().to_batches()[0], found
