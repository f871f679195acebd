"""Vertex AI training, upload and deployment through the real SDK against a fake REST API.

``aiplatform.init(api_endpoint="http://127.0.0.1:P", api_transport="rest")`` sends every SDK
call to :mod:`tests.vertex_fake`, which records the request bodies.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from launchers import vertex
from launchers.polling import Backoff
from tests import vertex_fake
from tests.vertex_fake import PARENT, PROJECT, REGION, FakeVertex

TINY = Backoff(initial=0.001, factor=2.0, maximum=0.004)


@pytest.fixture()
def fake() -> Iterator[FakeVertex]:
    for server in vertex_fake.serve():
        vertex.init(
            vertex.VertexSettings(
                project=PROJECT,
                region=REGION,
                staging_bucket="gs://stage-bucket/beamforge",
                api_endpoint=server.endpoint,
            )
        )
        yield server


def _submit(fake: FakeVertex) -> str:
    specs = vertex.worker_pool_specs(
        image_uri="us-docker.pkg.dev/p/r/trainer:1",
        command=["python", "-m", "trainer.task"],
        args=["--model", "logistic"],
        env=vertex.training_env(
            training="gs://b/ds/train/part-*.parquet",
            validation="gs://b/ds/eval/part-*.parquet",
            data_format="parquet",
        ),
        machine_type="n1-standard-8",
    )
    job = vertex.submit_custom_job(
        display_name="taxi-train",
        specs=specs,
        base_output_dir="gs://stage-bucket/beamforge/taxi/train/1",
        service_account="trainer@p.iam.gserviceaccount.com",
        labels={"beamforge-chain": "taxi"},
    )
    return str(job.resource_name)


def test_custom_job_request_carries_container_env_and_output_dir(fake: FakeVertex) -> None:
    fake.job_states = ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    name = _submit(fake)
    assert vertex.wait_for_custom_job(name, backoff=TINY) == vertex.SUCCEEDED
    (body,) = fake.calls("POST", f"{PARENT}/customJobs")
    assert body == {
        "displayName": "taxi-train",
        "jobSpec": {
            "workerPoolSpecs": [
                {
                    "machineSpec": {"machineType": "n1-standard-8"},
                    "replicaCount": "1",
                    "containerSpec": {
                        "imageUri": "us-docker.pkg.dev/p/r/trainer:1",
                        "command": ["python", "-m", "trainer.task"],
                        "args": ["--model", "logistic"],
                        "env": [
                            {"name": "AIP_DATA_FORMAT", "value": "parquet"},
                            {
                                "name": "AIP_TRAINING_DATA_URI",
                                "value": "gs://b/ds/train/part-*.parquet",
                            },
                            {
                                "name": "AIP_VALIDATION_DATA_URI",
                                "value": "gs://b/ds/eval/part-*.parquet",
                            },
                        ],
                    },
                }
            ],
            "baseOutputDirectory": {"outputUriPrefix": "gs://stage-bucket/beamforge/taxi/train/1"},
            "serviceAccount": "trainer@p.iam.gserviceaccount.com",
        },
        "labels": {"beamforge-chain": "taxi"},
    }
    # Polled until SUCCEEDED: queued, running, succeeded.
    assert len(fake.calls("GET", name)) >= 3


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (vertex.FAILED, vertex.VertexJobFailedError),
        (vertex.CANCELLED, vertex.VertexJobCancelledError),
        (vertex.EXPIRED, vertex.VertexJobExpiredError),
        (vertex.PARTIALLY_SUCCEEDED, vertex.VertexJobPartiallySucceededError),
    ],
)
def test_every_other_terminal_state_raises_its_error(
    fake: FakeVertex, state: str, error: type[vertex.VertexJobError]
) -> None:
    fake.job_states = ["JOB_STATE_RUNNING", state]
    name = _submit(fake)
    with pytest.raises(error) as info:
        vertex.wait_for_custom_job(name, backoff=TINY)
    job_id = name.rsplit("/", 1)[1]
    assert info.value.state == state
    assert info.value.url == (
        f"https://console.cloud.google.com/vertex-ai/training/locations/{REGION}/"
        f"{job_id}?project={PROJECT}"
    )
    assert str(info.value).startswith(f"Vertex AI job {name} {error.what} ({state})")
    assert type(info.value) is error


def test_timeout_cancels_the_job(fake: FakeVertex) -> None:
    fake.job_states = ["JOB_STATE_RUNNING"]
    name = _submit(fake)
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    with pytest.raises(vertex.VertexJobTimeoutError) as info:
        vertex.wait_for_custom_job(
            name,
            timeout=30.0,
            backoff=Backoff(initial=10.0, factor=2.0, maximum=60.0),
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert slept == [10.0, 20.0]
    assert info.value.state == "JOB_STATE_RUNNING"
    assert "still JOB_STATE_RUNNING after 30 s" in str(info.value)
    assert fake.calls("POST", f"{name}:cancel") == [{}]


def test_upload_sends_the_serving_container(fake: FakeVertex) -> None:
    name = vertex.upload_model(
        display_name="taxi-tips",
        artifact_uri="gs://stage-bucket/taxi/train/1/model",
        container=vertex.ServingContainer(
            image_uri="us-docker.pkg.dev/p/r/predictor:1",
            predict_route="/v1/predict",
            health_route="/v1/health",
            port=8081,
            env={"PREDICTOR_MODULE": "examples.chicago_taxi.predictor"},
        ),
        labels={"beamforge-chain": "taxi"},
    )
    (body,) = fake.calls("POST", f"{PARENT}/models:upload")
    assert name in fake.models
    assert body["model"] == {
        "displayName": "taxi-tips",
        "artifactUri": "gs://stage-bucket/taxi/train/1/model",
        "containerSpec": {
            "imageUri": "us-docker.pkg.dev/p/r/predictor:1",
            "predictRoute": "/v1/predict",
            "healthRoute": "/v1/health",
            "ports": [{"containerPort": 8081}],
            "env": [{"name": "PREDICTOR_MODULE", "value": "examples.chicago_taxi.predictor"}],
        },
        "labels": {"beamforge-chain": "taxi"},
        "versionAliases": ["default"],
    }


def _upload(n: int) -> str:
    return vertex.upload_model(
        display_name=f"m{n}",
        artifact_uri=f"gs://stage-bucket/m{n}",
        container=vertex.ServingContainer(image_uri="predictor:1"),
    )


def test_deploy_creates_then_reuses_the_endpoint_and_undeploys_the_replaced_model(
    fake: FakeVertex,
) -> None:
    first = vertex.deploy_model(
        model_name=_upload(1), endpoint_display_name="taxi", machine_type="n1-standard-4"
    )
    assert first.created_endpoint
    assert first.undeployed == []
    assert first.traffic_split == {first.deployed_model_id: 100}
    (created,) = fake.calls("POST", f"{PARENT}/endpoints")
    assert created["displayName"] == "taxi"
    deploy = fake.calls("POST", ":deployModel")[0]
    assert deploy["trafficSplit"] == {"0": 100}
    assert deploy["deployedModel"]["model"] == f"{PARENT}/models/1001"
    assert deploy["deployedModel"]["dedicatedResources"] == {
        "machineSpec": {"machineType": "n1-standard-4"},
        "minReplicaCount": 1,
        "maxReplicaCount": 1,
    }

    second = vertex.deploy_model(model_name=_upload(2), endpoint_display_name="taxi")
    assert not second.created_endpoint
    assert second.endpoint == first.endpoint
    assert len(fake.calls("POST", f"{PARENT}/endpoints")) == 1
    assert second.undeployed == [first.deployed_model_id]
    (undeploy,) = fake.calls("POST", ":undeployModel")
    assert undeploy["deployedModelId"] == first.deployed_model_id
    assert second.traffic_split == {second.deployed_model_id: 100}
    assert [m["id"] for m in fake.endpoints[first.endpoint]["deployedModels"]] == [
        second.deployed_model_id
    ]


def test_canary_keeps_the_old_model_serving(fake: FakeVertex) -> None:
    first = vertex.deploy_model(model_name=_upload(1), endpoint_display_name="taxi")
    canary = vertex.deploy_model(
        model_name=_upload(2), endpoint_display_name="taxi", traffic_percentage=20
    )
    deploy = fake.calls("POST", ":deployModel")[1]
    assert deploy["trafficSplit"] == {"0": 20, first.deployed_model_id: 80}
    assert canary.undeployed == []
    assert canary.traffic_split == {first.deployed_model_id: 80, canary.deployed_model_id: 20}
    assert fake.calls("POST", ":undeployModel") == []


def test_traffic_percentage_out_of_range_is_refused(fake: FakeVertex) -> None:
    with pytest.raises(ValueError, match=r"traffic_percentage must be in 1\.\.100, got 0"):
        vertex.deploy_model(model_name="m", endpoint_display_name="e", traffic_percentage=0)
    assert fake.requests == []
