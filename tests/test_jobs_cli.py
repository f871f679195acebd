"""The jobs and template commands end to end against a fake Dataflow API on 127.0.0.1.

The CLI drives the real Dataflow client library over REST: launch requests built from Dataflow
flags, requests refused before any call, and the exit code of every way a job ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from launchers.cli import main
from launchers.dataflow.jobs import CANCELLED, DRAINED
from tests.dataflow_fake import PROJECT, REGION, URL, FakeDataflow
from tests.fake_rest import serving


@pytest.fixture
def fake() -> Iterator[FakeDataflow]:
    yield from serving(FakeDataflow())


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
