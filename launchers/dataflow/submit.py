"""Submitting a dataset job to Dataflow, or building it offline with Beam's dry run.

``submit(spec, settings, ...)`` plans and builds the same pipeline as a local run and hands
it to Beam's DataflowRunner. With ``dry_run=True`` the runner builds the complete job (the
Runner API graph, the options, the staged packages) and stops before it would stage files or
call the Dataflow API; :class:`DryRunJob` holds what would have been submitted, including
the Dataflow ``Job`` JSON with its environment, so a job can be proven submittable offline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

from beam_pipelines.spec import JobSpec
from launchers.dataflow.settings import DataflowSettings, console_url, default_job_name

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class SubmittedJob:
    """A job Dataflow accepted (it may still be starting)."""

    job_id: str
    job_name: str
    project: str
    region: str

    @property
    def console_url(self) -> str:
        return console_url(self.project, self.region, self.job_id)


@dataclasses.dataclass
class DryRunJob:
    """A job built completely but not submitted.

    Attributes:
        job_name: The Dataflow job name.
        transforms: Top-level transform names of the pipeline graph, in graph order.
        options: The pipeline options the workers would get (``sdkPipelineOptions``).
        staged_files: Files that would be staged for the workers by staged name (e.g.
            ``workflow.tar.gz``, the sdist built from ``setup.py``), with their local paths.
        job: The Dataflow ``Job`` message as JSON (environment, worker pool, labels).
        pipeline: The Runner API pipeline proto.
    """

    job_name: str
    transforms: list[str]
    options: dict[str, Any]
    staged_files: dict[str, str]
    job: dict[str, Any]
    pipeline: Any

    @property
    def step_count(self) -> int:
        return len(self.transforms)

    def summary(self) -> str:
        """What a user checks before submitting for real."""
        opts = self.options
        pool = self.job["environment"]["workerPools"][0]
        lines = [
            f"dry run: job {self.job_name} ({self.step_count} steps) not submitted",
            f"  project       {opts.get('project')}",
            f"  region        {opts.get('region')}",
            f"  temp          {opts.get('temp_location')}",
            f"  staging       {opts.get('staging_location')}",
            f"  machine type  {pool.get('machineType', 'Dataflow default')}",
            f"  max workers   {_number(opts.get('max_num_workers', 'Dataflow default'))}",
            f"  service acct  {opts.get('service_account_email', 'Compute Engine default')}",
            f"  subnetwork    {opts.get('subnetwork', '-')}",
            f"  public IPs    {'no' if opts.get('use_public_ips') is False else 'yes'}",
            f"  kms key       {opts.get('dataflow_kms_key', '-')}",
            f"  labels        {json.dumps(self.job.get('labels', {}), sort_keys=True)}",
            f"  experiments   {', '.join(opts.get('experiments', []))}",
            f"  image         {opts.get('sdk_container_image', 'Beam default')}",
            f"  setup file    {opts.get('setup_file', '-')}",
            f"  staged        {', '.join(self.staged_files)}",
            f"  steps         {', '.join(self.transforms)}",
        ]
        return "\n".join(lines)


def _number(value: Any) -> Any:
    # Options travel as a protobuf Struct, where every number is a float.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def beam_args_for(
    spec: JobSpec, settings: DataflowSettings, extra: Sequence[str] = (), *, dry_run: bool = False
) -> list[str]:
    """The full Beam argument list of a Dataflow job for ``spec``."""
    args = settings.beam_args()
    if settings.job_name is None:
        args.append(f"--job_name={default_job_name(spec.name)}")
    args += list(extra)
    if dry_run:
        args.append("--dry_run=True")
    return args


def submit(
    spec: JobSpec,
    settings: DataflowSettings,
    *,
    output: str | None = None,
    inputs: Sequence[str] | None = None,
    artifact_dir: str | None = None,
    baseline: str | None = None,
    beam_args: Sequence[str] = (),
    dry_run: bool = False,
) -> SubmittedJob | DryRunJob:
    """Builds the dataset job for ``spec`` and submits it to Dataflow (or only builds it).

    Args:
        spec: The validated job spec.
        settings: Validated Dataflow settings.
        output: Output prefix (gs://); overrides ``output.path``.
        inputs: Input files or globs; override ``source.path``.
        artifact_dir: Apply this fitted artifact instead of fitting.
        baseline: The finished run drift is measured against (``--baseline``).
        beam_args: Further Beam options.
        dry_run: Build the job without staging anything or calling Google.

    Returns:
        The submitted job's id and name, or the dry-run job.

    Raises:
        ValueError: for an output that is not gs:// (workers cannot write local paths).
    """
    from beam_pipelines.dataset import run_job

    root = output or spec.output.path
    if root and not root.startswith("gs://"):
        raise ValueError(f"output {root!r} is not a gs:// path; Dataflow workers cannot write it")
    args = beam_args_for(spec, settings, beam_args, dry_run=dry_run)
    if dry_run:
        return dry_run_job(_build_offline(spec, output, inputs, artifact_dir, args, baseline).job)
    result = run_job(
        spec,
        output=output,
        inputs=inputs,
        artifact_dir=artifact_dir,
        beam_args=args,
        baseline=baseline,
    ).pipeline_result
    job = SubmittedJob(
        job_id=result.job_id(),
        job_name=result._job.name,
        project=str(settings.project),
        region=str(settings.region),
    )
    _LOG.info("submitted Dataflow job %s (%s): %s", job.job_name, job.job_id, job.console_url)
    return job


def submit_streaming(
    spec: JobSpec,
    settings: DataflowSettings,
    *,
    output: str | None = None,
    artifact_dir: str | None = None,
    beam_args: Sequence[str] = (),
    dry_run: bool = False,
) -> SubmittedJob | DryRunJob:
    """Builds the streaming job of ``spec`` and submits it to Dataflow (or only builds it).

    Pub/Sub is read by the service's own source (``ReadFromPubSub`` with ``id_label``); the
    job runs until drained or cancelled (``beamforge jobs drain|cancel``).

    Args:
        spec: The validated job spec, with its ``streaming:`` section.
        settings: Validated Dataflow settings.
        output: Output root (gs://); overrides ``streaming.output.path``.
        artifact_dir: The artifact to apply (gs://); overrides ``streaming.artifact``.
        beam_args: Further Beam options.
        dry_run: Build the job without staging anything or submitting it.

    Returns:
        The submitted job's id and name, or the dry-run job.

    Raises:
        ValueError: for a local output or artifact (workers cannot read or write it).
    """
    from beam_pipelines.runner import make_options, make_pipeline
    from beam_pipelines.streaming import build, plan

    the_plan = plan(spec, artifact_dir=artifact_dir, output=output, prepare_sinks=not dry_run)
    for what, path in (
        ("output", the_plan.stream.output.path),
        ("artifact", the_plan.stream.artifact),
    ):
        if not path.startswith("gs://"):
            raise ValueError(
                f"streaming {what} {path!r} is not a gs:// path; Dataflow workers cannot use it"
            )
    args = [*beam_args_for(spec, settings, beam_args, dry_run=dry_run), "--streaming"]
    p = make_pipeline(make_options(args))
    build(p, the_plan)
    # A DataflowPipelineResult: its job (and id) are not on the base class.
    result: Any = p.run()
    if dry_run:
        return dry_run_job(result.job)
    job = SubmittedJob(
        job_id=result.job_id(),
        job_name=result._job.name,
        project=str(settings.project),
        region=str(settings.region),
    )
    _LOG.info("submitted streaming Dataflow job %s (%s)", job.job_name, job.job_id)
    return job


def _build_offline(
    spec: JobSpec,
    output: str | None,
    inputs: Sequence[str] | None,
    artifact_dir: str | None,
    args: Sequence[str],
    baseline: str | None,
) -> Any:
    # run_job would first retire the previous run's manifest, which asks GCS whether it
    # exists; a dry run must not touch the output, so it plans and builds here.
    from beam_pipelines.dataset import build, plan
    from beam_pipelines.runner import make_options, make_pipeline

    the_plan = plan(
        spec,
        output=output,
        inputs=inputs,
        artifact_dir=artifact_dir,
        baseline=baseline,
        offline=True,
    )
    p = make_pipeline(make_options(args))
    build(p, the_plan)
    return p.run()


def dry_run_job(job: Any) -> DryRunJob:
    """Completes what Beam's dry run leaves out: the job environment, as submission would.

    Args:
        job: ``apache_beam.runners.dataflow.internal.apiclient.Job`` of a dry run.
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.internal import apiclient
    from apache_beam.runners.internal import names as shared_names
    from google.protobuf import json_format

    staged: dict[str, str] = {}
    for _, env in sorted(job.proto_pipeline.components.environments.items()):
        for dep in env.dependencies:
            if dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
                name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                    dep.role_payload
                ).staged_name
                local = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload)
                staged.setdefault(name, local.path)
    gcs = job.options.view_as(GoogleCloudOptions)
    staging = gcs.staging_location or gcs.temp_location
    environment = apiclient.Environment(
        packages=list(staged),
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=f"{staging.rstrip('/')}/{shared_names.STAGED_PIPELINE_FILENAME}",
        proto_pipeline=job.proto_pipeline,
    )
    job.proto.environment = environment.proto
    as_json = json.loads(json_format.MessageToJson(job.proto._pb))
    options = as_json["environment"]["sdkPipelineOptions"]["options"]
    components = job.proto_pipeline.components
    roots = [components.transforms[t] for t in job.proto_pipeline.root_transform_ids]
    # Beam wraps the user's transforms in one root composite; list what it holds.
    if len(roots) == 1 and roots[0].subtransforms:
        top = [components.transforms[t].unique_name for t in roots[0].subtransforms]
    else:
        top = [r.unique_name for r in roots]
    return DryRunJob(
        job_name=as_json["name"],
        transforms=top,
        options=options,
        staged_files=staged,
        job=as_json,
        pipeline=job.proto_pipeline,
    )
