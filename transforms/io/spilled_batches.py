"""Record batches spilled to local Arrow IPC files, so one read can feed two passes.

A dataset job fits its features on the rows and then applies them to the same rows. On the
local runner a PCollection consumed both by the fit and by a step that waits for the fit's
result is held whole in memory, so the job used to parse its input twice. Instead, the one
read writes its batches to Arrow IPC files as they go by (:class:`SpillBatches`, next to the
fit's accumulators in the same fused stage) and the apply pass reads those files back
(:class:`ReadSpilled`): no second CSV parse, memory still bounded by a file's batches.

The files live in a local directory the caller owns and removes after the run: this is for
the local runner, whose workers share the machine. On Dataflow the input is read twice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

# A spill file is closed (and handed on) once it holds this many bytes of batches.
DEFAULT_FILE_BYTES = 64 << 20


class _SpillFn(beam.DoFn):
    def __init__(self, directory: str, file_bytes: int) -> None:
        self._directory = directory
        self._file_bytes = file_bytes
        self._sink: Any = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._path = ""
        self._schema: pa.Schema | None = None
        self._bytes = 0

    def start_bundle(self) -> None:
        self._writer = None

    def process(self, batch: pa.RecordBatch) -> Iterator[str]:
        if self._writer is not None and (
            self._bytes >= self._file_bytes or not batch.schema.equals(self._schema)
        ):
            yield self._close()
        if self._writer is None:
            self._path = os.path.join(self._directory, f"{uuid.uuid4().hex}.arrow")
            self._sink = pa.OSFile(self._path, "wb")
            self._writer = pa.ipc.new_file(self._sink, batch.schema)
            self._schema = batch.schema
            self._bytes = 0
        self._writer.write_batch(batch)
        self._bytes += batch.nbytes

    def _close(self) -> str:
        assert self._writer is not None
        self._writer.close()
        self._sink.close()
        self._writer = None
        return self._path

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._writer is not None:
            yield WindowedValue(self._close(), MIN_TIMESTAMP, (GlobalWindow(),))


class SpillBatches(beam.PTransform):
    """Writes record batches to Arrow IPC files in ``directory``; outputs each file's path.

    A file is handed on when it is closed: at ``file_bytes``, at a change of schema, or at
    the end of a bundle. Batches keep every column, hidden ones included.
    """

    def __init__(self, directory: str, file_bytes: int = DEFAULT_FILE_BYTES) -> None:
        super().__init__()
        if file_bytes < 1:
            raise ValueError(f"file_bytes must be >= 1, got {file_bytes}")
        self._fn = _SpillFn(directory, file_bytes)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | beam.ParDo(self._fn)


def read_spilled(path: str) -> Iterator[pa.RecordBatch]:
    """The batches of one spill file, in the order they were written."""
    with pa.OSFile(path) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


class ReadSpilled(beam.PTransform):
    """Reads the batches back from the paths :class:`SpillBatches` output."""

    def expand(self, paths: beam.PCollection) -> beam.PCollection:
        return (
            paths
            # Spread the files over the workers of a multi-process run.
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(read_spilled)
        )


__all__ = ["DEFAULT_FILE_BYTES", "ReadSpilled", "SpillBatches", "read_spilled"]
