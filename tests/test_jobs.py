"""Launch, wait, cancel and drain through the real Dataflow client library.

The clients talk REST to a fake Dataflow API on 127.0.0.1 (a real HTTP server in a thread)
that records every request and answers with scripted job states.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from launchers.dataflow.jobs import (
    CANCELLED,
    JobCancelledError,
    JobDrainedError,
    JobError,
    JobFailedError,
    JobRef,
    JobTimeoutError,
    JobUpdatedError,
    cancel_job,
    drain_job,
    jobs_client,
    launch_flex_template,
    state_name,
    templates_client,
    wait_for_job,
)
from tests.dataflow_fake import BASE, PROJECT, REGION, URL, FakeDataflow
from tests.fake_clock import TINY, FakeClock
from tests.fake_rest import serving


@pytest.fixture
def fake() -> Iterator[FakeDataflow]:
    yield from serving(FakeDataflow())


def _wait(fake: FakeDataflow, clock: FakeClock, **kwargs: Any) -> Any:
    return wait_for_job(
        jobs_client(api_endpoint=fake.endpoint),
        JobRef(PROJECT, REGION, "job-1"),
        backoff=TINY,
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def test_launch_sends_parameters_and_environment(fake: FakeDataflow) -> None:
    job = launch_flex_template(
        templates_client(api_endpoint=fake.endpoint),
        project=PROJECT,
        region=REGION,
        job_name="taxi-1",
        template_path="gs://my-bucket/templates/taxi.json",
        parameters={"spec": "gs://my-bucket/taxi.yaml", "output": "gs://my-bucket/out"},
        environment={
            "temp_location": "gs://my-bucket/tmp",
            "max_workers": 5,
            "additional_user_labels": {"team": "ml"},
            "ip_configuration": "WORKER_IP_PRIVATE",
        },
    )

    assert (job.id, job.name) == ("job-1", "taxi-1")
    assert fake.requests == [
        (
            "POST",
            f"{BASE}/flexTemplates:launch",
            {
                "launchParameter": {
                    "jobName": "taxi-1",
                    "containerSpecGcsPath": "gs://my-bucket/templates/taxi.json",
                    "parameters": {
                        "spec": "gs://my-bucket/taxi.yaml",
                        "output": "gs://my-bucket/out",
                    },
                    "environment": {
                        "tempLocation": "gs://my-bucket/tmp",
                        "maxWorkers": 5,
                        "additionalUserLabels": {"team": "ml"},
                        # The REST transport sends enums as numbers: 2 is WORKER_IP_PRIVATE.
                        "ipConfiguration": 2,
                    },
                },
            },
        )
    ]


def test_validate_only_is_sent(fake: FakeDataflow) -> None:
    launch_flex_template(
        templates_client(api_endpoint=fake.endpoint),
        project=PROJECT,
        region=REGION,
        job_name="taxi-1",
        template_path="gs://my-bucket/t.json",
        parameters={"spec": "gs://my-bucket/taxi.yaml"},
        validate_only=True,
    )

    assert fake.requests[0][2]["validateOnly"] is True


def test_wait_polls_with_exponential_backoff_until_done(fake: FakeDataflow) -> None:
    fake.states = [
        "JOB_STATE_QUEUED",
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_DONE",
    ]
    clock = FakeClock()
    seen: list[str] = []

    job = _wait(fake, clock, on_state=seen.append)

    assert state_name(job) == "JOB_STATE_DONE"
    assert clock.sleeps == [0.001, 0.002, 0.004, 0.004, 0.004]
    assert seen == ["JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_DONE"]
    assert [r[:2] for r in fake.requests] == [("GET", f"{BASE}/jobs/job-1")] * 6


@pytest.mark.parametrize(
    ("state", "error", "code", "words"),
    [
        ("JOB_STATE_FAILED", JobFailedError, 1, "failed"),
        ("JOB_STATE_CANCELLED", JobCancelledError, 3, "was cancelled"),
        ("JOB_STATE_DRAINED", JobDrainedError, 4, "was drained"),
        ("JOB_STATE_UPDATED", JobUpdatedError, 5, "was replaced by an update"),
    ],
)
def test_every_other_terminal_state_is_its_own_error(
    fake: FakeDataflow, state: str, error: type[JobError], code: int, words: str
) -> None:
    fake.states = ["JOB_STATE_RUNNING", state]
    clock = FakeClock()

    with pytest.raises(error) as info:
        _wait(fake, clock)

    assert str(info.value) == f"Dataflow job job-1 {words} ({state}): {URL}"
    assert (info.value.state, info.value.url, info.value.exit_code) == (state, URL, code)
    assert clock.sleeps == [0.001]


def test_timeout_is_an_error_of_its_own(fake: FakeDataflow) -> None:
    clock = FakeClock()

    with pytest.raises(JobTimeoutError) as info:
        _wait(fake, clock, timeout=0.005)

    assert str(info.value) == (
        "Dataflow job job-1 did not finish in time (JOB_STATE_RUNNING); "
        f"still JOB_STATE_RUNNING after 0.005 s: {URL}"
    )
    # The last sleep is cut short so that the wait ends at the timeout.
    assert clock.sleeps == [0.001, 0.002, 0.002]
    assert info.value.exit_code == 6


def test_done_is_an_error_when_waiting_for_a_cancel(fake: FakeDataflow) -> None:
    fake.states = ["JOB_STATE_DONE"]

    with pytest.raises(JobError, match=r"ended \(JOB_STATE_DONE\)"):
        _wait(fake, FakeClock(), expect=CANCELLED)


@pytest.mark.parametrize(
    ("request_state", "requested"),
    [(cancel_job, "JOB_STATE_CANCELLED"), (drain_job, "JOB_STATE_DRAINING")],
)
def test_cancel_and_drain_request_a_state(
    fake: FakeDataflow, request_state: Any, requested: str
) -> None:
    from google.cloud import dataflow_v1beta3

    request_state(jobs_client(api_endpoint=fake.endpoint), JobRef(PROJECT, REGION, "job-1"))

    number = getattr(dataflow_v1beta3.JobState, requested).value
    assert fake.requests == [("PUT", f"{BASE}/jobs/job-1", {"requestedState": number})]
