"""The taxi chain compiled to Airflow DAGs, imported and run by Airflow in its own venv.

``beamforge chain compile --to airflow`` writes the DAG files; Airflow (``.venv/airflow``,
made by ``make airflow``) imports them in a DagBag and runs them with ``dag.test()`` on
sqlite, in subprocesses (:mod:`tests.airflow_runs`). The local DAG runs the chain to the same
results as ``beamforge chain --target local``: the same dataset counts, the same model
metrics and the same prediction for a raw trip.
"""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from launchers.chain.handoff import read_manifest
from tests.airflow_runs import AirflowHome
from tests.conftest import REPO, TAXI_SAMPLE

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
    return subprocess.run(
        [sys.executable, "-m", "launchers.cli", "chain", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _compile(chain: pathlib.Path, target: str, dag_file: pathlib.Path) -> None:
    result = _cli("compile", str(chain), "--to", "airflow", "--target", target, "-o", str(dag_file))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == (
        f"{dag_file}: Airflow DAG of chain chicago_taxi (5 steps, {target} target)\n"
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
        "train": ("ExternalPythonOperator", ["dataset"]),
        "gate": ("ExternalPythonOperator", ["train"]),
        "gate_passed": ("ShortCircuitOperator", ["gate"]),
        "upload": ("ExternalPythonOperator", ["gate_passed", "train"]),
        "deploy": ("ExternalPythonOperator", ["upload"]),
    }
    assert {t: d["execution_timeout"] for t, d in dag["tasks"].items()} == {
        "dataset": None,
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
            t: "success" for t in ("dataset", "train", "gate", "gate_passed", "upload", "deploy")
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
