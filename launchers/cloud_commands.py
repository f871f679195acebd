"""The Dataflow parts of the ``beamforge`` CLI.

    beamforge run SPEC --runner DataflowRunner [--dry-run [--job-json PATH]] [--wait] ...
    beamforge template build SPEC --out DIR [--gcs-path gs://.../t.json] [--image IMAGE]
                                  [--build none|local|cloudbuild] [--project P]
    beamforge template launch TEMPLATE --project P --region R --job-name N --param k=v ...
                                  [--validate-only] [--wait] [Dataflow flags ...]
    beamforge jobs wait|cancel|drain JOB --project P --region R [--timeout S] [--wait]

Exit codes are :class:`beam_pipelines.exit_codes.ExitCode`: OK, FAILED, USER_ERROR (invalid
settings or arguments), STOPPED (cancelled), DRAINED, UPDATED (replaced), TIMED_OUT; a job
error carries its own (:attr:`launchers.polling.CloudJobError.exit_code`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error, format_summary


def add_run_flags(run: argparse.ArgumentParser) -> None:
    """Flags of ``beamforge run`` for Dataflow (its settings are Beam's own flag names)."""
    group = run.add_argument_group(
        "Dataflow",
        "With --runner DataflowRunner the dataflow: section of the spec applies; Beam's flags "
        "(--project, --region, --temp_location, --labels k=v, ...) override it.",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="build the complete Dataflow job offline and print it; nothing is submitted",
    )
    group.add_argument("--job-json", help="with --dry-run: write the Dataflow job JSON here")
    group.add_argument(
        "--wait", action="store_true", help="wait for the Dataflow job to finish, then summarise"
    )
    group.add_argument("--timeout", type=float, help="with --wait: give up after S seconds")
    group.add_argument("--api-endpoint", help=argparse.SUPPRESS)


def wants_dataflow(args: argparse.Namespace, extra: Sequence[str]) -> bool:
    """Whether ``beamforge run`` targets Dataflow (``--runner DataflowRunner`` or ``--dry-run``)."""
    if args.dry_run:
        return True
    for i, arg in enumerate(extra):
        if arg == "--runner=DataflowRunner" or (
            arg == "--runner" and i + 1 < len(extra) and extra[i + 1] == "DataflowRunner"
        ):
            return True
    return False


def run_on_dataflow(args: argparse.Namespace, spec: Any, extra: Sequence[str]) -> int:
    """``beamforge run`` on Dataflow: validate settings, submit (or dry-run), optionally wait.

    With ``--streaming`` the spec's streaming job is submitted; it runs until drained, so
    ``--wait`` does not apply.
    """
    from launchers.dataflow.settings import DataflowSettings, resolve_settings
    from launchers.dataflow.submit import DryRunJob, SubmittedJob, submit, submit_streaming
    from transforms.core.config import SpecError

    start = time.monotonic()
    settings: DataflowSettings
    job: SubmittedJob | DryRunJob
    try:
        settings, rest = resolve_settings(spec.dataflow, extra)
        if args.streaming:
            job = submit_streaming(
                spec,
                settings,
                output=args.output,
                artifact_dir=args.artifact,
                beam_args=rest,
                dry_run=args.dry_run,
            )
        else:
            job = submit(
                spec,
                settings,
                output=args.output,
                inputs=args.input,
                artifact_dir=args.artifact,
                baseline=getattr(args, "baseline", None),
                beam_args=rest,
                dry_run=args.dry_run,
            )
    except (SpecError, FileNotFoundError, ValueError) as exc:
        return error(exc)
    if isinstance(job, DryRunJob):
        print(job.summary())
        if args.job_json:
            pathlib.Path(args.job_json).write_text(json.dumps(job.job, indent=2, sort_keys=True))
            print(f"  job JSON      {args.job_json}")
        return ExitCode.OK
    print(f"submitted {job.job_name} as Dataflow job {job.job_id}\n  {job.console_url}")
    if not args.wait or args.streaming:
        return ExitCode.OK
    from launchers.dataflow.jobs import JobError, JobRef, jobs_client, wait_for_job

    ref = JobRef(job.project, job.region, job.job_id)
    try:
        wait_for_job(jobs_client(api_endpoint=args.api_endpoint), ref, timeout=args.timeout)
    except JobError as exc:
        return error(exc, exc.exit_code)
    from apache_beam.io.filesystems import FileSystems

    from beam_pipelines.dataset import plan

    root = plan(
        spec, output=args.output, inputs=args.input, artifact_dir=args.artifact, offline=True
    ).layout
    with FileSystems.open(root.manifest) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    print(format_summary(manifest, time.monotonic() - start))
    return ExitCode.OK


def add_parsers(sub: Any) -> None:
    """Adds the ``template`` and ``jobs`` command groups."""
    template = sub.add_parser("template", help="build and launch Dataflow Flex Templates")
    tsub = template.add_subparsers(dest="template_command", required=True)
    build = tsub.add_parser(
        "build",
        help="generate a Flex Template directory (spec JSON, metadata, Dockerfile, requirements)",
    )
    build.add_argument("spec", help="the job spec YAML the template is built for")
    build.add_argument("--out", required=True, help="directory for the generated files")
    build.add_argument("--gcs-path", help="gs://.../NAME.json: upload the template spec there")
    build.add_argument(
        "--image",
        default="beamforge:latest",
        help="image reference, e.g. REGION-docker.pkg.dev/PROJECT/REPO/beamforge:TAG",
    )
    build.add_argument(
        "--build",
        choices=["none", "local", "cloudbuild"],
        default="none",
        help="build the image: not at all, with local docker, or with Cloud Build",
    )
    build.add_argument("--project", help="project for --build cloudbuild")
    build.add_argument("--launcher-image", help="image the template launcher is copied from")
    build.add_argument("--api-endpoint", help=argparse.SUPPRESS)

    launch = tsub.add_parser(
        "launch",
        help="launch a Flex Template; Dataflow flags (--temp_location ...) set the environment",
    )
    launch.add_argument("template", help="gs:// path of the template spec JSON")
    _job_location(launch)
    launch.add_argument("--job-name", required=True, help="name of the new Dataflow job")
    launch.add_argument(
        "--param", action="append", default=[], help="template parameter NAME=VALUE (repeatable)"
    )
    launch.add_argument(
        "--validate-only", action="store_true", help="only validate the launch request"
    )
    launch.add_argument("--wait", action="store_true", help="wait for the job to finish")
    launch.add_argument("--timeout", type=float, help="with --wait: give up after S seconds")

    jobs = sub.add_parser("jobs", help="wait for, cancel or drain a Dataflow job")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    for name, text in (
        ("wait", "wait until the job finishes (exit code says how)"),
        ("cancel", "cancel the job"),
        ("drain", "drain the job (finish buffered work, then stop)"),
    ):
        cmd = jsub.add_parser(name, help=text)
        cmd.add_argument("job", help="Dataflow job id")
        _job_location(cmd)
        cmd.add_argument("--timeout", type=float, help="give up waiting after S seconds")
        if name != "wait":
            cmd.add_argument("--wait", action="store_true", help="wait until the job has stopped")


def _with_published_schema(spec: Any, spec_text: bytes, gcs_path: str) -> tuple[bytes, bytes]:
    """The job spec naming its schema at ``{stem}.schema.yaml``, and the schema's text."""
    import yaml

    from transforms.core import files

    path = spec.validation.schema
    schema_text = files.read_bytes(path)
    if schema_text is None:
        raise FileNotFoundError(f"{path}: data schema not found")
    data = yaml.safe_load(spec_text)
    data["validation"]["schema"] = gcs_path.removesuffix(".json") + ".schema.yaml"
    return yaml.safe_dump(data, sort_keys=False).encode("utf-8"), schema_text


def _job_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--region", required=True, help="Dataflow region")
    parser.add_argument("--api-endpoint", help=argparse.SUPPRESS)


def template_build(args: argparse.Namespace, spec: Any) -> int:
    from apache_beam.io.filesystems import FileSystems

    from launchers.dataflow.templates import LAUNCHER_IMAGE, TemplateBuildError, build_template

    with FileSystems.open(args.spec) as f:
        spec_text = f.read()
    schema_text = None
    if args.gcs_path and spec.validation.schema and "://" not in spec.validation.schema:
        # The job spec is published without its folder: its data schema goes beside it and
        # the published spec names it there.
        try:
            spec_text, schema_text = _with_published_schema(spec, spec_text, args.gcs_path)
        except FileNotFoundError as exc:
            return error(exc)
    client = None
    if args.build == "cloudbuild" and args.api_endpoint:
        from launchers.dataflow.templates import cloud_build_client

        client = cloud_build_client(api_endpoint=args.api_endpoint)
    try:
        built = build_template(
            spec_name=spec.name,
            description=spec.description,
            spec_text=spec_text,
            out_dir=args.out,
            image=args.image,
            gcs_path=args.gcs_path,
            build=args.build,
            project=args.project,
            launcher_image=args.launcher_image or LAUNCHER_IMAGE,
            cloud_build=client,
            schema_text=schema_text,
        )
    except ValueError as exc:
        return error(exc)
    except TemplateBuildError as exc:
        return error(exc, ExitCode.FAILED)
    print(f"template {built.out_dir} for image {built.image}")
    for path in built.paths:
        print(f"  {path}")
    if built.gcs_path:
        print(f"  uploaded {built.gcs_path}\n  job spec {built.spec_uri}")
    if built.schema_uri:
        print(f"  data schema {built.schema_uri}")
    if built.build_id:
        print(f"  Cloud Build {built.build_id} is building {built.image}")
    return ExitCode.OK


def template_launch(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from launchers.dataflow.jobs import JobRef, launch_flex_template, templates_client
    from launchers.dataflow.settings import FlexLaunchSettings, flex_environment, resolve_settings
    from launchers.dataflow.templates import parse_params
    from transforms.core.config import SpecError

    try:
        if not args.template.startswith("gs://"):
            raise ValueError(f"the template spec must be a gs:// path, got {args.template!r}")
        settings, rest = resolve_settings(
            {"project": args.project, "region": args.region, "job_name": args.job_name},
            extra,
            FlexLaunchSettings,
        )
        if rest:
            raise ValueError(f"unrecognized arguments: {' '.join(rest)}")
        params = parse_params(args.param)
    except (SpecError, ValueError) as exc:
        return error(exc)
    job = launch_flex_template(
        templates_client(api_endpoint=args.api_endpoint),
        project=args.project,
        region=args.region,
        job_name=args.job_name,
        template_path=args.template,
        parameters=params,
        environment=flex_environment(settings),
        validate_only=args.validate_only,
    )
    if args.validate_only:
        print(f"launch of {args.template} as {args.job_name} is valid (nothing launched)")
        return ExitCode.OK
    ref = JobRef(args.project, args.region, job.id)
    print(f"launched {args.job_name} as Dataflow job {job.id}\n  {ref.console_url}")
    if not args.wait:
        return ExitCode.OK
    return _wait(args, ref, expect="JOB_STATE_DONE")


def _wait(args: argparse.Namespace, ref: Any, *, expect: str) -> int:
    from launchers.dataflow.jobs import JobError, jobs_client, wait_for_job

    try:
        wait_for_job(
            jobs_client(api_endpoint=args.api_endpoint), ref, timeout=args.timeout, expect=expect
        )
    except JobError as exc:
        return error(exc, exc.exit_code)
    print(f"Dataflow job {ref.job_id} is {expect}: {ref.console_url}")
    return ExitCode.OK


def jobs_command(args: argparse.Namespace) -> int:
    from launchers.dataflow.jobs import (
        CANCELLED,
        DONE,
        DRAINED,
        JobRef,
        cancel_job,
        drain_job,
        jobs_client,
    )

    ref = JobRef(args.project, args.region, args.job)
    if args.jobs_command == "wait":
        return _wait(args, ref, expect=DONE)
    client = jobs_client(api_endpoint=args.api_endpoint)
    if args.jobs_command == "cancel":
        cancel_job(client, ref)
        expect = CANCELLED
    else:
        drain_job(client, ref)
        expect = DRAINED
    print(f"asked Dataflow to {args.jobs_command} job {ref.job_id}: {ref.console_url}")
    if not args.wait:
        return ExitCode.OK
    return _wait(args, ref, expect=expect)
