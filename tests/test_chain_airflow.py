"""The taxi chain compiled to Airflow DAGs, imported and run by Airflow in its own venv.

``beamforge chain compile --to airflow`` writes the DAG files; Airflow (``.venv/airflow``,
made by ``make airflow``) imports them in a DagBag and runs them with ``dag.test()`` on
sqlite, in subprocesses (:mod:`tests.airflow_runs`). The local DAG runs the chain to the same
results as ``beamforge chain --target local``: the same dataset counts, the same model
metrics and the same prediction for a raw trip. The gcp DAG runs the provider's real Dataflow
operator, sensor and hook against the fake Dataflow REST server (the request bodies are
checked), reads and copies on the GCS emulator, and meets the Vertex AI hooks -- gRPC clients
-- faked at the hook boundary inside the Airflow process (:func:`tests.airflow_runs.install_fakes`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from launchers.chain.handoff import read_manifest
from tests import dataflow_fake, fake_rest
from tests.airflow_runs import AirflowHome
from tests.conftest import REPO, TAXI_SAMPLE, beamforge
from tests.dataflow_fake import FakeDataflow
from tests.emulators import Gcs
from tests.fake_rest import RecordingServer

CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"
PARAMETERS = {
    "input": (
        "examples/chicago_taxi/data/sample.csv",
        "Raw trips, CSV files or globs (gs:// on the gcp target)",
    ),
    "gcs_root": (
        "gs://my-bucket/beamforge/chicago_taxi",
        "Where the gcp target writes the dataset",
    ),
    "model_name": ("chicago-taxi-tips", "Display name of the uploaded model"),
}


@pytest.fixture(scope="session")
def migrated_airflow(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """Airflow's sqlite database, migrated once per session (fails if the venv is missing)."""
    return AirflowHome.migrated(tmp_path_factory.mktemp("airflow-home"))


@pytest.fixture()
def airflow(migrated_airflow: AirflowHome, tmp_path: pathlib.Path) -> AirflowHome:
    """An Airflow home of this test's own, with a copy of the migrated database."""
    return migrated_airflow.copy(tmp_path / "airflow-home")


def _chain_copy(folder: pathlib.Path) -> pathlib.Path:
    """The example chain with every path absolute and its outputs under ``folder``."""
    data = yaml.safe_load(CHAIN.read_text())
    data["workdir"] = str(folder / "work")
    dataset = data["steps"][0]
    dataset["spec"] = str(REPO / dataset["spec"])
    dataset["output"] = str(folder / "dataset")
    data["parameters"]["input"]["default"] = str(TAXI_SAMPLE)
    folder.mkdir(parents=True)
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return beamforge("chain", *args, timeout=600)


def _compile(chain: pathlib.Path, target: str, dag_file: pathlib.Path) -> None:
    result = _cli("compile", str(chain), "--to", "airflow", "--target", target, "-o", str(dag_file))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == (
        f"{dag_file}: Airflow DAG of chain chicago_taxi (6 steps, {target} target)\n"
    )


def _first_trip() -> dict[str, Any]:
    with TAXI_SAMPLE.open(newline="") as f:
        row = next(csv.DictReader(f))
    return {k: (v if v != "" else None) for k, v in row.items()}


@contextlib.contextmanager
def _stopping(servers: list[serving.LocalServer]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                serving.stop_server(server)


def test_local_dag_imports_with_the_chains_params_and_schedule(
    airflow: AirflowHome, tmp_path: pathlib.Path
) -> None:
    dags = tmp_path / "dags"
    _compile(CHAIN, "local", dags / "chicago_taxi.py")
    bag = airflow.run("dagbag", str(dags), dags=dags)
    assert bag["import_errors"] == {}
    (dag,) = bag["dags"].values()
    assert list(bag["dags"]) == ["chicago_taxi"]
    assert {
        name: (p["default"], p["description"], p["schema"]["type"])
        for name, p in dag["params"].items()
    } == {name: (default, text, "string") for name, (default, text) in PARAMETERS.items()}
    # The same names and defaults as the chain spec's table.
    spec = chains.load_chain(str(CHAIN))
    assert {n: p["default"] for n, p in dag["params"].items()} == {
        n: p.default for n, p in spec.parameters.items()
    }
    assert (dag["timetable"], dag["timetable_summary"], dag["timezone"]) == (
        "CronTriggerTimetable",
        "0 3 * * *",
        "UTC",
    )
    assert (dag["catchup"], dag["max_active_runs"]) == (False, 1)
    assert {t: (d["operator"], d["upstream"]) for t, d in dag["tasks"].items()} == {
        "dataset": ("ExternalPythonOperator", []),
        "data_gate": ("ExternalPythonOperator", ["dataset"]),
        "data_gate_passed": ("ShortCircuitOperator", ["data_gate"]),
        "train": ("ExternalPythonOperator", ["data_gate_passed", "dataset"]),
        "gate": ("ExternalPythonOperator", ["train"]),
        "gate_passed": ("ShortCircuitOperator", ["gate"]),
        "upload": ("ExternalPythonOperator", ["gate_passed", "train"]),
        "deploy": ("ExternalPythonOperator", ["upload"]),
    }
    assert {t: d["execution_timeout"] for t, d in dag["tasks"].items()} == {
        "dataset": None,
        "data_gate": None,
        "data_gate_passed": None,
        "train": 3600.0,
        "gate": None,
        "gate_passed": None,
        "upload": None,
        "deploy": 180.0,
    }
    assert {d["retries"] for d in dag["tasks"].values()} == {1}
    # The file itself imports Airflow and the standard library only.
    text = (dags / "chicago_taxi.py").read_text()
    top_level = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert top_level == [
        "from __future__ import annotations",
        "import datetime",
        "import os",
        "from airflow.providers.standard.operators.python import (",
        "from airflow.sdk import DAG, Param",
        "from airflow.timetables.trigger import CronTriggerTimetable",
    ]
    _assert_tidy(dags / "chicago_taxi.py")


def test_local_dag_runs_the_chain_like_beamforge_chain(
    airflow: AirflowHome, tmp_path: pathlib.Path
) -> None:
    airflow_chain = _chain_copy(tmp_path / "airflow")
    local_chain = _chain_copy(tmp_path / "local")
    dags = tmp_path / "dags"
    dag_file = dags / "chicago_taxi.py"
    _compile(airflow_chain, "local", dag_file)
    conf = tmp_path / "conf.json"
    # A param of the DAG run reaches the steps as --param would.
    conf.write_text(json.dumps({"model_name": "taxi-from-airflow"}))

    servers: list[serving.LocalServer] = []
    with _stopping(servers):
        run = airflow.run("test", str(dag_file), str(conf), dags=dags)
        xcom = run["xcom"]
        if "deploy" in xcom:
            deployed = json.loads(xcom["deploy"]["return_value"])
            servers.append(serving.LocalServer.from_json(deployed["server"]))
        assert run["state"] == "success", run
        assert run["tasks"] == {
            t: "success"
            for t in (
                "dataset",
                "data_gate",
                "data_gate_passed",
                "train",
                "gate",
                "gate_passed",
                "upload",
                "deploy",
            )
        }

        ran = _cli(str(local_chain), "--target", "local")
        assert ran.returncode == 0, ran.stderr
        state = chains.load_state(
            str(local_chain.parent / "work" / "state-local.json"), "chicago_taxi", "local"
        )
        servers.append(serving.LocalServer.from_json(state.steps["deploy"].outputs["server"]))

        dataset = json.loads(xcom["dataset"]["return_value"])
        assert dataset["root"] == str(tmp_path / "airflow" / "dataset")
        assert (
            read_manifest(dataset["root"])["counts"]
            == read_manifest(str(tmp_path / "local" / "dataset"))["counts"]
        )
        assert dataset["rows"] == state.steps["dataset"].outputs["rows"]
        # The sample has no anomaly (and no baseline yet): the data gate passes on 0.
        assert dataset["metrics"] == {"anomalies": 0, "drifted_columns": 0, "skewed_columns": 0}
        assert xcom["data_gate"]["return_value"] == {"passed": True, "value": 0.0, "reason": ""}
        assert xcom["data_gate_passed"]["return_value"] is True

        train = json.loads(xcom["train"]["return_value"])
        assert train["model_dir"] == str(tmp_path / "airflow" / "work" / "train" / "model")
        assert train["metrics"] == state.steps["train"].outputs["metrics"]
        assert train["metrics"]["auc"] >= 0.75
        assert xcom["gate"]["return_value"] == {
            "passed": True,
            "value": train["metrics"]["auc"],
            "reason": "",
        }
        assert xcom["gate_passed"]["return_value"] is True

        upload = json.loads(xcom["upload"]["return_value"])
        assert upload["model"] == f"local:{train['model_dir']}"
        assert upload["display_name"] == "taxi-from-airflow"
        assert state.steps["upload"].outputs["display_name"] == "chicago-taxi-tips"

        trip = _first_trip()
        airflow_prediction = serving.predict(deployed["predict_url"], [trip])
        local_prediction = serving.predict(state.steps["deploy"].outputs["predict_url"], [trip])
        assert airflow_prediction == local_prediction
        assert len(airflow_prediction) == 1


# --- gcp target -----------------------------------------------------------------------------

BUCKET = "composer-chain"
SERVICE_ACCOUNT = f"chain@{dataflow_fake.PROJECT}.iam.gserviceaccount.com"
TEMPLATE = "gs://my-bucket/beamforge/templates/chicago_taxi.json"
PARENT = f"projects/{dataflow_fake.PROJECT}/locations/{dataflow_fake.REGION}"


class _JobHandler(dataflow_fake._Handler):
    """Answers a job GET with the fields the real API returns and Airflow's hook reads."""

    def do_GET(self) -> None:
        path, _ = self._record()
        if not path.startswith(f"{dataflow_fake.BASE}/jobs/"):
            self.reply({"error": {"code": 404, "message": path}}, 404)
            return
        (name,) = {
            body["launchParameter"]["jobName"]
            for method, _, body in self.server.requests
            if method == "POST" and body
        }
        self.reply(
            {
                "id": path.rsplit("/", 1)[1],
                "name": name,
                "projectId": dataflow_fake.PROJECT,
                "location": dataflow_fake.REGION,
                "type": "JOB_TYPE_BATCH",
                "currentState": self.server.next_state(),
            }
        )


class _Dataflow(FakeDataflow):
    def __init__(self) -> None:
        RecordingServer.__init__(self, _JobHandler)
        self.states = ["JOB_STATE_DONE"]


@pytest.fixture()
def fake_dataflow() -> Iterator[FakeDataflow]:
    yield from fake_rest.serving(_Dataflow())


@pytest.fixture(scope="module")
def bucket(gcs_emulator: Gcs) -> str:
    return gcs_emulator.new_bucket(BUCKET)


def _gcp_chain(folder: pathlib.Path) -> pathlib.Path:
    """The example chain for the fake Dataflow server's project, writing to the emulator."""
    data = yaml.safe_load(CHAIN.read_text())
    data["gcp"] = {
        "project": dataflow_fake.PROJECT,
        "region": dataflow_fake.REGION,
        "staging_bucket": f"gs://{BUCKET}/stage",
        "service_account": SERVICE_ACCOUNT,
        "labels": {"team": "ml"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _write_dataset(gcs: Gcs, root: str) -> dict[str, Any]:
    """A committed dataset under ``gs://BUCKET/{root}`` as the Flex Template job leaves it."""
    bucket = gcs.client().bucket(BUCKET)
    run = f"gs://{BUCKET}/{root}/run-1"
    files = {
        f"{run}/train/part-00000-of-00002.parquet": b"train-0",
        f"{run}/train/part-00001-of-00002.parquet": b"train-1",
        f"{run}/eval/part-00000-of-00001.parquet": b"eval-0",
        f"{run}/artifact/transform.json": b'{"steps": []}\n',
        f"{run}/artifact/vocabularies/vocabulary_company.txt": b"a\nb\n",
        f"{run}/validation.json": json.dumps(
            {"format_version": 1, "run": "run-1", "anomalies": [], "summary": {"ok": True}}
        ).encode(),
    }

    def listed(split: str) -> list[dict[str, Any]]:
        return [{"path": p, "size": 7, "rows": 1} for p in sorted(files) if f"/{split}/" in p]

    manifest = {
        "run": {"id": "run-1", "output": f"gs://{BUCKET}/{root}", "root": run},
        "splits": {
            "train": {"rows": 2, "files": {"parquet": listed("train")}},
            "eval": {"rows": 1, "files": {"parquet": listed("eval")}},
        },
        "artifact": {"path": f"{run}/artifact", "sha256": "0" * 64},
        # What the job's validation found: nothing, so the data gate lets training run.
        "validation": {
            "path": f"{run}/validation.json",
            "anomalies": 0,
            "drifted_columns": [],
            "skewed_columns": [],
            "ok": True,
        },
    }
    for path, data in files.items():
        bucket.blob(path[len(f"gs://{BUCKET}/") :]).upload_from_string(data)
    bucket.blob(f"{root}/manifest.json").upload_from_string(json.dumps(manifest))
    return manifest


def _run_gcp_dag(
    airflow: AirflowHome,
    tmp_path: pathlib.Path,
    fake: FakeDataflow,
    *,
    metrics: dict[str, Any],
    endpoints: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Compiles the gcp DAG and runs it with a run conf; the run and the Vertex AI calls."""
    dags = tmp_path / "dags"
    dag_file = dags / "chicago_taxi.py"
    _compile(_gcp_chain(tmp_path / "chain"), "gcp", dag_file)
    conf = tmp_path / "conf.json"
    conf.write_text(
        json.dumps(
            {"gcs_root": f"gs://{BUCKET}/{tmp_path.name}", "model_name": "taxi-from-composer"}
        )
    )
    record = tmp_path / "vertex-calls.json"
    fakes = tmp_path / "fakes.json"
    fakes.write_text(
        json.dumps(
            {
                "dataflow": fake.endpoint,
                "record": str(record),
                "metrics": metrics,
                "endpoints": endpoints,
            }
        )
    )
    run = airflow.run("test", str(dag_file), str(conf), str(fakes), dags=dags)
    calls = json.loads(record.read_text()) if record.exists() else []
    return run, calls


def _calls(calls: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [c for c in calls if c["method"] == method]


def test_gcp_dag_imports_with_the_provider_operators(
    airflow: AirflowHome, tmp_path: pathlib.Path
) -> None:
    dags = tmp_path / "dags"
    _compile(_gcp_chain(tmp_path / "chain"), "gcp", dags / "chicago_taxi.py")
    bag = airflow.run("dagbag", str(dags), dags=dags)
    assert bag["import_errors"] == {}
    dag = bag["dags"]["chicago_taxi"]
    assert {t: (d["operator"], d["upstream"]) for t, d in dag["tasks"].items()} == {
        "dataset": ("DataflowStartFlexTemplateOperator", []),
        "dataset_done": ("DataflowJobStatusSensor", ["dataset"]),
        "data_gate": ("ShortCircuitOperator", ["dataset_done"]),
        "train_inputs": ("PythonOperator", ["data_gate"]),
        "train": ("CreateCustomJobOperator", ["train_inputs"]),
        "train_artifact": ("PythonOperator", ["train"]),
        "gate": ("ShortCircuitOperator", ["train_artifact"]),
        "upload": ("UploadModelOperator", ["gate"]),
        "deploy_endpoint": ("BranchPythonOperator", ["upload"]),
        "deploy_create_endpoint": ("CreateEndpointOperator", ["deploy_endpoint"]),
        "deploy": ("DeployModelWithSplit", ["deploy_create_endpoint", "deploy_endpoint"]),
        "deploy_retire": ("PythonOperator", ["deploy", "deploy_endpoint"]),
    }
    assert dag["tasks"]["deploy"]["trigger_rule"] == "none_failed_min_one_success"
    assert dag["tasks"]["train"]["execution_timeout"] == 6 * 3600
    assert {d["retries"] for d in dag["tasks"].values()} == {2}
    assert {n: p["default"] for n, p in dag["params"].items()} == {
        n: d for n, (d, _) in PARAMETERS.items()
    }
    assert (dag["timetable"], dag["timetable_summary"]) == ("CronTriggerTimetable", "0 3 * * *")
    text = (dags / "chicago_taxi.py").read_text()
    modules = {
        line.split()[1].split(".")[0]
        for line in text.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert modules == {"__future__", "airflow", "datetime", "typing"}
    _assert_tidy(dags / "chicago_taxi.py")


def _assert_tidy(dag_file: pathlib.Path) -> None:
    """The DAG file reads like hand-written code: ruff finds nothing to lint or reformat."""
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                *command,
                "--isolated",
                "--line-length",
                "100",
                str(dag_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.emulator
def test_gcp_dag_runs_the_provider_operators_against_fakes(
    airflow: AirflowHome,
    tmp_path: pathlib.Path,
    fake_dataflow: FakeDataflow,
    gcs_emulator: Gcs,
    bucket: str,
) -> None:
    root = f"{tmp_path.name}/dataset"
    manifest = _write_dataset(gcs_emulator, root)
    run, calls = _run_gcp_dag(
        airflow, tmp_path, fake_dataflow, metrics={"auc": 0.81, "accuracy": 0.7}, endpoints=[]
    )
    assert run["state"] == "success", run
    assert run["tasks"] == {
        t: "success"
        for t in (
            "dataset",
            "dataset_done",
            "data_gate",
            "train_inputs",
            "train",
            "train_artifact",
            "gate",
            "upload",
            "deploy_endpoint",
            "deploy_create_endpoint",
            "deploy",
            "deploy_retire",
        )
    }

    # The real Dataflow hook launched the Flex Template, then the sensor read the job.
    base = f"/v1b3/{PARENT}"
    (launch, *polls) = fake_dataflow.requests
    method, path, body = launch
    assert (method, path) == ("POST", f"{base}/flexTemplates:launch")
    job_name = body["launchParameter"].pop("jobName")
    assert re.fullmatch(r"chicago-taxi-dataset-[0-9a-f]{8}", job_name), job_name
    assert body == {
        "launchParameter": {
            "containerSpecGcsPath": TEMPLATE,
            "parameters": {
                "spec": "gs://my-bucket/beamforge/templates/chicago_taxi.spec.yaml",
                "input": "examples/chicago_taxi/data/sample.csv",
                # The run conf's gcs_root, through {{ params.gcs_root }}.
                "output": f"gs://{BUCKET}/{root}",
            },
            "environment": {
                "additionalUserLabels": {"beamforge-chain": "chicago_taxi", "team": "ml"},
                "serviceAccountEmail": SERVICE_ACCOUNT,
            },
        }
    }
    assert polls and {(m, p) for m, p, _ in polls} == {("GET", f"{base}/jobs/job-1")}
    # The data gate read the committed manifest's validation counts: nothing found.
    assert run["xcom"]["data_gate"]["return_value"] is True

    # The CustomJob got the manifest's splits as AIP_* URIs.
    (created,) = _calls(calls, "create_custom_job")
    job = created["custom_job"]
    run_root = manifest["run"]["root"]
    (pool,) = job["job_spec"]["worker_pool_specs"]
    assert pool["container_spec"]["env"] == [
        {"name": "AIP_TRAINING_DATA_URI", "value": f"{run_root}/train/part-*.parquet"},
        {"name": "AIP_VALIDATION_DATA_URI", "value": f"{run_root}/eval/part-*.parquet"},
        {"name": "AIP_DATA_FORMAT", "value": "parquet"},
    ]
    assert (pool["container_spec"]["command"], pool["container_spec"]["args"]) == (
        ["python", "-m", "examples.chicago_taxi.trainer.task"],
        ["--model", "gradient_boosting"],
    )
    assert pool["machine_spec"]["machine_type"] == "n1-standard-4"
    output_dir = job["job_spec"]["base_output_directory"]["output_uri_prefix"]
    assert re.fullmatch(rf"gs://{BUCKET}/stage/chicago_taxi/train/\d{{14}}", output_dir)
    assert job["job_spec"]["service_account"] == SERVICE_ACCOUNT
    assert (job["display_name"], job["labels"]) == (
        "chicago_taxi-train",
        {"beamforge-chain": "chicago_taxi", "team": "ml"},
    )
    assert created["project_id"] == dataflow_fake.PROJECT
    model_dir = f"{output_dir}/model"
    assert run["xcom"]["train_inputs"]["return_value"]["model_dir"] == model_dir

    # The transform artifact was copied beside the model, for serving.
    blobs = gcs_emulator.client().bucket(BUCKET)
    prefix = model_dir[len(f"gs://{BUCKET}/") :]
    assert blobs.blob(f"{prefix}/artifact/transform.json").download_as_bytes() == (
        b'{"steps": []}\n'
    )
    assert blobs.blob(
        f"{prefix}/artifact/vocabularies/vocabulary_company.txt"
    ).download_as_bytes() == (b"a\nb\n")
    assert run["xcom"]["gate"]["return_value"] is True

    (uploaded,) = _calls(calls, "upload_model")
    model = uploaded["model"]
    assert (model["display_name"], model["artifact_uri"]) == ("taxi-from-composer", model_dir)
    container = model["container_spec"]
    assert container["image_uri"] == "us-docker.pkg.dev/my-project/beamforge/taxi-predictor:latest"
    assert container["env"] == [
        {"name": "PREDICTOR_CLASS", "value": "TaxiPredictor"},
        {"name": "PREDICTOR_MODULE", "value": "examples.chicago_taxi.predictor"},
    ]
    assert (container["ports"], container["predict_route"], container["health_route"]) == (
        [{"container_port": 8080}],
        "/predict",
        "/health",
    )

    # No endpoint had the display name: one was created, and the model takes all traffic.
    assert [c["filter"] for c in _calls(calls, "list_endpoints")] == [
        'display_name="chicago-taxi-tips"'
    ]
    (endpoint,) = _calls(calls, "create_endpoint")
    assert endpoint["endpoint"]["display_name"] == "chicago-taxi-tips"
    (deployed,) = _calls(calls, "deploy_model")
    assert (deployed["endpoint"], deployed["traffic_split"]) == ("9012", {"0": 100})
    assert deployed["deployed_model"]["model"] == f"{PARENT}/models/5678"
    assert deployed["deployed_model"]["service_account"] == SERVICE_ACCOUNT
    resources = deployed["deployed_model"]["dedicated_resources"]
    assert (
        resources["machine_spec"]["machine_type"],
        resources["min_replica_count"],
        resources["max_replica_count"],
    ) == ("n1-standard-2", 1, 1)
    assert _calls(calls, "undeploy_model") == []


@pytest.mark.emulator
def test_gcp_dag_reuses_an_endpoint_and_retires_the_model_it_replaces(
    airflow: AirflowHome,
    tmp_path: pathlib.Path,
    fake_dataflow: FakeDataflow,
    gcs_emulator: Gcs,
    bucket: str,
) -> None:
    _write_dataset(gcs_emulator, f"{tmp_path.name}/dataset")
    existing = {
        "name": f"{PARENT}/endpoints/7777",
        "display_name": "chicago-taxi-tips",
        "traffic_split": {"111": 100},
    }
    run, calls = _run_gcp_dag(
        airflow, tmp_path, fake_dataflow, metrics={"auc": 0.9}, endpoints=[existing]
    )
    assert run["state"] == "success", run
    assert run["tasks"]["deploy_create_endpoint"] == "skipped"
    assert (run["tasks"]["deploy"], run["tasks"]["deploy_retire"]) == ("success", "success")
    assert _calls(calls, "create_endpoint") == []
    (deployed,) = _calls(calls, "deploy_model")
    assert (deployed["endpoint"], deployed["traffic_split"]) == ("7777", {"0": 100})
    assert [(c["endpoint"], c["deployed_model_id"]) for c in _calls(calls, "undeploy_model")] == [
        ("7777", "111")
    ]


@pytest.mark.emulator
def test_gcp_dag_gate_that_stops_skips_the_rest(
    airflow: AirflowHome,
    tmp_path: pathlib.Path,
    fake_dataflow: FakeDataflow,
    gcs_emulator: Gcs,
    bucket: str,
) -> None:
    _write_dataset(gcs_emulator, f"{tmp_path.name}/dataset")
    run, calls = _run_gcp_dag(airflow, tmp_path, fake_dataflow, metrics={"auc": 0.6}, endpoints=[])
    # A stopped gate is no failure: the run succeeds with the steps after it skipped.
    assert run["state"] == "success", run
    assert run["tasks"]["gate"] == "success"
    gate = run["xcom"]["gate"]
    assert "return_value" not in gate
    assert sorted(gate["skipmixin_key"]["skipped"]) == [
        "deploy",
        "deploy_create_endpoint",
        "deploy_endpoint",
        "deploy_retire",
        "upload",
    ]
    assert {t: s for t, s in run["tasks"].items() if t.startswith(("upload", "deploy"))} == {
        t: "skipped"
        for t in ("upload", "deploy_endpoint", "deploy_create_endpoint", "deploy", "deploy_retire")
    }
    assert [c["method"] for c in calls] == ["create_custom_job", "wait_for_custom_job"]


def test_traffic_split_shares_the_rest_in_proportion() -> None:
    from launchers.chain.compile.airflow_runtime import new_traffic_split

    assert new_traffic_split({}, 30) == {"0": 100}
    assert new_traffic_split({"a": 100}, 100) == {"0": 100}
    assert new_traffic_split({"a": 100}, 10) == {"a": 90, "0": 10}
    assert new_traffic_split({"a": 50, "b": 50}, 25) == {"a": 38, "b": 37, "0": 25}


# --- what a DAG cannot express, and the schedule's and parameters' forms ------------------


def _variant(tmp_path: pathlib.Path, name: str, change: Any) -> pathlib.Path:
    data = yaml.safe_load(CHAIN.read_text())
    data["name"] = name
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set_launch(data: dict[str, Any]) -> None:
    data["steps"][0]["gcp"]["launch"] = "dataflow"


def _drop_train_gcp(data: dict[str, Any]) -> None:
    del data["steps"][2]["gcp"]


def _rename_train(data: dict[str, Any]) -> None:
    data["steps"][2]["name"] = "train model"
    for step in data["steps"][3:5]:
        for field in ("metrics", "model"):
            if step.get(field) == "train":
                step[field] = "train model"


def _clash_with_gate(data: dict[str, Any]) -> None:
    data["steps"][4]["name"] = "gate_passed"
    data["steps"][5]["model"] = "gate_passed"


def _endpoint_parameter(data: dict[str, Any]) -> None:
    data["steps"][5]["gcp"]["endpoint"] = "${model_name}"


def _scheduled(data: dict[str, Any]) -> None:
    data["schedule"] = {
        "cron": "30 2 * * 1-5",
        "timezone": "Europe/Paris",
        "start": "2026-01-05",
        "catchup": True,
        "max_concurrent_runs": 2,
    }


def _unscheduled(data: dict[str, Any]) -> None:
    del data["schedule"]
    # A parameter without a default: the DAG's param must be given when a run starts.
    data["parameters"]["input"] = {"description": "Raw trips"}


def _required_and_scheduled(data: dict[str, Any]) -> None:
    data["parameters"]["input"] = {"description": "Raw trips"}


@pytest.mark.parametrize(
    ("change", "target", "message"),
    [
        (
            _set_launch,
            "gcp",
            "steps[0].gcp.launch: the Airflow DAG launches a dataset as a Dataflow Flex "
            "Template; got launch: dataflow",
        ),
        (_drop_train_gcp, "gcp", "steps[2].gcp: the gcp target needs train's gcp section"),
        (
            _rename_train,
            "local",
            "steps[2].name: got 'train model'; a name is letters, digits, _ and -, starting "
            "with a letter, up to 63 characters",
        ),
        (
            _clash_with_gate,
            "local",
            "steps[3].name: the DAG names gate 'gate''s decision task 'gate_passed', which is "
            "also a step's name; rename one",
        ),
        (
            _required_and_scheduled,
            "local",
            "parameters.input: has no default, and Airflow starts a scheduled DAG's runs with "
            "its params' defaults",
        ),
        (
            _endpoint_parameter,
            "gcp",
            "steps[5].gcp.endpoint: CreateEndpointOperator does not template its endpoint",
        ),
    ],
)
def test_what_a_dag_cannot_express_fails_at_compile_time_with_the_yaml_path(
    tmp_path: pathlib.Path, change: Any, target: str, message: str
) -> None:
    chain = _variant(tmp_path, "bad", change)
    out = tmp_path / "dags" / "bad.py"
    # The parameter a variant leaves without a default gets a value, as --param gives it.
    result = _cli(
        "compile",
        str(chain),
        "--to",
        "airflow",
        "--target",
        target,
        "--param",
        "input=x.csv",
        "-o",
        str(out),
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"error: {chain}: {message}"), result.stderr
    assert not out.exists()


def test_schedule_and_parameters_become_the_dags(
    airflow: AirflowHome, tmp_path: pathlib.Path
) -> None:
    dags = tmp_path / "dags"
    _compile_as(_variant(tmp_path, "taxi_weekdays", _scheduled), dags / "weekdays.py")
    _compile_as(
        _variant(tmp_path, "taxi_on_demand", _unscheduled),
        dags / "on_demand.py",
        "--param",
        "input=trips.csv",
    )
    bag = airflow.run("dagbag", str(dags), dags=dags)
    assert bag["import_errors"] == {}
    weekdays, on_demand = bag["dags"]["taxi_weekdays"], bag["dags"]["taxi_on_demand"]
    assert (
        weekdays["timetable"],
        weekdays["timetable_summary"],
        weekdays["timezone"],
        weekdays["start_date"],
        weekdays["catchup"],
        weekdays["max_active_runs"],
    ) == (
        "CronTriggerTimetable",
        "30 2 * * 1-5",
        "Europe/Paris",
        "2026-01-04T23:00:00+00:00",
        True,
        2,
    )
    assert (on_demand["timetable"], on_demand["start_date"]) == ("NullTimetable", None)
    # A value given at compile time is no default: the param stays required, as in the chain.
    assert on_demand["params"]["input"]["default"] == "<required>"
    assert on_demand["params"]["input"]["description"] == "Raw trips"
    assert on_demand["params"]["model_name"]["default"] == "chicago-taxi-tips"


def _compile_as(chain: pathlib.Path, dag_file: pathlib.Path, *flags: str) -> None:
    result = _cli("compile", str(chain), "--to", "airflow", *flags, "-o", str(dag_file))
    assert result.returncode == 0, result.stderr


def test_local_gate_that_stops_short_circuits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from launchers.chain.compile.airflow_runtime import evaluate_gate, gate_decision

    # The gate task's function chdirs to the directory it is given, as a task does.
    monkeypatch.chdir(REPO)
    low = evaluate_gate(str(CHAIN), "gate", json.dumps({"metrics": {"auc": 0.5}}), {}, str(REPO))
    assert low == {
        "passed": False,
        "value": 0.5,
        "reason": "step gate: auc = 0.5 is below min 0.75",
    }
    assert gate_decision(low) is False
    assert capsys.readouterr().out == (
        "gate value 0.5: step gate: auc = 0.5 is below min 0.75; the steps after it are skipped\n"
    )
    missing = evaluate_gate(str(CHAIN), "gate", json.dumps({"metrics": {}}), {}, str(REPO))
    assert missing == {
        "passed": False,
        "value": None,
        "reason": "step gate: metric 'auc' not reported; the trainer reported []",
    }
    high = evaluate_gate(str(CHAIN), "gate", json.dumps({"metrics": {"auc": 0.9}}), {}, str(REPO))
    assert high == {"passed": True, "value": 0.9, "reason": ""}
    assert gate_decision(high) is True


def test_one_parameter_table_for_beamforge_kfp_and_airflow(
    airflow: AirflowHome, tmp_path: pathlib.Path
) -> None:
    """The chain's parameters are the kfp pipelines' and the DAGs', names and defaults alike."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = chains.load_chain(str(CHAIN))
    expected = {n: (p.default, p.description) for n, p in spec.parameters.items()}
    assert expected == PARAMETERS

    tables: dict[str, dict[str, tuple[str | None, str]]] = {}
    for target in ("local", "gcp"):
        pipeline = tmp_path / f"kfp-{target}.yaml"
        compiled = _cli(
            "compile", str(CHAIN), "--to", "kfp", "--target", target, "-o", str(pipeline)
        )
        assert compiled.returncode == 0, compiled.stderr
        ir = json_format.ParseDict(
            yaml.safe_load(pipeline.read_text()), pipeline_spec_pb2.PipelineSpec()
        )
        tables[f"kfp {target}"] = {
            name: (p.default_value.string_value, p.description)
            for name, p in ir.root.input_definitions.parameters.items()
            # The local pipeline's own parameter: where its tasks read the chain from.
            if name != "chain_file"
        }
        # One folder each: both DAGs are the chain's, with the same dag_id.
        dags = tmp_path / f"dags-{target}"
        _compile(CHAIN, target, dags / "chicago_taxi.py")
        bag = airflow.run("dagbag", str(dags), dags=dags)
        assert bag["import_errors"] == {}
        (dag,) = bag["dags"].values()
        tables[f"airflow {target}"] = {
            name: (p["default"], p["description"]) for name, p in dag["params"].items()
        }
    assert len(tables) == 4
    assert {where: table == expected for where, table in tables.items()} == dict.fromkeys(
        tables, True
    ), tables
