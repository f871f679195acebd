"""Running a dataset job: plan, take the output's lock, build, run, commit or clean up.

``run_job(spec, ...)`` is what the CLI, the chain and the Dataflow launcher call;
``python -m beam_pipelines.dataset SPEC [--input ...] [--output ...]`` runs :func:`run`.
The local runner is the default; on any other runner the job is submitted and its last step
commits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import TestOptions

from beam_pipelines.dataset.bigquery import drop_staging, prepare_tables
from beam_pipelines.dataset.build import build
from beam_pipelines.dataset.plan import Plan, plan
from beam_pipelines.spec import JobSpec
from transforms.io import commit as commit_lib
from transforms.io.gcs import check_buckets

__all__ = ["RunResult", "run", "run_job"]


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
    baseline: str | None = None,
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
    the_plan = plan(
        spec, output=output, inputs=inputs, artifact_dir=artifact_dir, baseline=baseline
    )
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
            kind=commit_lib.DATASET,
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
            prepare_tables(the_plan)
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
                    drop_staging(the_plan)
    with FileSystems.open(the_plan.layout.manifest) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    return RunResult(manifest=manifest, seconds=time.monotonic() - start, plan=the_plan)


def run(argv: Sequence[str] | None = None) -> RunResult:
    """Entry point for ``python -m beam_pipelines.dataset SPEC [--input ...] [--output ...]``."""
    import argparse

    from beam_pipelines.spec import load_spec

    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.dataset",
        description="The training-dataset pipeline: read -> clean -> fit/apply features -> "
        "split -> write. Other --flags are Beam pipeline options (DirectRunner by default).",
    )
    parser.add_argument("spec", help="the job spec YAML file (local path or gs://)")
    parser.add_argument(
        "--input",
        action="append",
        metavar="PATH",
        help="a file or glob pattern to read, overriding source.path of the spec; "
        "repeat for several",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="where the dataset, artifact, stats, errors and manifest go; overrides "
        "output.path of the spec",
    )
    parser.add_argument(
        "--artifact",
        metavar="DIR",
        help="a fitted transform artifact (or a dataset folder) to apply instead of fitting; "
        "overrides transform.artifact of the spec",
    )
    parser.add_argument(
        "--baseline",
        metavar="RUN",
        help="the finished run (run or output folder, or 'previous') drift is measured "
        "against; overrides validation.baseline of the spec",
    )
    args, beam_args = parser.parse_known_args(argv)
    return run_job(
        load_spec(args.spec),
        output=args.output,
        inputs=args.input,
        artifact_dir=args.artifact,
        beam_args=beam_args,
        baseline=args.baseline,
    )
