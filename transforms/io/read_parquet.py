"""Parquet reader: the schema's columns, batch by batch, converted value by value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.io.batches import Yielded, row_payloads, typed_batch
from transforms.io.streams import ReadError, open_raw

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = ["check_parquet_file", "parquet_file", "read_parquet_file"]


def parquet_file(stream: IO[bytes], path: str) -> pq.ParquetFile:
    """Opens a Parquet file by its footer; raises ReadError for a truncated or corrupt one."""
    try:
        return pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        raise ReadError(
            path, f"is not a readable Parquet file (truncated or corrupt?): {exc}"
        ) from None


def _parquet_columns(parquet: pq.ParquetFile, target: pa.Schema, path: str) -> None:
    names = parquet.schema_arrow.names
    missing = [n for n in target.names if n not in names]
    if missing:
        raise ReadError(
            path,
            f"column {missing[0]!r} of the schema is not in the Parquet file"
            f" (columns: {', '.join(names)})",
        )


def read_parquet_file(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    """Streams one Parquet file as ``(batch, errors)`` pairs.

    See :func:`transforms.io.read.read_file`.

    Raises:
        ReadError: if the file cannot be read at all; the message names it.
    """
    allowed = set(source.allow_non_finite)
    with open_raw(path) as stream:
        parquet = parquet_file(stream, path)
        _parquet_columns(parquet, target, path)
        line = 1
        batches = parquet.iter_batches(batch_size=source.batch_size, columns=target.names)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                raise ReadError(
                    path, f"is not a readable Parquet file (corrupt after row {line - 1}): {exc}"
                ) from None
            n = batch.num_rows
            lines = np.arange(line, line + n, dtype=np.int64)
            line += n
            if n:
                yield typed_batch(batch, target, allowed, path, pipeline, lines, row_payloads)


def check_parquet_file(path: str, source: Source, target: pa.Schema) -> None:
    """Checks, before any work, that a Parquet file's footer reads and holds the schema's columns.

    Raises:
        ReadError: naming the file, if it cannot be read with ``target``'s columns.
    """
    with open_raw(path) as stream:
        _parquet_columns(parquet_file(stream, path), target, path)
