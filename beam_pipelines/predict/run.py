"""Running a scoring job: plan, take the output's lock, build, run, commit or clean up."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import TestOptions

from beam_pipelines.predict.build import build
from beam_pipelines.predict.plan import OutputFormat, PredictInputError, PredictPlan, plan_predict
from transforms.io import bigquery as bq_lib
from transforms.io import commit as commit_lib
from transforms.io.bigquery.client import default_retry
from transforms.io.gcs import check_buckets
from transforms.io.read import Source

__all__ = ["PredictResult", "run_predict"]


@dataclasses.dataclass
class PredictResult:
    """What a finished (or submitted, or dry-run) scoring run reports.

    Attributes:
        manifest: The published manifest; empty when the job was only submitted or dry-run.
        manifest_path: Where the manifest is (or will be, for a submitted job).
        seconds: Wall time of the run.
        plan: The plan it ran.
        pipeline_result: The runner's result (a Dataflow dry run's holds ``job``).
    """

    manifest: dict[str, Any]
    manifest_path: str
    seconds: float
    plan: PredictPlan
    pipeline_result: Any = None

    @property
    def counts(self) -> dict[str, Any]:
        """The manifest's counts: read, written, rejected, dropped (and their totals)."""
        return dict(self.manifest.get("counts", {}))


def run_predict(
    model_dir: str,
    inputs: Sequence[str],
    output: str,
    *,
    source: Source | None = None,
    keys: Sequence[str] = (),
    output_format: OutputFormat = "parquet",
    run_folder: str | None = None,
    beam_args: Sequence[str] = (),
    dry_run: bool = False,
) -> PredictResult:
    """Scores raw rows with a trained model: transform artifact, then the model, with RunInference.

    Every good input row gets one prediction, with its key columns, the model's label
    (``probability >= 0.5``) and the positive class probability; a row a reader or the
    artifact rejects gets an error record with its reason (the dataset job's error shape),
    and rows a filter step of the artifact drops are counted as dropped. The run commits as a
    dataset run does: it writes under a run folder of its own, checks that rows read =
    predicted + rejected + dropped, and publishes ``manifest.json`` last, listing every file.

    Args:
        model_dir: A model directory, local or gs://: ``model.joblib`` (a dict of ``model``,
            ``features``, ``label``) and ``artifact/`` (the transform artifact), as the chain's
            train step leaves it.
        inputs: File paths or globs (local or gs://), or one ``bq://project.dataset.table``.
        output: The output folder (local or gs://), or ``bq://project.dataset.table`` (its
            rows are replaced by this run's predictions at the commit).
        source: How to read the files: the chain dataset spec's ``source`` section (format,
            CSV layout, schema, ``allow_non_finite``); its paths are replaced by ``inputs``.
            Default: the artifact's input schema, the format from the file name.
        keys: Input columns copied to every prediction. Default: the source file and line
            (``file``, ``line``; for BigQuery input ``bigquery:TABLE`` and the row number).
        output_format: ``parquet`` or ``jsonl`` (files output).
        run_folder: With a BigQuery output: the folder for the errors and the manifest.
        beam_args: Beam pipeline options; the local runner unless another is named. On
            Dataflow, model and output must be gs:// and the job is submitted, not waited for
            (its last step commits).
        dry_run: Build the Dataflow job offline without submitting it (needs
            ``--runner DataflowRunner`` in ``beam_args``); nothing is written.

    Returns:
        The manifest (with ``counts``), its path, the wall time, the plan and the runner's
        result.

    Raises:
        PredictInputError: for a missing model, input or key column, or an unusable output
            (a subclass of :class:`~transforms.core.errors.InputError`).
        OutputKindError: if the output folder holds a dataset (also an ``InputError``).
        ArtifactError: for a transform artifact that cannot be read.
        CountsMismatchError: if the counts do not balance (the run is not committed).
    """
    from beam_pipelines.runner import is_local, make_options, make_pipeline

    start = time.monotonic()
    args = list(beam_args)
    if dry_run and not any(a.startswith("--dry_run") for a in args):
        args.append("--dry_run=True")
    try:
        options = make_options(args)
    except ValueError as exc:
        raise PredictInputError("pipeline options", str(exc)) from None
    local = is_local(options)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if dry_run and local:
        raise PredictInputError(
            "--dry-run", "builds a Dataflow job: give --runner DataflowRunner and its settings"
        )
    the_plan = plan_predict(
        model_dir,
        inputs,
        output,
        source=source,
        keys=keys,
        output_format=output_format,
        run_folder=run_folder,
    )
    if not local:
        for what, path in (("--model", model_dir), ("the output folder", the_plan.output)):
            if not path.startswith("gs://"):
                raise PredictInputError(
                    what, f"{path} is not gs://: Dataflow workers cannot read it"
                )
    p = make_pipeline(options)
    if dry_run:
        build(p, the_plan, local=False)
        result = p.run()
        return PredictResult({}, the_plan.manifest, time.monotonic() - start, the_plan, result)
    check_buckets([*the_plan.input_files, the_plan.output, model_dir])
    # The run owns its output from here: a concurrent run is refused, leftovers of killed
    # runs are deleted, and the previous predictions stay until the commit.
    the_plan.commit = commit_lib.acquire(
        the_plan.output,
        run_id=the_plan.run_id,
        runner="local" if local else type(p.runner).__name__,
        kind=commit_lib.PREDICTIONS,
    )
    the_plan.commit.keep_on_abort = the_plan.errors
    if local:
        the_plan.commit.start_heartbeat()
    committed = submitted = False
    try:
        if the_plan.table is not None:
            _prepare_tables(the_plan)
        build(p, the_plan, local=local)
        result = p.run()
        if not local:
            submitted = True
            return PredictResult({}, the_plan.manifest, time.monotonic() - start, the_plan, result)
        result.wait_until_finish()
        committed = True
    finally:
        if not submitted:
            if committed:
                the_plan.commit.release()
            else:
                the_plan.commit.abort(keep=the_plan.errors)
                if the_plan.table is not None:
                    _drop_staging(the_plan)
    with FileSystems.open(the_plan.manifest) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    return PredictResult(manifest, the_plan.manifest, time.monotonic() - start, the_plan, result)


def _prepare_tables(plan: PredictPlan) -> None:
    """Creates the output table if missing (or checks it takes the rows), and the staging table."""
    from google.cloud import bigquery

    assert plan.table is not None and plan.staging_table is not None
    client = bq_lib.make_client(plan.table.project)
    wanted = bq_lib.bq_schema(plan.schema)
    try:
        existing = client.get_table(str(plan.table), retry=default_retry())
    except Exception as exc:  # NotFound: the run creates it
        from google.api_core import exceptions

        if not isinstance(exc, exceptions.NotFound):
            raise
        existing = None
    if existing is not None:
        problems = bq_lib.schema_problems([f.to_api_repr() for f in existing.schema], wanted)
        if problems:
            raise PredictInputError(f"bq://{plan.table}", "; ".join(problems))
    fields = [bigquery.SchemaField.from_api_repr(f) for f in wanted]
    if existing is None:
        client.create_table(bigquery.Table(str(plan.table), schema=fields), exists_ok=True)
    staging = bigquery.Table(str(plan.staging_table), schema=fields)
    # Left behind by a killed run, it expires on its own.
    staging.expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=bq_lib.STAGING_DAYS)
    client.create_table(staging, exists_ok=True)


def _drop_staging(plan: PredictPlan) -> None:
    import contextlib

    assert plan.table is not None and plan.staging_table is not None
    with contextlib.suppress(Exception):
        bq_lib.drop_tables(bq_lib.make_client(plan.table.project), [plan.staging_table])
