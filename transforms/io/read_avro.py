"""Avro reader: records converted column by column, a malformed record to one error record."""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from transforms.core import errors
from transforms.core.errors import row_payload
from transforms.io.batches import RowBuilder, Yielded, drain
from transforms.io.streams import ReadError, open_raw

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = ["check_avro_file", "read_avro_file"]


def read_avro_file(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    """Streams one Avro file as ``(batch, errors)`` pairs.

    See :func:`transforms.io.read.read_file`.

    Raises:
        ReadError: if the file cannot be read at all; the message names it.
    """
    import fastavro

    builder = RowBuilder(target, path, pipeline, binary_base64=False, source=source)
    number = 0
    with open_raw(path) as stream:
        try:
            records = fastavro.reader(stream)
        except Exception as exc:
            raise ReadError(path, f"is not a readable Avro file ({exc})") from None
        try:
            for number, record in enumerate(records, start=1):
                if not isinstance(record, dict):
                    builder.error(
                        number,
                        errors.MALFORMED_RECORD,
                        f"expected an Avro record, got {type(record).__name__}",
                        row_payload({"value": record}),
                    )
                    continue
                builder.add(record, number, functools.partial(row_payload, record))
                yield from drain(builder, source.batch_size, final=False)
        except (EOFError, ValueError, OSError, struct.error) as exc:
            raise ReadError(
                path, f"is a truncated or corrupt Avro file: it ends after record {number} ({exc})"
            ) from None
    yield from drain(builder, source.batch_size, final=True)


def check_avro_file(path: str, source: Source, target: pa.Schema) -> None:
    """Checks, before any work, that an Avro file's header parses.

    Raises:
        ReadError: naming the file, if it cannot be read with ``target``'s columns.
    """
    import fastavro

    with open_raw(path) as stream:
        try:
            fastavro.reader(stream)
        except Exception as exc:
            raise ReadError(path, f"is not a readable Avro file ({exc})") from None
