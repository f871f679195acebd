"""The inventory of a dataset: every file a run wrote, with its size and its row count.

A manifest lists each data file with the number of rows a reader will find in it, counted
from the file as written (not from the counters of the step that wrote it), so that the
manifest can be checked against the splits' counts before it is committed, and a reader can
check a file against the manifest.

Row counts by format: Parquet from the footer (no data read); JSON lines by newlines (the
writer escapes newlines inside strings); CSV by parsing records (quoted newlines allowed),
less the header; GZIP TFRecord by walking the record lengths.
"""

from __future__ import annotations

import gzip
import struct
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

_CHUNK = 1 << 22


def file_size(path: str) -> int:
    """The size in bytes of a local or gs:// file."""
    return int(FileSystems.match([path])[0].metadata_list[0].size_in_bytes)


def _count_newlines(stream: IO[bytes]) -> int:
    count = 0
    last = b""
    while chunk := stream.read(_CHUNK):
        count += int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8) == 10))
        last = chunk
    # A last line without its newline is a row too.
    return count + (1 if last and not last.endswith(b"\n") else 0)


def _count_tfrecords(stream: IO[bytes]) -> int:
    count = 0
    with gzip.GzipFile(fileobj=stream) as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError("truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            if len(f.read(length + 4)) < length + 4:
                raise ValueError("truncated TFRecord record")
            count += 1
    return count


def _count_csv(stream: IO[bytes]) -> int:
    # The header names the columns; every column is read as text (nothing is converted).
    reader = pa_csv.open_csv(
        pa.PythonFile(stream, mode="r"),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(auto_dict_encode=False, strings_can_be_null=False),
    )
    return sum(batch.num_rows for batch in reader)


def count_rows(path: str, format: str) -> int:
    """The number of rows (records) in a file a run wrote.

    Args:
        path: Local or gs:// path.
        format: ``parquet``, ``jsonl``, ``csv`` (with a header line) or ``tfrecord`` (GZIP).
    """
    with FileSystems.open(path, compression_type="uncompressed") as stream:
        if format == "parquet":
            return int(pq.ParquetFile(pa.PythonFile(stream, mode="r")).metadata.num_rows)
        if format == "jsonl":
            return _count_newlines(stream)
        if format == "csv":
            return _count_csv(stream)
        if format == "tfrecord":
            return _count_tfrecords(stream)
    raise ValueError(f"unknown format {format!r}")


def describe(path: str, format: str | None = None) -> dict[str, Any]:
    """A manifest entry for a file: path, size, and rows when ``format`` is given."""
    entry: dict[str, Any] = {"path": path, "size": file_size(path)}
    if format is not None:
        entry["rows"] = count_rows(path, format)
    return entry


__all__ = ["count_rows", "describe", "file_size"]
