"""Champion / challenger gates on the gcp target: the real Vertex SDK against the fake.

The dataset job writes to gs:// (the GCS emulator); the fake Vertex server's stand-in
training container runs the real taxi trainer on the splits and writes the model where
Vertex would set ``AIP_MODEL_DIR``. The champion is the model with the largest traffic share
on the deploy step's endpoint, read back through the SDK (its ``artifactUri`` on gs://).
"""

from __future__ import annotations

import json
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from apache_beam.io.filesystems import FileSystems

from examples.chicago_taxi.trainer import task
from launchers import chain as chains
from launchers.chain import champion as champions
from launchers.chain.compile import gcp_components, gcp_steps
from tests import vertex_fake
from tests.conftest import REPO, TAXI_SAMPLE
from tests.vertex_fake import PARENT, PROJECT, REGION, FakeVertex

CHAIN = REPO / "examples/chicago_taxi/chain.yaml"

pytestmark = pytest.mark.emulator


@pytest.fixture()
def fake() -> Iterator[FakeVertex]:
    yield from vertex_fake.serve()


def _copy_split(pattern: str, folder: pathlib.Path) -> str:
    folder.mkdir(parents=True)
    for i, found in enumerate(FileSystems.match([pattern])[0].metadata_list):
        with FileSystems.open(found.path) as f:
            (folder / f"part-{i}.parquet").write_bytes(f.read())
    return str(folder / "*.parquet")


def _train(body: dict[str, Any]) -> None:
    """The training container: the taxi trainer on the job's splits, the model to gs://."""
    container = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    env = {e["name"]: e["value"] for e in container["env"]}
    base = body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    with tempfile.TemporaryDirectory() as tmp:
        local = pathlib.Path(tmp)
        task.train(
            training_uri=_copy_split(env["AIP_TRAINING_DATA_URI"], local / "train"),
            validation_uri=_copy_split(env["AIP_VALIDATION_DATA_URI"], local / "eval"),
            test_uri=None,
            model_dir=str(local / "model"),
            kind=container["args"][1],
        )
        for name in (task.MODEL_FILE, task.METRICS_FILE):
            with FileSystems.create(f"{base}/model/{name}") as f:
                f.write((local / "model" / name).read_bytes())


def _chain(tmp_path: pathlib.Path, fake: FakeVertex, bucket: str, margin: float) -> pathlib.Path:
    data = {
        "name": "taxi",
        "workdir": str(tmp_path / "work"),
        "parameters": {"model": {"default": "gradient_boosting"}},
        "gcp": {
            "project": PROJECT,
            "region": REGION,
            "staging_bucket": f"gs://{bucket}/stage",
            "api_endpoint": fake.endpoint,
        },
        "steps": [
            {
                "name": "dataset",
                "kind": "dataset",
                "spec": str(REPO / "examples/chicago_taxi/pipeline.yaml"),
                "inputs": [str(TAXI_SAMPLE)],
                "output": str(tmp_path / "ds"),
                "gcp": {"output": f"gs://{bucket}/ds", "launch": "local"},
            },
            {
                "name": "train",
                "kind": "train",
                "dataset": "dataset",
                "module": "examples.chicago_taxi.trainer.task",
                "args": ["--model", "${model}"],
                "gcp": {"image_uri": "trainer:1", "poll_seconds": 0.001},
            },
            {
                "name": "gate",
                "kind": "gate",
                "metrics": "train",
                "metric": "auc",
                "min": 0.75,
                "champion": {"deploy": "deploy", "margin": margin},
            },
            {
                "name": "upload",
                "kind": "upload",
                "model": "train",
                "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
                "gcp": {"image_uri": "predictor:1"},
            },
            {
                "name": "deploy",
                "kind": "deploy",
                "model": "upload",
                "gcp": {"endpoint": "taxi", "traffic_percentage": 100},
            },
        ],
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_gcp_champion_gate_against_the_endpoints_model(
    gcs_emulator: Any, fake: FakeVertex, tmp_path: pathlib.Path
) -> None:
    bucket = gcs_emulator.new_bucket("champion-gate")
    fake.trainer = _train
    chain_file = _chain(tmp_path, fake, bucket, margin=0.0)

    first = chains.run_chain(chains.load_chain(str(chain_file)), target="gcp")
    assert first.ran == ["dataset", "train", "gate", "upload", "deploy"]
    assert first.outputs["gate"]["champion"] is None
    champion_dir = first.outputs["train"]["model_dir"]
    champion_auc = first.outputs["train"]["metrics"]["auc"]
    # A champion whose metrics file claims less does not change the verdict: both are
    # recomputed.
    with FileSystems.create(f"{champion_dir}/{task.METRICS_FILE}") as f:
        f.write(json.dumps({"auc": 0.5}).encode())
    assert champions.endpoint_champion("taxi") == champion_dir

    worse = chains.load_chain(str(chain_file), {"model": "logistic"})
    with pytest.raises(chains.GateFailedError) as err:
        chains.run_chain(worse, target="gcp")
    state = json.loads((tmp_path / "work/state-gcp.json").read_text())
    challenger_auc = state["steps"]["train"]["outputs"]["metrics"]["auc"]
    assert str(err.value) == (
        f"step gate: challenger auc = {challenger_auc:.6g} does not beat champion auc = "
        f"{champion_auc:.6g} by more than margin 0 (higher is better; 975 eval rows)"
    )
    assert err.value.exit_code == 3
    # The compiled pipeline's gate component comes to the same verdict.
    written = {s["name"]: json.dumps(s) for s in yaml.safe_load(chain_file.read_text())["steps"]}
    assert (
        gcp_components.check_champion_gate(
            gate=written["gate"],
            parameters={"model": "logistic"},
            metrics_json=json.dumps(state["steps"]["train"]["outputs"]["metrics"]),
            model_dir=state["steps"]["train"]["outputs"]["model_dir"],
            root=f"gs://{bucket}/ds",
            dataset=written["dataset"],
            train=written["train"],
            deploy=written["deploy"],
            project=PROJECT,
            location=REGION,
        )
        is False
    )
    passed, reason = gcp_steps.champion_gate_result(
        written["gate"],
        {"model": "logistic"},
        state["steps"]["train"]["outputs"]["metrics"],
        model_dir=state["steps"]["train"]["outputs"]["model_dir"],
        root=f"gs://{bucket}/ds",
        dataset=written["dataset"],
        train=written["train"],
        deploy=written["deploy"],
        project=PROJECT,
        location=REGION,
    )
    assert (passed, reason) == (False, str(err.value))
    assert len(fake.calls("POST", ":deployModel")) == 1
    assert len(fake.calls("POST", "models:upload")) == 1
    assert champions.endpoint_champion("taxi") == champion_dir

    better = _chain(tmp_path, fake, bucket, margin=-1e-9)
    third = chains.run_chain(chains.load_chain(str(better)), target="gcp")
    assert third.ran == ["train", "gate", "upload", "deploy"]
    gate = third.outputs["gate"]
    assert gate["champion"] == {"model": champion_dir, "value": champion_auc}
    assert gate["challenger"] == {
        "model": third.outputs["train"]["model_dir"],
        "value": champion_auc,
    }
    assert len(fake.calls("POST", ":deployModel")) == 2
    assert champions.endpoint_champion("taxi") == third.outputs["train"]["model_dir"]


def test_the_champion_is_the_model_with_the_largest_traffic_share(fake: FakeVertex) -> None:
    from launchers import vertex

    vertex.init(
        vertex.VertexSettings(
            project=PROJECT,
            region=REGION,
            staging_bucket="gs://b/stage",
            api_endpoint=fake.endpoint,
        )
    )
    assert champions.endpoint_champion("taxi") is None
    endpoint = f"{PARENT}/endpoints/1"
    fake.endpoints[endpoint] = {
        "name": endpoint,
        "displayName": "taxi",
        "deployedModels": [],
        "trafficSplit": {},
    }
    assert champions.endpoint_champion("taxi") is None
    for model_id, uri in (("11", "gs://b/old"), ("12", "gs://b/canary")):
        fake.models[f"{PARENT}/models/{model_id}"] = {
            "name": f"{PARENT}/models/{model_id}",
            "displayName": "taxi",
            "artifactUri": uri,
        }
    fake.endpoints[endpoint]["deployedModels"] = [
        {"id": "21", "model": f"{PARENT}/models/11"},
        {"id": "22", "model": f"{PARENT}/models/12"},
    ]
    fake.endpoints[endpoint]["trafficSplit"] = {"21": 90, "22": 10}
    assert champions.endpoint_champion("taxi") == "gs://b/old"
    fake.endpoints[endpoint]["trafficSplit"] = {"21": 40, "22": 60}
    assert champions.endpoint_champion("taxi") == "gs://b/canary"


def _taxi_with_champion(tmp_path: pathlib.Path) -> chains.ChainSpec:
    data = yaml.safe_load(CHAIN.read_text())
    (gate,) = [s for s in data["steps"] if s["name"] == "gate"]
    gate["champion"] = {"deploy": "deploy", "margin": 0.001}
    return chains.parse_chain(data, origin=str(CHAIN))


def _task_inputs(task: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    out: dict[str, Any] = {}
    for name, spec in task.inputs.parameters.items():
        if spec.HasField("runtime_value"):
            out[name] = json_format.MessageToDict(spec.runtime_value.constant)
        elif spec.HasField("task_output_parameter"):
            ref = spec.task_output_parameter
            out[name] = f"<{ref.producer_task}.{ref.output_parameter_key}>"
        else:
            out[name] = f"<input {spec.component_input_parameter}>"
    return out


def test_a_vertex_ai_pipeline_gates_on_the_champion(tmp_path: pathlib.Path) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from launchers.chain.compile import compile_chain

    out = tmp_path / "pipeline.yaml"
    compile_chain(_taxi_with_champion(tmp_path), to="kfp", target="gcp", output=str(out))
    spec = json_format.ParseDict(yaml.safe_load(out.read_text()), pipeline_spec_pb2.PipelineSpec())
    trained = spec.components[spec.root.dag.tasks["condition-1"].component_ref.name].dag.tasks
    inputs = _task_inputs(trained["check-champion-gate"])
    written = {s["name"]: s for s in yaml.safe_load(CHAIN.read_text())["steps"]}
    channel = "{{$.inputs.parameters['pipelinechannel--%s']}}"
    assert {k: v for k, v in inputs.items() if not k.startswith("pipelinechannel--")} == {
        "gate": json.dumps(
            {**written["gate"], "champion": {"deploy": "deploy", "margin": 0.001}}, sort_keys=True
        ),
        "dataset": json.dumps(written["dataset"], sort_keys=True),
        "train": json.dumps(written["train"], sort_keys=True),
        "deploy": json.dumps(written["deploy"], sort_keys=True),
        "parameters": {"gcs_root": channel % "gcs_root", "input": channel % "input"},
        "metrics_json": "<read-training.metrics_json>",
        "model_dir": "<read-training.model_dir>",
        "root": channel % "gcs_root" + "/dataset",
        "project": "my-project",
        "location": "us-central1",
    }
    assert "check-gate" not in trained
    assert trained["condition-2"].trigger_policy.condition == (
        "inputs.parameter_values['pipelinechannel--check-champion-gate-Output'] == true"
    )
