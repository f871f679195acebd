"""The taxi chain's data gate: new data unlike the last is stopped before training.

``examples/chicago_taxi/chain.yaml`` has a ``data_gate`` step right after the dataset: it reads
the dataset run's validation (``validation.json``: the schema's anomalies, drift against the
previous run) and stops the chain on any anomaly. Here the chain runs on the sample, then on a
shifted copy of it (:mod:`examples.chicago_taxi.shift`: fares x1.5, ``Mobile Wallet`` on one
trip in five): ``beamforge chain`` stops at the data gate with exit code 3 and names what
drifted, nothing after it runs again and the first model keeps serving. The compiled forms
stop the same way: the kfp local pipeline under ``kfp.local``, the Airflow local DAG under
``dag.test()``, and, on the GCS emulator, the kfp gcp ``check_data_gate`` component and the
Airflow gcp DAG's ``validation_gate``, both reading a committed dataset's manifest.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
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
from launchers.chain import GateStep, evaluate_gate
from launchers.chain.handoff import read_manifest
from tests.airflow_runs import AirflowHome
from tests.conftest import REPO, TAXI_SAMPLE, beamforge

CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"
PIPELINE = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
# What validation finds in the shifted sample: against the schema alone (a first run), and
# with the sample's run as the baseline (drift) too.
SCHEMA_ANOMALIES = [("fare", "out_of_range"), ("payment_type", "unexpected_values")]
ALL_ANOMALIES = [*SCHEMA_ANOMALIES, ("fare", "drift"), ("payment_type", "drift")]
# The steps after the data gate.
AFTER = ("train", "gate", "upload", "deploy")


def _shifted(source: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """A shifted copy of a taxi CSV, written by the example's own command."""
    done = subprocess.run(
        [sys.executable, "-m", "examples.chicago_taxi.shift", str(source), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    rows = len(source.read_text().splitlines()) - 1
    assert done.stdout == (
        f"{out}: {rows:,} trips, fares x1.5, payment type 'Mobile Wallet' on one in 5\n"
    )
    return out


def _chain_copy(folder: pathlib.Path) -> pathlib.Path:
    """The example chain with every path absolute and its outputs under ``folder``."""
    data = yaml.safe_load(CHAIN.read_text())
    data["workdir"] = str(folder / "work")
    data["parameters"]["input"]["default"] = str(TAXI_SAMPLE)
    dataset = data["steps"][0]
    dataset["spec"] = str(REPO / dataset["spec"])
    dataset["output"] = str(folder / "dataset")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _validation(path: str) -> dict[str, Any]:
    return dict(json.loads(pathlib.Path(path).read_text()))


def _kinds(validation: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["column"], a["kind"]) for a in validation["anomalies"]]


def _stopped(count: int, validation_path: str, validation: dict[str, Any]) -> str:
    """The data gate's reason: the count over its max, then every anomaly's message."""
    messages = "; ".join(a["message"] for a in validation["anomalies"])
    return f"step data_gate: anomalies = {count} is above max 0: {messages} (see {validation_path})"


def _first_trip() -> dict[str, Any]:
    with TAXI_SAMPLE.open(newline="") as f:
        row = next(csv.DictReader(f))
    return {k: (v if v != "" else None) for k, v in row.items()}


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_gate_on_a_dataset_names_its_counts_when_one_is_missing() -> None:
    gate = GateStep(name="data_gate", metrics="dataset", metric="drifted", max=0)
    with pytest.raises(chains.GateFailedError) as info:
        evaluate_gate(
            gate,
            {"anomalies": 0, "drifted_columns": 0, "skewed_columns": 0},
            "/nowhere/validation.json",
        )
    assert str(info.value) == (
        "step data_gate: metric 'drifted' not reported; the dataset's validation reported "
        "['anomalies', 'drifted_columns', 'skewed_columns']"
    )
    assert info.value.exit_code == 3
    passed = GateStep(name="data_gate", metrics="dataset", metric="anomalies", max=0)
    assert evaluate_gate(passed, {"anomalies": 0}, "/nowhere/validation.json") == {
        "metric": "anomalies",
        "value": 0,
        "min": None,
        "max": 0,
    }


def test_a_data_gate_on_a_dataset_without_validation_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import math

    from launchers.chain.compile.steps import check_gate

    gate = GateStep(name="data_gate", metrics="dataset", metric="anomalies", max=0)
    problem = (
        "step data_gate: metric 'anomalies' not reported; the dataset's run recorded no "
        "validation (give its job spec a validation: section)"
    )
    with pytest.raises(chains.GateFailedError) as info:
        evaluate_gate(gate, {}, None, dataset=True)
    assert str(info.value) == problem
    # The compiled local steps know the gate names the example's dataset step.
    monkeypatch.chdir(REPO)
    passed, value, reason = check_gate(str(CHAIN), "data_gate", json.dumps({"root": "x"}), {})
    assert (passed, math.isnan(value), reason) == (False, True, problem)
    counts = {"metrics": {"anomalies": 0, "drifted_columns": 0, "skewed_columns": 0}}
    upstream = json.dumps({"root": "x", "validation": "x/run-1/validation.json", **counts})
    assert check_gate(str(CHAIN), "data_gate", upstream, {}) == (True, 0.0, "")


@pytest.mark.slow
def test_shifted_data_is_stopped_by_the_data_gate_and_the_first_model_keeps_serving(
    tmp_path: pathlib.Path,
) -> None:
    chain = _chain_copy(tmp_path / "taxi")
    state_file = tmp_path / "taxi" / "work" / "state-local.json"
    servers: list[serving.LocalServer] = []
    try:
        first = beamforge("chain", str(chain), timeout=900)
        state = chains.load_state(str(state_file), "chicago_taxi", "local")
        if "deploy" in state.steps and state.steps["deploy"].outputs.get("server"):
            servers.append(serving.LocalServer.from_json(state.steps["deploy"].outputs["server"]))
        assert first.returncode == 0, first.stderr
        assert {n: (s.status, s.runs) for n, s in state.steps.items()} == {
            n: ("completed", 1) for n in ("dataset", "data_gate", *AFTER)
        }
        dataset = state.steps["dataset"].outputs
        # No baseline yet, and the sample is what the schema expects.
        assert dataset["metrics"] == {"anomalies": 0, "drifted_columns": 0, "skewed_columns": 0}
        assert state.steps["data_gate"].outputs == {
            "metric": "anomalies",
            "value": 0,
            "min": None,
            "max": 0,
        }
        deployed = state.steps["deploy"].outputs
        model = pathlib.Path(state.steps["train"].outputs["model_dir"]) / "model.joblib"
        model_sha = _sha256(model)
        trip = _first_trip()
        before = serving.predict(deployed["predict_url"], [trip])
        assert len(before) == 1

        shifted = _shifted(TAXI_SAMPLE, tmp_path / "shifted.csv")
        second = beamforge("chain", str(chain), "--param", f"input={shifted}", timeout=900)
        after = chains.load_state(str(state_file), "chicago_taxi", "local")
        dataset = after.steps["dataset"].outputs
        # The dataset ran again on the shifted trips, its baseline the sample's run.
        assert dataset["run"] != state.steps["dataset"].outputs["run"]
        validation_path = dataset["validation"]
        validation = _validation(validation_path)
        assert validation["baseline"]["run"] == state.steps["dataset"].outputs["run"]
        assert _kinds(validation) == ALL_ANOMALIES
        assert validation["summary"]["drifted_columns"] == ["fare", "payment_type"]
        assert dataset["metrics"] == {"anomalies": 4, "drifted_columns": 2, "skewed_columns": 0}
        (unexpected,) = [a for a in validation["anomalies"] if a["kind"] == "unexpected_values"]
        assert "'Mobile Wallet'" in unexpected["message"]
        # Stopped (exit code 3) with one line naming what was found.
        reason = _stopped(4, validation_path, validation)
        lines = second.stderr.splitlines()
        assert second.returncode == 3, second.stderr
        assert [line for line in lines if line.startswith("error:")] == [f"error: {reason}"]
        assert lines[-1] == f"error: {reason}"
        # The progress lines: the dataset ran again, the gate stopped, nothing ran after it.
        assert [line.split() for line in lines if line.startswith("  ")] == [
            ["dataset", "running"],
            ["dataset", "completed"],
            ["data_gate", "running"],
            ["data_gate", "failed"],
        ]
        for name in ("fare", "payment_type", "'Mobile Wallet'"):
            assert name in reason
        # The gate failed; nothing after it ran again; the first model still serves.
        assert {n: (s.status, s.runs) for n, s in after.steps.items()} == {
            "dataset": ("completed", 2),
            "data_gate": ("failed", 2),
            **{n: ("completed", 1) for n in AFTER},
        }
        assert after.steps["data_gate"].error == reason
        for name in AFTER:
            assert after.steps[name] == state.steps[name]
        assert after.steps["deploy"].outputs == deployed
        assert serving.is_healthy(serving.LocalServer.from_json(deployed["server"]))
        assert serving.predict(deployed["predict_url"], [trip]) == before
        assert _sha256(model) == model_sha
        status = beamforge(
            "chain", "status", str(chain), "--param", f"input={shifted}", timeout=120
        )
        assert status.returncode == 0, status.stderr
        assert [line.split()[:3] for line in status.stdout.splitlines()[1:]] == [
            ["dataset", "dataset", "completed"],
            ["data_gate", "gate", "failed"],
            # Still the first run's results, made from the dataset before this one.
            *[[n, n, "stale"] for n in AFTER],
        ]
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                serving.stop_server(server)


@pytest.mark.slow
def test_kfp_local_pipeline_stops_at_the_data_gate(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfp import components, local

    chain = _chain_copy(tmp_path / "kfp")
    pipeline_file = tmp_path / "pipeline.yaml"
    compiled = beamforge("chain", "compile", str(chain), "--to", "kfp", "-o", str(pipeline_file))
    assert (compiled.returncode, compiled.stderr) == (0, ""), compiled.stderr
    shifted = _shifted(TAXI_SAMPLE, tmp_path / "shifted.csv")

    monkeypatch.chdir(REPO)
    pipeline_root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    pipeline = components.load_component_from_file(str(pipeline_file))
    pipeline(input=str(shifted))

    (run,) = pipeline_root.iterdir()
    ran = sorted(p.parent.name for p in run.glob("*/executor_output.json"))
    # The data gate said no: nothing inside its condition ran.
    assert ran == ["dataset-step", "fingerprint-step", "fingerprint-step-2", "gate-step"]
    outputs = json.loads((run / "dataset-step" / "executor_output.json").read_text())
    dataset = json.loads(outputs["parameterValues"]["outputs"])
    assert dataset["root"] == str(tmp_path / "kfp" / "dataset")
    # A first run: the schema's anomalies only (no baseline, no drift).
    validation = _validation(dataset["validation"])
    assert validation["baseline"] is None
    assert _kinds(validation) == SCHEMA_ANOMALIES
    assert dataset["metrics"] == {"anomalies": 2, "drifted_columns": 0, "skewed_columns": 0}
    gate = json.loads((run / "gate-step" / "executor_output.json").read_text())
    assert gate["parameterValues"] == {"Output": False}
    assert not (tmp_path / "kfp" / "work" / "train").exists()


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """Airflow's sqlite database, migrated once for this module (fails if the venv is missing)."""
    return AirflowHome.migrated(tmp_path_factory.mktemp("airflow-home"))


@pytest.mark.slow
def test_airflow_local_dag_skips_the_steps_after_a_stopped_data_gate(
    airflow_home: AirflowHome, tmp_path: pathlib.Path
) -> None:
    airflow = airflow_home.copy(tmp_path / "airflow-home")
    chain = _chain_copy(tmp_path / "airflow")
    dags = tmp_path / "dags"
    dag_file = dags / "chicago_taxi.py"
    compiled = beamforge(
        "chain", "compile", str(chain), "--to", "airflow", "-o", str(dag_file), timeout=300
    )
    assert (compiled.returncode, compiled.stderr) == (0, ""), compiled.stderr
    shifted = _shifted(TAXI_SAMPLE, tmp_path / "shifted.csv")
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"input": str(shifted)}))

    run = airflow.run("test", str(dag_file), str(conf), dags=dags)
    # A stopped gate is no failure: the run succeeds with the steps after it skipped.
    assert run["state"] == "success", run
    assert run["tasks"] == {
        "dataset": "success",
        "data_gate": "success",
        "data_gate_passed": "success",
        "train": "skipped",
        "gate": "skipped",
        "gate_passed": "skipped",
        "upload": "skipped",
        "deploy": "skipped",
    }
    dataset = json.loads(run["xcom"]["dataset"]["return_value"])
    validation = _validation(dataset["validation"])
    assert _kinds(validation) == SCHEMA_ANOMALIES
    assert run["xcom"]["data_gate"]["return_value"] == {
        "passed": False,
        "value": 2.0,
        "reason": _stopped(2, dataset["validation"], validation),
    }
    decision = run["xcom"]["data_gate_passed"]
    assert "return_value" not in decision
    assert sorted(decision["skipmixin_key"]["skipped"]) == [
        "deploy",
        "gate",
        "gate_passed",
        "train",
        "upload",
    ]
    assert not (tmp_path / "airflow" / "work" / "train").exists()


# --- gcp: the committed manifest on the GCS emulator ---------------------------------------


def _commit(root: str, csv_file: pathlib.Path) -> dict[str, Any]:
    """A taxi dataset committed to gs:// (the emulator), as the Flex Template job writes it."""
    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec

    run_job(load_spec(str(PIPELINE)), output=root, inputs=[str(csv_file)])
    return read_manifest(root)


def _read_gcs(path: str) -> dict[str, Any]:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return dict(json.loads(f.read().decode("utf-8")))


def _data_gate_written() -> str:
    (step,) = [s for s in yaml.safe_load(CHAIN.read_text())["steps"] if s["name"] == "data_gate"]
    return json.dumps(step, sort_keys=True)


@pytest.fixture(scope="module")
def committed(gcs_emulator: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two committed datasets: the sample, and a shifted copy of it (no baseline for either)."""
    folder = tmp_path_factory.mktemp("committed")
    bucket = gcs_emulator.new_bucket("data-gate")
    shifted = _shifted(TAXI_SAMPLE, folder / "shifted.csv")
    roots = {"sample": f"gs://{bucket}/sample", "shifted": f"gs://{bucket}/shifted"}
    _commit(roots["sample"], TAXI_SAMPLE)
    _commit(roots["shifted"], shifted)
    return roots


@pytest.mark.slow
@pytest.mark.emulator
def test_kfp_gcp_check_data_gate_decides_on_the_committed_manifest(
    committed: dict[str, str],
    gcs_emulator: Any,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kfp import local

    from launchers.chain.compile import gcp_steps
    from launchers.chain.compile.gcp_components import components

    gate = _data_gate_written()
    manifest = read_manifest(committed["shifted"])
    summary = manifest["validation"]
    validation = _read_gcs(summary["path"])
    assert summary["path"] == f"{manifest['run']['root']}/validation.json"
    assert (summary["anomalies"], summary["drifted_columns"]) == (2, [])
    assert _kinds(validation) == SCHEMA_ANOMALIES
    assert gcp_steps.data_gate_result(gate, {}, committed["shifted"]) == (
        False,
        _stopped(2, summary["path"], validation),
    )
    assert gcp_steps.data_gate_result(gate, {}, committed["sample"]) == (True, "anomalies = 0")
    # A dataset whose job spec has no validation: section records none; the gate says so.
    bare = {k: v for k, v in read_manifest(committed["sample"]).items() if k != "validation"}
    bucket = committed["sample"].split("/")[2]
    client = gcs_emulator.client()
    client.bucket(bucket).blob("bare/manifest.json").upload_from_string(json.dumps(bare))
    assert gcp_steps.data_gate_result(gate, {}, f"gs://{bucket}/bare") == (
        False,
        "step data_gate: metric 'anomalies' not reported; the dataset's run recorded no "
        "validation (give its job spec a validation: section)",
    )

    # The component itself, run by kfp's local runner in this interpreter.
    ops = components("python:3.11")
    monkeypatch.chdir(REPO)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    stopped = ops.check_data_gate(
        gate=gate, parameters={}, root=committed["shifted"], gcp_resources="{}"
    )
    assert stopped.output is False
    passed = ops.check_data_gate(
        gate=gate, parameters={}, root=committed["sample"], gcp_resources="{}"
    )
    assert passed.output is True


@pytest.fixture()
def fake_dataflow() -> Iterator[Any]:
    from tests import fake_rest
    from tests.test_chain_airflow import _Dataflow

    yield from fake_rest.serving(_Dataflow())


@pytest.mark.slow
@pytest.mark.emulator
def test_airflow_gcp_validation_gate_decides_on_the_committed_manifest(
    airflow_home: AirflowHome,
    fake_dataflow: Any,
    gcs_emulator: Any,
    tmp_path: pathlib.Path,
) -> None:
    from tests import test_chain_airflow

    airflow = airflow_home.copy(tmp_path / "airflow-home")
    bucket = test_chain_airflow.BUCKET
    if gcs_emulator.client().lookup_bucket(bucket) is None:
        # The Airflow chain tests, in the same session, may have made it already.
        gcs_emulator.new_bucket(bucket)
    # The DAG's dataset job (on the fake Dataflow) writes nothing: the shifted trips are
    # committed where the run's gcs_root puts the dataset, as the job would.
    root = f"gs://{bucket}/{tmp_path.name}/dataset"
    manifest = _commit(root, _shifted(TAXI_SAMPLE, tmp_path / "shifted.csv"))
    validation = _read_gcs(manifest["validation"]["path"])
    assert manifest["validation"]["path"] == f"{manifest['run']['root']}/validation.json"
    assert _kinds(validation) == SCHEMA_ANOMALIES

    run, calls = test_chain_airflow._run_gcp_dag(
        airflow, tmp_path, fake_dataflow, metrics={"auc": 0.9}, endpoints=[]
    )
    # A stopped gate is no failure: the run succeeds with every step after it skipped.
    assert run["state"] == "success", run
    gate = run["xcom"]["data_gate"]
    assert "return_value" not in gate
    skipped = [
        "deploy",
        "deploy_create_endpoint",
        "deploy_endpoint",
        "deploy_retire",
        "gate",
        "train",
        "train_artifact",
        "train_inputs",
        "upload",
    ]
    assert sorted(gate["skipmixin_key"]["skipped"]) == skipped
    assert run["tasks"] == {
        "dataset": "success",
        "dataset_done": "success",
        "data_gate": "success",
        **dict.fromkeys(skipped, "skipped"),
    }
    # No training job, no model, no endpoint.
    assert calls == []
    # The callable said why, in the task's log.
    messages = "; ".join(a["message"] for a in validation["anomalies"])
    log = (airflow.root / "test.log").read_text()
    assert f"anomalies = 2 is above max 0: {messages}; stopping" in log
