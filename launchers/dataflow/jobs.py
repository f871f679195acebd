"""Dataflow job control: launch a Flex Template, wait for a job, cancel or drain it.

Thin typed functions over the Dataflow client library (``google-cloud-dataflow-client``).
Waiting is bounded and backs off exponentially (:func:`launchers.polling.poll`); every
terminal state other than the one asked for raises its own exception (a
:class:`launchers.polling.CloudJobError`) naming the job and its console URL, so a chain
never goes on after a job that merely stopped.

Clients are passed in; :func:`jobs_client` and :func:`templates_client` make them, with an
``api_endpoint`` for a local fake server (plain ``http://`` endpoints get anonymous
credentials and the REST transport).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.dataflow.settings import console_url
from launchers.polling import DEFAULT_BACKOFF, Backoff, CloudJobError, poll

_LOG = logging.getLogger(__name__)

DONE = "JOB_STATE_DONE"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
DRAINED = "JOB_STATE_DRAINED"
UPDATED = "JOB_STATE_UPDATED"
TERMINAL = (DONE, FAILED, CANCELLED, DRAINED, UPDATED)


class JobError(CloudJobError):
    """A Dataflow job did not end as expected (attributes as :class:`CloudJobError`)."""

    service = "Dataflow"


class JobFailedError(JobError):
    exit_code = ExitCode.FAILED
    what = "failed"


class JobCancelledError(JobError):
    exit_code = ExitCode.STOPPED
    what = "was cancelled"


class JobDrainedError(JobError):
    exit_code = ExitCode.DRAINED
    what = "was drained"


class JobUpdatedError(JobError):
    exit_code = ExitCode.UPDATED
    what = "was replaced by an update"


class JobTimeoutError(JobError):
    exit_code = ExitCode.TIMED_OUT
    what = "did not finish in time"


_ERRORS: dict[str, type[JobError]] = {
    FAILED: JobFailedError,
    CANCELLED: JobCancelledError,
    DRAINED: JobDrainedError,
    UPDATED: JobUpdatedError,
    DONE: JobError,
}


@dataclasses.dataclass(frozen=True)
class JobRef:
    """Where a job lives."""

    project: str
    region: str
    job_id: str

    @property
    def console_url(self) -> str:
        return console_url(self.project, self.region, self.job_id)


def _client_args(
    api_endpoint: str | None, credentials: Any, transport: str | None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if api_endpoint:
        kwargs["client_options"] = {"api_endpoint": api_endpoint}
        if api_endpoint.startswith("http://"):
            # A plain-http endpoint is a local fake or emulator: REST (gRPC always uses TLS)
            # and no credentials to look up.
            transport = transport or "rest"
            if credentials is None:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()
    if transport:
        kwargs["transport"] = transport
    if credentials is not None:
        kwargs["credentials"] = credentials
    return kwargs


def jobs_client(
    *, api_endpoint: str | None = None, credentials: Any = None, transport: str | None = None
) -> Any:
    """A ``JobsV1Beta3Client`` (default endpoint and credentials unless given)."""
    from google.cloud import dataflow_v1beta3

    return dataflow_v1beta3.JobsV1Beta3Client(**_client_args(api_endpoint, credentials, transport))


def templates_client(
    *, api_endpoint: str | None = None, credentials: Any = None, transport: str | None = None
) -> Any:
    """A ``FlexTemplatesServiceClient`` (default endpoint and credentials unless given)."""
    from google.cloud import dataflow_v1beta3

    return dataflow_v1beta3.FlexTemplatesServiceClient(
        **_client_args(api_endpoint, credentials, transport)
    )


def state_name(job: Any) -> str:
    """The job's current state as its enum name, e.g. ``JOB_STATE_RUNNING``."""
    from google.cloud import dataflow_v1beta3

    return dataflow_v1beta3.JobState(job.current_state).name


def launch_flex_template(
    client: Any,
    *,
    project: str,
    region: str,
    job_name: str,
    template_path: str,
    parameters: Mapping[str, str],
    environment: Mapping[str, Any] | None = None,
    validate_only: bool = False,
) -> Any:
    """Launches a Flex Template (``projects.locations.flexTemplates.launch``).

    Args:
        client: A ``FlexTemplatesServiceClient``.
        project: Project to run the job in.
        region: Dataflow region.
        job_name: Name of the new job.
        template_path: ``gs://`` path of the template spec JSON.
        parameters: Template parameters (as declared by its metadata).
        environment: ``FlexTemplateRuntimeEnvironment`` fields, e.g. ``temp_location``,
            ``service_account_email``, ``additional_user_labels``.
        validate_only: Only have the service validate the request; no job is created.

    Returns:
        The launched ``Job`` (id, name); for ``validate_only``, an empty job.
    """
    from google.cloud import dataflow_v1beta3

    request = dataflow_v1beta3.LaunchFlexTemplateRequest(
        project_id=project,
        location=region,
        validate_only=validate_only,
        launch_parameter=dataflow_v1beta3.LaunchFlexTemplateParameter(
            job_name=job_name,
            container_spec_gcs_path=template_path,
            parameters=dict(parameters),
            environment=dataflow_v1beta3.FlexTemplateRuntimeEnvironment(**dict(environment or {})),
        ),
    )
    response = client.launch_flex_template(request=request)
    job = response.job
    if validate_only:
        _LOG.info("template %s: launch request for %s is valid", template_path, job_name)
    else:
        _LOG.info(
            "launched %s as job %s: %s",
            job_name,
            job.id,
            console_url(project, region, job.id),
        )
    return job


def get_job(client: Any, ref: JobRef) -> Any:
    """The job's current description (``JOB_VIEW_SUMMARY``)."""
    return client.get_job(
        request={"project_id": ref.project, "location": ref.region, "job_id": ref.job_id}
    )


def wait_for_job(
    client: Any,
    ref: JobRef,
    *,
    timeout: float | None = None,
    expect: str = DONE,
    backoff: Backoff = DEFAULT_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_state: Callable[[str], None] | None = None,
) -> Any:
    """Polls a job until it reaches a terminal state.

    Args:
        client: A ``JobsV1Beta3Client``.
        ref: The job.
        timeout: Give up after this many seconds (None: wait as long as it takes).
        expect: The terminal state that counts as success (DONE; CANCELLED or DRAINED
            after asking for them).
        backoff: Delays between polls.
        clock: Monotonic clock, in seconds.
        sleep: Sleeps for the given seconds.
        on_state: Called with each new state as it is seen.

    Returns:
        The job in the expected state.

    Raises:
        JobFailedError, JobCancelledError, JobDrainedError, JobUpdatedError: if the job
            ended in another terminal state (whichever is not ``expect``).
        JobTimeoutError: if ``timeout`` passed first.
    """
    seen: str | None = None

    def done(job: Any) -> bool:
        nonlocal seen
        state = state_name(job)
        if state != seen:
            seen = state
            _LOG.info("Dataflow job %s is %s", ref.job_id, state)
            if on_state is not None:
                on_state(state)
        if state == expect:
            return True
        if state in TERMINAL:
            raise _ERRORS[state](ref.job_id, state, ref.console_url)
        return False

    def timed_out(job: Any) -> JobTimeoutError:
        state = state_name(job)
        return JobTimeoutError(
            ref.job_id, state, ref.console_url, f"still {state} after {timeout:g} s"
        )

    _LOG.info("waiting for Dataflow job %s: %s", ref.job_id, ref.console_url)
    return poll(
        lambda: get_job(client, ref),
        done,
        timed_out=timed_out,
        timeout=timeout,
        backoff=backoff,
        clock=clock,
        sleep=sleep,
    )


def _request_state(client: Any, ref: JobRef, state: str) -> Any:
    from google.cloud import dataflow_v1beta3

    job = client.update_job(
        request=dataflow_v1beta3.UpdateJobRequest(
            project_id=ref.project,
            location=ref.region,
            job_id=ref.job_id,
            job=dataflow_v1beta3.Job(requested_state=getattr(dataflow_v1beta3.JobState, state)),
        )
    )
    _LOG.info("requested %s for Dataflow job %s: %s", state, ref.job_id, ref.console_url)
    return job


def cancel_job(client: Any, ref: JobRef) -> Any:
    """Asks Dataflow to cancel the job (work in flight is lost); returns the job."""
    return _request_state(client, ref, CANCELLED)


def drain_job(client: Any, ref: JobRef) -> Any:
    """Asks Dataflow to drain the job (streaming: finish buffered work); returns the job."""
    return _request_state(client, ref, "JOB_STATE_DRAINING")
