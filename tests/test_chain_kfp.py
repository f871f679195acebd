"""The taxi chain compiled to a kfp pipeline, and the compiled file run by kfp's local runner.

The pipeline file is written by ``beamforge chain compile`` in a subprocess, read back as a
``PipelineSpec`` (its parameters, tasks, their order and the gate's condition), then run with
``kfp.local`` (SubprocessRunner without a venv). The same chain, from a second copy of its
file, runs with ``beamforge chain --target local``: the committed datasets' counts, the
models' metrics (same trainer, same seed) and the predictions both servers give for one raw
trip are equal. Run again with kfp's cache, the pipeline reuses every step but the deploy;
run with another ``input`` parameter, it redoes the dataset and everything after it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from launchers.chain.handoff import read_manifest
from tests.conftest import REPO, TAXI_SAMPLE, beamforge

CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"


def _chain_copy(folder: pathlib.Path) -> pathlib.Path:
    """The example chain with every path absolute and its outputs under ``folder``."""
    data = yaml.safe_load(CHAIN.read_text())
    data["workdir"] = str(folder / "work")
    data["parameters"]["input"]["default"] = str(TAXI_SAMPLE)
    dataset = data["steps"][0]
    dataset["spec"] = str(REPO / dataset["spec"])
    dataset["output"] = str(folder / "dataset")
    folder.mkdir(parents=True)
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return beamforge("chain", *args, timeout=600)


def _task_outputs(root: pathlib.Path, task: str) -> dict[str, Any]:
    (found,) = root.glob(f"*/{task}/executor_output.json")
    return dict(json.loads(found.read_text())["parameterValues"])


def _rerun(
    pipeline: Any, pipeline_root: pathlib.Path, servers: list[Any], **values: str
) -> set[str]:
    """Runs the pipeline again; the names of the tasks that ran (not reused from the cache)."""
    before = set(pipeline_root.iterdir())
    pipeline(**values)
    (run,) = set(pipeline_root.iterdir()) - before
    ran = {p.parent.name for p in run.glob("*/executor_output.json")}
    output = json.loads((run / "deploy-step" / "executor_output.json").read_text())
    deployed = json.loads(output["parameterValues"]["outputs"])
    servers.append(serving.LocalServer.from_json(deployed["server"]))
    names = {
        "dataset-step": "dataset",
        "gate-step": "data_gate",
        "train-step": "train",
        "gate-step-2": "gate",
        "upload-step": "upload",
        "deploy-step": "deploy",
        "fingerprint-step": "dataset-fingerprint",
        "fingerprint-step-2": "data_gate-fingerprint",
        "fingerprint-step-3": "train-fingerprint",
        "fingerprint-step-4": "gate-fingerprint",
        "fingerprint-step-5": "upload-fingerprint",
        "fingerprint-step-6": "deploy-fingerprint",
    }
    return {names[task] for task in ran}


def _first_trip() -> dict[str, Any]:
    with TAXI_SAMPLE.open(newline="") as f:
        row = next(csv.DictReader(f))
    return {k: (v if v != "" else None) for k, v in row.items()}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--to", "argo"],
            "error: chain compile needs --to kfp or airflow; got --to argo\n",
        ),
        ([], "error: chain compile needs --to kfp or airflow; got no --to\n"),
        (
            ["--to", "kfp", "--param", "nope=1"],
            f"error: {CHAIN}: parameters: --param nope: no such parameter; "
            "the chain's parameters: input, gcs_root, model_name\n",
        ),
    ],
)
def test_compile_refuses_bad_flags(tmp_path: pathlib.Path, flags: list[str], message: str) -> None:
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
    assert compiled.stdout == (
        f"{pipeline_file}: kfp pipeline of chain chicago_taxi (6 steps, local target)\n"
    )

    spec = json_format.ParseDict(
        yaml.safe_load(pipeline_file.read_text()), pipeline_spec_pb2.PipelineSpec()
    )
    assert spec.pipeline_info.name == "chicago-taxi"
    # The pipeline's parameters are the chain's, with their defaults, and the chain file.
    defaults = {
        name: p.default_value.string_value
        for name, p in spec.root.input_definitions.parameters.items()
    }
    assert defaults == {
        "chain_file": str(kfp_chain),
        "input": str(TAXI_SAMPLE),
        "gcs_root": "gs://my-bucket/beamforge/chicago_taxi",
        "model_name": "chicago-taxi-tips",
    }
    root = spec.root.dag.tasks
    assert {
        k: (t.task_info.name, sorted(t.dependent_tasks), t.caching_options.enable_cache)
        for k, t in root.items()
    } == {
        "fingerprint-step": ("dataset-fingerprint", [], False),
        "dataset-step": ("dataset", ["fingerprint-step"], True),
        "fingerprint-step-2": ("data_gate-fingerprint", [], False),
        "gate-step": ("data_gate", ["dataset-step", "fingerprint-step-2"], True),
        "condition-1": ("data_gate-passed", ["dataset-step", "gate-step"], False),
    }
    assert (
        root["condition-1"].trigger_policy.condition
        == "inputs.parameter_values['pipelinechannel--gate-step-Output'] == true"
    )
    # The data gate reads the dataset step's outputs (its validation counts).
    data_gate = root["gate-step"].inputs.parameters
    assert data_gate["step_name"].runtime_value.constant.string_value == "data_gate"
    assert data_gate["train"].task_output_parameter.producer_task == "dataset-step"
    assert data_gate["train"].task_output_parameter.output_parameter_key == "outputs"
    trained = spec.components[root["condition-1"].component_ref.name].dag.tasks
    assert {
        k: (t.task_info.name, sorted(t.dependent_tasks), t.caching_options.enable_cache)
        for k, t in trained.items()
    } == {
        "fingerprint-step-3": ("train-fingerprint", [], False),
        "train-step": ("train", ["fingerprint-step-3"], True),
        "fingerprint-step-4": ("gate-fingerprint", [], False),
        "gate-step-2": ("gate", ["fingerprint-step-4", "train-step"], True),
        "condition-2": ("gate-passed", ["gate-step-2", "train-step"], False),
    }
    assert (
        trained["condition-2"].trigger_policy.condition
        == "inputs.parameter_values['pipelinechannel--gate-step-2-Output'] == true"
    )
    gated = spec.components[trained["condition-2"].component_ref.name].dag.tasks
    assert {
        k: (t.task_info.name, sorted(t.dependent_tasks), t.caching_options.enable_cache)
        for k, t in gated.items()
    } == {
        "fingerprint-step-5": ("upload-fingerprint", [], False),
        "upload-step": ("upload", ["fingerprint-step-5"], True),
        "fingerprint-step-6": ("deploy-fingerprint", [], False),
        "deploy-step": ("deploy", ["fingerprint-step-6", "upload-step"], False),
    }
    # Each task names its step, the chain file and the parameters; train takes the
    # dataset step's outputs (through the data gate's condition) and its own fingerprint.
    train_inputs = trained["train-step"].inputs.parameters
    assert train_inputs["step_name"].runtime_value.constant.string_value == "train"
    # Inside the condition, the pipeline's parameters come in through the group.
    assert train_inputs["chain_file"].component_input_parameter == "pipelinechannel--chain_file"
    group_inputs = root["condition-1"].inputs.parameters
    assert group_inputs["pipelinechannel--chain_file"].component_input_parameter == "chain_file"
    assert train_inputs["dataset"].component_input_parameter == (
        "pipelinechannel--dataset-step-outputs"
    )
    into = root["condition-1"].inputs.parameters["pipelinechannel--dataset-step-outputs"]
    assert into.task_output_parameter.producer_task == "dataset-step"
    assert into.task_output_parameter.output_parameter_key == "outputs"
    assert train_inputs["fingerprint"].task_output_parameter.producer_task == "fingerprint-step-3"
    assert json_format.MessageToDict(train_inputs["parameters"].runtime_value.constant) == {
        name: f"{{{{$.inputs.parameters['pipelinechannel--{name}']}}}}"
        for name in ("input", "gcs_root", "model_name")
    }
    assert json_format.MessageToDict(data_gate["parameters"].runtime_value.constant) == {
        name: f"{{{{$.inputs.parameters['pipelinechannel--{name}']}}}}"
        for name in ("input", "gcs_root", "model_name")
    }

    servers: list[serving.LocalServer] = []
    try:
        # The trainer module and the predictor are found from the repository's root.
        monkeypatch.chdir(REPO)
        pipeline_root = tmp_path / "pipeline-root"
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(pipeline_root),
            enable_caching=True,
            cache_root=str(tmp_path / "kfp-cache"),
        )
        pipeline = components.load_component_from_file(str(pipeline_file))
        pipeline()
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

        # The sample has no anomaly and no baseline yet: the data gate passes on 0.
        assert kfp_dataset["metrics"] == {
            "anomalies": 0,
            "drifted_columns": 0,
            "skewed_columns": 0,
        }
        assert kfp_dataset["validation"] == (
            f"{kfp_dataset['root']}/{kfp_dataset['run']}/validation.json"
        )
        assert _task_outputs(pipeline_root, "gate-step") == {"Output": True}
        assert _task_outputs(pipeline_root, "gate-step-2") == {"Output": True}
        upload = _task_outputs(pipeline_root, "upload-step")
        assert upload["model"] == f"local:{kfp_train['model_dir']}"

        trip = _first_trip()
        kfp_prediction = serving.predict(deployed["predict_url"], [trip])
        local_prediction = serving.predict(state.steps["deploy"].outputs["predict_url"], [trip])
        assert kfp_prediction == local_prediction
        assert len(kfp_prediction) == 1

        # Nothing changed: every step but the deploy is reused from kfp's cache; the
        # fingerprints are computed again (that is how the cache knows nothing changed).
        assert _rerun(pipeline, pipeline_root, servers) == {
            "dataset-fingerprint",
            "data_gate-fingerprint",
            "train-fingerprint",
            "gate-fingerprint",
            "upload-fingerprint",
            "deploy-fingerprint",
            "deploy",
        }
        # Another input file (the first 2,000 trips): the dataset and all after it run again.
        fewer = tmp_path / "fewer.csv"
        fewer.write_text("".join(TAXI_SAMPLE.read_text().splitlines(keepends=True)[:2001]))
        assert _rerun(pipeline, pipeline_root, servers, input=str(fewer)) == {
            "dataset-fingerprint",
            "dataset",
            "data_gate-fingerprint",
            "data_gate",
            "train-fingerprint",
            "train",
            "gate-fingerprint",
            "gate",
            "upload-fingerprint",
            "upload",
            "deploy-fingerprint",
            "deploy",
        }
        latest = max(pipeline_root.iterdir(), key=lambda p: p.stat().st_mtime)
        (rerun_dataset,) = latest.glob("dataset-step/executor_output.json")
        outputs = json.loads(json.loads(rerun_dataset.read_text())["parameterValues"]["outputs"])
        assert outputs["root"] == str(tmp_path / "kfp" / "dataset")
        assert sum(outputs["rows"].values()) < sum(kfp_dataset["rows"].values())
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                serving.stop_server(server)
