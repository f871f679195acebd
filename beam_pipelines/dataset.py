"""The training-dataset pipeline: read -> clean -> fit/apply features -> split -> write.

``build(p, spec, ...)`` wires the transforms for a validated :class:`JobSpec`; ``run(argv)``
parses options, runs the pipeline on the local runner by default and returns the manifest.

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

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import TestOptions

from beam_pipelines.spec import JobSpec, check_columns, schema_mapping
from transforms.beam.apply import COUNTS, ERRORS, ApplySteps, BundleCounter
from transforms.beam.dedupe import DeduplicateBatches
from transforms.beam.fit import AnalyzeBatches, FitSteps
from transforms.core import split as splitting
from transforms.core.artifact import Artifact, read_artifact, versions, write_artifact
from transforms.core.config import SpecError
from transforms.core.engine import DROPPED, READ, REJECTED, WRITTEN, apply_steps, segments
from transforms.core.errors import ErrorRecord, InputError
from transforms.core.manifest import (
    CountsMismatchError,
    check_balance,
    dumps,
    nest_counts,
    step_table,
    sum_counts,
    write_text,
)
from transforms.core.schema import HIDDEN_PREFIX, parse_type
from transforms.core.steps import Step
from transforms.io import bigquery as bq_lib
from transforms.io import commit as commit_lib
from transforms.io import inventory
from transforms.io.commit import resolve_artifact_dir
from transforms.io.gcs import check_buckets, check_gcs_paths
from transforms.io.read import ReadRecords, expand_paths, non_finite_problem, resolve_schema
from transforms.io.spill import ReadSpilled, SpillBatches
from transforms.io.write import WriteBatches
from transforms.ops.registry import build_step
from transforms.ops.stats import DatasetStats

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


def plan(
    spec: JobSpec,
    *,
    output: str | None = None,
    inputs: Sequence[str] | None = None,
    artifact_dir: str | None = None,
) -> Plan:
    """Resolves paths, schema, steps and the output schema before any data is read.

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


def _sink_tables(spec: JobSpec) -> list[bq_lib.TableRef]:
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
        for ref in _sink_tables(spec):
            bq_lib.check_table(bq_lib.make_client(ref.project), ref, sink, table_schema)


def _prepare_bigquery(plan: Plan) -> None:
    """Creates missing sink tables, this run's staging tables and the dead-letter table.

    The run writes its rows to staging tables; its commit moves them into the sink tables in
    one transaction (:func:`_publish_bigquery`), so a failed run changes no sink table.
    """
    spec = plan.spec
    sink = spec.output.bigquery
    if sink is not None:
        table_schema = bq_lib.sink_schema(sink, plan.output_schema)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=bq_lib.STAGING_DAYS)
        for ref in _sink_tables(spec):
            client = bq_lib.make_client(ref.project)
            if not bq_lib.check_table(client, ref, sink, table_schema):
                bq_lib.create_table(client, ref, sink, table_schema)
            staging = bq_lib.staging_table(ref, plan.layout.run_id)
            bq_lib.create_table(client, staging, sink, table_schema, expires=expires)
    if spec.errors.bigquery_table:
        ref = bq_lib.parse_table(spec.errors.bigquery_table)
        errors_sink = bq_lib.BigQuerySink(table=str(ref))
        bq_lib.prepare_table(
            bq_lib.make_client(ref.project), ref, errors_sink, bq_lib.error_arrow_schema()
        )


def _read(p: beam.Pipeline, plan: Plan, label: str, log_files: bool = True) -> Any:
    source = plan.spec.source
    if source.bigquery is not None:
        return p | label >> bq_lib.ReadFromBigQuery(
            source=source.bigquery,
            schema=plan.input_schema,
            batch_size=source.batch_size,
            allow_non_finite=source.allow_non_finite,
            pipeline=plan.spec.name,
        )
    return p | label >> ReadRecords(
        source=source, schema=plan.input_schema, pipeline=plan.spec.name, log_files=log_files
    )


def _write_bigquery(plan: Plan, parts: Any, streaming: bool = False) -> list[beam.PCollection]:
    """Writes every split to its BigQuery table; returns the rejected rows' error records."""
    sink = plan.spec.output.bigquery
    if sink is None:
        return []
    out = []
    schema = bq_lib.sink_schema(sink, plan.output_schema)
    options = bq_lib.table_options(sink, schema)
    for name in plan.spec.split.names:
        target = sink.table_for(name) if sink.per_split else bq_lib.parse_table(sink.table)
        written = parts[name] | f"BigQuery_{name}" >> bq_lib.WriteToBigQuery(
            table=str(bq_lib.staging_table(target, plan.layout.run_id)),
            schema=schema,
            method=sink.resolved_method(streaming),
            pipeline=plan.spec.name,
            step=f"bigquery_{name}",
            extra_columns=None if sink.per_split else {sink.split_column: name},
            table_options=options,
        )
        out.append(written.errors)
    return out


def _publish_bigquery(plan: Plan) -> dict[str, Any]:
    """Moves the staging tables' rows into the sink tables (one transaction)."""
    sink = plan.spec.output.bigquery
    if sink is None:
        return {}
    refs = _sink_tables(plan.spec)
    pairs = [(ref, bq_lib.staging_table(ref, plan.layout.run_id)) for ref in refs]
    bq_lib.publish_tables(bq_lib.make_client(refs[0].project), pairs, sink.write == "truncate")
    return {"tables": [str(ref) for ref in refs], "write": sink.write}


def _drop_staging(plan: Plan) -> None:
    refs = [bq_lib.staging_table(ref, plan.layout.run_id) for ref in _sink_tables(plan.spec)]
    if refs:
        bq_lib.drop_tables(bq_lib.make_client(refs[0].project), refs)


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


def _count_read(batch: pa.RecordBatch) -> collections.Counter:
    return collections.Counter({(READ, "read", ""): batch.num_rows})


def _count_read_error(error: ErrorRecord) -> collections.Counter:
    return collections.Counter({(READ, "read", ""): 1, (REJECTED, "read", error.reason): 1})


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


class _SumCounts(beam.CombineFn):
    def create_accumulator(self) -> collections.Counter:
        return collections.Counter()

    def add_input(self, acc: collections.Counter, counts: Mapping) -> collections.Counter:
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs: Any) -> collections.Counter:
        return sum_counts(accs)

    def extract_output(self, acc: collections.Counter) -> collections.Counter:
        return acc


def _finish_stats(_: Any, schema: pa.Schema, names: Sequence[str], *accs: Any) -> dict:
    stats = DatasetStats(schema)
    return {
        "all": stats.extract_output(stats.merge_accumulators(accs)),
        "splits": {n: stats.extract_output(a) for n, a in zip(names, accs, strict=True)},
    }


class _WriteManifest(beam.DoFn):
    """Checks the counts, writes stats.json and commits the run (manifest.json last).

    Every data file is listed with its size and the rows it holds, counted from the file;
    the rows of a split's files must add up to the split's count. Files under the run folder
    that the manifest does not list are deleted before the commit (:mod:`transforms.io.commit`).
    """

    def __init__(self, plan: Plan, formats: Sequence[str]) -> None:
        self._plan = plan
        self._formats = list(formats)

    def process(
        self,
        _: Any,
        counts: Mapping,
        files: list[tuple[str, str, dict[str, Any]]],
        error_files: list[dict[str, Any]],
        stats: dict,
        artifact_hash: str,
        error_count: int,
    ) -> Iterator[dict]:
        plan = self._plan
        nested = nest_counts(counts)
        check_balance(nested)
        if error_count != nested["total_rejected"]:
            raise CountsMismatchError(
                f"{nested['total_rejected']} rows were rejected but {error_count} error records "
                "were written"
            )
        fraction = plan.spec.errors.max_fraction
        if (
            fraction is not None
            and nested["read"]
            and nested["total_rejected"] > fraction * nested["read"]
        ):
            raise CountsMismatchError(
                f"{nested['total_rejected']} of {nested['read']} rows were rejected, more than "
                f"errors.max_fraction={fraction}; see {plan.layout.errors}"
            )
        if plan.commit is None:
            raise RuntimeError("the run holds no lock on its output; run it with run_job")
        if plan.commit.committed():
            # A retry of a bundle that committed: committing again would append twice.
            with FileSystems.open(plan.layout.manifest) as f:
                yield json.loads(f.read().decode("utf-8"))
            return
        write_text(plan.layout.stats, dumps(stats))
        splits: dict[str, Any] = {}
        for name in plan.spec.split.names:
            rows = nested["written"].get(name, 0)
            by_format = {}
            for fmt in self._formats:
                listed = sorted(
                    (e for s, f, e in files if s == name and f == fmt), key=lambda e: e["path"]
                )
                found = sum(e["rows"] for e in listed)
                if found != rows:
                    raise CountsMismatchError(
                        f"split {name!r}: its {fmt} files hold {found} rows but {rows} rows "
                        "were written to it"
                    )
                by_format[fmt] = listed
            splits[name] = {"rows": rows, "files": by_format}
        written_errors = sum(e["rows"] for e in error_files)
        artifact_files = _artifact_files(plan)
        stats_file = inventory.describe(plan.layout.stats)
        manifest = {
            "format_version": MANIFEST_VERSION,
            "run": {
                "id": plan.layout.run_id,
                "output": plan.layout.output,
                "root": plan.layout.root,
            },
            "pipeline": plan.spec.name,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "spec": {"origin": plan.spec.origin, "sha256": plan.spec.sha256()},
            "source": {
                "patterns": plan.input_patterns,
                "files": plan.input_files,
                "format": plan.spec.source.format,
                **_bigquery_source(plan),
            },
            "input_schema": schema_mapping(plan.input_schema),
            "schema": schema_mapping(plan.output_schema),
            "splits": splits,
            "counts": nested,
            "steps": step_table([SPLIT_STEP] + [s.name for s in plan.steps], nested),
            "artifact": {
                "path": plan.layout.artifact,
                "sha256": artifact_hash,
                "fitted_here": plan.artifact is None,
                **({"applied_from": plan.artifact_dir} if plan.artifact_dir else {}),
                "files": artifact_files,
            },
            "stats": plan.layout.stats,
            "stats_file": stats_file,
            "errors": {
                "path": plan.layout.errors,
                "files": sorted(error_files, key=lambda e: e["path"]),
                "count": error_count,
            },
            "versions": versions(),
        }
        if written_errors < error_count:
            raise CountsMismatchError(
                f"{error_count} error records were counted but the error files hold "
                f"{written_errors}"
            )
        keep: list[str] = [
            *(
                e["path"]
                for by_fmt in splits.values()
                for es in by_fmt["files"].values()
                for e in es
            ),
            *(e["path"] for e in artifact_files),
            stats_file["path"],
            *(e["path"] for e in error_files),
        ]
        plan.commit.sweep(keep)
        # The sink tables change just before the manifest: rows in BigQuery and files on
        # disk are committed one after the other (BigQuery and GCS share no transaction).
        bigquery = _publish_bigquery(plan)
        if bigquery:
            manifest["bigquery"] = bigquery
        plan.commit.publish(manifest, dumps(manifest))
        if bigquery:
            _drop_staging(plan)
        yield manifest


MANIFEST_VERSION = 2


def _artifact_files(plan: Plan) -> list[dict[str, Any]]:
    # Everything under the artifact folder but the tf.Transform backend's scratch space,
    # which the sweep before the commit deletes.
    from transforms.tft.backend import TEMP_DIR

    store = commit_lib.store_for(plan.layout.output)
    scratch = FileSystems.join(plan.layout.artifact, TEMP_DIR)
    return [
        inventory.describe(path)
        for path in store.list_files(plan.layout.artifact)
        if not path.startswith(scratch)
    ]


def _bigquery_source(plan: Plan) -> dict[str, Any]:
    # The exact rows read: the SQL run and its date range (start inclusive, end exclusive).
    bq = plan.spec.source.bigquery
    if bq is None:
        return {}
    sql, params = bq_lib.source_query(bq)
    return {
        "bigquery": {
            "table": bq.name if bq.table else None,
            "query": bq.query,
            "sql": sql,
            "date_column": bq.date_column,
            "start": params.get("start"),
            "end": params.get("end"),
        }
    }


def _artifact_for(plan: Plan, fitted: Mapping[str, Any]) -> Artifact:
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


def _read_for_fit(p: beam.Pipeline, plan: Plan) -> beam.PCollection:
    # Without a spill directory (on Dataflow) the fit pass reads the files a second time
    # instead of sharing the apply pass's read: a PCollection consumed both by the fit and
    # by a step waiting on the fit's result may be held whole by the runner; two streaming
    # reads keep memory bounded by the batch size. Read errors are recorded by the apply
    # pass's read only.
    read = _read(p, plan, "ReadForFit", log_files=False)
    if plan.spec.transform.fit_on == "all":
        return read.batches
    tagged = read.batches | "SplitForFit" >> beam.ParDo(
        _AssignSplitDoFn(plan.spec.split, plan.spec.name)
    ).with_outputs(ERRORS, COUNTS, main="batches")
    return tagged.batches


def _only_split(batch: pa.RecordBatch, index: int) -> pa.RecordBatch:
    mask = pc.equal(batch.column(SPLIT_COLUMN), index)
    return batch.filter(mask)


def build(p: beam.Pipeline, plan: Plan, *, spill_dir: str | None = None) -> beam.PCollection:
    """Wires the dataset pipeline for a :class:`Plan` onto ``p``.

    Args:
        p: The pipeline.
        plan: The plan.
        spill_dir: A local directory (local runner only): when the first steps are fitted,
            the input is read once, its batches spilled there for the apply pass
            (:mod:`transforms.io.spill`); without it the fit pass reads the input again.

    Returns:
        A one-element PCollection holding the manifest dict (written last).
    """
    spec = plan.spec
    name = spec.name
    read = _read(p, plan, "Read")
    errors = [read.errors]
    counts = [
        read.batches | "CountRead" >> beam.Map(_count_read),
        read.errors | "CountReadErrors" >> beam.Map(_count_read_error),
    ]
    assigned = read.batches | "AssignSplit" >> beam.ParDo(
        _AssignSplitDoFn(spec.split, name)
    ).with_outputs(ERRORS, COUNTS, main="batches")
    batches = assigned.batches
    errors.append(assigned[ERRORS])
    counts.append(assigned[COUNTS])
    if plan.artifact is not None:
        fitted = p | "Artifact" >> beam.Create([plan.artifact.fitted])
    else:
        fitted = p | "NothingFitted" >> beam.Create([{}])
    for k, (seg_steps, barrier) in enumerate(segments(plan.steps)):
        if plan.artifact is None and any(s.analyzer() is not None for s in seg_steps):
            if k:
                fit_input = batches
            elif spill_dir is not None:
                # One read: the fit folds the batches while they are spilled for the apply.
                fit_input = batches
                batches = (
                    batches | "Spill" >> SpillBatches(spill_dir) | "ReadSpilled" >> ReadSpilled()
                )
            else:
                fit_input = _read_for_fit(p, plan)
            if spec.transform.fit_on != "all":
                wanted = spec.split.names.index(spec.transform.fit_on)
                fit_input = fit_input | f"FitOn{k}" >> beam.Map(_only_split, wanted)
            fitted = fit_input | f"Fit{k}" >> FitSteps(steps=seg_steps, prior=fitted, pipeline=name)
        if seg_steps:
            applied = batches | f"Apply{k}" >> ApplySteps(
                steps=seg_steps, fitted=fitted, pipeline=name
            )
            batches = applied.batches
            errors.append(applied[ERRORS])
            counts.append(applied[COUNTS])
        if barrier is not None:
            deduped = batches | f"Dedupe{k}" >> DeduplicateBatches(step=barrier)
            batches = deduped.batches
            counts.append(
                deduped.dropped
                | f"CountDedupe{k}"
                >> beam.Map(
                    lambda n, s=barrier.name: collections.Counter({(DROPPED, s, "duplicate"): n})
                )
            )
    transform_fn_written = []
    if plan.preprocessing_fn is not None:
        batches, written = _run_preprocessing_fn(batches, plan)
        transform_fn_written.append(beam.pvalue.AsSingleton(written))
    names = spec.split.names
    parts = batches | "Partition" >> beam.ParDo(
        _PartitionDoFn(names, plan.output_columns, plan.output_schema)
    ).with_outputs(*names, COUNTS)
    counts.append(parts[COUNTS])

    files = []
    formats = spec.output.formats
    for split_name in names:
        for fmt in formats:
            written = parts[split_name] | f"Write_{split_name}_{fmt}" >> WriteBatches(
                path_prefix=plan.layout.split_prefix(split_name),
                format=fmt,
                num_shards=spec.output.num_shards,
                schema=plan.output_schema,
            )
            files.append(
                written
                | f"Files_{split_name}_{fmt}"
                >> beam.Map(lambda path, s=split_name, f=fmt: (s, f, inventory.describe(path, f)))
            )
    per_split = [
        beam.pvalue.AsSingleton(
            parts[n]
            | f"Stats_{n}" >> AnalyzeBatches(DatasetStats(plan.output_schema), extract=False)
        )
        for n in names
    ]
    stats = (
        p
        | "StatsTrigger" >> beam.Create([None])
        | "Stats" >> beam.Map(_finish_stats, plan.output_schema, names, *per_split)
    )
    all_errors = errors | "AllErrors" >> beam.Flatten()
    # Rows BigQuery rejects were written to the files already: they go to the dead-letter
    # output but are not counted as rejected by the dataset's steps.
    sink_errors = _write_bigquery(plan, parts)
    dead_letters = (
        [all_errors, *sink_errors] | "DeadLetters" >> beam.Flatten() if sink_errors else all_errors
    )
    if spec.errors.bigquery_table:
        _ = (
            dead_letters
            | "BatchErrors" >> beam.BatchElements(min_batch_size=1, max_batch_size=500)
            | "ErrorBatches" >> beam.Map(bq_lib.errors_to_batch)
            | "ErrorsToBigQuery"
            >> bq_lib.WriteToBigQuery(
                table=spec.errors.bigquery_table,
                schema=bq_lib.error_arrow_schema(),
                method="STREAMING_INSERTS",
                pipeline=name,
                step="dead_letter",
            )
        )
    error_files = (
        dead_letters
        | "ErrorJson" >> beam.Map(lambda e: e.to_json())
        | "WriteErrors"
        >> beam.io.WriteToText(
            FileSystems.join(plan.layout.errors, "errors"),
            file_name_suffix=".jsonl",
            num_shards=1,
        )
        | "DescribeErrors" >> beam.Map(inventory.describe, "jsonl")
    )
    error_count = all_errors | "CountErrors" >> beam.combiners.Count.Globally()
    if plan.artifact is None:
        # transform.json is the artifact's commit marker: it waits for the transform_fn.
        artifact_hash = fitted | "WriteArtifact" >> beam.Map(
            lambda f, *after: write_artifact(plan.layout.artifact, _artifact_for(plan, f)),
            *transform_fn_written,
        )
    else:
        # A copy in the run's folder: the dataset does not depend on a folder another run
        # may replace.
        artifact_hash = (
            p
            | "AppliedArtifact" >> beam.Create([plan.artifact])
            | "CopyArtifact" >> beam.Map(lambda a: write_artifact(plan.layout.artifact, a))
        )
    total = (
        counts | "AllCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(_SumCounts())
    )
    return (
        p
        | "ManifestTrigger" >> beam.Create([None])
        | "Manifest"
        >> beam.ParDo(
            _WriteManifest(plan, formats),
            beam.pvalue.AsSingleton(total),
            beam.pvalue.AsList(files | "AllFiles" >> beam.Flatten()),
            beam.pvalue.AsList(error_files),
            beam.pvalue.AsSingleton(stats),
            beam.pvalue.AsSingleton(artifact_hash),
            beam.pvalue.AsSingleton(error_count),
        )
    )


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


@dataclasses.dataclass
class RunResult:
    """What a finished run reports."""

    manifest: dict[str, Any]
    seconds: float
    plan: Plan
    # The runner's result; for a remote runner the job is only submitted and the manifest
    # is empty (it is written when the job finishes).
    pipeline_result: Any = None


def run_job(
    spec: JobSpec,
    *,
    output: str | None = None,
    inputs: Sequence[str] | None = None,
    artifact_dir: str | None = None,
    beam_args: Sequence[str] = (),
) -> RunResult:
    """Plans, builds and runs a dataset job, waiting for it to finish on the local runner.

    On any other runner (Dataflow) the job is submitted and not waited for: the result
    holds the runner's result and an empty manifest; launchers.dataflow.jobs waits on the job.

    Returns:
        The manifest the run wrote, the wall time and the plan.

    Raises:
        CountsMismatchError: if the run's counts do not balance (the run fails).
    """
    from beam_pipelines.runner import is_local, make_options, make_pipeline

    start = time.monotonic()
    the_plan = plan(spec, output=output, inputs=inputs, artifact_dir=artifact_dir)
    # Missing buckets fail before the pipeline is built (a dry run never looks them up).
    check_buckets(
        [*the_plan.input_patterns, the_plan.layout.root, the_plan.layout.errors]
        + ([the_plan.artifact_dir] if the_plan.artifact_dir else [])
    )
    options = make_options(beam_args)
    p = make_pipeline(options)
    local = is_local(options)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if not dry_run:
        if spec.errors.path:
            commit_lib.check_errors_folder(
                posixpath.dirname(the_plan.layout.errors.rstrip("/")), the_plan.layout.output
            )
        # The run owns its output from here: a concurrent run is refused, leftovers of
        # killed runs are deleted, and the previous dataset stays until the commit.
        the_plan.commit = commit_lib.acquire(
            the_plan.layout.output,
            run_id=the_plan.layout.run_id,
            runner="local" if local else type(p.runner).__name__,
        )
        if spec.errors.path and the_plan.commit.previous_run:
            errors_root = posixpath.dirname(the_plan.layout.errors.rstrip("/"))
            the_plan.commit.extra_trees = (
                FileSystems.join(errors_root, the_plan.commit.previous_run),
            )
        the_plan.commit.keep_on_abort = the_plan.layout.errors
        if local:
            the_plan.commit.start_heartbeat()
    spill_dir = tempfile.mkdtemp(prefix="beamforge-spill-") if local else None
    committed = submitted = False
    try:
        if not dry_run:
            # Only the run that holds the output's lock may create or truncate its tables.
            _prepare_bigquery(the_plan)
        build(p, the_plan, spill_dir=spill_dir)
        result = p.run()
        if not local:
            # Submitted: the job's last step commits and releases the lock (or the lock's
            # remote lease runs out if the job fails).
            submitted = True
            return RunResult(
                manifest={},
                seconds=time.monotonic() - start,
                plan=the_plan,
                pipeline_result=result,
            )
        result.wait_until_finish()
        committed = True
    finally:
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)
        if the_plan.commit is not None and not submitted:
            if committed:
                the_plan.commit.release()
            else:
                # The dead letters of a failed run stay until the next run into the output:
                # the failure's message points at them.
                the_plan.commit.abort(keep=the_plan.layout.errors)
                with contextlib.suppress(Exception):
                    # Left alone, they expire after STAGING_DAYS anyway.
                    _drop_staging(the_plan)
    with FileSystems.open(the_plan.layout.manifest) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    return RunResult(manifest=manifest, seconds=time.monotonic() - start, plan=the_plan)


def run(argv: Sequence[str] | None = None) -> RunResult:
    """Entry point for ``python -m beam_pipelines.dataset SPEC [--input ...] [--output ...]``."""
    import argparse

    from beam_pipelines.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--input", action="append")
    parser.add_argument("--output")
    parser.add_argument("--artifact")
    args, beam_args = parser.parse_known_args(argv)
    return run_job(
        load_spec(args.spec),
        output=args.output,
        inputs=args.input,
        artifact_dir=args.artifact,
        beam_args=beam_args,
    )


if __name__ == "__main__":
    run()
