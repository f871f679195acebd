"""Splits: every row tagged with its split as read, and routed to its split's output at the end.

:class:`AssignSplits` runs right after the read, so the same raw row lands in the same split
whatever the steps do; :class:`PartitionSplits` selects the output columns and routes the rows
to one output per split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.dataset.plan import SPLIT_COLUMN, SPLIT_STEP
from transforms.beam.apply import COUNTS, ERRORS, BundleCounter
from transforms.core import split as splitting
from transforms.core.batch_steps import WRITTEN, apply_steps
from transforms.core.steps import Step

__all__ = ["AssignSplits", "PartitionSplits", "only_split"]


class AssignSplits(beam.PTransform):
    """Adds the hidden ``__split`` column (the split's index) to every batch.

    Input: ``PCollection[pa.RecordBatch]`` as read. Output: a tuple of PCollections tagged
    ``batches`` (the batches with ``__split``), ``errors`` (an
    :class:`~transforms.core.errors.ErrorRecord` per row the split cannot place, e.g. a null
    time) and ``counts`` (count Counters). Bounded and unbounded.
    """

    def __init__(self, *, split: splitting.Split, pipeline: str) -> None:
        super().__init__()
        self._split = split
        self._pipeline = pipeline

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | "Assign" >> beam.ParDo(
            _AssignSplitDoFn(self._split, self._pipeline)
        ).with_outputs(ERRORS, COUNTS, main="batches")


class PartitionSplits(beam.PTransform):
    """Selects the output columns and routes every row to its split's output.

    Input: ``PCollection[pa.RecordBatch]`` with ``__split``. Output: a tuple of PCollections,
    one per split name (batches of the output schema) and ``counts`` (rows written per split).
    Bounded and unbounded.
    """

    def __init__(self, *, names: Sequence[str], columns: Sequence[str], schema: pa.Schema) -> None:
        super().__init__()
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"columns {missing} are not in the output schema {schema.names}")
        self._names = list(names)
        self._columns = list(columns)
        self._schema = schema

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | "Route" >> beam.ParDo(
            _PartitionDoFn(self._names, self._columns, self._schema)
        ).with_outputs(*self._names, COUNTS)


def only_split(batch: pa.RecordBatch, index: int) -> pa.RecordBatch:
    """The rows of ``batch`` in split number ``index``."""
    mask = pc.equal(batch.column(SPLIT_COLUMN), index)
    return batch.filter(mask)


class _AssignSplitDoFn(beam.DoFn):
    """Tags every raw row with its split index (hidden column ``__split``).

    Splits are a function of the row as read, so the same raw row lands in the same split
    whatever the cleaning and features do, on every run and runner. Rows the split cannot
    place (a null time) are rejected here, with the engine's error records.
    """

    def __init__(self, split: splitting.Split, pipeline: str) -> None:
        self._split = split
        self._pipeline = pipeline
        self._counter = BundleCounter()

    def start_bundle(self) -> None:
        self._counter = BundleCounter()

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        index, rejection = splitting.assign(batch, self._split)
        batch = batch.append_column(SPLIT_COLUMN, pa.array(index, type=pa.int32()))
        if rejection is not None:
            step = _RejectStep(name=SPLIT_STEP, rejection=rejection)
            applied = apply_steps(batch, [step], {}, pipeline=self._pipeline)
            self._counter.counts.update(applied.counts)
            for error in applied.errors:
                yield beam.pvalue.TaggedOutput(ERRORS, error)
            batch = applied.batch
        if batch.num_rows:
            yield batch

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._counter.flush()


class _PartitionDoFn(beam.DoFn):
    """Selects the output columns and routes rows to their split, counting rows per split."""

    def __init__(self, names: Sequence[str], columns: Sequence[str], schema: pa.Schema) -> None:
        self._names = list(names)
        self._columns = list(columns)
        self._schema = schema
        self._counter = BundleCounter()

    def start_bundle(self) -> None:
        self._counter = BundleCounter()

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        index = batch.column(SPLIT_COLUMN).to_numpy(zero_copy_only=False)
        selected = pa.RecordBatch.from_arrays(
            [batch.column(c).cast(self._schema.field(c).type) for c in self._columns],
            schema=self._schema,
        )
        for i, part in enumerate(splitting.partition(selected, index, len(self._names))):
            if part.num_rows:
                self._counter.counts[(WRITTEN, self._names[i], "")] += part.num_rows
                yield beam.pvalue.TaggedOutput(self._names[i], part)

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._counter.flush()


@dataclasses.dataclass(kw_only=True)
class _RejectStep(Step):
    """A step that rejects precomputed rows (used to route split rejections)."""

    op = "_reject"
    rejection: Any = None

    def apply(self, batch: pa.RecordBatch, fitted: Any) -> Any:
        from transforms.core.steps import StepResult

        return StepResult(batch, rejections=(self.rejection,))
