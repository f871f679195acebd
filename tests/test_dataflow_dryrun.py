"""The offline Dataflow job: Beam's DataflowRunner with --dry_run builds it, nothing is sent.

The graph must hold every step of the spec, the options must carry every setting, and
setup.py must be staged so that workers install beamforge.
"""

from __future__ import annotations

import json
import pathlib
import re
import tarfile
from typing import Any

import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec, parse_spec
from launchers.cli import main
from launchers.dataflow.settings import REPO_SETUP_FILE, resolve_settings
from launchers.dataflow.submit import DryRunJob, submit
from tests.conftest import REPO, TAXI_SAMPLE
from tests.datasets import run_root

TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
KMS_KEY = "projects/my-proj-123/locations/us-central1/keyRings/ring/cryptoKeys/key"
SETTINGS: dict[str, Any] = {
    "project": "my-proj-123",
    "region": "us-central1",
    "temp_location": "gs://my-bucket/tmp",
    "staging_location": "gs://my-bucket/staging",
    "service_account": "runner@my-proj-123.iam.gserviceaccount.com",
    "subnetwork": "regions/us-central1/subnetworks/sub-1",
    "no_public_ips": True,
    "kms_key": KMS_KEY,
    "machine_type": "n1-standard-4",
    "max_workers": 7,
    "labels": {"team": "ml", "env": "dev"},
    "experiments": ["enable_data_sampling"],
    "job_name": "taxi-dry-run",
}


def _pardo_steps(job: DryRunJob, prefix: str) -> list[str]:
    """Names of the steps a DoFn under ``prefix`` carries (read back from the graph)."""
    from apache_beam.internal import pickler
    from apache_beam.portability.api import beam_runner_api_pb2

    for transform in job.pipeline.components.transforms.values():
        if transform.unique_name.startswith(prefix) and transform.spec.urn.endswith("pardo:v1"):
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if payload.do_fn.urn != "beam:dofn:pickled_python_info:v1":
                continue
            fn = pickler.loads(payload.do_fn.payload)[0]
            if hasattr(fn, "_steps"):
                return [s.name for s in fn._steps]
    raise AssertionError(f"no DoFn with steps under {prefix}")


def _stages(job: DryRunJob) -> dict[str, list[str]]:
    """The names of the transforms each top-level transform holds, in graph order."""
    transforms = job.pipeline.components.transforms
    out = {}
    for transform in transforms.values():
        if transform.unique_name in job.transforms:
            prefix = transform.unique_name + "/"
            out[transform.unique_name] = [
                transforms[t].unique_name.removeprefix(prefix) for t in transform.subtransforms
            ]
    return out


@pytest.fixture(scope="module")
def taxi_job() -> DryRunJob:
    settings, rest = resolve_settings(SETTINGS)
    job = submit(
        load_spec(str(TAXI_SPEC)),
        settings,
        output="gs://my-bucket/taxi",
        inputs=[str(TAXI_SAMPLE)],
        beam_args=rest,
        dry_run=True,
    )
    assert isinstance(job, DryRunJob)
    return job


def test_the_graph_holds_every_step_of_the_spec(taxi_job: DryRunJob) -> None:
    assert taxi_job.job_name == "taxi-dry-run"
    assert taxi_job.transforms == [
        "Read",
        "InputStats",
        "Transform",
        "Split",
        "Write",
        "Artifact",
        "AllErrors",
        "AllCounts",
        "Errors",
        "Manifest",
    ]
    assert _stages(taxi_job) == {
        "Read": ["Records", "CountRead", "CountReadErrors", "AssignSplit"],
        "InputStats": ["Rows_train", "Stats_train", "Rows_eval", "Stats_eval", "Trigger", "Merge"],
        "Transform": ["Fitted", "ReadForFit", "Fit0", "Apply0"],
        "Split": ["Route"],
        "Write": [
            "Write_train_parquet",
            "Files_train_parquet",
            "Write_eval_parquet",
            "Files_eval_parquet",
            "Stats_train",
            "Stats_eval",
            "StatsTrigger",
            "Stats",
            "AllFiles",
        ],
        "Artifact": ["Write"],
        "AllErrors": [],
        "AllCounts": [],
        "Errors": ["ErrorJson", "WriteErrors", "DescribeErrors", "CountErrors"],
        "Manifest": ["SumCounts", "Trigger", "Commit"],
    }
    spec_steps = [s.name for s in load_spec(str(TAXI_SPEC)).steps]
    assert spec_steps[:2] == ["fill_numbers", "fill_strings"]
    assert spec_steps[-1] == "label"
    assert _pardo_steps(taxi_job, "Transform/Fit0/") == spec_steps
    assert _pardo_steps(taxi_job, "Transform/Apply0/") == spec_steps


def test_the_options_carry_every_setting(taxi_job: DryRunJob) -> None:
    options = taxi_job.options
    picked = {
        k: options[k]
        for k in (
            "runner",
            "project",
            "region",
            "service_account_email",
            "subnetwork",
            "use_public_ips",
            "dataflow_kms_key",
            "machine_type",
            "max_num_workers",
            "labels",
            "setup_file",
            "job_name",
            "dry_run",
        )
    }
    assert picked == {
        "runner": "DataflowRunner",
        "project": "my-proj-123",
        "region": "us-central1",
        "service_account_email": "runner@my-proj-123.iam.gserviceaccount.com",
        "subnetwork": "regions/us-central1/subnetworks/sub-1",
        "use_public_ips": False,
        "dataflow_kms_key": KMS_KEY,
        "machine_type": "n1-standard-4",
        "max_num_workers": 7.0,
        "labels": ["env=dev", "team=ml"],
        "setup_file": str(REPO_SETUP_FILE),
        "job_name": "taxi-dry-run",
        "dry_run": "True",
    }
    # Beam makes temp and staging locations unique per job, under the ones given.
    assert re.fullmatch(r"gs://my-bucket/tmp/taxi-dry-run\.[0-9.]+", options["temp_location"])
    assert re.fullmatch(
        r"gs://my-bucket/staging/taxi-dry-run\.[0-9.]+", options["staging_location"]
    )
    assert "enable_data_sampling" in options["experiments"]


def test_the_job_environment_is_what_dataflow_would_get(taxi_job: DryRunJob) -> None:
    job = taxi_job.job
    env = job["environment"]
    pool = env["workerPools"][0]

    assert job["name"] == "taxi-dry-run"
    assert job["type"] == "JOB_TYPE_BATCH"
    assert job["labels"] == {"env": "dev", "team": "ml"}
    assert env["serviceAccountEmail"] == "runner@my-proj-123.iam.gserviceaccount.com"
    assert env["serviceKmsKeyName"] == KMS_KEY
    assert "enable_data_sampling" in env["experiments"]
    assert (pool["machineType"], pool["subnetwork"], pool["ipConfiguration"]) == (
        "n1-standard-4",
        "regions/us-central1/subnetworks/sub-1",
        "WORKER_IP_PRIVATE",
    )
    assert pool["autoscalingSettings"] == {"maxNumWorkers": 7}
    assert [p["name"] for p in pool["packages"]] == list(taxi_job.staged_files)
    staging = taxi_job.options["staging_location"].replace("gs://", "storage.googleapis.com/")
    assert [p["location"] for p in pool["packages"]] == [
        f"{staging}/{name}" for name in taxi_job.staged_files
    ]


def test_setup_py_is_staged_as_an_sdist_of_beamforge(taxi_job: DryRunJob) -> None:
    assert "workflow.tar.gz" in taxi_job.staged_files
    with tarfile.open(taxi_job.staged_files["workflow.tar.gz"]) as sdist:
        names = set(sdist.getnames())

    for module in (
        "setup.py",
        "launchers/dataflow/settings.py",
        "beam_pipelines/dataset/build.py",
        "beam_pipelines/flex_main.py",
        "transforms/ops/features.py",
    ):
        assert f"beamforge-0.1.0/{module}" in names


def test_a_custom_image_with_beamforge_stages_no_setup_py() -> None:
    image = "us-central1-docker.pkg.dev/my-proj-123/images/beamforge:1.0"
    settings, _ = resolve_settings(
        {**SETTINGS, "sdk_container_image": image, "job_name": "taxi-image"}
    )

    job = submit(
        load_spec(str(TAXI_SPEC)),
        settings,
        output="gs://my-bucket/taxi",
        inputs=[str(TAXI_SAMPLE)],
        dry_run=True,
    )

    assert isinstance(job, DryRunJob)
    assert "workflow.tar.gz" not in job.staged_files
    assert "setup_file" not in job.options
    pool = job.job["environment"]["workerPools"][0]
    assert pool["workerHarnessContainerImage"] == image
    assert [i["containerImage"] for i in pool["sdkHarnessContainerImages"]] == [image]


def test_segments_around_a_barrier_each_get_fit_and_apply(tmp_path: pathlib.Path) -> None:
    csv = tmp_path / "trips.csv"
    csv.write_text("id,fare\n1,10.0\n")
    spec = parse_spec(
        {
            "name": "tiny",
            "source": {"format": "csv", "schema": {"id": "int64", "fare": "float64"}},
            "clean": [
                {"op": "range", "column": "fare", "min": 0},
                {"op": "dedupe", "key": ["id"]},
                {"op": "fill_missing", "columns": ["fare"], "strategy": "mean"},
            ],
            "split": {"fractions": {"train": 0.5, "eval": 0.5}, "key": ["id"]},
            "output": {"formats": ["parquet", "csv"]},
        }
    )
    settings, _ = resolve_settings({**SETTINGS, "job_name": "tiny"})

    job = submit(spec, settings, output="gs://b-1/o", inputs=[str(csv)], dry_run=True)

    assert isinstance(job, DryRunJob)
    stages = _stages(job)
    assert [n for n in stages["Transform"] if n[:-1] in ("Apply", "Fit", "Dedupe")] == [
        "Apply0",
        "Dedupe0",
        "Fit1",
        "Apply1",
    ]
    assert [n for n in stages["Write"] if n.startswith("Write_")] == [
        "Write_train_parquet",
        "Write_train_csv",
        "Write_eval_parquet",
        "Write_eval_csv",
    ]
    assert _pardo_steps(job, "Transform/Apply0/") == ["range:fare"]
    assert _pardo_steps(job, "Transform/Apply1/") == ["fill_missing:fare"]


def test_a_local_output_is_refused_before_building() -> None:
    settings, _ = resolve_settings(SETTINGS)

    with pytest.raises(ValueError, match=r"output '/tmp/out' is not a gs:// path"):
        submit(load_spec(str(TAXI_SPEC)), settings, output="/tmp/out", dry_run=True)


def test_cli_dry_run_prints_the_job_and_writes_its_json(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_json = tmp_path / "job.json"

    code = main(
        [
            "run",
            str(TAXI_SPEC),
            "--dry-run",
            "--input",
            str(TAXI_SAMPLE),
            "--output",
            "gs://my-bucket/taxi",
            "--project=my-proj-123",
            "--region",
            "europe-west4",
            "--temp_location=gs://my-bucket/tmp",
            "--labels",
            "team=ml",
            "--machine_type=e2-standard-8",
            "--job_name=taxi-cli",
            "--job-json",
            str(job_json),
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "dry run: job taxi-cli (10 steps) not submitted"
    assert "  region        europe-west4" in out
    assert "  machine type  e2-standard-8" in out
    assert '  labels        {"team": "ml"}' in out
    assert f"  setup file    {REPO_SETUP_FILE}" in out
    written = json.loads(job_json.read_text())
    assert written["name"] == "taxi-cli"
    assert written["environment"]["workerPools"][0]["machineType"] == "e2-standard-8"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--project=my-proj-123", "--temp_location=gs://my-bucket/tmp"],
            "dataflow.region: required",
        ),
        (
            ["--project=my-proj-123", "--region=us-central1", "--temp_location=/tmp/x"],
            "dataflow.temp_location: '/tmp/x' is not a gs:// path",
        ),
        (
            [
                "--project=my-proj-123",
                "--region=us-central1",
                "--temp_location=gs://my-bucket/t",
                "--labels=Team=ml",
            ],
            "dataflow.labels: key 'Team'",
        ),
    ],
)
def test_cli_bad_settings_exit_2_before_building(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["run", str(TAXI_SPEC), "--runner", "DataflowRunner", "--output", "gs://b-1/o", *flags]
    )

    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.emulator
@pytest.mark.timeout(180)
def test_a_streaming_pubsub_job_is_built_for_dataflow(
    gcs_emulator: Any, tmp_path: pathlib.Path
) -> None:
    """The Dataflow streaming job: the service's Pub/Sub source with id_label, every stage."""
    import yaml
    from apache_beam.portability.api import beam_runner_api_pb2

    from launchers.dataflow.submit import submit_streaming

    streaming_yaml = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
    run_job(load_spec(str(streaming_yaml)), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path))
    bucket = gcs_emulator.new_bucket("stream-dry-run")
    client = gcs_emulator.client()
    for path in (run_root(tmp_path) / "artifact").rglob("*"):
        if path.is_file():
            name = f"artifact/{path.relative_to(run_root(tmp_path) / 'artifact')}"
            client.bucket(bucket).blob(name).upload_from_filename(str(path))
    data = yaml.safe_load(streaming_yaml.read_text())
    data["streaming"].update(
        source="pubsub",
        pubsub={
            "subscription": "projects/my-proj-123/subscriptions/trips",
            "format": "json",
            "id_attribute": "trip_id",
            "event_time_attribute": "ts",
        },
        artifact=f"gs://{bucket}/artifact",
    )
    data["streaming"].pop("files")
    data["streaming"]["output"].update(
        path=f"gs://{bucket}/stream", topic="projects/my-proj-123/topics/rows-out"
    )
    settings, rest = resolve_settings(SETTINGS)
    job = submit_streaming(parse_spec(data, origin="test"), settings, beam_args=rest, dry_run=True)
    assert isinstance(job, DryRunJob)
    assert job.options["streaming"] is True
    assert job.options["project"] == "my-proj-123"
    for name in (
        "ReadPubSub",
        "Dedupe",
        "Decode",
        "Apply",
        "Aggregate_trips_per_area",
        "Aggregate_fares_per_company",
        "WriteRows",
        "WriteErrors",
        "WriteCounts",
        "PublishRows",
    ):
        assert name in job.transforms
    reads = [
        beam_runner_api_pb2.PubSubReadPayload.FromString(t.spec.payload)
        for t in job.pipeline.components.transforms.values()
        if t.spec.urn == "beam:transform:pubsub_read:v1"
    ]
    assert [(r.subscription, r.id_attribute, r.with_attributes) for r in reads] == [
        ("projects/my-proj-123/subscriptions/trips", "trip_id", True)
    ]
    writes = [
        beam_runner_api_pb2.PubSubWritePayload.FromString(t.spec.payload).topic
        for t in job.pipeline.components.transforms.values()
        if t.spec.urn == "beam:transform:pubsub_write:v1"
    ]
    assert writes == ["projects/my-proj-123/topics/rows-out"]


def test_a_streaming_job_with_a_local_artifact_is_refused(tmp_path: pathlib.Path) -> None:
    import yaml

    from launchers.dataflow.submit import submit_streaming

    streaming_yaml = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
    run_job(load_spec(str(streaming_yaml)), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path))
    data = yaml.safe_load(streaming_yaml.read_text())
    data["streaming"]["artifact"] = str(tmp_path)
    data["streaming"]["output"]["path"] = "gs://b/stream"
    settings, rest = resolve_settings(SETTINGS)
    with pytest.raises(ValueError, match=r"streaming artifact .* is not a gs:// path"):
        submit_streaming(parse_spec(data, origin="test"), settings, beam_args=rest, dry_run=True)
