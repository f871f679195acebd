"""The scoring pipeline: read -> transform artifact -> RunInference -> write -> errors -> commit.

Every stage hands its error records and counts to one
:class:`~transforms.beam.error_handling.ErrorCollector`; the errors stage writes what it
collected, and the commit checks that rows read = predicted + rejected + dropped before the
manifest is published.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import PredictionResult, RunInference

from beam_pipelines.dataset.build import count_read, count_read_error
from beam_pipelines.predict.model import ModelDirHandler
from beam_pipelines.predict.plan import PredictPlan
from beam_pipelines.predict.scoring import (
    Preprocessed,
    prediction_batch,
    preprocess_batch,
    preprocessor_keeping_rows,
)
from transforms.beam.error_handling import ErrorCollector
from transforms.core.artifact import versions
from transforms.core.batch_steps import REJECTED, WRITTEN
from transforms.core.errors import ErrorRecord
from transforms.core.manifest import (
    CountsMismatchError,
    check_balance,
    dumps,
    nest_counts,
    step_table,
    sum_counts,
)
from transforms.io import bigquery as bq_lib
from transforms.io import inventory
from transforms.io.read import ReadRecords
from transforms.io.write import WriteBatches

__all__ = [
    "COUNTS",
    "ERRORS",
    "MANIFEST_KIND",
    "PREDICTIONS",
    "Predict",
    "Preprocess",
    "build",
]

ERRORS = "errors"
COUNTS = "counts"
PREDICTIONS = "predictions"
MANIFEST_KIND = "predictions"
MANIFEST_VERSION = 1


def build(p: beam.Pipeline, plan: PredictPlan, *, local: bool = True) -> beam.PCollection:
    """Wires the scoring pipeline for ``plan`` onto ``p``.

    Args:
        p: The pipeline.
        plan: The plan.
        local: Whether ``p`` runs on the local runner: a BigQuery output is then written with
            insertAll (row by row answers), else with load jobs (Dataflow).

    Returns:
        A one-element PCollection holding the manifest dict (published last).
    """
    collector = ErrorCollector(p, label="All")
    read = p | "Read" >> _read(plan)
    collector.add(errors=read.errors, counts=read.batches | "CountRead" >> beam.Map(count_read))
    collector.add(counts=read.errors | "CountReadErrors" >> beam.Map(count_read_error))
    predictions = read.batches | "Predict" >> Predict(plan=plan, collector=collector)
    files: beam.PCollection
    if plan.table is not None:
        files = p | "NoFiles" >> beam.Create([])
        _write_table(plan, predictions, collector, local=local)
    else:
        collector.add(counts=predictions | "CountWritten" >> beam.Map(_count_written))
        files = (
            predictions
            | "Write"
            >> WriteBatches(
                path_prefix=plan.predictions_prefix, format=plan.output_format, schema=plan.schema
            )
            | "DescribeFiles" >> beam.Map(inventory.describe, plan.output_format)
        )
    collected = collector.close()
    error_files = (
        collected.errors
        | "ErrorJson" >> beam.Map(lambda e: e.to_json())
        | "WriteErrors"
        >> beam.io.WriteToText(
            FileSystems.join(plan.errors, "errors"), file_name_suffix=".jsonl", num_shards=1
        )
        | "DescribeErrors" >> beam.Map(inventory.describe, "jsonl")
    )
    error_count = collected.counted_errors | "CountErrors" >> beam.combiners.Count.Globally()
    total = collected.counts | "SumCounts" >> beam.CombineGlobally(sum_counts)
    return (
        p
        | "Trigger" >> beam.Create([None])
        | "Commit"
        >> beam.ParDo(
            _CommitFn(plan),
            beam.pvalue.AsSingleton(total),
            beam.pvalue.AsList(files),
            beam.pvalue.AsList(error_files),
            beam.pvalue.AsSingleton(error_count),
        )
    )


class Preprocess(beam.PTransform[beam.PCollection[pa.RecordBatch], beam.pvalue.DoOutputsTuple]):
    """Applies the model's transform artifact to read batches, keeping the key columns.

    Input: batches as the readers emit them. Outputs: the main output (``features``) holds
    the feature columns of the surviving rows plus the keys; ``errors`` one
    :class:`~transforms.core.errors.ErrorRecord` per rejected row; ``counts`` the rejected and
    dropped counts of each batch. Bounded or unbounded.
    """

    def __init__(self, *, plan: PredictPlan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> beam.pvalue.DoOutputsTuple:
        return batches | "Transform" >> beam.ParDo(
            _PreprocessFn(self._plan.artifact, list(self._plan.keys))
        ).with_outputs(ERRORS, COUNTS, main="features")


class Predict(beam.PTransform[beam.PCollection[pa.RecordBatch], beam.PCollection[pa.RecordBatch]]):
    """Read batches to prediction batches: the transform artifact, then RunInference.

    Input: batches as the readers emit them. Output: batches of the plan's prediction
    schema (keys, label, probability), one row per row the artifact kept. Rejected rows'
    error records and the counts go to ``collector``. Bounded or unbounded.
    """

    def __init__(self, *, plan: PredictPlan, collector: ErrorCollector) -> None:
        super().__init__()
        self._plan = plan
        self._collector = collector

    def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> beam.PCollection[pa.RecordBatch]:
        pre = batches | "Preprocess" >> Preprocess(plan=self._plan)
        self._collector.add(errors=pre[ERRORS], counts=pre[COUNTS])
        return (
            pre.features
            | "RunInference" >> RunInference(ModelDirHandler(self._plan.model_dir))
            | "Shape" >> beam.Map(_shape, self._plan.schema)
        )


class _PreprocessFn(beam.DoFn):
    def __init__(self, artifact: Any, keys: list[str]) -> None:
        self._artifact = artifact
        self._keys = keys
        self._preprocessor: Any = None

    def setup(self) -> None:
        self._preprocessor = preprocessor_keeping_rows(self._artifact)

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        out: Preprocessed = preprocess_batch(self._preprocessor, batch, self._keys)
        for record in out.errors:
            yield beam.pvalue.TaggedOutput(ERRORS, record)
        if out.counts:
            yield beam.pvalue.TaggedOutput(COUNTS, out.counts)
        if out.batch is not None:
            yield out.batch


def _shape(result: PredictionResult, schema: pa.Schema) -> pa.RecordBatch:
    return prediction_batch(result.example, np.asarray(result.inference), schema)


def _count_written(batch: pa.RecordBatch) -> collections.Counter:
    return collections.Counter({(WRITTEN, PREDICTIONS, ""): batch.num_rows})


def _count_refused(record: ErrorRecord) -> collections.Counter:
    return collections.Counter({(REJECTED, record.step, record.reason): 1})


def _read(plan: PredictPlan) -> beam.PTransform:
    if plan.bigquery is not None:
        return bq_lib.ReadFromBigQuery(
            source=plan.bigquery,
            schema=plan.input_schema,
            allow_non_finite=plan.artifact.allow_non_finite,
            pipeline=plan.pipeline,
        )
    assert plan.source is not None
    return ReadRecords(source=plan.source, schema=plan.input_schema, pipeline=plan.pipeline)


def _write_table(
    plan: PredictPlan,
    predictions: beam.PCollection,
    collector: ErrorCollector,
    *,
    local: bool,
) -> None:
    """Writes the predictions to the staging table; counts what the table took."""
    staging = plan.staging_table
    assert staging is not None
    written = predictions | "ToBigQuery" >> bq_lib.WriteToBigQuery(
        table=str(staging),
        schema=plan.schema,
        method="STREAMING_INSERTS" if local else "FILE_LOADS",
        pipeline=plan.pipeline,
        step="bigquery",
    )
    if local:
        # insertAll answers row by row: what it refused is rejected, the rest written.
        collector.add(
            errors=written.errors,
            counts=written.rows | "CountInserted" >> beam.Map(_count_inserted),
        )
        collector.add(counts=written.errors | "CountRefused" >> beam.Map(_count_refused))
    else:
        # A load job takes every row or fails the run.
        collector.add(errors=written.errors, in_counts=False)
        collector.add(counts=predictions | "CountWritten" >> beam.Map(_count_written))


def _count_inserted(n: int) -> collections.Counter:
    return collections.Counter({(WRITTEN, PREDICTIONS, ""): n})


class _CommitFn(beam.DoFn):
    """Checks the counts against the error records and the files, then publishes the manifest."""

    def __init__(self, plan: PredictPlan) -> None:
        self._plan = plan

    def process(
        self,
        _: Any,
        counts: Mapping,
        files: list[dict[str, Any]],
        error_files: list[dict[str, Any]],
        error_count: int,
    ) -> Iterator[dict[str, Any]]:
        plan = self._plan
        if plan.commit is None:
            raise RuntimeError("the run holds no lock on its output; run it with run_predict")
        if plan.commit.committed():
            # A retried bundle of a commit that went through: publish nothing twice.
            with FileSystems.open(plan.manifest) as f:
                yield json.loads(f.read().decode("utf-8"))
            return
        nested = nest_counts(counts)
        check_balance(nested)
        if error_count != nested["total_rejected"]:
            raise CountsMismatchError(
                f"{nested['total_rejected']} rows were rejected but {error_count} error records "
                "were written"
            )
        written_errors = sum(e["rows"] for e in error_files)
        if written_errors < error_count:
            raise CountsMismatchError(
                f"{error_count} error records were counted but the error files hold "
                f"{written_errors}"
            )
        predicted = nested["total_written"]
        files = sorted(files, key=lambda e: e["path"])
        if plan.table is None and sum(e["rows"] for e in files) != predicted:
            raise CountsMismatchError(
                f"the prediction files hold {sum(e['rows'] for e in files)} rows but "
                f"{predicted} rows were predicted"
            )
        manifest = _manifest(plan, nested, files, sorted(error_files, key=lambda e: e["path"]))
        plan.commit.sweep([e["path"] for e in files] + [e["path"] for e in error_files])
        if plan.table is not None:
            _publish_table(plan)
        plan.commit.publish(manifest, dumps(manifest))
        yield manifest


def _publish_table(plan: PredictPlan) -> None:
    # The table changes just before the manifest (BigQuery and the files share no
    # transaction): it then holds exactly this run's predictions.
    assert plan.table is not None and plan.staging_table is not None
    client = bq_lib.make_client(plan.table.project)
    bq_lib.publish_tables(client, [(plan.table, plan.staging_table)], truncate=True)
    bq_lib.drop_tables(client, [plan.staging_table])


def _manifest(
    plan: PredictPlan,
    nested: dict[str, Any],
    files: list[dict[str, Any]],
    error_files: list[dict[str, Any]],
) -> dict[str, Any]:
    steps = ["input", *(s["name"] for s in plan.artifact.steps)]
    output: dict[str, Any] = {
        "rows": nested["total_written"],
        "schema": {f.name: str(f.type) for f in plan.schema},
        "keys": plan.keys,
    }
    if plan.table is not None:
        output["bigquery"] = {"table": str(plan.table)}
    else:
        output["format"] = plan.output_format
        output["files"] = files
    return {
        "format_version": MANIFEST_VERSION,
        "kind": MANIFEST_KIND,
        "run": {"id": plan.run_id, "output": plan.output, "root": plan.root},
        "pipeline": plan.pipeline,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "model": {"dir": plan.model_dir, "label": plan.label},
        "source": (
            {"bigquery": {"table": plan.bigquery.table}}
            if plan.bigquery is not None
            else {
                "format": plan.source.format if plan.source else None,
                "files": plan.input_files,
            }
        ),
        "predictions": output,
        "counts": nested,
        "steps": step_table(steps, nested),
        "errors": {"path": plan.errors, "files": error_files, "count": nested["total_rejected"]},
        "versions": versions(),
    }
