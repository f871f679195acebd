"""The dataset pipeline's stages, and :func:`build`, which wires them for a :class:`Plan`.

``read -> transform (fit, apply) -> split -> write -> errors -> manifest``: every stage hands
its error records and counts to one :class:`~transforms.beam.error_handling.ErrorCollector`;
the errors stage writes what it collected and the manifest stage checks the counts. A stage
whose error output reaches no collector makes the pipeline fail to build.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.dataset import bigquery as sink
from beam_pipelines.dataset.dead_letters import WriteDeadLetters
from beam_pipelines.dataset.manifest import CommitRun, finish_stats
from beam_pipelines.dataset.plan import SPLIT_COLUMN, Plan
from beam_pipelines.dataset.splits import AssignSplits, PartitionSplits, only_split
from beam_pipelines.spec import schema_mapping
from transforms.beam.apply import COUNTS, ERRORS, ApplySteps
from transforms.beam.dedupe import DeduplicateBatches
from transforms.beam.error_handling import ErrorCollector
from transforms.beam.fit import AnalyzeBatches, FitSteps
from transforms.core.artifact import Artifact, write_artifact
from transforms.core.batch_steps import DROPPED, READ, REJECTED, segments
from transforms.core.errors import ErrorRecord
from transforms.io import bigquery as bq_lib
from transforms.io import inventory
from transforms.io.read import ReadRecords
from transforms.io.spilled_batches import ReadSpilled, SpillBatches
from transforms.io.write import WriteBatches
from transforms.ops.stats import DatasetStats

__all__ = [
    "InputStats",
    "ReadInput",
    "TransformBatches",
    "WriteArtifact",
    "WriteSplits",
    "artifact_for",
    "build",
    "count_dropped",
    "count_read",
    "count_read_error",
]


def build(p: beam.Pipeline, plan: Plan, *, spill_dir: str | None = None) -> beam.PCollection:
    """Wires the dataset pipeline for a :class:`Plan` onto ``p``.

    Args:
        p: The pipeline.
        plan: The plan.
        spill_dir: A local directory (local runner only): when the first steps are fitted,
            the input is read once, its batches spilled there for the apply pass
            (:mod:`transforms.io.spilled_batches`); without it the fit pass reads the input again.

    Returns:
        A one-element PCollection holding the manifest dict (written last).
    """
    collector = ErrorCollector(p, label="All")
    batches = p | "Read" >> ReadInput(plan=plan, collector=collector)
    input_stats = batches | "InputStats" >> InputStats(plan=plan)
    transformed = batches | "Transform" >> TransformBatches(
        plan=plan, collector=collector, spill_dir=spill_dir
    )
    names = plan.spec.split.names
    parts = transformed["batches"] | "Split" >> PartitionSplits(
        names=names, columns=plan.output_columns, schema=plan.output_schema
    )
    collector.add(counts=parts[COUNTS])
    written = {n: parts[n] for n in names} | "Write" >> WriteSplits(plan=plan, collector=collector)
    artifact_hash = {
        k: v for k, v in transformed.items() if k != "batches"
    } | "Artifact" >> WriteArtifact(plan=plan)
    collected = collector.close()
    dead_letters = {
        "errors": collected.errors,
        "counted": collected.counted_errors,
    } | "Errors" >> WriteDeadLetters(plan=plan, collector=collector)
    return {
        "counts": collected.counts,
        "files": written["files"],
        "stats": written["stats"],
        "input_stats": input_stats,
        "error_files": dead_letters["files"],
        "error_count": dead_letters["count"],
        "artifact_hash": artifact_hash,
    } | "Manifest" >> CommitRun(plan=plan)


class ReadInput(beam.PTransform[beam.pvalue.PBegin, beam.PCollection[pa.RecordBatch]]):
    """Reads the plan's input and tags every row with its split.

    Output: ``PCollection[pa.RecordBatch]`` of the input schema plus the hidden ``__split``
    column. The read's and the split's error records and counts go to ``collector``.
    Bounded.
    """

    def __init__(self, *, plan: Plan, collector: ErrorCollector) -> None:
        super().__init__()
        self._plan = plan
        self._collector = collector

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[pa.RecordBatch]:
        read = pbegin | "Records" >> read_source(self._plan)
        self._collector.add(
            errors=read.errors, counts=read.batches | "CountRead" >> beam.Map(count_read)
        )
        self._collector.add(counts=read.errors | "CountReadErrors" >> beam.Map(count_read_error))
        assigned = read.batches | "AssignSplit" >> AssignSplits(
            split=self._plan.spec.split, pipeline=self._plan.spec.name
        )
        self._collector.add(errors=assigned[ERRORS], counts=assigned[COUNTS])
        return assigned.batches


class InputStats(beam.PTransform[beam.PCollection[pa.RecordBatch], beam.PCollection[dict]]):
    """Statistics of the input columns as read, of all rows and per split.

    Input: the batches of :class:`ReadInput`. Output: one dict ``{"all": ..., "splits":
    {...}}`` of :class:`~transforms.ops.stats.DatasetStats` outputs: what the run's data is
    validated on (drift, skew and the data schema speak of the raw columns, as TFDV's do).
    Bounded.
    """

    def __init__(self, *, plan: Plan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> beam.PCollection[dict]:
        plan, names = self._plan, self._plan.spec.split.names
        per_split = [
            beam.pvalue.AsSingleton(
                batches
                | f"Rows_{n}" >> beam.Map(only_split, k)
                | f"Stats_{n}" >> AnalyzeBatches(DatasetStats(plan.input_schema), extract=False)
            )
            for k, n in enumerate(names)
        ]
        return (
            batches.pipeline
            | "Trigger" >> beam.Create([None])
            | "Merge" >> beam.Map(finish_stats, plan.input_schema, names, *per_split)
        )


class TransformBatches(beam.PTransform[beam.PCollection[pa.RecordBatch], dict[str, Any]]):
    """Fits the plan's steps segment by segment and applies them (or the artifact's fit).

    Input: the batches of :class:`ReadInput`. Output: a dict of PCollections: ``batches``
    (the transformed batches, ``__split`` kept), ``fitted`` (one dict: every step's fitted
    values) and, with a ``preprocessing_fn``, ``transform_fn`` (one element once the
    tf.Transform function is written). Error records and counts go to ``collector``.
    Bounded (fitting waits for all the input).
    """

    def __init__(
        self, *, plan: Plan, collector: ErrorCollector, spill_dir: str | None = None
    ) -> None:
        super().__init__()
        self._plan = plan
        self._collector = collector
        self._spill_dir = spill_dir

    def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> dict[str, Any]:
        plan, name = self._plan, self._plan.spec.name
        fitted = batches.pipeline | "Fitted" >> beam.Create(
            [plan.artifact.fitted if plan.artifact is not None else {}]
        )
        for k, (steps, barrier) in enumerate(segments(plan.steps)):
            if plan.artifact is None and any(s.analyzer() is not None for s in steps):
                fit_input, batches = self._fit_input(k, batches)
                fitted = fit_input | f"Fit{k}" >> FitSteps(steps=steps, prior=fitted, pipeline=name)
            if steps:
                applied = batches | f"Apply{k}" >> ApplySteps(
                    steps=steps, fitted=fitted, pipeline=name
                )
                self._collector.add(errors=applied[ERRORS], counts=applied[COUNTS])
                batches = applied.batches
            if barrier is not None:
                deduped = batches | f"Dedupe{k}" >> DeduplicateBatches(step=barrier)
                self._collector.add(
                    counts=deduped.dropped
                    | f"CountDedupe{k}" >> beam.Map(count_dropped, barrier.name)
                )
                batches = deduped.batches
        out = {"fitted": fitted}
        if plan.preprocessing_fn is not None:
            batches, out["transform_fn"] = _run_preprocessing_fn(batches, plan)
        return {"batches": batches, **out}

    def _fit_input(
        self, k: int, batches: beam.PCollection
    ) -> tuple[beam.PCollection, beam.PCollection]:
        # The batches the fit of segment k folds, and the batches the apply goes on with.
        plan = self._plan
        if k:
            fit_input = batches
        elif self._spill_dir is not None:
            # One read: the fit folds the batches while they are spilled for the apply.
            fit_input = batches
            batches = (
                batches | "Spill" >> SpillBatches(self._spill_dir) | "ReadSpilled" >> ReadSpilled()
            )
        else:
            fit_input = self._read_for_fit(batches.pipeline)
        if plan.spec.transform.fit_on != "all":
            wanted = plan.spec.split.names.index(plan.spec.transform.fit_on)
            fit_input = fit_input | f"FitOn{k}" >> beam.Map(only_split, wanted)
        return fit_input, batches

    def _read_for_fit(self, p: beam.Pipeline) -> beam.PCollection:
        # Without a spill directory (on Dataflow) the fit pass reads the files a second time
        # instead of sharing the apply pass's read: a PCollection consumed both by the fit and
        # by a step waiting on the fit's result may be held whole by the runner; two streaming
        # reads keep memory bounded by the batch size.
        plan = self._plan
        why = "the apply pass's read records the errors of the same rows"
        read = p | "ReadForFit" >> read_source(plan, log_files=False)
        self._collector.discard(read.errors, reason=why)
        if plan.spec.transform.fit_on == "all":
            return read.batches
        tagged = read.batches | "SplitForFit" >> AssignSplits(
            split=plan.spec.split, pipeline=plan.spec.name
        )
        self._collector.discard(tagged[ERRORS], reason=why)
        return tagged.batches


class WriteSplits(beam.PTransform[dict[str, beam.PCollection], dict[str, beam.PCollection]]):
    """Writes every split in every output format (and to the BigQuery sink), with its stats.

    Input: a dict from split name to the split's batches (the output schema). Output: a dict
    of PCollections: ``files`` (``(split, format, file description)`` per data file) and
    ``stats`` (one dict: stats of all rows and per split). Rows the BigQuery sink refuses go
    to ``collector`` as error records outside the counts (they were written to the files).
    Bounded.
    """

    def __init__(self, *, plan: Plan, collector: ErrorCollector) -> None:
        super().__init__()
        self._plan = plan
        self._collector = collector

    def expand(self, parts: Mapping[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        plan, spec = self._plan, self._plan.spec
        files = []
        for split_name in spec.split.names:
            for fmt in spec.output.formats:
                written = parts[split_name] | f"Write_{split_name}_{fmt}" >> WriteBatches(
                    path_prefix=plan.layout.split_prefix(split_name),
                    format=fmt,
                    num_shards=spec.output.num_shards,
                    schema=plan.output_schema,
                )
                files.append(
                    written | f"Files_{split_name}_{fmt}" >> beam.Map(_describe, split_name, fmt)
                )
        per_split = [
            beam.pvalue.AsSingleton(
                parts[n]
                | f"Stats_{n}" >> AnalyzeBatches(DatasetStats(plan.output_schema), extract=False)
            )
            for n in spec.split.names
        ]
        stats = (
            next(iter(parts.values())).pipeline
            | "StatsTrigger" >> beam.Create([None])
            | "Stats" >> beam.Map(finish_stats, plan.output_schema, spec.split.names, *per_split)
        )
        for refused in sink.write_splits(plan, parts):
            self._collector.add(errors=refused, in_counts=False)
        return {"files": files | "AllFiles" >> beam.Flatten(), "stats": stats}


class WriteArtifact(beam.PTransform[dict[str, beam.PCollection], beam.PCollection[str]]):
    """Writes the run's artifact folder; outputs its hash.

    Input: :class:`TransformBatches`' ``fitted`` (and ``transform_fn`` with a
    preprocessing_fn), in a dict. With an applied artifact, the artifact is copied into the run's
    folder instead: the dataset does not depend on a folder another run may replace.
    Bounded.
    """

    def __init__(self, *, plan: Plan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, transformed: dict[str, beam.PCollection]) -> beam.PCollection[str]:
        plan = self._plan
        if plan.artifact is not None:
            return (
                transformed["fitted"].pipeline
                | "Applied" >> beam.Create([plan.artifact])
                | "Copy" >> beam.Map(lambda a: write_artifact(plan.layout.artifact, a))
            )
        # transform.json is the artifact's commit marker: it waits for the transform_fn.
        after = [
            beam.pvalue.AsSingleton(transformed[k]) for k in ("transform_fn",) if k in transformed
        ]
        return transformed["fitted"] | "Write" >> beam.Map(
            lambda f, *_: write_artifact(plan.layout.artifact, artifact_for(plan, f)), *after
        )


def read_source(plan: Plan, *, log_files: bool = True) -> beam.PTransform:
    """The read of the plan's source (files or BigQuery): outputs ``batches`` and ``errors``."""
    source = plan.spec.source
    if source.bigquery is not None:
        return bq_lib.ReadFromBigQuery(
            source=source.bigquery,
            schema=plan.input_schema,
            batch_size=source.batch_size,
            allow_non_finite=source.allow_non_finite,
            pipeline=plan.spec.name,
        )
    return ReadRecords(
        source=source, schema=plan.input_schema, pipeline=plan.spec.name, log_files=log_files
    )


def artifact_for(plan: Plan, fitted: Mapping[str, Any]) -> Artifact:
    """The artifact of a run: its steps, what they fitted, and the input and output schemas."""
    fitted = dict(fitted)
    if plan.preprocessing_fn is not None:
        from transforms.tft.backend import FITTED_KEY, fitted_entry

        assert plan.spec.transform.preprocessing_fn is not None
        fitted[FITTED_KEY] = fitted_entry(plan.spec.transform.preprocessing_fn)
    return Artifact(
        pipeline=plan.spec.name,
        steps=[s.describe() for s in plan.steps],
        fitted=fitted,
        input_schema=schema_mapping(plan.input_schema),
        output_columns=list(plan.output_columns),
        output_schema=schema_mapping(plan.output_schema),
        allow_non_finite=list(plan.spec.source.allow_non_finite),
    )


def count_read(batch: pa.RecordBatch) -> collections.Counter:
    """The count of a batch read."""
    return collections.Counter({(READ, "read", ""): batch.num_rows})


def count_read_error(error: ErrorRecord) -> collections.Counter:
    """The count of a row the read rejected: read, and rejected for the error's reason."""
    return collections.Counter({(READ, "read", ""): 1, (REJECTED, "read", error.reason): 1})


def count_dropped(n: int, step: str) -> collections.Counter:
    """The count of ``n`` rows a dedupe barrier dropped as duplicates."""
    return collections.Counter({(DROPPED, step, "duplicate"): n})


def _describe(path: str, split: str, fmt: str) -> tuple[str, str, dict[str, Any]]:
    return split, fmt, inventory.describe(path, fmt)


def _run_preprocessing_fn(
    batches: beam.PCollection, plan: Plan
) -> tuple[beam.PCollection, beam.PCollection]:
    from transforms.tft import backend as tft_backend

    assert plan.cleaned_schema is not None and plan.fn_outputs is not None
    spec = plan.spec
    fit_value = None
    if spec.transform.fit_on != "all":
        fit_value = spec.split.names.index(spec.transform.fit_on)
    run = tft_backend.AnalyzeAndTransform(
        preprocessing_fn=plan.preprocessing_fn,
        schema=plan.cleaned_schema,
        outputs=plan.fn_outputs,
        transform_fn_dir=FileSystems.join(plan.layout.artifact, tft_backend.TRANSFORM_FN_DIR),
        temp_dir=FileSystems.join(plan.layout.artifact, tft_backend.TEMP_DIR),
        fit_column=SPLIT_COLUMN if fit_value is not None else None,
        fit_value=fit_value,
    )
    out = batches | "PreprocessingFn" >> run
    assert run.written is not None
    return out, run.written
