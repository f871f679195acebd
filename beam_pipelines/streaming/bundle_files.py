"""Windowed output on any runner: the elements of each bundle written to one new file.

:class:`WriteBundles` writes rows, aggregates, errors and counts of a streaming run under its
output folder; the encoders here turn a bundle into the bytes of its file.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.core.errors import ErrorRecord
from transforms.core.schema import FILE_COLUMN, LINE_COLUMN
from transforms.io.write import conform, encode_jsonl


class _WriteBundleFiles(beam.DoFn):
    """Writes the elements of each bundle to one new file (windowed output on any runner).

    File names carry a hash of what the elements are (``identity``; their encoded content by
    default), so a retried bundle rewrites the same file while two bundles never share one:
    row batches are named by their rows' sources too, as two messages may carry equal rows.
    """

    def __init__(
        self,
        prefix: str,
        encode: Callable[[Sequence[Any]], bytes],
        suffix: str,
        identity: Callable[[Sequence[Any]], bytes] | None = None,
    ) -> None:
        self._prefix = prefix
        self._encode = encode
        self._suffix = suffix
        self._identity = identity
        self._items: list[Any] = []

    def start_bundle(self) -> None:
        self._items = []

    def process(self, item: Any) -> None:
        self._items.append(item)

    def finish_bundle(self) -> None:
        if not self._items:
            return
        data: bytes = self._encode(self._items)
        name = data if self._identity is None else self._identity(self._items)
        digest = hashlib.sha256(name).hexdigest()[:24]
        path = f"{self._prefix}-{digest}{self._suffix}"
        with FileSystems.create(path) as f:
            f.write(data)
        self._items = []


def batch_sources(batches: Sequence[pa.RecordBatch]) -> bytes:
    """What a bundle of row batches is: the sources (file and line, or message) of its rows.

    Batches without source columns are known by their whole content. Hashed from Arrow's
    serialization: no Python work per row.
    """
    digest = hashlib.sha256()
    for b in batches:
        names = [c for c in (FILE_COLUMN, LINE_COLUMN) if c in b.schema.names]
        part = b.select(names) if names else b
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_batch(part)
        digest.update(sink.getvalue())
    return digest.digest()


def bundle_id(items: Sequence[Any]) -> bytes:
    """A new name for every bundle, whatever it holds."""
    # Counts carry no identity of their own: every bundle gets a file (see docs/streaming.md).
    return uuid.uuid4().bytes


def jsonl_rows(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Row dicts (aggregates) as JSON lines, keys sorted."""
    return "".join(json.dumps(r, default=str, sort_keys=True) + "\n" for r in rows).encode()


def jsonl_errors(records: Sequence[ErrorRecord]) -> bytes:
    """Error records as JSON lines, in their one shape."""
    return "".join(e.to_json() + "\n" for e in records).encode()


def batches_encoder(schema: pa.Schema, fmt: str) -> Callable[[Sequence[pa.RecordBatch]], bytes]:
    """Encodes row batches conformed to ``schema`` as one ``jsonl`` or ``parquet`` file."""

    def encode(batches: Sequence[pa.RecordBatch]) -> bytes:
        conformed = [conform(b, schema) for b in batches]
        if fmt == "jsonl":
            return b"".join(encode_jsonl(b) for b in conformed)
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_batches(conformed, schema=schema), sink)
        return bytes(sink.getvalue().to_pybytes())

    return encode


class WriteBundles(beam.PTransform):
    """Writes each bundle of a PCollection to one new file ``{prefix}-{hash}{suffix}``.

    Input: any ``PCollection`` (bounded or unbounded); nothing comes out. ``encode`` turns
    a bundle's elements into the file's bytes; ``identity`` (the encoded bytes by default)
    names the file, so a retried bundle rewrites the same file.
    """

    def __init__(
        self,
        prefix: str,
        encode: Callable[[Sequence[Any]], bytes],
        suffix: str,
        identity: Callable[[Sequence[Any]], bytes] | None = None,
    ) -> None:
        super().__init__()
        self._fn = _WriteBundleFiles(prefix, encode, suffix, identity=identity)

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | beam.ParDo(self._fn)


__all__ = [
    "WriteBundles",
    "batch_sources",
    "batches_encoder",
    "bundle_id",
    "jsonl_errors",
    "jsonl_rows",
]
