"""The commit: counts checked, stats.json written, every file listed in manifest.json.

:class:`CommitRun` is the pipeline's last stage. It sums the counts every stage handed to the
run's :class:`~transforms.beam.error_handling.ErrorCollector`, checks that they balance and
match the error records and the rows in the files, then commits the run
(:mod:`transforms.io.commit`): the manifest is written last.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.dataset.bigquery import drop_staging, publish_tables
from beam_pipelines.dataset.plan import SPLIT_STEP, Plan
from beam_pipelines.dataset.validation import judge
from beam_pipelines.spec import schema_mapping
from transforms.core.artifact import versions
from transforms.core.manifest import (
    CountsMismatchError,
    check_balance,
    dumps,
    nest_counts,
    step_table,
    sum_counts,
    write_text,
)
from transforms.io import bigquery as bq_lib
from transforms.io import commit as commit_lib
from transforms.io import inventory
from transforms.ops.stats import DatasetStats

__all__ = ["COMMIT_INPUTS", "MANIFEST_VERSION", "CommitRun", "finish_stats"]

MANIFEST_VERSION = 2

COMMIT_INPUTS = (
    "counts",
    "files",
    "error_files",
    "error_count",
    "stats",
    "input_stats",
    "artifact_hash",
)
"""The keys of :class:`CommitRun`'s input."""


class CommitRun(beam.PTransform):
    """Checks the run's counts and commits it; outputs the manifest.

    Input: a dict of PCollections: ``counts`` (count Counters of every stage), ``files``
    (``(split, format, file description)`` of every data file), ``error_files`` (descriptions
    of the error files), ``error_count`` (one int: the error records the counts account for),
    ``stats`` (one stats dict of the output columns), ``input_stats`` (one of the input
    columns) and ``artifact_hash`` (one str). Output: a one-element
    PCollection holding the manifest dict. Bounded input only (it waits for every count).

    Raises (in the pipeline):
        CountsMismatchError: if the counts do not balance, disagree with the error records or
            the files, or more rows were rejected than ``errors.max_fraction`` allows.
    """

    def __init__(self, *, plan: Plan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, inputs: Mapping[str, beam.PCollection]) -> beam.PCollection:
        missing = [k for k in COMMIT_INPUTS if k not in inputs]
        if missing:
            raise ValueError(f"CommitRun's input lacks {missing}; it needs {list(COMMIT_INPUTS)}")
        total = inputs["counts"] | "SumCounts" >> beam.CombineGlobally(_SumCounts())
        return (
            inputs["counts"].pipeline
            | "Trigger" >> beam.Create([None])
            | "Commit"
            >> beam.ParDo(
                _WriteManifest(self._plan, self._plan.spec.output.formats),
                beam.pvalue.AsSingleton(total),
                beam.pvalue.AsList(inputs["files"]),
                beam.pvalue.AsList(inputs["error_files"]),
                beam.pvalue.AsSingleton(inputs["stats"]),
                beam.pvalue.AsSingleton(inputs["artifact_hash"]),
                beam.pvalue.AsSingleton(inputs["error_count"]),
                beam.pvalue.AsSingleton(inputs["input_stats"]),
            )
        )


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


def finish_stats(_: Any, schema: pa.Schema, names: Sequence[str], *accs: Any) -> dict:
    """stats.json's content: the statistics of all rows and of each split (merged accumulators)."""
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
        input_stats: dict,
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
        stats = {**stats, "input": input_stats}
        write_text(plan.layout.stats, dumps(stats))
        validation_files = _write_validation(plan, stats)
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
            **validation_files,
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
            *(f["path"] for key, f in validation_files.items() if key.endswith("_file")),
            *(e["path"] for e in error_files),
        ]
        plan.commit.sweep(keep)
        # The sink tables change just before the manifest: rows in BigQuery and files on
        # disk are committed one after the other (BigQuery and GCS share no transaction).
        bigquery = publish_tables(plan)
        if bigquery:
            manifest["bigquery"] = bigquery
        plan.commit.publish(manifest, dumps(manifest))
        if bigquery:
            drop_staging(plan)
        yield manifest


def _write_validation(plan: Plan, stats: dict) -> dict[str, Any]:
    # validation.json (and the baseline's statistics it was measured against, kept: the
    # baseline's folder may be deleted by this very commit) and what the manifest says of it.
    if plan.validation is None:
        return {}
    copy = None
    if plan.validation.baseline is not None:
        copy = plan.layout.baseline_stats
        write_text(copy, dumps({"input": plan.validation.baseline}))
    verdict = judge(plan.validation, stats, plan.layout.run_id, copy)
    write_text(plan.layout.validation, dumps(verdict))
    out: dict[str, Any] = {
        "validation": {"path": plan.layout.validation, **verdict["summary"]},
        "validation_file": inventory.describe(plan.layout.validation),
    }
    if copy is not None:
        out["baseline_stats_file"] = inventory.describe(copy)
    return out


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
