"""The taxi chain compiled to a kfp pipeline, and the compiled file run by kfp's local runner.

The pipeline file is written by ``beamforge chain compile`` in a subprocess, read back as a
``PipelineSpec`` (its tasks, their order and the gate's condition), then run with
``kfp.local`` (SubprocessRunner without a venv). The same chain, from a second copy of its
file, runs with ``beamforge chain --target local``: the committed datasets' counts, the
models' metrics (same trainer, same seed) and the predictions both servers give for one raw
trip are equal.
"""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from launchers.chain.handoff import read_manifest
from tests.conftest import REPO, TAXI_SAMPLE

CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"


def _chain_copy(folder: pathlib.Path) -> pathlib.Path:
    """The example chain with every path absolute and its outputs under ``folder``."""
    data = yaml.safe_load(CHAIN.read_text())
    data["workdir"] = str(folder / "work")
    dataset = data["steps"][0]
    dataset["spec"] = str(REPO / dataset["spec"])
    dataset["inputs"] = [str(TAXI_SAMPLE)]
    dataset["output"] = str(folder / "dataset")
    folder.mkdir(parents=True)
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launchers.cli", "chain", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _task_outputs(root: pathlib.Path, task: str) -> dict[str, Any]:
    (found,) = root.glob(f"*/{task}/executor_output.json")
    return dict(json.loads(found.read_text())["parameterValues"])


def _first_trip() -> dict[str, Any]:
    with TAXI_SAMPLE.open(newline="") as f:
        row = next(csv.DictReader(f))
    return {k: (v if v != "" else None) for k, v in row.items()}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--to", "airflow"], "error: chain compile --to airflow is not built yet; --to kfp is\n"),
        (
            ["--to", "kfp", "--target", "gcp"],
            "error: chain compile --target gcp is not built yet; --target local is\n",
        ),
        ([], "error: chain compile needs --to kfp\n"),
    ],
)
def test_compile_refuses_what_is_not_built(
    tmp_path: pathlib.Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "pipeline.yaml"
    result = _cli("compile", str(CHAIN), *flags, "-o", str(out))
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    assert not out.exists()


@pytest.mark.slow
def test_compiled_pipeline_runs_the_chain_like_beamforge_chain(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.protobuf import json_format
    from kfp import components, local
    from kfp.pipeline_spec import pipeline_spec_pb2

    kfp_chain = _chain_copy(tmp_path / "kfp")
    local_chain = _chain_copy(tmp_path / "local")
    pipeline_file = tmp_path / "pipeline.yaml"
    compiled = _cli("compile", str(kfp_chain), "--to", "kfp", "-o", str(pipeline_file))
    assert (compiled.returncode, compiled.stderr) == (0, ""), compiled.stderr
    assert (
        compiled.stdout == f"{pipeline_file}: kfp pipeline of chain chicago_taxi (5 steps, local)\n"
    )

    spec = json_format.ParseDict(
        yaml.safe_load(pipeline_file.read_text()), pipeline_spec_pb2.PipelineSpec()
    )
    assert spec.pipeline_info.name == "chicago-taxi"
    assert spec.root.input_definitions.parameters["chain_file"].default_value.string_value == str(
        kfp_chain
    )
    root = spec.root.dag.tasks
    assert {k: (t.task_info.name, sorted(t.dependent_tasks)) for k, t in root.items()} == {
        "dataset-step": ("dataset", []),
        "train-step": ("train", ["dataset-step"]),
        "gate-step": ("gate", ["train-step"]),
        "condition-1": ("gate-passed", ["gate-step", "train-step"]),
    }
    assert (
        root["condition-1"].trigger_policy.condition
        == "inputs.parameter_values['pipelinechannel--gate-step-Output'] == true"
    )
    gated = spec.components[root["condition-1"].component_ref.name].dag.tasks
    assert {k: (t.task_info.name, sorted(t.dependent_tasks)) for k, t in gated.items()} == {
        "upload-step": ("upload", []),
        "deploy-step": ("deploy", ["upload-step"]),
    }
    # Each task names its step and the chain file; train takes the dataset step's outputs.
    train_inputs = root["train-step"].inputs.parameters
    assert train_inputs["step_name"].runtime_value.constant.string_value == "train"
    assert train_inputs["chain_file"].component_input_parameter == "chain_file"
    assert train_inputs["dataset"].task_output_parameter.producer_task == "dataset-step"
    assert train_inputs["dataset"].task_output_parameter.output_parameter_key == "outputs"

    servers: list[serving.LocalServer] = []
    try:
        # The trainer module and the predictor are found from the repository's root.
        monkeypatch.chdir(REPO)
        pipeline_root = tmp_path / "pipeline-root"
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
        components.load_component_from_file(str(pipeline_file))()
        deployed = json.loads(_task_outputs(pipeline_root, "deploy-step")["outputs"])
        servers.append(serving.LocalServer.from_json(deployed["server"]))

        ran = _cli(str(local_chain), "--target", "local")
        assert ran.returncode == 0, ran.stderr
        state = chains.load_state(
            str(local_chain.parent / "work" / "state-local.json"), "chicago_taxi", "local"
        )
        servers.append(serving.LocalServer.from_json(state.steps["deploy"].outputs["server"]))

        kfp_dataset = json.loads(_task_outputs(pipeline_root, "dataset-step")["outputs"])
        assert kfp_dataset["root"] == str(tmp_path / "kfp" / "dataset")
        kfp_manifest = read_manifest(kfp_dataset["root"])
        local_manifest = read_manifest(str(tmp_path / "local" / "dataset"))
        assert kfp_manifest["counts"] == local_manifest["counts"]
        assert kfp_dataset["rows"] == state.steps["dataset"].outputs["rows"]

        kfp_train = json.loads(_task_outputs(pipeline_root, "train-step")["outputs"])
        assert kfp_train["model_dir"] == str(tmp_path / "kfp" / "work" / "train" / "model")
        assert kfp_train["metrics"] == state.steps["train"].outputs["metrics"]
        assert kfp_train["metrics"]["auc"] >= 0.75
        # The numeric top-level metrics are logged on the task's Metrics artifact too.
        (train_output,) = pipeline_root.glob("*/train-step/executor_output.json")
        (logged,) = json.loads(train_output.read_text())["artifacts"]["metrics"]["artifacts"]
        assert logged["metadata"] == {
            k: kfp_train["metrics"][k] for k in ("accuracy", "auc", "log_loss")
        }

        assert _task_outputs(pipeline_root, "gate-step") == {"Output": True}
        upload = _task_outputs(pipeline_root, "upload-step")
        assert upload["model"] == f"local:{kfp_train['model_dir']}"

        trip = _first_trip()
        kfp_prediction = serving.predict(deployed["predict_url"], [trip])
        local_prediction = serving.predict(state.steps["deploy"].outputs["predict_url"], [trip])
        assert kfp_prediction == local_prediction
        assert len(kfp_prediction) == 1
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                serving.stop_server(server)
