"""Vertex AI job control: custom training, model upload, endpoint deployment.

Thin typed functions over ``google-cloud-aiplatform``. Training runs as a ``CustomJob`` in a
prebuilt or custom container that receives the dataset the way Vertex passes managed
datasets (``AIP_TRAINING_DATA_URI``, ``AIP_VALIDATION_DATA_URI``, ``AIP_TEST_DATA_URI``,
``AIP_DATA_FORMAT``; ``AIP_MODEL_DIR`` comes from the job's base output directory).
A canary's figures (answers by response code, latency distribution) come from Cloud
Monitoring (:func:`deployed_model_figures`); :func:`set_traffic_split` and :func:`undeploy`
then promote or roll it back. Waiting is bounded and backs off (:func:`launchers.polling.poll`); only
``JOB_STATE_SUCCEEDED`` counts as success, every other terminal state raises its own error
(a :class:`launchers.polling.CloudJobError`) naming the job and its console page.

:func:`init` points the SDK at a project; with an ``http://`` ``api_endpoint`` (a local fake
server) it uses the REST transport and anonymous credentials.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.polling import Backoff, CloudJobError, poll

_LOG = logging.getLogger(__name__)

SUCCEEDED = "JOB_STATE_SUCCEEDED"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
EXPIRED = "JOB_STATE_EXPIRED"
PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, EXPIRED, PARTIALLY_SUCCEEDED)
# Training takes minutes to hours: poll gently.
TRAINING_BACKOFF = Backoff(initial=10.0, factor=1.5, maximum=120.0)


@dataclasses.dataclass(frozen=True)
class VertexSettings:
    """Where Vertex AI calls go.

    Attributes:
        project: Project id.
        region: Vertex AI region, e.g. ``us-central1``.
        staging_bucket: ``gs://`` bucket for job outputs and staging.
        service_account: Service account the training job and the endpoint run as.
        api_endpoint: Override of the API endpoint (``http://`` for a local fake server).
    """

    project: str
    region: str
    staging_bucket: str | None = None
    service_account: str | None = None
    api_endpoint: str | None = None


def init(settings: VertexSettings, *, credentials: Any = None) -> None:
    """Initialises the SDK for ``settings`` (``aiplatform.init``)."""
    from google.cloud import aiplatform

    kwargs: dict[str, Any] = {}
    if settings.api_endpoint:
        kwargs["api_endpoint"] = settings.api_endpoint
        if settings.api_endpoint.startswith("http://"):
            # A plain-http endpoint is a local fake: REST (gRPC always uses TLS) and nothing
            # to authenticate against.
            kwargs["api_transport"] = "rest"
            if credentials is None:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()
    aiplatform.init(
        project=settings.project,
        location=settings.region,
        staging_bucket=settings.staging_bucket,
        credentials=credentials,
        **kwargs,
    )


def console_url(project: str, region: str, kind: str, resource_id: str) -> str:
    """The Cloud console page of a Vertex AI resource (``kind``: training, models, endpoints)."""
    return (
        f"https://console.cloud.google.com/vertex-ai/{kind}/locations/{region}/"
        f"{resource_id}?project={project}"
    )


class VertexJobError(CloudJobError):
    """A Vertex AI training job did not succeed (attributes as :class:`CloudJobError`).

    Attributes:
        job: The job's resource name (its ``job_id``).
    """

    service = "Vertex AI"

    @property
    def job(self) -> str:
        return self.job_id


class VertexJobFailedError(VertexJobError):
    what = "failed"


class VertexJobCancelledError(VertexJobError):
    exit_code = ExitCode.STOPPED
    what = "was cancelled"


class VertexJobExpiredError(VertexJobError):
    what = "expired"


class VertexJobPartiallySucceededError(VertexJobError):
    what = "only partially succeeded"


class VertexJobTimeoutError(VertexJobError):
    exit_code = ExitCode.TIMED_OUT
    what = "did not finish in time"


_ERRORS: dict[str, type[VertexJobError]] = {
    FAILED: VertexJobFailedError,
    CANCELLED: VertexJobCancelledError,
    EXPIRED: VertexJobExpiredError,
    PARTIALLY_SUCCEEDED: VertexJobPartiallySucceededError,
}


def training_env(
    *,
    training: str,
    validation: str | None = None,
    test: str | None = None,
    data_format: str,
    model_dir: str | None = None,
) -> dict[str, str]:
    """The ``AIP_*`` variables Vertex gives a training container for a dataset.

    Args:
        training: URI (glob) of the training files.
        validation: URI (glob) of the validation files.
        test: URI (glob) of the test files.
        data_format: ``AIP_DATA_FORMAT`` (``parquet``, ``jsonl``, ``csv``, ``tf-record``...).
        model_dir: ``AIP_MODEL_DIR``; Vertex sets it itself from the base output directory,
            a local run needs it given.
    """
    env = {"AIP_TRAINING_DATA_URI": training, "AIP_DATA_FORMAT": data_format}
    if validation:
        env["AIP_VALIDATION_DATA_URI"] = validation
    if test:
        env["AIP_TEST_DATA_URI"] = test
    if model_dir:
        env["AIP_MODEL_DIR"] = model_dir
    return env


def worker_pool_specs(
    *,
    image_uri: str,
    command: Sequence[str] = (),
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    machine_type: str = "n1-standard-4",
    replica_count: int = 1,
) -> list[dict[str, Any]]:
    """A single-pool ``workerPoolSpecs`` for a container (prebuilt or custom)."""
    container: dict[str, Any] = {"image_uri": image_uri}
    if command:
        container["command"] = list(command)
    if args:
        container["args"] = list(args)
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return [
        {
            "machine_spec": {"machine_type": machine_type},
            "replica_count": replica_count,
            "container_spec": container,
        }
    ]


def submit_custom_job(
    *,
    display_name: str,
    specs: list[dict[str, Any]],
    base_output_dir: str,
    service_account: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Any:
    """Creates a ``CustomJob`` and returns it without waiting (``CustomJob.submit``)."""
    from google.cloud import aiplatform

    job = aiplatform.CustomJob(
        display_name=display_name,
        worker_pool_specs=specs,
        base_output_dir=base_output_dir,
        labels=dict(labels or {}),
    )
    job.submit(service_account=service_account)
    _LOG.info("submitted Vertex AI job %s (%s)", job.resource_name, display_name)
    return job


def job_state(job_name: str) -> str:
    """A custom job's current state name, e.g. ``JOB_STATE_RUNNING`` (one GET)."""
    from google.cloud import aiplatform

    job = aiplatform.CustomJob.get(job_name)
    return str(job.state.name)


def wait_for_custom_job(
    job_name: str,
    *,
    timeout: float | None = None,
    backoff: Backoff = TRAINING_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cancel_on_timeout: bool = True,
) -> str:
    """Polls a custom job until it ends; returns once it has SUCCEEDED.

    Args:
        job_name: ``projects/.../locations/.../customJobs/ID``.
        timeout: Give up after this many seconds (None: wait as long as it takes).
        backoff: Delays between polls.
        clock: Monotonic clock, in seconds.
        sleep: Sleeps for the given seconds.
        cancel_on_timeout: Ask Vertex to cancel the job when giving up.

    Returns:
        The final state (always ``JOB_STATE_SUCCEEDED``).

    Raises:
        VertexJobFailedError, VertexJobCancelledError, VertexJobExpiredError,
        VertexJobPartiallySucceededError: for those terminal states.
        VertexJobTimeoutError: if ``timeout`` passed first.
    """
    parts = job_name.split("/")
    url = console_url(parts[1], parts[3], "training", parts[-1]) if len(parts) >= 6 else job_name
    seen: str | None = None

    def done(state: str) -> bool:
        nonlocal seen
        if state != seen:
            seen = state
            _LOG.info("Vertex AI job %s is %s", job_name, state)
        if state == SUCCEEDED:
            return True
        if state in TERMINAL:
            raise _ERRORS[state](job_name, state, url)
        return False

    def timed_out(state: str) -> VertexJobTimeoutError:
        if cancel_on_timeout:
            from google.cloud import aiplatform

            aiplatform.CustomJob.get(job_name).cancel()
        return VertexJobTimeoutError(job_name, state, url, f"still {state} after {timeout:g} s")

    return poll(
        lambda: job_state(job_name),
        done,
        timed_out=timed_out,
        timeout=timeout,
        backoff=backoff,
        clock=clock,
        sleep=sleep,
    )


@dataclasses.dataclass(frozen=True)
class ServingContainer:
    """How Vertex runs the model server.

    Attributes:
        image_uri: The serving image (a prebuilt one, or a CPR image with the predictor).
        predict_route: ``AIP_PREDICT_ROUTE`` inside the container.
        health_route: ``AIP_HEALTH_ROUTE`` inside the container.
        port: ``AIP_HTTP_PORT`` inside the container.
        env: More environment for the container.
    """

    image_uri: str
    predict_route: str = "/predict"
    health_route: str = "/health"
    port: int = 8080
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


def upload_model(
    *,
    display_name: str,
    artifact_uri: str,
    container: ServingContainer,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Registers the model directory as a Vertex AI Model; returns its resource name."""
    from google.cloud import aiplatform

    model = aiplatform.Model.upload(
        display_name=display_name,
        artifact_uri=artifact_uri,
        serving_container_image_uri=container.image_uri,
        serving_container_predict_route=container.predict_route,
        serving_container_health_route=container.health_route,
        serving_container_ports=[container.port],
        serving_container_environment_variables=dict(container.env),
        labels=dict(labels or {}),
        sync=True,
    )
    _LOG.info("uploaded model %s from %s", model.resource_name, artifact_uri)
    return str(model.resource_name)


def endpoint_for(display_name: str) -> tuple[Any, bool]:
    """The endpoint with this display name, created if there is none; and whether it was new."""
    from google.cloud import aiplatform

    found = aiplatform.Endpoint.list(filter=f'display_name="{display_name}"')
    if found:
        return found[0], False
    return aiplatform.Endpoint.create(display_name=display_name, sync=True), True


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The result of a deployment.

    Attributes:
        endpoint: The endpoint's resource name.
        deployed_model_id: Id of the new deployed model on it.
        traffic_split: The endpoint's traffic split after the deployment.
        undeployed: Ids of the deployed models it replaced and removed.
        created_endpoint: Whether the endpoint was created for it.
    """

    endpoint: str
    deployed_model_id: str
    traffic_split: dict[str, int]
    undeployed: list[str]
    created_endpoint: bool


def deploy_model(
    *,
    model_name: str,
    endpoint_display_name: str,
    machine_type: str = "n1-standard-2",
    min_replica_count: int = 1,
    max_replica_count: int = 1,
    traffic_percentage: int = 100,
    undeploy_replaced: bool = True,
    service_account: str | None = None,
) -> Deployment:
    """Deploys a model to an endpoint (created or reused), then retires what it replaces.

    The new model gets ``traffic_percentage`` of the traffic (the models already there
    share the rest, in proportion). Once it is deployed and serving (the deploy operation
    finished and the endpoint lists it), and only if it takes all the traffic, the models
    it replaces are undeployed; with less than 100 % they keep serving (a canary).

    Raises:
        RuntimeError: if the endpoint does not list the new deployed model afterwards.
    """
    from google.cloud import aiplatform

    if not 0 < traffic_percentage <= 100:
        raise ValueError(f"traffic_percentage must be in 1..100, got {traffic_percentage}")
    endpoint, created = endpoint_for(endpoint_display_name)
    before = {m.id for m in endpoint.list_models()}
    model = aiplatform.Model(model_name)
    endpoint.deploy(
        model,
        traffic_percentage=traffic_percentage,
        machine_type=machine_type,
        min_replica_count=min_replica_count,
        max_replica_count=max_replica_count,
        service_account=service_account,
        sync=True,
    )
    endpoint = aiplatform.Endpoint(endpoint.resource_name)
    new = [m.id for m in endpoint.list_models() if m.id not in before]
    if len(new) != 1:
        raise RuntimeError(
            f"endpoint {endpoint.resource_name} does not list the model {model_name} "
            f"just deployed (deployed models: {[m.id for m in endpoint.list_models()]})"
        )
    deployed_id = new[0]
    undeployed: list[str] = []
    if undeploy_replaced and traffic_percentage == 100:
        for old in sorted(before):
            endpoint.undeploy(old, sync=True)
            undeployed.append(old)
            _LOG.info("undeployed %s from %s", old, endpoint.resource_name)
        endpoint = aiplatform.Endpoint(endpoint.resource_name)
    _LOG.info("deployed %s to %s as %s", model_name, endpoint.resource_name, deployed_id)
    return Deployment(
        endpoint=str(endpoint.resource_name),
        deployed_model_id=str(deployed_id),
        traffic_split={k: int(v) for k, v in dict(endpoint.traffic_split).items()},
        undeployed=undeployed,
        created_endpoint=created,
    )


def endpoint_traffic(display_name: str) -> tuple[str, dict[str, int]] | None:
    """The endpoint with this display name and its traffic split; None if there is none."""
    from google.cloud import aiplatform

    found = aiplatform.Endpoint.list(filter=f'display_name="{display_name}"')
    if not found:
        return None
    endpoint = found[0]
    return str(endpoint.resource_name), {k: int(v) for k, v in endpoint.traffic_split.items()}


def set_traffic_split(endpoint_name: str, split: Mapping[str, int]) -> dict[str, int]:
    """Sets an endpoint's traffic split (``Endpoint.update``: PATCH with updateMask).

    A deployed model left out of ``split`` gets 0 %; the percentages sum to 100.

    Returns:
        The endpoint's split afterwards.
    """
    from google.cloud import aiplatform

    if sum(split.values()) != 100:
        raise ValueError(f"a traffic split sums to 100, got {dict(split)}")
    endpoint = aiplatform.Endpoint(endpoint_name)
    full = {m.id: 0 for m in endpoint.list_models()} | dict(split)
    endpoint = endpoint.update(traffic_split=full)
    _LOG.info("traffic split of %s is now %s", endpoint_name, full)
    return {k: int(v) for k, v in endpoint.traffic_split.items()}


def undeploy(endpoint_name: str, deployed_model_id: str) -> None:
    """Undeploys a deployed model that takes no traffic any more."""
    from google.cloud import aiplatform

    aiplatform.Endpoint(endpoint_name).undeploy(deployed_model_id, sync=True)
    _LOG.info("undeployed %s from %s", deployed_model_id, endpoint_name)


# Cloud Monitoring's figures of a deployed model (Vertex AI writes them per minute).
RESPONSE_COUNT = "aiplatform.googleapis.com/prediction/online/response_count"
PREDICTION_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"


def monitoring_client(api_endpoint: str | None = None, *, credentials: Any = None) -> Any:
    """A Cloud Monitoring ``MetricServiceClient``.

    The library speaks gRPC only (it has no REST transport): an ``http://host:port``
    endpoint (a local fake) gets a plaintext channel, as gRPC always uses TLS otherwise.
    """
    from google.cloud import monitoring_v3

    if api_endpoint and api_endpoint.startswith("http://"):
        import grpc
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.monitoring_v3.services.metric_service.transports.grpc import (
            MetricServiceGrpcTransport,
        )

        channel = grpc.insecure_channel(api_endpoint.removeprefix("http://"))
        transport = MetricServiceGrpcTransport(channel=channel, credentials=AnonymousCredentials())
        return monitoring_v3.MetricServiceClient(transport=transport)
    options = {"api_endpoint": api_endpoint} if api_endpoint else None
    return monitoring_v3.MetricServiceClient(credentials=credentials, client_options=options)


def deployed_model_figures(
    client: Any,
    *,
    project: str,
    endpoint_id: str,
    deployed_model_id: str,
    start: dt.datetime,
    end: dt.datetime,
) -> Any:
    """A deployed model's answers between ``start`` and ``end``, from Cloud Monitoring.

    Requests and errors come from ``response_count`` by ``response_code`` (5xx are errors);
    the p99 latency from the ``prediction_latencies`` distributions (milliseconds; the
    ``total`` latency type where the series are split by type), merged and read as
    Prometheus' ``histogram_quantile`` reads a histogram.

    Returns:
        A :class:`launchers.serving.metrics.CanaryFigures`.
    """
    from google.cloud import monitoring_v3

    from launchers.serving.metrics import CanaryFigures, quantile

    def series(metric: str) -> list[Any]:
        where = (
            f'metric.type = "{metric}" AND resource.labels.endpoint_id = "{endpoint_id}" '
            f'AND metric.labels.deployed_model_id = "{deployed_model_id}"'
        )
        return list(
            client.list_time_series(
                request={
                    "name": f"projects/{project}",
                    "filter": where,
                    "interval": {"start_time": start, "end_time": end},
                    "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
                }
            )
        )

    requests = errors = 0
    for answers in series(RESPONSE_COUNT):
        count = sum(int(p.value.int64_value) for p in answers.points)
        requests += count
        if str(answers.metric.labels.get("response_code", "")).startswith("5"):
            errors += count
    latencies = series(PREDICTION_LATENCIES)
    kinds = {str(s.metric.labels.get("latency_type", "")) for s in latencies}
    if len(kinds) > 1:
        wanted = "total" if "total" in kinds else "model"
        latencies = [s for s in latencies if s.metric.labels.get("latency_type") == wanted]
    merged: dict[float, int] = {}
    for one in latencies:
        for point in one.points:
            for bound, count in _distribution_buckets(point.value.distribution_value):
                merged[bound] = merged.get(bound, 0) + count
    cumulative, total = [], 0
    for bound in sorted(merged):
        total += merged[bound]
        cumulative.append((bound, total))
    return CanaryFigures(requests=requests, errors=errors, p99_ms=quantile(0.99, cumulative))


def _distribution_buckets(distribution: Any) -> list[tuple[float, int]]:
    """(upper bound, count) of each bucket of a Monitoring distribution value."""
    options = distribution.bucket_options
    counts = [int(c) for c in distribution.bucket_counts]
    # google.api.Distribution is a plain protobuf message here, not a proto-plus one.
    kind = options.WhichOneof("options")
    if kind == "explicit_buckets":
        bounds = list(options.explicit_buckets.bounds)
    elif kind == "exponential_buckets":
        e = options.exponential_buckets
        bounds = [e.scale * e.growth_factor**i for i in range(e.num_finite_buckets + 1)]
    elif kind == "linear_buckets":
        lin = options.linear_buckets
        bounds = [lin.offset + lin.width * i for i in range(lin.num_finite_buckets + 1)]
    else:
        bounds = []
    uppers = [*bounds, math.inf]
    return [(uppers[i], c) for i, c in enumerate(counts[: len(uppers)]) if c]
