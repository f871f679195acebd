"""TFRecord reader: files of serialized tf.Example records, lengths and checksums checked."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from transforms.core.errors import ErrorRecord
from transforms.io.batches import Yielded, line_of, typed_batch
from transforms.io.csv_records import read_fully
from transforms.io.streams import BROKEN_STREAM, ReadError, open_stream

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = ["read_tfrecord_file", "tfrecord_records"]


def tfrecord_records(stream: IO[bytes], path: str) -> Iterator[bytes]:
    """Yields the records of a TFRecord stream, checking lengths and checksums.

    Raises:
        ReadError: on a truncated file or a checksum mismatch (the file is corrupt).
    """
    from transforms.io.tf_example import masked_crc32c

    number = 0
    while True:
        try:
            header = read_fully(stream, 12)
        except BROKEN_STREAM as exc:
            raise ReadError(path, f"is a truncated or corrupt gzip file ({exc})") from None
        if not header:
            return
        number += 1
        if len(header) < 12:
            raise ReadError(path, f"is a truncated TFRecord file: record {number}'s length header")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise ReadError(path, f"is a corrupt TFRecord file: record {number}'s length checksum")
        try:
            data = read_fully(stream, length + 4)
        except BROKEN_STREAM as exc:
            raise ReadError(path, f"is a truncated or corrupt gzip file ({exc})") from None
        if len(data) < length + 4:
            raise ReadError(path, f"is a truncated TFRecord file: record {number} is cut short")
        if struct.unpack("<I", data[length:])[0] != masked_crc32c(data[:length]):
            raise ReadError(path, f"is a corrupt TFRecord file: record {number}'s data checksum")
        yield data[:length]


def read_tfrecord_file(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    """Streams one TFRecord file of tf.Example records as ``(batch, errors)`` pairs.

    See :func:`transforms.io.read.read_file`.

    Raises:
        ReadError: if the file cannot be read at all; the message names it.
    """
    from transforms.io.tf_example import decode_tf_examples

    allowed = set(source.allow_non_finite)

    def encoded(record: bytes) -> str:
        return json.dumps({"tf_example_base64": base64.b64encode(record).decode()})

    def decode(records: list[bytes], first: int) -> Yielded:
        batch, problems = decode_tf_examples(records, target)
        found = [
            ErrorRecord(
                pipeline=pipeline,
                step="read",
                reason=p.reason,
                message=p.message,
                payload=encoded(records[p.position]),
                source=f"{path}:{first + p.position}",
            )
            for p in problems
        ]
        bad = {p.position for p in problems}
        good = [i for i in range(len(records)) if i not in bad]
        if batch.num_rows == 0:
            return None, found
        lines = np.array([first + i for i in good], np.int64)
        # The Examples' values have their columns' types; the non-finite rule still applies.
        checked, more = typed_batch(
            batch,
            target,
            allowed,
            path,
            pipeline,
            lines,
            lambda _, rows: [encoded(records[good[i]]) for i in rows],
        )
        found = sorted(found + more, key=line_of)
        return checked, found

    with open_stream(path) as stream:
        number = 0
        pending: list[bytes] = []
        for record in tfrecord_records(stream, path):
            pending.append(record)
            number += 1
            if len(pending) >= source.batch_size:
                yield decode(pending, number - len(pending) + 1)
                pending = []
        if pending:
            yield decode(pending, number - len(pending) + 1)
