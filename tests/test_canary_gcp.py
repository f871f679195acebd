"""Canary deployment on the gcp target: the real Vertex SDK against :mod:`tests.vertex_fake`,
the real Cloud Monitoring client against :mod:`tests.monitoring_fake` with scripted figures.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from beam_pipelines.exit_codes import ExitCode
from launchers import chain as chains
from launchers import vertex
from launchers.chain.backends import GcpBackend, StepContext
from launchers.chain.canary import NO_PREVIOUS
from launchers.chain.errors import CanaryRolledBackError
from launchers.chain.spec import CanarySetting, DeployGcp
from tests import monitoring_fake, vertex_fake
from tests.monitoring_fake import PREDICTION_LATENCIES, RESPONSE_COUNT, FakeMonitoring, Reading
from tests.vertex_fake import PARENT, PROJECT, REGION, FakeVertex


@pytest.fixture()
def fake() -> Iterator[FakeVertex]:
    yield from vertex_fake.serve()


@pytest.fixture()
def monitoring() -> Iterator[FakeMonitoring]:
    yield from monitoring_fake.serve()


@pytest.fixture()
def deploy(fake: FakeVertex, monitoring: FakeMonitoring, tmp_path: pathlib.Path) -> Any:
    settings = chains.GcpSettings(
        project=PROJECT,
        region=REGION,
        staging_bucket="gs://bucket/stage",
        api_endpoint=fake.endpoint,
    )
    backend = GcpBackend(settings)

    def run(model: str, canary: dict[str, Any] | None, *, on_step: bool = False) -> dict[str, Any]:
        # The gcp section's canary, or the step's (both targets): the same deployment.
        setting = CanarySetting(**canary) if canary is not None else None
        step = chains.DeployStep(
            name="deploy",
            model="upload",
            canary=setting if on_step else None,
            gcp=DeployGcp(
                endpoint="taxi",
                canary=None if on_step else setting,
                monitoring_api_endpoint=monitoring.endpoint,
            ),
        )
        spec = chains.ChainSpec(name="canary", workdir=str(tmp_path), steps=[step], gcp=settings)
        ctx = StepContext(
            chain=spec,
            target="gcp",
            inputs={"upload": {"model": model, "model_dir": str(tmp_path / "model")}},
            previous_outputs={},
        )
        return backend.deploy(step, ctx)

    return run


def _model(number: int) -> str:
    return vertex.upload_model(
        display_name=f"taxi-{number}",
        artifact_uri=f"gs://bucket/model-{number}",
        container=vertex.ServingContainer(image_uri="predictor:1"),
    )


CANARY = {"share": 10, "min_requests": 100, "max_error_rate": 0.01, "poll_seconds": 0.01}


def _deployed(fake: FakeVertex) -> tuple[str, dict[str, Any]]:
    (name, endpoint), *_ = fake.endpoints.items()
    return name, endpoint


def _calls(fake: FakeVertex, since: int) -> list[tuple[str, str, Any]]:
    """The endpoint calls after the first ``since`` requests, GETs and operations left out."""
    return [
        (method, path.removeprefix("/v1/"), body)
        for method, path, body in fake.requests[since:]
        if method != "GET" and "/endpoints/" in path
    ]


def _filter(metric: str, endpoint_id: str, deployed: str) -> str:
    return (
        f'metric.type = "{metric}" AND resource.labels.endpoint_id = "{endpoint_id}" '
        f'AND metric.labels.deployed_model_id = "{deployed}"'
    )


def test_a_first_canary_deployment_is_a_plain_one(
    deploy: Any, fake: FakeVertex, monitoring: FakeMonitoring
) -> None:
    outputs = deploy(_model(1), CANARY)

    _, endpoint = _deployed(fake)
    (first,) = [m["id"] for m in endpoint["deployedModels"]]
    assert outputs["canary"] == {"decision": "plain", "reason": NO_PREVIOUS}
    assert outputs["traffic_split"] == {first: 100}
    assert fake.calls("POST", ":deployModel")[0]["trafficSplit"] == {"0": 100}
    assert monitoring.requests == []


def test_a_healthy_canary_is_promoted_then_the_old_model_undeployed(
    deploy: Any, fake: FakeVertex, monitoring: FakeMonitoring
) -> None:
    deploy(_model(1), None)
    name, endpoint = _deployed(fake)
    (old,) = [m["id"] for m in endpoint["deployedModels"]]
    new_model = _model(2)
    # The fake numbers deployed models in order: the canary is the next id after the model.
    new = str(int(new_model.rsplit("/", 1)[-1]) + 1)
    monitoring.readings[new] = [
        Reading({"200": 40}),  # not enough requests yet: read again
        Reading({"200": 119, "500": 1, "400": 7}, counts=[0, 100, 27, 0, 0, 0]),
    ]
    since = len(fake.requests)

    outputs = deploy(new_model, CANARY)

    endpoint_id = name.rsplit("/", 1)[-1]
    calls = _calls(fake, since)
    assert [(m, p) for m, p, _ in calls] == [
        ("POST", f"{name}:deployModel"),
        ("PATCH", name),  # Endpoint.update, updateMask=trafficSplit
        ("POST", f"{name}:undeployModel"),
    ]
    assert calls[0][2]["trafficSplit"] == {"0": 10, old: 90}
    assert calls[1][2]["trafficSplit"] == {old: 0, new: 100}
    assert calls[2][2] == {"deployedModelId": old, "trafficSplit": {new: 100}}
    assert endpoint["trafficSplit"] == {new: 100}
    assert [m["id"] for m in endpoint["deployedModels"]] == [new]
    assert (
        monitoring.filters()
        == [
            _filter(RESPONSE_COUNT, endpoint_id, new),
            _filter(PREDICTION_LATENCIES, endpoint_id, new),
        ]
        * 2
    )
    # 1 error in 127 answers (the 400s are clients' mistakes); p99: rank 0.99 * 127 = 125.73
    # falls in (200, 400] ms, which holds answers 101..127: 200 + 200 * 25.73 / 27 = 390.593.
    assert outputs["canary"] == {
        "decision": "promoted",
        "reason": "error rate 0.007874 (1 of 127 requests), p99 latency 390.6 ms: "
        "within max_error_rate 0.01, max_latency_ms 500",
        "requests": 127,
        "errors": 1,
        "error_rate": 0.007874,
        "p99_ms": 390.593,
    }
    assert outputs["traffic_split"] == {new: 100}
    assert outputs["undeployed"] == [old]
    assert outputs["deployed_model_id"] == new


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (
            Reading({"200": 95, "503": 5}, counts=[0, 100, 0, 0, 0, 0]),
            "error rate 0.05 (5 of 100 requests) is over max_error_rate 0.01",
        ),
        (
            Reading({"200": 100}, counts=[0, 50, 40, 9, 1, 0]),
            "p99 latency 800 ms is over max_latency_ms 500",
        ),
    ],
)
def test_a_bad_canary_is_rolled_back_and_undeployed(
    deploy: Any, fake: FakeVertex, monitoring: FakeMonitoring, reading: Reading, reason: str
) -> None:
    deploy(_model(1), None)
    name, endpoint = _deployed(fake)
    (old,) = [m["id"] for m in endpoint["deployedModels"]]
    new_model = _model(2)
    new = str(int(new_model.rsplit("/", 1)[-1]) + 1)
    monitoring.readings[new] = [reading]
    since = len(fake.requests)

    with pytest.raises(CanaryRolledBackError) as caught:
        deploy(new_model, CANARY, on_step=True)

    assert caught.value.exit_code == ExitCode.STOPPED == 3
    assert str(caught.value) == f"step deploy: canary rolled back: {reason}"
    calls = _calls(fake, since)
    assert [(m, p) for m, p, _ in calls] == [
        ("POST", f"{name}:deployModel"),
        ("PATCH", name),
        ("POST", f"{name}:undeployModel"),
    ]
    assert calls[0][2]["trafficSplit"] == {"0": 10, old: 90}
    assert calls[1][2]["trafficSplit"] == {old: 100, new: 0}
    assert calls[2][2] == {"deployedModelId": new, "trafficSplit": {old: 100}}
    assert endpoint["trafficSplit"] == {old: 100}
    assert [m["id"] for m in endpoint["deployedModels"]] == [old]
    assert len(monitoring.requests) == 2


def test_too_few_requests_by_the_timeout_roll_back(
    deploy: Any, fake: FakeVertex, monitoring: FakeMonitoring
) -> None:
    deploy(_model(1), None)
    name, endpoint = _deployed(fake)
    (old,) = [m["id"] for m in endpoint["deployedModels"]]

    with pytest.raises(CanaryRolledBackError) as caught:
        deploy(_model(2), CANARY | {"timeout": 1, "poll_seconds": 0.25})

    assert str(caught.value) == (
        "step deploy: canary rolled back: 0 of min_requests 100 requests in 1 s: "
        "not enough evidence (on_timeout: rollback)"
    )
    assert endpoint["trafficSplit"] == {old: 100}
    assert PARENT in name


class _Unreadable(dict[str, list[Reading]]):
    """Readings whose lookup fails: the fake's ListTimeSeries answers an error status."""

    def get(self, *args: Any) -> Any:
        raise RuntimeError("the monitoring backend is down")


def test_a_monitoring_read_that_fails_rolls_back_in_one_line(
    deploy: Any, fake: FakeVertex, monitoring: FakeMonitoring
) -> None:
    deploy(_model(1), None)
    name, endpoint = _deployed(fake)
    (old,) = [m["id"] for m in endpoint["deployedModels"]]
    monitoring.readings = _Unreadable()
    since = len(fake.requests)

    with pytest.raises(CanaryRolledBackError) as caught:
        deploy(_model(2), CANARY)

    assert caught.value.exit_code == ExitCode.STOPPED == 3
    assert str(caught.value) == (
        "step deploy: canary rolled back: its figures could not be read from Cloud Monitoring "
        "(Unknown: None Exception calling application: the monitoring backend is down)"
    )
    assert [(m, p) for m, p, _ in _calls(fake, since)] == [
        ("POST", f"{name}:deployModel"),
        ("PATCH", name),
        ("POST", f"{name}:undeployModel"),
    ]
    assert endpoint["trafficSplit"] == {old: 100}
    assert [m["id"] for m in endpoint["deployedModels"]] == [old]
    assert len(monitoring.requests) == 1
