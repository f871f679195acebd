"""Launch, wait, cancel and drain through the real Dataflow client library.

The clients talk REST to a fake Dataflow API on 127.0.0.1 (a real HTTP server in a thread)
that records every request and answers with scripted job states.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from launchers.cli import main
from launchers.dataflow.jobs import (
    CANCELLED,
    DRAINED,
    Backoff,
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
from launchers.polling import CloudJobError, poll
from tests.fake_rest import JsonHandler, RecordingServer, serving

PROJECT = "my-proj-123"
REGION = "us-central1"
BASE = f"/v1b3/projects/{PROJECT}/locations/{REGION}"
URL = f"https://console.cloud.google.com/dataflow/jobs/{REGION}/job-1?project={PROJECT}"
TINY = Backoff(initial=0.001, factor=2.0, maximum=0.004)


class FakeDataflow(RecordingServer):
    """Records requests; answers get_job with the scripted states (the last one repeats)."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.states: list[str] = ["JOB_STATE_RUNNING"]

    def next_state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class _Handler(JsonHandler):
    server: FakeDataflow

    def _record(self) -> tuple[str, Any]:
        path, _, body = self.record()
        return path, body

    def do_POST(self) -> None:
        path, body = self._record()
        if path == f"{BASE}/flexTemplates:launch":
            if body.get("validateOnly"):
                self.reply({})
                return
            name = body["launchParameter"]["jobName"]
            self.reply({"job": {"id": "job-1", "name": name, "projectId": PROJECT}})
        else:
            self.reply({"error": {"code": 404, "message": path}}, 404)

    def do_GET(self) -> None:
        path, _ = self._record()
        if path.startswith(f"{BASE}/jobs/"):
            job_id = path.rsplit("/", 1)[1]
            self.reply({"id": job_id, "currentState": self.server.next_state()})
        else:
            self.reply({"error": {"code": 404, "message": path}}, 404)

    def do_PUT(self) -> None:
        path, body = self._record()
        self.reply({"id": path.rsplit("/", 1)[1], "requestedState": body["requestedState"]})


@pytest.fixture
def fake() -> Iterator[FakeDataflow]:
    yield from serving(FakeDataflow())


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


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


def test_backoff_must_grow_within_bounds() -> None:
    with pytest.raises(ValueError, match="backoff needs initial > 0"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial=2, maximum=1)


# The CLI end to end; polls use the default backoff, so the scripted states end at once.


def test_cli_launch_builds_the_environment_from_dataflow_flags(
    fake: FakeDataflow, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "template",
            "launch",
            "gs://my-bucket/templates/taxi.json",
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--job-name",
            "taxi-1",
            "--param",
            "spec=gs://my-bucket/taxi.yaml",
            "--param",
            "input=gs://my-bucket/a.csv,gs://my-bucket/b.csv",
            "--temp_location=gs://my-bucket/tmp",
            "--service_account_email=runner@my-proj-123.iam.gserviceaccount.com",
            "--subnetwork=regions/us-central1/subnetworks/sub-1",
            "--no_use_public_ips",
            "--labels=team=ml",
            "--experiments=enable_data_sampling",
            "--dataflow_kms_key=projects/p/locations/us-central1/keyRings/r/cryptoKeys/k",
            "--api-endpoint",
            fake.endpoint,
        ]
    )

    assert code == 0
    assert capsys.readouterr().out == f"launched taxi-1 as Dataflow job job-1\n  {URL}\n"
    (_, _, body) = fake.requests[0]
    assert body["launchParameter"]["parameters"] == {
        "spec": "gs://my-bucket/taxi.yaml",
        "input": "gs://my-bucket/a.csv,gs://my-bucket/b.csv",
    }
    assert body["launchParameter"]["environment"] == {
        "tempLocation": "gs://my-bucket/tmp",
        "serviceAccountEmail": "runner@my-proj-123.iam.gserviceaccount.com",
        "subnetwork": "regions/us-central1/subnetworks/sub-1",
        "kmsKeyName": "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k",
        "additionalUserLabels": {"team": "ml"},
        "additionalExperiments": ["enable_data_sampling"],
        "ipConfiguration": 2,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "output=gs://b-1/o"], "missing required template parameter(s): spec"),
        (
            ["--param", "spec=gs://b-1/s.yaml", "--param", "colour=red"],
            "unknown template parameter 'colour'",
        ),
        (["--param", "spec=/local/s.yaml"], "parameter spec='/local/s.yaml' does not match"),
        (["--param", "spec=gs://b-1/s.yaml", "--temp_location=/tmp"], "is not a gs:// path"),
        (["--param", "spec=gs://b-1/s.yaml", "--bogus=1"], "unrecognized arguments: --bogus=1"),
    ],
)
def test_cli_launch_refuses_bad_requests_before_calling(
    fake: FakeDataflow, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["template", "launch", "gs://b-1/t.json", "--project", PROJECT, "--region", REGION]
    code = main([*base, "--job-name", "j", *args, "--api-endpoint", fake.endpoint])

    assert code == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_cli_launch_validate_only(fake: FakeDataflow, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "template",
            "launch",
            "gs://b-1/t.json",
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--job-name",
            "j",
            "--param",
            "spec=gs://b-1/s.yaml",
            "--validate-only",
            "--api-endpoint",
            fake.endpoint,
        ]
    )

    assert code == 0
    assert "is valid (nothing launched)" in capsys.readouterr().out
    assert fake.requests[0][2]["validateOnly"] is True


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("JOB_STATE_DONE", 0),
        ("JOB_STATE_FAILED", 1),
        ("JOB_STATE_CANCELLED", 3),
        ("JOB_STATE_DRAINED", 4),
        ("JOB_STATE_UPDATED", 5),
    ],
)
def test_cli_jobs_wait_exit_codes(
    fake: FakeDataflow, state: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.states = [state]

    result = main(
        [
            "jobs",
            "wait",
            "job-1",
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--api-endpoint",
            fake.endpoint,
        ]
    )

    assert result == code
    captured = capsys.readouterr()
    assert URL in (captured.out if code == 0 else captured.err)


def test_cli_jobs_wait_timeout_exit_code(
    fake: FakeDataflow, capsys: pytest.CaptureFixture[str]
) -> None:
    result = main(
        [
            "jobs",
            "wait",
            "job-1",
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--timeout",
            "0",
            "--api-endpoint",
            fake.endpoint,
        ]
    )

    assert result == 6
    assert "did not finish in time" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "requested", "final"),
    [("cancel", "JOB_STATE_CANCELLED", CANCELLED), ("drain", "JOB_STATE_DRAINING", DRAINED)],
)
def test_cli_cancel_and_drain_then_wait_for_that_state(
    fake: FakeDataflow, command: str, requested: str, final: str
) -> None:
    from google.cloud import dataflow_v1beta3

    fake.states = [final]

    result = main(
        [
            "jobs",
            command,
            "job-1",
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--wait",
            "--api-endpoint",
            fake.endpoint,
        ]
    )

    assert result == 0
    number = getattr(dataflow_v1beta3.JobState, requested).value
    assert [(m, b) for m, _, b in fake.requests] == [
        ("PUT", {"requestedState": number}),
        ("GET", None),
    ]


# The one poll both Dataflow and Vertex AI waits use.


def test_poll_backs_off_and_cuts_the_last_sleep_at_the_timeout() -> None:
    clock = FakeClock()
    probes: list[float] = []

    def probe() -> float:
        probes.append(clock.now)
        return clock.now

    with pytest.raises(TimeoutError, match=r"^last seen at 0\.006$"):
        poll(
            probe,
            lambda _: False,
            timed_out=lambda seen: TimeoutError(f"last seen at {seen:g}"),
            timeout=0.006,
            backoff=TINY,
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.sleeps == [0.001, 0.002, 0.003]
    assert probes == [0.0, 0.001, 0.003, 0.006]


def test_poll_returns_what_done_accepts() -> None:
    clock = FakeClock()
    states = iter(["RUNNING", "RUNNING", "DONE"])

    seen = poll(
        lambda: next(states),
        lambda state: state == "DONE",
        timed_out=lambda state: AssertionError(state),
        backoff=TINY,
        clock=clock,
        sleep=clock.sleep,
    )
    assert (seen, clock.sleeps) == ("DONE", [0.001, 0.002])


def test_job_errors_share_one_base_and_pickle_from_their_parts() -> None:
    error = JobDrainedError("job-1", "JOB_STATE_DRAINED", URL)
    copied = pickle.loads(pickle.dumps(error))
    assert isinstance(copied, CloudJobError)
    assert (type(copied), str(copied), copied.job_id, copied.state, copied.url) == (
        JobDrainedError,
        f"Dataflow job job-1 was drained (JOB_STATE_DRAINED): {URL}",
        "job-1",
        "JOB_STATE_DRAINED",
        URL,
    )
    assert copied.exit_code == 4
