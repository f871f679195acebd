"""Fit: full-pass statistics for fitted steps, as mergeable accumulators combined by Beam.

Each bundle folds its batches into one accumulator per analyzer (no per-row Python, no
per-batch shuffle); the per-bundle accumulators are then merged globally and turned into the
fitted parameters of each step. Passes are planned by :func:`transforms.core.batch_steps.fit_groups`:
one pass over the data per group of independent fitted steps.

Fitting is deterministic: every analyzer's accumulator depends only on the multiset of
values it has seen (exact sums and counts, an order-independent quantile summary; see
:mod:`transforms.ops.analyzers`), so the fitted parameters, and the artifact written from them,
are the same bytes whatever the bundling, the merge order or the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms.core.batch_steps import fit_groups, fit_inputs
from transforms.core.steps import Analyzer, Fitted, Step


class _AccumulateDoFn(beam.DoFn):
    """Folds every batch of a bundle into one accumulator per fitted step of a pass."""

    def __init__(self, steps: Sequence[Step], group: Sequence[str], pipeline: str) -> None:
        self._steps = list(steps)
        self._group = list(group)
        self._pipeline = pipeline
        self._analyzers: dict[str, Analyzer[Any]] = {}
        self._accumulators: dict[str, Any] | None = None

    def setup(self) -> None:
        by_name = {s.name: s for s in self._steps}
        self._analyzers = {}
        for name in self._group:
            analyzer = by_name[name].analyzer()
            assert analyzer is not None
            self._analyzers[name] = analyzer

    def start_bundle(self) -> None:
        self._accumulators = None

    def process(self, batch: pa.RecordBatch, fitted: Mapping[str, Fitted]) -> Iterator[Any]:
        if self._accumulators is None:
            self._accumulators = {n: a.create_accumulator() for n, a in self._analyzers.items()}
        for name, view in fit_inputs(
            batch, self._steps, fitted, self._group, pipeline=self._pipeline
        ):
            self._accumulators[name] = self._analyzers[name].add_batch(
                self._accumulators[name], view
            )
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._accumulators is not None:
            yield GlobalWindows.windowed_value(self._accumulators)
        self._accumulators = None


class _MergeFn(beam.CombineFn):
    """Merges per-bundle accumulator dicts and extracts each step's fitted parameters."""

    def __init__(self, analyzers: Mapping[str, Analyzer[Any]]) -> None:
        self._analyzers = dict(analyzers)

    def create_accumulator(self) -> dict[str, Any]:
        return {n: a.create_accumulator() for n, a in self._analyzers.items()}

    def add_input(self, acc: dict[str, Any], partial: dict[str, Any]) -> dict[str, Any]:
        return self.merge_accumulators([acc, partial])

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        accs = list(accs)
        return {
            n: a.merge_accumulators([acc[n] for acc in accs]) for n, a in self._analyzers.items()
        }

    def extract_output(self, acc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {n: a.extract_output(acc[n]) for n, a in self._analyzers.items()}


class FitSteps(beam.PTransform):
    """Fits the fitted steps of a step list over a bounded PCollection of record batches.

    Input: ``PCollection[pa.RecordBatch]`` (bounded) as it enters ``steps``.
    Output: a one-element ``PCollection[dict]``: fitted parameters by step name, merged with
    ``prior`` (parameters fitted earlier in the pipeline, a one-element PCollection).
    Statistics are exact for every step: a step is fitted on the rows and values it will see
    when the whole list is applied. Error outputs: none (rows refused by earlier steps are
    left out of the statistics; the apply pass records them).
    """

    def __init__(self, *, steps: Sequence[Step], prior: beam.PCollection, pipeline: str) -> None:
        super().__init__()
        self._steps = list(steps)
        self._prior = prior
        self._pipeline = pipeline

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        fitted = self._prior
        for i, group in enumerate(fit_groups(self._steps)):
            by_name = {s.name: s for s in self._steps}
            analyzers = {n: by_name[n].analyzer() for n in group}
            new = (
                batches
                | f"Accumulate{i}"
                >> beam.ParDo(
                    _AccumulateDoFn(self._steps, group, self._pipeline),
                    beam.pvalue.AsSingleton(fitted),
                )
                | f"Merge{i}" >> beam.CombineGlobally(_MergeFn(analyzers))  # type: ignore[arg-type]
            )
            fitted = new | f"With{i}" >> beam.Map(
                lambda params, prior: {**prior, **params}, beam.pvalue.AsSingleton(fitted)
            )
        return fitted


class _FoldDoFn(beam.DoFn):
    """Folds every batch of a bundle into one accumulator of one analyzer."""

    def __init__(self, analyzer: Analyzer[Any]) -> None:
        self._analyzer = analyzer
        self._accumulator: Any = None

    def start_bundle(self) -> None:
        self._accumulator = None

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        if self._accumulator is None:
            self._accumulator = self._analyzer.create_accumulator()
        self._accumulator = self._analyzer.add_batch(self._accumulator, batch)
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._accumulator is not None:
            yield GlobalWindows.windowed_value(self._accumulator)
        self._accumulator = None


class _MergeOneFn(beam.CombineFn):
    def __init__(self, analyzer: Analyzer[Any], extract: bool) -> None:
        self._analyzer = analyzer
        self._extract = extract

    def create_accumulator(self) -> Any:
        return self._analyzer.create_accumulator()

    def add_input(self, acc: Any, partial: Any) -> Any:
        return self._analyzer.merge_accumulators([acc, partial])

    def merge_accumulators(self, accs: Iterable[Any]) -> Any:
        return self._analyzer.merge_accumulators(list(accs))

    def extract_output(self, acc: Any) -> Any:
        return self._analyzer.extract_output(acc) if self._extract else acc


class AnalyzeBatches(beam.PTransform):
    """Runs one analyzer over a bounded PCollection of record batches.

    Each bundle folds its batches into one accumulator; only those accumulators are
    shuffled, so memory stays bounded by the batch size whatever the data size (a
    CombinePerKey over the batches themselves would group them all in one place on runners
    that do not lift combiners).

    Output: a one-element PCollection with the analyzer's output, or its merged accumulator
    when ``extract`` is False (to merge further, e.g. statistics of several splits).
    """

    def __init__(self, analyzer: Analyzer[Any], *, extract: bool = True) -> None:
        super().__init__()
        self._analyzer = analyzer
        self._extract = extract

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return (
            batches
            | "Fold" >> beam.ParDo(_FoldDoFn(self._analyzer))
            | "Merge" >> beam.CombineGlobally(_MergeOneFn(self._analyzer, self._extract))  # type: ignore[arg-type]
        )
