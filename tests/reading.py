"""Helpers shared by the reader tests: read a whole file, compare error records."""

from __future__ import annotations

import pathlib

import pyarrow as pa

from transforms.core.errors import ErrorRecord
from transforms.io.read import CsvOptions, Source, read_file, resolve_schema

ABC = {"a": "int64", "b": "float32", "c": "string"}


def read_all(
    path: pathlib.Path | str, source: Source, **kwargs
) -> tuple[pa.Table | None, list[ErrorRecord]]:
    """Reads a whole file; returns the rows as one table and all errors."""
    schema = resolve_schema(source, [str(path)])
    batches, found = [], []
    for batch, errs in read_file(str(path), source, schema, pipeline="job", **kwargs):
        if batch is not None:
            assert batch.num_rows <= source.batch_size
            batches.append(batch)
        found.extend(errs)
    return (pa.Table.from_batches(batches) if batches else None), found


def rows(table: pa.Table | None) -> list[dict]:
    return [] if table is None else table.to_pylist()


def error(path, line: int, reason: str, message: str, payload: str) -> tuple:
    return ("job", "read", reason, message, payload, f"{path}:{line}")


def key(record: ErrorRecord) -> tuple:
    return (
        record.pipeline,
        record.step,
        record.reason,
        record.message,
        record.payload,
        record.source,
    )


def csv_source(schema=ABC, **options) -> Source:
    return Source(format="csv", schema=schema, csv=CsvOptions(**options))
