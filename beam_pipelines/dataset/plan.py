"""The run plan: paths, schema, steps and output schema, resolved from the spec before any work.

:func:`plan` reads no data: it lists the input files, reads their schema (or the BigQuery
table's), checks every column reference and the artifact to apply, and decides where the run
writes (:class:`Layout`). Everything it refuses is refused before a pipeline exists.

Output layout under the output folder (local path or gs://; :mod:`transforms.io.commit`)::

    manifest.json        the commit marker: names the run folder and lists every file
    _lock.json           while a run writes
    run-YYYYMMDDTHHMMSSZ-XXXXXXXX/
        {split}/part-SSSSS-of-NNNNN.{parquet,tfrecord.gz,csv,jsonl}
        artifact/transform.json, artifact/vocabularies/*.txt
        errors/errors-SSSSS-of-NNNNN.jsonl
        stats.json
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.dataset import validation
from beam_pipelines.dataset.validation import RunValidation
from beam_pipelines.spec import JobSpec, check_columns, schema_mapping
from transforms.core.artifact import Artifact, read_artifact
from transforms.core.batch_steps import apply_steps
from transforms.core.config import SpecError
from transforms.core.errors import InputError
from transforms.core.schema import HIDDEN_PREFIX, parse_type
from transforms.core.steps import Step
from transforms.io import bigquery as bq_lib
from transforms.io import commit as commit_lib
from transforms.io.commit import resolve_artifact_dir
from transforms.io.gcs import check_buckets, check_gcs_paths
from transforms.io.read import expand_paths, non_finite_problem, resolve_schema
from transforms.ops.registry import build_step

__all__ = ["EXTENSIONS", "SPLIT_COLUMN", "SPLIT_STEP", "Layout", "Plan", "plan", "sink_tables"]

EXTENSIONS = {"parquet": "parquet", "tfrecord": "tfrecord.gz", "csv": "csv", "jsonl": "jsonl"}
SPLIT_STEP = "split"
SPLIT_COLUMN = "__split"


@dataclasses.dataclass
class Layout:
    """Where a run writes; every path is local or gs://.

    Attributes:
        output: The output folder: ``manifest.json``, the lock and the run folders.
        run_id: This run's id; everything it writes goes under ``{output}/{run_id}``
            (the dead-letter files under ``{errors.path}/{run_id}`` when the spec names one).
        errors: This run's dead-letter folder.
    """

    output: str
    run_id: str
    errors: str

    @property
    def root(self) -> str:
        """This run's folder."""
        return FileSystems.join(self.output, self.run_id)

    def split_prefix(self, split: str) -> str:
        return FileSystems.join(self.root, split, "part")

    @property
    def artifact(self) -> str:
        return FileSystems.join(self.root, "artifact")

    @property
    def stats(self) -> str:
        return FileSystems.join(self.root, "stats.json")

    @property
    def validation(self) -> str:
        return FileSystems.join(self.root, "validation.json")

    @property
    def baseline_stats(self) -> str:
        return FileSystems.join(self.root, "baseline_stats.json")

    @property
    def manifest(self) -> str:
        return FileSystems.join(self.output, commit_lib.MANIFEST)


@dataclasses.dataclass
class Plan:
    """Everything decided before the pipeline runs (all of it checked at construction)."""

    spec: JobSpec
    layout: Layout
    input_patterns: list[str]
    input_files: list[str]
    input_schema: pa.Schema
    steps: list[Step]
    output_columns: list[str]
    output_schema: pa.Schema
    artifact: Artifact | None
    artifact_dir: str | None
    # With transform.preprocessing_fn: the function, and the cleaned schema it is fed
    # (hidden columns included).
    preprocessing_fn: Any = None
    cleaned_schema: pa.Schema | None = None
    fn_outputs: pa.Schema | None = None
    # The run's hold on its output (taken by run_job; None while only planned or built).
    commit: commit_lib.OutputCommit | None = None
    # What the run's input statistics are judged against (validation.json).
    validation: RunValidation | None = None


def plan(
    spec: JobSpec,
    *,
    output: str | None = None,
    inputs: Sequence[str] | None = None,
    artifact_dir: str | None = None,
    baseline: str | None = None,
    offline: bool = False,
) -> Plan:
    """Resolves paths, schema, steps and the output schema before any data is read.

    Args:
        spec: The job spec.
        output: Output folder (default: the spec's ``output.path``).
        inputs: Input patterns (default: the spec's ``source.path``).
        artifact_dir: Apply this fitted artifact instead of fitting.
        baseline: The run drift is measured against (default: ``validation.baseline``).
        offline: Plan without reading the output or a remote schema (a dry run, or only the
            layout is wanted).

    Raises:
        ValueError: for a missing output or input, or an artifact that does not fit the spec.
        transforms.core.config.SpecError: for column references that do not exist.
    """
    root = output or spec.output.path
    if not root:
        raise ValueError("no output path: give --output or output.path in the spec")
    # Absolute: the manifest's paths must hold wherever it is read from.
    root = _absolute(root)
    errors_root = _absolute(spec.errors.path) if spec.errors.path else None
    run_id = commit_lib.new_run_id()
    errors_path = (
        FileSystems.join(errors_root, run_id)
        if errors_root
        else FileSystems.join(root, run_id, "errors")
    )
    if spec.source.format == "bigquery":
        patterns, files, source = [], [], spec.source
        check_gcs_paths([root, errors_path, artifact_dir or spec.transform.artifact or ""])
        input_schema = _bigquery_schema(source)
        problem = non_finite_problem(spec.source.allow_non_finite, input_schema)
        if problem is not None:
            raise SpecError("source", problem, source=spec.origin)
    else:
        patterns = list(inputs) if inputs else _as_list(spec.source.path)
        if not patterns:
            raise ValueError("no input: give --input or source.path in the spec")
        # A malformed gs:// path fails here, before any work (offline: no bucket lookups).
        check_gcs_paths(
            [*patterns, root, errors_path, artifact_dir or spec.transform.artifact or ""]
        )
        # Inputs are listed now anyway: a missing bucket is named instead of a failed match.
        check_buckets(patterns)
        source = dataclasses.replace(spec.source, path=patterns)
        files = expand_paths(patterns)
        input_schema = resolve_schema(source, files)
    check_columns(spec, input_schema.names)
    artifact_dir = artifact_dir or spec.transform.artifact
    if artifact_dir:
        artifact_dir = resolve_artifact_dir(artifact_dir)
    if artifact_dir and spec.transform.preprocessing_fn is not None:
        raise ValueError(
            "applying a fitted artifact is not supported with transform.preprocessing_fn yet; "
            "run without --artifact / transform.artifact (the function is analyzed again)"
        )
    artifact = read_artifact(artifact_dir, build_step) if artifact_dir else None
    if artifact is not None:
        steps = artifact.build_steps(build_step)
        _check_artifact(spec, steps, input_schema, artifact)
        fitted = artifact.fitted
    else:
        steps = spec.steps
        fitted = _empty_fitted(steps)
    columns = _columns_after(steps, input_schema)
    fn = cleaned = fn_outputs = None
    if spec.transform.preprocessing_fn is not None:
        fn, cleaned, fn_outputs = _plan_preprocessing_fn(spec, steps, fitted, input_schema)
        out_cols = _fn_output_columns(spec, fn_outputs)
        out_schema = pa.schema([fn_outputs.field(c) for c in out_cols])
    else:
        out_cols = spec.output_columns(columns)
        out_schema = _output_schema(steps, fitted, input_schema, out_cols)
    errors = errors_path
    _check_bigquery(spec, out_schema)
    if not offline:
        # A folder of predictions is no dataset's output; refused before its manifest is
        # read as the drift baseline, and before anything is written.
        commit_lib.check_output_kind(root, commit_lib.DATASET)
    checks = validation.prepare(spec, root, baseline, offline=offline)
    return Plan(
        spec=dataclasses.replace(spec, source=source),
        layout=Layout(output=root, run_id=run_id, errors=errors),
        input_patterns=patterns,
        input_files=files,
        input_schema=input_schema,
        steps=steps,
        output_columns=out_cols,
        output_schema=out_schema,
        artifact=artifact,
        artifact_dir=artifact_dir,
        preprocessing_fn=fn,
        cleaned_schema=cleaned,
        fn_outputs=fn_outputs,
        validation=checks,
    )


def _plan_preprocessing_fn(
    spec: JobSpec, steps: Sequence[Step], fitted: Mapping[str, Any], schema: pa.Schema
) -> tuple[Any, pa.Schema, pa.Schema]:
    from transforms.core.schema import with_source_columns
    from transforms.tft import backend as tft_backend

    assert spec.transform.preprocessing_fn is not None
    fn = tft_backend.load_preprocessing_fn(spec.transform.preprocessing_fn)
    visible = _columns_after(steps, schema)
    cleaned = with_source_columns(_output_schema(steps, fitted, schema, visible)).append(
        pa.field(SPLIT_COLUMN, pa.int32())
    )
    return fn, cleaned, tft_backend.output_schema(fn, cleaned)


def _fn_output_columns(spec: JobSpec, outputs: pa.Schema) -> list[str]:
    where = f"preprocessing_fn {spec.transform.preprocessing_fn}"
    if spec.label is not None and spec.label.column not in outputs.names:
        raise ValueError(
            f"label column {spec.label.column!r} is not an output of {where}; its outputs are "
            f"{', '.join(outputs.names)}"
        )
    columns = spec.output.columns if spec.output.columns is not None else outputs.names
    missing = [c for c in columns if c not in outputs.names]
    if missing:
        raise ValueError(
            f"output.columns {missing} are not outputs of {where}; its outputs are "
            f"{', '.join(outputs.names)}"
        )
    return list(columns)


def _bigquery_schema(source: Any) -> pa.Schema:
    # The table's schema; a declared schema overrides types column by column.
    schema = bq_lib.source_schema(source.bigquery)
    declared = source.schema or {}
    return pa.schema(
        [
            pa.field(f.name, parse_type(declared[f.name])) if f.name in declared else f
            for f in schema
        ]
    )


def sink_tables(spec: JobSpec) -> list[bq_lib.TableRef]:
    """The BigQuery tables the spec's sink writes (one per split with ``per_split``)."""
    sink = spec.output.bigquery
    if sink is None:
        return []
    if sink.per_split:
        return [sink.table_for(n) for n in spec.split.names]
    return [bq_lib.parse_table(sink.table)]


def _check_bigquery(spec: JobSpec, schema: pa.Schema) -> None:
    """Checks the BigQuery sink tables before any work, changing nothing."""
    sink = spec.output.bigquery
    if sink is not None:
        table_schema = bq_lib.sink_schema(sink, schema)
        for ref in sink_tables(spec):
            bq_lib.check_table(bq_lib.make_client(ref.project), ref, sink, table_schema)


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _as_list(path: str | list[str]) -> list[str]:
    if isinstance(path, str):
        return [path] if path else []
    return list(path)


def _columns_after(steps: Sequence[Step], schema: pa.Schema) -> list[str]:
    cols = [n for n in schema.names if not n.startswith(HIDDEN_PREFIX)]
    for step in steps:
        for c in step.removed_columns():
            if c in cols:
                cols.remove(c)
        for c in step.output_columns():
            if c not in cols:
                cols.append(c)
    return cols


def _empty_fitted(steps: Sequence[Step]) -> dict[str, Any]:
    out = {}
    for step in steps:
        analyzer = step.analyzer()
        if analyzer is not None:
            out[step.name] = analyzer.extract_output(analyzer.create_accumulator())
    return out


def _output_schema(
    steps: Sequence[Step], fitted: Mapping[str, Any], schema: pa.Schema, columns: Sequence[str]
) -> pa.Schema:
    # The output types follow from running the steps on an empty batch: no separate type
    # rules to keep in sync with the ops.
    empty = schema.empty_table().to_batches(max_chunksize=1)
    batch = empty[0] if empty else pa.RecordBatch.from_pylist([], schema=schema)
    per_batch = [s for s in steps if not s.is_barrier]
    result = apply_steps(batch, per_batch, fitted, pipeline="schema").batch
    missing = [c for c in columns if c not in result.schema.names]
    if missing:
        raise ValueError(f"output columns {missing} are not produced by any step")
    return pa.schema([result.schema.field(c) for c in columns])


def _check_artifact(
    spec: JobSpec, steps: list[Step], schema: pa.Schema, artifact: Artifact
) -> None:
    wanted = [s.describe() for s in spec.steps]
    have = [s.describe() for s in steps]
    if wanted != have:
        for i, (w, h) in enumerate(zip(wanted, have, strict=False)):
            if w != h:
                raise ValueError(
                    f"the artifact was fitted for different steps: step {i} is {h} in the artifact "
                    f"but {w} in the spec"
                )
        raise ValueError(
            f"the artifact has {len(have)} steps but the spec has {len(wanted)}; refit or use the "
            "spec the artifact was fitted with"
        )
    if artifact.input_schema != schema_mapping(schema):
        raise ValueError(
            f"the artifact expects input columns {artifact.input_schema} but the source has "
            f"{schema_mapping(schema)}"
        )
    if sorted(artifact.allow_non_finite) != sorted(spec.source.allow_non_finite):
        # Serving applies the artifact's rule: the dataset must have been read by it too.
        raise InputError(
            "source.allow_non_finite",
            f"is {sorted(spec.source.allow_non_finite)} but the artifact was fitted with "
            f"{sorted(artifact.allow_non_finite)}; use the same list",
        )
