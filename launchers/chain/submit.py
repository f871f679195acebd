"""A chain submitted to Vertex AI Pipelines: one run, or a schedule of runs.

:func:`submit_chain` hands a compiled pipeline (the IR YAML of
:func:`launchers.chain.compile.compile_chain`) to ``aiplatform.PipelineJob`` with the chain's
Vertex settings (``gcp:``): pipeline root, service account, VPC network, CMEK key and labels;
the run's parameter values are the chain's (defaults, or ``--param`` values). A chain with a
``schedule:`` becomes a Vertex pipeline schedule (``PipelineJobSchedule``) unless one run is
asked for.

Waiting is bounded and backs off (:func:`launchers.polling.poll`); only
``PIPELINE_STATE_SUCCEEDED`` counts as success, every other terminal state raises its own
error (a :class:`launchers.polling.CloudJobError`, with the CLI's exit code) naming the run,
its console page and Vertex's error message. A run that outlives the timeout is left running
and the error says so.

The code uses only what ``google-cloud-aiplatform`` 1.x and 2.x share.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import zoneinfo
from collections.abc import Callable
from typing import Any, Literal

from beam_pipelines.exit_codes import ExitCode
from launchers.chain.schedule import Schedule
from launchers.chain.spec import ChainSpec, GcpSettings
from launchers.polling import Backoff, CloudJobError, poll
from transforms.core.config import SpecError

_LOG = logging.getLogger(__name__)

SUCCEEDED = "PIPELINE_STATE_SUCCEEDED"
FAILED = "PIPELINE_STATE_FAILED"
CANCELLED = "PIPELINE_STATE_CANCELLED"
PAUSED = "PIPELINE_STATE_PAUSED"
# The states a run stays in, as the SDK's own wait takes them (CANCELLING is on its way).
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, PAUSED)
# A pipeline runs for minutes to hours: poll gently.
PIPELINE_BACKOFF = Backoff(initial=10.0, factor=1.5, maximum=120.0)
# The label that names the chain on every run and schedule.
CHAIN_LABEL = "beamforge-chain"


class PipelineRunError(CloudJobError):
    """A Vertex AI pipeline run did not succeed (attributes as :class:`CloudJobError`).

    ``job_id`` is the run's resource name; ``detail`` holds Vertex's error message.
    """

    service = "Vertex AI Pipelines"


class PipelineRunFailedError(PipelineRunError):
    exit_code = ExitCode.FAILED
    what = "failed"


class PipelineRunCancelledError(PipelineRunError):
    exit_code = ExitCode.STOPPED
    what = "was cancelled"


class PipelineRunPausedError(PipelineRunError):
    exit_code = ExitCode.STOPPED
    what = "was paused"


class PipelineRunTimeoutError(PipelineRunError):
    exit_code = ExitCode.TIMED_OUT
    what = "did not finish in time"


_ERRORS: dict[str, type[PipelineRunError]] = {
    FAILED: PipelineRunFailedError,
    CANCELLED: PipelineRunCancelledError,
    PAUSED: PipelineRunPausedError,
}


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """What :func:`submit_chain` created.

    Attributes:
        kind: ``run`` (one pipeline run) or ``schedule``.
        name: The run's or schedule's resource name.
        url: Its console page.
        state: The run's last state seen (``PIPELINE_STATE_SUCCEEDED`` after a wait), or the
            schedule's (``ACTIVE``).
    """

    kind: Literal["run", "schedule"]
    name: str
    url: str
    state: str


def run_console_url(project: str, region: str, job_id: str) -> str:
    """The console page of a pipeline run."""
    return (
        f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/runs/"
        f"{job_id}?project={project}"
    )


def schedule_console_url(project: str, region: str, schedule_id: str) -> str:
    """The console page of a pipeline schedule."""
    return (
        f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/schedules/"
        f"{schedule_id}?project={project}"
    )


def _url_of(name: str, page: Callable[[str, str, str], str]) -> str:
    parts = name.split("/")
    # projects/P/locations/R/KIND/ID
    return page(parts[1], parts[3], parts[-1]) if len(parts) == 6 else name


def chain_labels(spec: ChainSpec) -> dict[str, str]:
    """The labels of the chain's runs and schedules: ``gcp.labels`` and the chain's name."""
    assert spec.gcp is not None
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in spec.name.lower())[:63]
    return {**spec.gcp.labels, CHAIN_LABEL: name}


def schedule_cron(schedule: Schedule) -> str:
    """The schedule's cron as Vertex reads it, its time zone in front (``TZ=Europe/Paris ...``)."""
    return f"TZ={schedule.timezone} {schedule.cron}"


def schedule_start_time(schedule: Schedule) -> str | None:
    """When the schedule may first fire: midnight of ``start`` in its time zone, as RFC 3339 UTC."""
    if schedule.start is None:
        return None
    day = dt.date.fromisoformat(schedule.start)
    local = dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(schedule.timezone))
    return local.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _init(gcp: GcpSettings, credentials: Any) -> None:
    from launchers import vertex

    vertex.init(
        vertex.VertexSettings(
            project=gcp.project,
            region=gcp.region,
            staging_bucket=gcp.staging_bucket,
            service_account=gcp.service_account,
            api_endpoint=gcp.api_endpoint,
        ),
        credentials=credentials,
    )


def submit_chain(
    spec: ChainSpec,
    *,
    template_path: str,
    wait: bool = False,
    timeout: float | None = None,
    once: bool = False,
    enable_caching: bool | None = None,
    credentials: Any = None,
    on_state: Callable[[str], None] | None = None,
    backoff: Backoff = PIPELINE_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SubmitResult:
    """Submits the compiled chain to Vertex AI Pipelines: a run, or a schedule of runs.

    Args:
        spec: The chain, with its ``gcp`` section and parameter values.
        template_path: The compiled pipeline (IR YAML; a local path, ``gs://`` or an
            Artifact Registry URL).
        wait: Wait for the run to end (not for a schedule).
        timeout: Give up waiting after this many seconds (None: wait as long as it takes);
            the run is left running.
        once: Submit one run even if the chain has a ``schedule:``.
        enable_caching: Turn Vertex's step cache on or off for every task; None keeps what
            the compiled pipeline says for each.
        credentials: Google credentials (default: the environment's; anonymous for an
            ``http://`` ``api_endpoint``).
        on_state: Called with each new state of the run while waiting.
        backoff: Delays between polls.
        clock: Monotonic clock, in seconds.
        sleep: Sleeps for the given seconds.

    Returns:
        The run or schedule created.

    Raises:
        SpecError: if the chain has no ``gcp`` section, or ``wait`` is asked of a schedule.
        PipelineRunFailedError, PipelineRunCancelledError, PipelineRunPausedError: for those
            terminal states of a waited-for run.
        PipelineRunTimeoutError: if ``timeout`` passed first.
    """
    from google.cloud import aiplatform

    if spec.gcp is None:
        raise SpecError(
            "gcp", "submitting to Vertex AI Pipelines needs a gcp section", source=spec.origin
        )
    schedule = None if once else spec.schedule
    if schedule is not None and wait:
        raise SpecError(
            "schedule",
            "a chain with a schedule is submitted as a schedule, which cannot be waited for; "
            "submit one run (--once) to wait for it",
            source=spec.origin,
        )
    gcp = spec.gcp
    _init(gcp, credentials)
    job = aiplatform.PipelineJob(
        display_name=spec.name,
        template_path=template_path,
        pipeline_root=gcp.root(),
        parameter_values=dict(spec.values),
        enable_caching=enable_caching,
        encryption_spec_key_name=gcp.kms_key,
        labels=chain_labels(spec),
        credentials=credentials,
        project=gcp.project,
        location=gcp.region,
    )
    if schedule is not None:
        created = aiplatform.PipelineJobSchedule(
            pipeline_job=job,
            display_name=spec.name,
            credentials=credentials,
            project=gcp.project,
            location=gcp.region,
        )
        created.create(
            cron=schedule_cron(schedule),
            start_time=schedule_start_time(schedule),
            max_concurrent_run_count=schedule.max_concurrent_runs,
            service_account=gcp.service_account,
            network=gcp.network,
        )
        resource = created.gca_resource
        url = _url_of(resource.name, schedule_console_url)
        _LOG.info("created Vertex AI pipeline schedule %s: %s", resource.name, url)
        return SubmitResult("schedule", str(resource.name), url, resource.state.name)
    job.submit(service_account=gcp.service_account, network=gcp.network)
    name = str(job.resource_name)
    url = _url_of(name, run_console_url)
    _LOG.info("submitted Vertex AI pipeline run %s: %s", name, url)
    state = job.gca_resource.state.name
    if wait:
        state = wait_for_pipeline_job(
            name,
            timeout=timeout,
            backoff=backoff,
            clock=clock,
            sleep=sleep,
            on_state=on_state,
            credentials=credentials,
        )
    return SubmitResult("run", name, url, state)


def wait_for_pipeline_job(
    job_name: str,
    *,
    timeout: float | None = None,
    backoff: Backoff = PIPELINE_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_state: Callable[[str], None] | None = None,
    credentials: Any = None,
) -> str:
    """Polls a pipeline run until it ends; returns once it has SUCCEEDED.

    Args:
        job_name: ``projects/.../locations/.../pipelineJobs/ID``.
        timeout: Give up after this many seconds (None: wait as long as it takes); the run
            is left running.
        backoff: Delays between polls.
        clock: Monotonic clock, in seconds.
        sleep: Sleeps for the given seconds.
        on_state: Called with each new state as it is seen.
        credentials: Google credentials (default: those ``aiplatform.init`` was given).

    Returns:
        The final state (always ``PIPELINE_STATE_SUCCEEDED``).

    Raises:
        PipelineRunFailedError, PipelineRunCancelledError, PipelineRunPausedError: for those
            terminal states, with Vertex's error message.
        PipelineRunTimeoutError: if ``timeout`` passed first.
    """
    from google.cloud import aiplatform

    url = _url_of(job_name, run_console_url)
    seen: str | None = None

    def probe() -> Any:
        return aiplatform.PipelineJob.get(job_name, credentials=credentials).gca_resource

    def done(resource: Any) -> bool:
        nonlocal seen
        state = str(resource.state.name)
        if state != seen:
            seen = state
            _LOG.info("Vertex AI pipeline run %s is %s", job_name, state)
            if on_state is not None:
                on_state(state)
        if state == SUCCEEDED:
            return True
        if state in TERMINAL:
            raise _ERRORS[state](job_name, state, url, str(resource.error.message))
        return False

    def timed_out(resource: Any) -> PipelineRunTimeoutError:
        state = str(resource.state.name)
        return PipelineRunTimeoutError(
            job_name, state, url, f"still {state} after {timeout:g} s; it goes on running"
        )

    _LOG.info("waiting for Vertex AI pipeline run %s: %s", job_name, url)
    resource = poll(
        probe, done, timed_out=timed_out, timeout=timeout, backoff=backoff, clock=clock, sleep=sleep
    )
    return str(resource.state.name)


__all__ = [
    "CANCELLED",
    "CHAIN_LABEL",
    "FAILED",
    "PAUSED",
    "PIPELINE_BACKOFF",
    "SUCCEEDED",
    "TERMINAL",
    "PipelineRunCancelledError",
    "PipelineRunError",
    "PipelineRunFailedError",
    "PipelineRunPausedError",
    "PipelineRunTimeoutError",
    "SubmitResult",
    "chain_labels",
    "run_console_url",
    "schedule_console_url",
    "schedule_cron",
    "schedule_start_time",
    "submit_chain",
    "wait_for_pipeline_job",
]
