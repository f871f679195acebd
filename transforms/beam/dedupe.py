"""The deduplication barrier in Beam: one row per key over the whole data set.

The pure parts (the ``dedupe`` step, the duplicate mask, partitioning) live in
:mod:`transforms.ops.dedupe`; this module groups the data set by key hash and runs them on
each group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import pyarrow as pa

from transforms.core.steps import Step
from transforms.ops.dedupe import Deduplicate, Keep, dedupe_partition, partition_batch


class _PartitionFn(beam.DoFn):
    def __init__(self, key: Sequence[str], num_partitions: int) -> None:
        self._key = list(key)
        self._num_partitions = num_partitions

    def process(self, batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
        yield from partition_batch(batch, self._key, self._num_partitions)


class _DedupeFn(beam.DoFn):
    def __init__(self, key: Sequence[str], keep: Keep) -> None:
        self._key = list(key)
        self._keep = keep
        self._dropped = beam.metrics.Metrics.counter("dedupe", "rows_dropped")

    def process(  # type: ignore[override]
        self, element: tuple[int, Iterable[pa.RecordBatch]]
    ) -> Iterator[pa.RecordBatch | beam.pvalue.TaggedOutput]:
        _, batches = element
        survivors, dropped = dedupe_partition(list(batches), self._key, self._keep)
        yield from survivors
        self._dropped.inc(dropped)
        yield beam.pvalue.TaggedOutput(DeduplicateBatches.DROPPED, dropped)


class DeduplicateBatches(beam.PTransform):
    """Keeps one row per key across a PCollection of record batches.

    Input: ``PCollection[pa.RecordBatch]`` carrying the key columns and, for a deterministic
    choice of survivor, the hidden ``__file``/``__line`` columns. Rows are hash-partitioned
    by key into ``num_partitions`` groups (``GroupByKey``); each group is deduplicated with
    :func:`~transforms.ops.dedupe.duplicate_mask`. A worker holds one partition at a time, about
    ``data size / num_partitions``.

    Output: a tagged result whose main output ``batches`` holds the surviving rows (at most
    8192 rows per batch, in source order within a partition) and whose ``dropped`` output
    holds one int per non-empty partition: the rows dropped there. Metric counter
    ``dedupe/rows_dropped``.

    Batch pipelines only: on unbounded input the grouping needs windowing first (it then
    deduplicates within each window).
    """

    DROPPED = "dropped"
    BATCHES = "batches"

    def __init__(self, *, step: Step, num_partitions: int = 64) -> None:
        super().__init__()
        # Typed as any Step so pipelines can pass the barrier step of a segment as it comes.
        if not isinstance(step, Deduplicate):
            raise TypeError(f"step must be a Deduplicate step, got {type(step).__name__}")
        if num_partitions < 1:
            raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
        self.step: Deduplicate = step
        self.num_partitions = num_partitions

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            batches
            | "Partition" >> beam.ParDo(_PartitionFn(self.step.key, self.num_partitions))
            | "Group" >> beam.GroupByKey()
            | "Dedupe"
            >> beam.ParDo(_DedupeFn(self.step.key, self.step.keep)).with_outputs(
                self.DROPPED, main=self.BATCHES
            )
        )
