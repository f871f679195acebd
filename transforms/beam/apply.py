"""Apply: the fitted step list run over every batch, with errors and counts as outputs."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from transforms.core.batch_steps import apply_steps
from transforms.core.steps import Fitted, Step

ERRORS = "errors"
COUNTS = "counts"


class BundleCounter:
    """Collects count triples over a bundle and emits them once, in finish_bundle.

    Counts are data (summed by a CombineGlobally into the manifest), not Beam metrics:
    metrics are best-effort on some runners, and the manifest must balance exactly.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def flush(self, tag: str = COUNTS) -> Iterator[beam.pvalue.TaggedOutput]:
        if self.counts:
            yield beam.pvalue.TaggedOutput(tag, GlobalWindows.windowed_value(self.counts))
        self.counts = collections.Counter()


class _ApplyDoFn(beam.DoFn):
    def __init__(self, steps: Sequence[Step], pipeline: str) -> None:
        self._steps = list(steps)
        self._pipeline = pipeline
        self._counter = BundleCounter()
        self._rows = beam.metrics.Metrics.counter("beamforge", "rows_applied")
        self._rejected = beam.metrics.Metrics.counter("beamforge", "rows_rejected")

    def start_bundle(self) -> None:
        self._counter = BundleCounter()

    def process(self, batch: pa.RecordBatch, fitted: Mapping[str, Fitted]) -> Iterator[object]:
        applied = apply_steps(batch, self._steps, fitted, pipeline=self._pipeline)
        self._counter.counts.update(applied.counts)
        self._rows.inc(batch.num_rows)
        self._rejected.inc(len(applied.errors))
        for error in applied.errors:
            yield beam.pvalue.TaggedOutput(ERRORS, error)
        if applied.batch.num_rows:
            yield applied.batch

    def finish_bundle(self) -> Iterator[object]:
        yield from self._counter.flush()


class ApplySteps(beam.PTransform):
    """Applies a step list to every record batch.

    Input: ``PCollection[pa.RecordBatch]``, bounded or unbounded (per-batch work only).
    Side input: ``fitted``, a one-element PCollection of fitted parameters by step name.
    Outputs (a tagged tuple): main ``batches`` with the surviving rows; ``errors``: one
    :class:`~transforms.core.errors.ErrorRecord` per rejected row; ``counts``: per-bundle Counters
    of (kind, step, reason) for rejected and dropped rows.
    Metrics: ``beamforge/rows_applied``, ``beamforge/rows_rejected``.
    """

    def __init__(self, *, steps: Sequence[Step], fitted: beam.PCollection, pipeline: str) -> None:
        super().__init__()
        if any(s.is_barrier for s in steps):
            raise ValueError("ApplySteps runs per batch; split the steps at barrier steps first")
        self._steps = list(steps)
        self._fitted = fitted
        self._pipeline = pipeline

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | beam.ParDo(
            _ApplyDoFn(self._steps, self._pipeline), beam.pvalue.AsSingleton(self._fitted)
        ).with_outputs(ERRORS, COUNTS, main="batches")
