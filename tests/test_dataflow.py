"""Dataflow settings: checked at spec load and merged with flags, messages, Beam arguments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beam_pipelines.spec import parse_spec
from launchers.dataflow.settings import (
    REPO_SETUP_FILE,
    DataflowSection,
    DataflowSettings,
    SettingsError,
    console_url,
    default_job_name,
    resolve_settings,
)
from transforms.core.config import SpecError

GOOD: dict[str, Any] = {
    "project": "my-proj-123",
    "region": "us-central1",
    "temp_location": "gs://my-bucket/tmp",
}


def _settings(**changes: Any) -> DataflowSettings:
    section = {**GOOD, **changes}
    return resolve_settings({k: v for k, v in section.items() if v is not None})[0]


def test_minimal_settings_stage_the_repository_setup_py() -> None:
    settings, rest = resolve_settings(GOOD, ["--direct_num_workers=2"])

    assert rest == ["--direct_num_workers=2"]
    assert settings.beam_args() == [
        "--runner=DataflowRunner",
        "--project=my-proj-123",
        "--region=us-central1",
        "--temp_location=gs://my-bucket/tmp",
        f"--setup_file={REPO_SETUP_FILE}",
    ]


def test_every_setting_becomes_its_beam_flag() -> None:
    settings = _settings(
        staging_location="gs://my-bucket/staging",
        service_account="runner@my-proj-123.iam.gserviceaccount.com",
        network="vpc-1",
        subnetwork="regions/us-central1/subnetworks/sub-1",
        no_public_ips=True,
        kms_key="projects/my-proj-123/locations/us-central1/keyRings/ring/cryptoKeys/key",
        machine_type="n2-highmem-8",
        num_workers=2,
        max_workers=10,
        labels={"team": "ml", "env": "dev"},
        experiments=["use_runner_v2", "enable_data_sampling"],
        job_name="taxi-nightly",
    )

    assert settings.beam_args() == [
        "--runner=DataflowRunner",
        "--project=my-proj-123",
        "--region=us-central1",
        "--temp_location=gs://my-bucket/tmp",
        "--staging_location=gs://my-bucket/staging",
        "--service_account_email=runner@my-proj-123.iam.gserviceaccount.com",
        "--network=vpc-1",
        "--subnetwork=regions/us-central1/subnetworks/sub-1",
        "--dataflow_kms_key=projects/my-proj-123/locations/us-central1/keyRings/ring/cryptoKeys/key",
        "--machine_type=n2-highmem-8",
        "--num_workers=2",
        "--max_num_workers=10",
        "--job_name=taxi-nightly",
        "--no_use_public_ips",
        "--labels=env=dev",
        "--labels=team=ml",
        "--experiments=use_runner_v2",
        "--experiments=enable_data_sampling",
        f"--setup_file={REPO_SETUP_FILE}",
    ]


def test_flags_override_the_spec_section() -> None:
    section = {
        **GOOD,
        "machine_type": "n1-standard-2",
        "labels": {"team": "ml", "env": "dev"},
        "experiments": ["use_runner_v2"],
    }
    argv = [
        "--region",
        "europe-west4",
        "--worker_machine_type=n1-standard-8",
        "--labels=env=prod",
        "--experiments=enable_data_sampling",
        "--max_num_workers=4",
        "--no_use_public_ips",
        "--runner=DataflowRunner",
        "--save_main_session",
    ]

    settings, rest = resolve_settings(section, argv)

    assert rest == ["--save_main_session"]
    assert settings == DataflowSettings(
        project="my-proj-123",
        region="europe-west4",
        temp_location="gs://my-bucket/tmp",
        machine_type="n1-standard-8",
        max_workers=4,
        no_public_ips=True,
        labels={"team": "ml", "env": "prod"},
        experiments=["use_runner_v2", "enable_data_sampling"],
    )


def test_flags_alone_are_enough() -> None:
    settings, rest = resolve_settings(
        None, ["--project=my-proj-123", "--region=us-east1", "--temp_location=gs://b-1/t"]
    )

    assert (settings.project, settings.region, settings.temp_location, rest) == (
        "my-proj-123",
        "us-east1",
        "gs://b-1/t",
        [],
    )


def test_a_similar_beam_flag_is_not_taken_for_a_setting() -> None:
    # Without allow_abbrev=False argparse would read --projec as --project.
    _, rest = resolve_settings(GOOD, ["--projec=x"])

    assert rest == ["--projec=x"]


# Problems of one value on its own: the spec's section is refused when it loads, so
# `beamforge validate` reports them.
BAD_VALUES = [
    ({"project": "My_Project"}, "dataflow.project", "'My_Project' is not a valid project id"),
    ({"project": "proj"}, "dataflow.project", "not a valid project id"),
    ({"project": "my-project-"}, "dataflow.project", "not a valid project id"),
    ({"region": "us-central1-a"}, "dataflow.region", "not a region name"),
    (
        {"temp_location": "/tmp/beam"},
        "dataflow.temp_location",
        "'/tmp/beam' is not a gs:// path; Dataflow workers cannot use it",
    ),
    (
        {"temp_location": "gs://My_Bucket/tmp"},
        "dataflow.temp_location",
        "'My_Bucket' is not a valid bucket name",
    ),
    ({"temp_location": "gs://ab/tmp"}, "dataflow.temp_location", "not a valid bucket name"),
    ({"staging_location": "s3://b/stage"}, "dataflow.staging_location", "not a gs:// path"),
    ({"service_account": "runner"}, "dataflow.service_account", "not a service account email"),
    ({"network": "projects/p/global/networks/n"}, "dataflow.network", "not a network name"),
    ({"subnetwork": "sub-1"}, "dataflow.subnetwork", "is not regions/REGION/subnetworks/NAME"),
    ({"kms_key": "my-key"}, "dataflow.kms_key", "is not a key name"),
    ({"machine_type": "N1 standard"}, "dataflow.machine_type", "is not a machine type"),
    ({"max_workers": 0}, "dataflow.max_workers", "must be at least 1, got 0"),
    ({"labels": {"Team": "ml"}}, "dataflow.labels", "key 'Team': label keys are"),
    ({"labels": {"1team": "ml"}}, "dataflow.labels", "key '1team'"),
    ({"labels": {"team": "ML Ops"}}, "dataflow.labels", "value 'ML Ops' of 'team'"),
    ({"labels": {"team": "x" * 64}}, "dataflow.labels", "label values are up to 63"),
    ({"labels": {f"k{i}": "v" for i in range(65)}}, "dataflow.labels", "65 labels"),
    ({"experiments": [""]}, "dataflow.experiments", "item 0 is empty"),
    (
        {"sdk_container_image": "Not An Image"},
        "dataflow.sdk_container_image",
        "not an image reference",
    ),
    ({"setup_file": "pyproject.toml"}, "dataflow.setup_file", "Beam stages a file named setup.py"),
    ({"job_name": "Taxi_Job"}, "dataflow.job_name", "is not a Dataflow job name"),
    (
        {"zone": "us-central1-a"},
        "dataflow.zone",
        "unknown key 'zone'; valid keys are project, region",
    ),
    ({"max_workers": "ten"}, "dataflow.max_workers", "got 'ten'; expected an integer"),
]
# Missing keys and problems across keys: flags may still give or change a key, so these are
# found once the section is merged with the flags, before anything is submitted.
BAD_ACROSS_KEYS = [
    ({"project": None}, "dataflow.project", "required"),
    ({"region": None}, "dataflow.region", "required: the Dataflow region"),
    ({"temp_location": None}, "dataflow.temp_location", "required"),
    (
        {"subnetwork": "regions/europe-west1/subnetworks/sub"},
        "dataflow.subnetwork",
        "the subnetwork is in 'europe-west1' but the job runs in 'us-central1'",
    ),
    (
        {"kms_key": "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"},
        "dataflow.kms_key",
        "the key is in 'europe-west1' but the job runs in 'us-central1'",
    ),
    (
        {"num_workers": 5, "max_workers": 2},
        "dataflow.num_workers",
        "5 initial workers is more than max_workers=2",
    ),
    (
        {
            "sdk_container_image": "us-docker.pkg.dev/p/r/beamforge:1",
            "setup_file": str(REPO_SETUP_FILE),
        },
        "dataflow.setup_file",
        "sdk_container_image already has beamforge installed",
    ),
    ({"image_has_beamforge": False}, "dataflow.image_has_beamforge", "only means something"),
    ({"setup_file": "/nonexistent/setup.py"}, "dataflow.setup_file", "does not exist"),
]
BAD = BAD_VALUES + BAD_ACROSS_KEYS


@pytest.mark.parametrize(("changes", "path", "message"), BAD)
def test_bad_settings_fail_with_their_path_and_a_message(
    changes: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        _settings(**changes)

    assert info.value.path == path
    assert message in info.value.problem


def _spec(section: Any) -> dict[str, Any]:
    return {
        "name": "job",
        "source": {"format": "csv", "path": "in.csv", "schema": {"id": "int64"}},
        "dataflow": section,
    }


@pytest.mark.parametrize(("changes", "path", "message"), BAD_VALUES)
def test_a_bad_value_is_refused_when_the_spec_loads(
    changes: dict[str, Any], path: str, message: str
) -> None:
    # The section holds only the bad key: each value is checked on its own.
    with pytest.raises(SpecError) as info:
        parse_spec(_spec(changes), origin="job.yaml")

    assert info.value.path == path
    assert message in info.value.problem
    assert str(info.value).startswith(f"job.yaml: {path}: ")


@pytest.mark.parametrize(("changes", "path", "message"), BAD_ACROSS_KEYS)
def test_what_needs_every_key_loads_and_fails_once_merged(
    changes: dict[str, Any], path: str, message: str
) -> None:
    section = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    spec = parse_spec(_spec(section))
    assert isinstance(spec.dataflow, DataflowSection)

    with pytest.raises(SpecError) as info:
        resolve_settings(spec.dataflow)

    assert info.value.path == path
    assert message in info.value.problem


def test_flags_complete_and_override_the_typed_section() -> None:
    spec = parse_spec(
        _spec(
            {
                "region": "us-central1",
                "subnetwork": "regions/europe-west4/subnetworks/sub-1",
                "machine_type": "n1-standard-2",
                "labels": {"team": "ml", "env": "dev"},
                "experiments": ["use_runner_v2"],
            }
        )
    )
    argv = [
        "--project=my-proj-123",
        "--region=europe-west4",
        "--temp_location=gs://my-bucket/tmp",
        "--labels=env=prod",
        "--save_main_session",
    ]

    settings, rest = resolve_settings(spec.dataflow, argv)

    assert rest == ["--save_main_session"]
    assert settings == DataflowSettings(
        project="my-proj-123",
        region="europe-west4",
        temp_location="gs://my-bucket/tmp",
        subnetwork="regions/europe-west4/subnetworks/sub-1",
        machine_type="n1-standard-2",
        labels={"team": "ml", "env": "prod"},
        experiments=["use_runner_v2"],
    )
    assert spec.dataflow.labels == {"team": "ml", "env": "dev"}


def test_a_spec_without_the_section_has_none() -> None:
    spec = parse_spec({k: v for k, v in _spec(None).items() if k != "dataflow"})

    assert spec.dataflow is None
    assert parse_spec(_spec(None)).dataflow is None


def test_messages_name_the_spec_key_and_the_flag() -> None:
    with pytest.raises(SettingsError) as info:
        _settings(region=None)

    assert str(info.value) == (
        "dataflow.region: required: the Dataflow region, e.g. us-central1 "
        "(spec key dataflow.region, flag --region)"
    )


def test_a_bad_flag_value_fails_like_a_bad_spec_value() -> None:
    with pytest.raises(SpecError, match=r"dataflow\.subnetwork: the subnetwork is in 'us-east1'"):
        resolve_settings(GOOD, ["--subnetwork=regions/us-east1/subnetworks/s"])


def test_another_runner_is_refused() -> None:
    with pytest.raises(SpecError, match="--runner=FlinkRunner is not DataflowRunner"):
        resolve_settings(GOOD, ["--runner=FlinkRunner"])


def test_a_label_flag_needs_key_and_value() -> None:
    with pytest.raises(SpecError, match=r"dataflow\.labels: 'team' is not KEY=VALUE"):
        resolve_settings(GOOD, ["--labels=team"])


def test_an_image_with_beamforge_replaces_setup_py() -> None:
    settings = _settings(sdk_container_image="us-docker.pkg.dev/p/r/beamforge:1.0")

    assert settings.beam_args()[-1] == "--sdk_container_image=us-docker.pkg.dev/p/r/beamforge:1.0"
    assert not any(a.startswith("--setup_file") for a in settings.beam_args())


def test_an_image_without_beamforge_gets_setup_py_staged() -> None:
    settings = _settings(
        sdk_container_image="us-docker.pkg.dev/p/r/base@sha256:" + "a" * 64,
        image_has_beamforge=False,
    )

    assert settings.beam_args()[-2:] == [
        "--sdk_container_image=us-docker.pkg.dev/p/r/base@sha256:" + "a" * 64,
        f"--setup_file={REPO_SETUP_FILE}",
    ]


@pytest.mark.parametrize(
    "project", ["my-proj-123", "abcdef", "a" * 30, "example.com:my-project", "p-1-2-3-4"]
)
def test_valid_project_ids(project: str) -> None:
    assert _settings(project=project).project == project


@pytest.mark.parametrize(
    "subnetwork",
    [
        "regions/us-central1/subnetworks/s",
        "projects/host-proj/regions/us-central1/subnetworks/s",
        "https://www.googleapis.com/compute/v1/projects/host-proj/regions/us-central1/subnetworks/s",
    ],
)
def test_subnetwork_forms(subnetwork: str) -> None:
    assert _settings(subnetwork=subnetwork).subnetwork == subnetwork


def test_default_job_name_is_the_spec_name_and_utc_time() -> None:
    now = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)

    assert default_job_name("chicago_taxi", lambda: now) == "chicago-taxi-20240506-070809"
    assert default_job_name("9 Lives!", lambda: now) == "beamforge-9-lives-20240506-070809"


@given(st.text(min_size=0, max_size=120))
def test_default_job_names_are_always_valid(name: str) -> None:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    job_name = default_job_name(name, lambda: now)

    assert _settings(job_name=job_name).job_name == job_name


def test_console_url() -> None:
    assert console_url("my-proj-123", "us-central1", "2024-01-01_00_00_00-123") == (
        "https://console.cloud.google.com/dataflow/jobs/us-central1/"
        "2024-01-01_00_00_00-123?project=my-proj-123"
    )
