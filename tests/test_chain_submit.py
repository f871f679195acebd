"""A chain submitted to Vertex AI Pipelines through the real SDK against a fake REST API.

``aiplatform.init(api_endpoint="http://127.0.0.1:P", api_transport="rest")`` sends the SDK's
pipeline job and schedule requests to :mod:`tests.vertex_fake`, which records their bodies
and answers a run's GETs with scripted states. The SDK checks the pipeline root's bucket
before it submits a run (and creates it if it is missing): that goes to the GCS emulator.
The pipeline is a small kfp pipeline compiled here with the chain's parameters.
"""

# No postponed annotations here: kfp reads the component's and pipeline's parameter types.
import hashlib
import logging
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from beam_pipelines.exit_codes import ExitCode
from launchers.chain import load_chain, parse_chain
from launchers.chain.schedule import Schedule
from launchers.chain.spec import ChainSpec
from launchers.chain.submit import (
    CANCELLED,
    FAILED,
    PAUSED,
    SUCCEEDED,
    PipelineRunCancelledError,
    PipelineRunError,
    PipelineRunFailedError,
    PipelineRunPausedError,
    PipelineRunTimeoutError,
    SubmitResult,
    chain_labels,
    schedule_start_time,
    submit_chain,
)
from launchers.polling import Backoff
from tests import vertex_fake
from tests.conftest import REPO
from tests.fake_clock import TINY, FakeClock
from tests.vertex_fake import PARENT, PROJECT, REGION, FakeVertex
from transforms.core.config import SpecError

pytestmark = pytest.mark.emulator

SERVICE_ACCOUNT = "pipelines@test-project.iam.gserviceaccount.com"
NETWORK = "projects/123456/global/networks/ml-vpc"
KMS_KEY = f"projects/{PROJECT}/locations/{REGION}/keyRings/ml/cryptoKeys/pipelines"
TAXI_CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"
TAXI_PIPELINE = REPO / "tests" / "golden" / "chain_kfp_gcp.yaml"
RUNS = f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/runs"


@dsl.component(base_image="python:3.11")
def _echo(text: str) -> str:
    return text


@dsl.pipeline(name="taxi-tips", description="the chain's parameters, passed on")
def _pipeline(input: str = "gs://data/trips.csv", model_name: str = "chicago-taxi") -> None:
    _echo(text=input)
    _echo(text=model_name)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("pipeline") / "pipeline.yaml"
    compiler.Compiler().compile(_pipeline, str(path))
    return path


@pytest.fixture()
def fake(gcs_emulator: Any, caplog: pytest.LogCaptureFixture) -> Iterator[FakeVertex]:
    yield from vertex_fake.serve()
    # The SDK logs (and swallows) what goes wrong while it checks the pipeline root's bucket,
    # such as a lookup of the project's number on Google itself: nothing may.
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


def _bucket(request: pytest.FixtureRequest) -> str:
    # A bucket of its own per test, which the SDK creates as it does a missing pipeline root.
    # (For a bucket that exists, it asks Google for the project's number.)
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    return f"pipelines-{digest}"


def _spec(
    fake: FakeVertex,
    bucket: str,
    *,
    schedule: Any = None,
    values: dict[str, str] | None = None,
) -> ChainSpec:
    data: dict[str, Any] = {
        "name": "Taxi_Tips",
        "workdir": "work",
        "parameters": {
            "input": {"default": "gs://data/trips.csv", "description": "raw trips"},
            "model_name": "chicago-taxi",
        },
        "gcp": {
            "project": PROJECT,
            "region": REGION,
            "staging_bucket": f"gs://{bucket}/stage",
            "api_endpoint": fake.endpoint,
            "service_account": SERVICE_ACCOUNT,
            "network": NETWORK,
            "kms_key": KMS_KEY,
            "labels": {"team": "ml", "env": "test"},
        },
        "steps": [
            {
                "name": "dataset",
                "kind": "dataset",
                "spec": "pipeline.yaml",
                "inputs": ["${input}"],
                "output": "out",
            }
        ],
    }
    if schedule is not None:
        data["schedule"] = schedule
    return parse_chain(data, origin="chain.yaml", values=values)


def _submit(spec: ChainSpec, template: pathlib.Path, **kwargs: Any) -> SubmitResult:
    return submit_chain(spec, template_path=str(template), **kwargs)


def _run_name(fake: FakeVertex) -> str:
    (name,) = fake.pipeline_jobs
    return name


def test_run_carries_the_chain_settings_and_parameter_values(
    fake: FakeVertex,
    template: pathlib.Path,
    gcs_emulator: Any,
    request: pytest.FixtureRequest,
) -> None:
    bucket = _bucket(request)
    spec = _spec(fake, bucket, values={"input": "gs://data/2026-11.csv"})
    result = _submit(spec, template)
    name = _run_name(fake)
    job_id = name.rsplit("/", 1)[1]
    assert re.fullmatch(r"taxi-tips-\d{14}", job_id)
    assert result == SubmitResult(
        kind="run",
        name=name,
        url=f"{RUNS}/{job_id}?project={PROJECT}",
        state="PIPELINE_STATE_PENDING",
    )
    (body,) = fake.calls("POST", f"{PARENT}/pipelineJobs")
    assert body == {
        "displayName": "Taxi_Tips",
        "pipelineSpec": yaml.safe_load(template.read_text()),
        "runtimeConfig": {
            "gcsOutputDirectory": f"gs://{bucket}/stage/pipelines",
            # The --param value, and the other parameter's default.
            "parameterValues": {"input": "gs://data/2026-11.csv", "model_name": "chicago-taxi"},
        },
        "serviceAccount": SERVICE_ACCOUNT,
        "network": NETWORK,
        "encryptionSpec": {"kmsKeyName": KMS_KEY},
        "labels": {"team": "ml", "env": "test", "beamforge-chain": "taxi_tips"},
    }
    # Not waited for: the run was created and never read back.
    assert fake.calls("GET", name) == []
    assert fake.schedules == {}
    # The SDK made the pipeline root's bucket.
    assert gcs_emulator.client().bucket(bucket).exists()


def test_the_taxi_chain_compiled_for_gcp_is_submitted_with_its_parameters(
    fake: FakeVertex, request: pytest.FixtureRequest
) -> None:
    # The example chain and its pipeline as ``chain compile --to kfp --target gcp`` writes it
    # (the golden file), sent to the fake instead of the example's project.
    bucket = _bucket(request)
    spec = load_chain(str(TAXI_CHAIN), {"input": "gs://data/trips-2026-11.csv"})
    spec.gcp = _spec(fake, bucket).gcp
    result = submit_chain(spec, template_path=str(TAXI_PIPELINE), once=True)
    (body,) = fake.calls("POST", f"{PARENT}/pipelineJobs")
    assert re.fullmatch(r"chicago-taxi-\d{14}", result.name.rsplit("/", 1)[1])
    assert body["displayName"] == "chicago_taxi"
    assert body["pipelineSpec"] == yaml.safe_load(TAXI_PIPELINE.read_text())
    assert body["runtimeConfig"] == {
        "gcsOutputDirectory": f"gs://{bucket}/stage/pipelines",
        "parameterValues": {
            "input": "gs://data/trips-2026-11.csv",
            "gcs_root": "gs://my-bucket/beamforge/chicago_taxi",
            "model_name": "chicago-taxi-tips",
        },
    }
    assert body["labels"] == {"team": "ml", "env": "test", "beamforge-chain": "chicago_taxi"}
    # Without --once, the example's schedule: a schedule of the same pipeline.
    scheduled = submit_chain(spec, template_path=str(TAXI_PIPELINE))
    (schedule,) = fake.calls("POST", f"{PARENT}/schedules")
    assert scheduled.kind == "schedule"
    assert (schedule["cron"], schedule["maxConcurrentRunCount"]) == ("TZ=UTC 0 3 * * *", "1")
    assert (
        schedule["createPipelineJobRequest"]["pipelineJob"]["runtimeConfig"]
        == (body["runtimeConfig"])
    )


def test_a_pipeline_root_of_its_own_and_caching_turned_off(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    spec = _spec(fake, _bucket(request))
    assert spec.gcp is not None
    spec.gcp.pipeline_root = f"gs://{_bucket(request)}/runs"
    _submit(spec, template, enable_caching=False)
    (body,) = fake.calls("POST", f"{PARENT}/pipelineJobs")
    assert body["runtimeConfig"]["gcsOutputDirectory"] == f"gs://{_bucket(request)}/runs"
    tasks = body["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {name: task["cachingOptions"] for name, task in tasks.items()} == {
        "echo": {"enableCache": False},
        "echo-2": {"enableCache": False},
    }


def test_wait_polls_with_backoff_until_the_run_succeeds(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    fake.pipeline_states = [
        "PIPELINE_STATE_PENDING",
        "PIPELINE_STATE_RUNNING",
        "PIPELINE_STATE_RUNNING",
        SUCCEEDED,
    ]
    clock = FakeClock()
    seen: list[str] = []
    result = _submit(
        _spec(fake, _bucket(request)),
        template,
        wait=True,
        timeout=600,
        backoff=Backoff(initial=10.0, factor=2.0, maximum=30.0),
        clock=clock,
        sleep=clock.sleep,
        on_state=seen.append,
    )
    name = _run_name(fake)
    assert result.state == SUCCEEDED
    assert result.name == name
    assert seen == ["PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING", SUCCEEDED]
    assert clock.sleeps == [10.0, 20.0, 30.0]
    assert len(fake.calls("GET", name)) == 4


@pytest.mark.parametrize(
    ("state", "error", "code", "detail"),
    [
        (
            FAILED,
            PipelineRunFailedError,
            ExitCode.FAILED,
            "; The DAG failed because some tasks failed. The failed tasks are: [train].",
        ),
        (
            CANCELLED,
            PipelineRunCancelledError,
            ExitCode.STOPPED,
            "; The pipeline job was cancelled.",
        ),
        (PAUSED, PipelineRunPausedError, ExitCode.STOPPED, ""),
    ],
)
def test_every_other_terminal_state_raises_its_error(
    fake: FakeVertex,
    template: pathlib.Path,
    request: pytest.FixtureRequest,
    state: str,
    error: type[PipelineRunError],
    code: ExitCode,
    detail: str,
) -> None:
    fake.pipeline_states = ["PIPELINE_STATE_RUNNING", state]
    with pytest.raises(PipelineRunError) as info:
        _submit(_spec(fake, _bucket(request)), template, wait=True, backoff=TINY)
    name = _run_name(fake)
    url = f"{RUNS}/{name.rsplit('/', 1)[1]}?project={PROJECT}"
    assert type(info.value) is error
    assert info.value.exit_code == code
    assert (info.value.job_id, info.value.state, info.value.url) == (name, state, url)
    assert (
        str(info.value) == f"Vertex AI Pipelines job {name} {error.what} ({state}){detail}: {url}"
    )


def test_a_cancelling_run_is_waited_for_until_it_is_cancelled(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    fake.pipeline_states = ["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_CANCELLING", CANCELLED]
    seen: list[str] = []
    with pytest.raises(PipelineRunCancelledError):
        _submit(
            _spec(fake, _bucket(request)),
            template,
            wait=True,
            backoff=TINY,
            on_state=seen.append,
        )
    assert seen == ["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_CANCELLING", CANCELLED]


def test_a_timeout_says_the_run_goes_on(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    fake.pipeline_states = ["PIPELINE_STATE_RUNNING"]
    clock = FakeClock()
    with pytest.raises(PipelineRunTimeoutError) as info:
        _submit(
            _spec(fake, _bucket(request)),
            template,
            wait=True,
            timeout=30,
            backoff=Backoff(initial=10.0, factor=1.5, maximum=120.0),
            clock=clock,
            sleep=clock.sleep,
        )
    name = _run_name(fake)
    url = f"{RUNS}/{name.rsplit('/', 1)[1]}?project={PROJECT}"
    assert info.value.exit_code == ExitCode.TIMED_OUT
    assert str(info.value) == (
        f"Vertex AI Pipelines job {name} did not finish in time (PIPELINE_STATE_RUNNING); "
        f"still PIPELINE_STATE_RUNNING after 30 s; it goes on running: {url}"
    )
    # The last sleep is cut short at the timeout; the run is not cancelled.
    assert clock.sleeps == [10.0, 15.0, 5.0]
    assert fake.calls("POST", ":cancel") == []


def test_a_scheduled_chain_becomes_a_pipeline_schedule(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    bucket = _bucket(request)
    schedule = {
        "cron": "30 2 * * MON-FRI",
        "timezone": "Europe/Paris",
        "max_concurrent_runs": 2,
        "start": "2026-12-01",
    }
    result = _submit(_spec(fake, bucket, schedule=schedule), template)
    (name,) = fake.schedules
    assert result == SubmitResult(
        kind="schedule",
        name=name,
        url=(
            f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/schedules/"
            f"{name.rsplit('/', 1)[1]}?project={PROJECT}"
        ),
        state="ACTIVE",
    )
    (body,) = fake.calls("POST", f"{PARENT}/schedules")
    assert body == {
        "displayName": "Taxi_Tips",
        "cron": "TZ=Europe/Paris 30 2 * * MON-FRI",
        # Midnight in Paris, in UTC.
        "startTime": "2026-11-30T23:00:00Z",
        "maxConcurrentRunCount": "2",
        "createPipelineJobRequest": {
            "parent": PARENT,
            "pipelineJob": {
                "pipelineSpec": yaml.safe_load(template.read_text()),
                "runtimeConfig": {
                    "gcsOutputDirectory": f"gs://{bucket}/stage/pipelines",
                    "parameterValues": {
                        "input": "gs://data/trips.csv",
                        "model_name": "chicago-taxi",
                    },
                },
                "labels": {"team": "ml", "env": "test", "beamforge-chain": "taxi_tips"},
                "encryptionSpec": {"kmsKeyName": KMS_KEY},
                "serviceAccount": SERVICE_ACCOUNT,
                "network": NETWORK,
            },
        },
    }
    # A schedule only: no run was created now.
    assert fake.pipeline_jobs == {}


def test_a_schedule_without_start_fires_from_its_creation(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    _submit(_spec(fake, _bucket(request), schedule="0 3 * * *"), template)
    (body,) = fake.calls("POST", f"{PARENT}/schedules")
    assert {k: v for k, v in body.items() if k != "createPipelineJobRequest"} == {
        "displayName": "Taxi_Tips",
        "cron": "TZ=UTC 0 3 * * *",
        "maxConcurrentRunCount": "1",
    }


def test_once_submits_one_run_of_a_scheduled_chain_and_can_wait(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    spec = _spec(fake, _bucket(request), schedule="0 3 * * *")
    result = _submit(spec, template, once=True, wait=True, backoff=TINY)
    assert (result.kind, result.name, result.state) == ("run", _run_name(fake), SUCCEEDED)
    assert fake.schedules == {}


def test_waiting_for_a_schedule_is_refused_before_anything_is_sent(
    fake: FakeVertex, template: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    spec = _spec(fake, _bucket(request), schedule="0 3 * * *")
    with pytest.raises(SpecError) as info:
        _submit(spec, template, wait=True)
    assert str(info.value) == (
        "chain.yaml: schedule: a chain with a schedule is submitted as a schedule, which "
        "cannot be waited for; submit one run (--once) to wait for it"
    )
    assert fake.requests == []


def test_a_chain_without_gcp_settings_is_refused(template: pathlib.Path) -> None:
    spec = parse_chain(
        {
            "name": "taxi",
            "workdir": "work",
            "steps": [{"name": "dataset", "kind": "dataset", "spec": "p.yaml", "output": "o"}],
        },
        origin="chain.yaml",
    )
    with pytest.raises(SpecError) as info:
        submit_chain(spec, template_path=str(template))
    assert str(info.value) == (
        "chain.yaml: gcp: submitting to Vertex AI Pipelines needs a gcp section"
    )


@pytest.mark.parametrize(
    ("start", "timezone", "expected"),
    [
        (None, "UTC", None),
        ("2026-12-01", "UTC", "2026-12-01T00:00:00Z"),
        ("2026-12-01", "Europe/Paris", "2026-11-30T23:00:00Z"),
        # Summer time.
        ("2026-07-01", "Europe/Paris", "2026-06-30T22:00:00Z"),
        ("2026-07-01", "America/New_York", "2026-07-01T04:00:00Z"),
    ],
)
def test_schedule_start_time_is_midnight_in_its_time_zone(
    start: str | None, timezone: str, expected: str | None
) -> None:
    assert schedule_start_time(Schedule("0 3 * * *", timezone=timezone, start=start)) == expected


def test_chain_label_is_the_chain_name_as_a_label_value(
    fake: FakeVertex, request: pytest.FixtureRequest
) -> None:
    spec = _spec(fake, _bucket(request))
    spec.name = "Taxi.Tips v2/" + "x" * 70
    assert chain_labels(spec) == {
        "team": "ml",
        "env": "test",
        "beamforge-chain": "taxi-tips-v2-" + "x" * 50,
    }


def test_beamforge_chain_submit_compiles_and_submits_through_the_cli(
    fake: FakeVertex, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    import subprocess
    import sys

    bucket = _bucket(request)
    data = yaml.safe_load(TAXI_CHAIN.read_text())
    data["gcp"] = {
        "project": PROJECT,
        "region": REGION,
        "staging_bucket": f"gs://{bucket}/stage",
        "api_endpoint": fake.endpoint,
    }
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump(data, sort_keys=False))
    kept = tmp_path / "pipeline.yaml"
    fake.pipeline_states = ["PIPELINE_STATE_FAILED"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.cli",
            "chain",
            "submit",
            str(chain),
            "--to",
            "vertex",
            "--once",
            "--wait",
            "-o",
            str(kept),
            "--param",
            "input=gs://data/trips.csv",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (body,) = fake.calls("POST", f"{PARENT}/pipelineJobs")
    name = _run_name(fake)
    # The pipeline sent is the one compiled for the gcp target, kept where -o said.
    assert body["pipelineSpec"] == yaml.safe_load(kept.read_text())
    assert body["runtimeConfig"]["parameterValues"]["input"] == "gs://data/trips.csv"
    assert result.returncode == ExitCode.FAILED
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"error: Vertex AI Pipelines job {name} failed (PIPELINE_STATE_FAILED); "
        f"{fake.pipeline_jobs[name]['error']['message']}: {RUNS}/{name.rsplit('/', 1)[1]}"
        f"?project={PROJECT}"
    )

    wrong = subprocess.run(
        [sys.executable, "-m", "launchers.cli", "chain", "submit", str(chain), "--to", "kfp"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (wrong.returncode, wrong.stderr) == (
        2,
        "error: chain submit needs --to vertex; got --to kfp\n",
    )
