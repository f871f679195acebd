"""The taxi chain compiled for Vertex AI Pipelines with Google Cloud Pipeline Components.

``beamforge chain compile --to kfp --target gcp`` runs in a subprocess; the pipeline file is
compared with a golden file and read back as a ``PipelineSpec``: Google's components in the
chain's order with their inputs, the gate's condition around upload and deployment, the
endpoint found or created, the pipeline's parameters the chain's. The small components'
work (:mod:`launchers.chain.compile.gcp_steps`) runs against the GCS emulator and the Vertex
fake, and the components themselves run with ``kfp.local``.

Regenerate the golden after an intended change with
``BEAMFORGE_UPDATE_GOLDEN=1 pytest tests/test_chain_kfp_gcp.py`` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from launchers.chain.compile import gcp_steps
from tests.conftest import REPO, beamforge

CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"
GOLDEN = REPO / "tests" / "golden" / "chain_kfp_gcp.yaml"
GCPC = "google_cloud_pipeline_components.container."


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return beamforge("chain", *args, timeout=300)


def _compile(chain: pathlib.Path, out: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return _cli("compile", str(chain), "--to", "kfp", "--target", "gcp", "-o", str(out))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("kfp-gcp") / "pipeline.yaml"
    result = _compile(pathlib.Path(os.path.relpath(CHAIN, REPO)), out)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == f"{out}: kfp pipeline of chain chicago_taxi (6 steps, gcp target)\n"
    return out


@pytest.fixture(scope="module")
def pipeline(compiled: pathlib.Path) -> Any:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.ParseDict(
        yaml.safe_load(compiled.read_text()), pipeline_spec_pb2.PipelineSpec()
    )


def test_compiled_pipeline_matches_the_golden(compiled: pathlib.Path) -> None:
    from kfp import components

    text = compiled.read_text(encoding="utf-8")
    # kfp reads it back as a pipeline whose inputs are the chain's parameters.
    loaded = components.load_component_from_file(str(compiled))
    assert sorted(loaded.component_spec.inputs) == ["gcs_root", "input", "model_name"]
    if os.environ.get("BEAMFORGE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def _tasks(spec: Any, dag: Any, path: str = "") -> list[tuple[str, str, list[str], str]]:
    """Every task, nested groups too: (path, display name, dependencies, what it runs)."""
    out: list[tuple[str, str, list[str], str]] = []
    for key, task in sorted(dag.tasks.items()):
        component = spec.components[task.component_ref.name]
        where = f"{path}{key}"
        if component.HasField("dag"):
            out.append((where, task.task_info.name, sorted(task.dependent_tasks), "group"))
            out += _tasks(spec, component.dag, f"{where}/")
            continue
        executor = spec.deployment_spec.fields["executors"].struct_value.fields[
            component.executor_label
        ]
        fields = executor.struct_value.fields
        if "importer" in fields:
            schema = fields["importer"].struct_value.fields["typeSchema"].struct_value
            runs = f"importer {schema.fields['schemaTitle'].string_value}"
        else:
            command = [
                v.string_value
                for v in fields["container"].struct_value.fields["command"].list_value.values
            ]
            module = next((c for c in command if c.startswith(GCPC)), None)
            runs = module[len(GCPC) :] if module else "python component"
        out.append((where, task.task_info.name, sorted(task.dependent_tasks), runs))
    return out


def test_the_steps_are_googles_components_in_the_chains_order(pipeline: Any) -> None:
    assert pipeline.pipeline_info.name == "chicago-taxi"
    assert pipeline.default_pipeline_root == "gs://my-bucket/beamforge/pipelines"
    launch = "preview.dataflow.flex_template.launcher"
    assert _tasks(pipeline, pipeline.root.dag) == [
        ("check-data-gate", "data_gate", ["wait-gcp-resources"], "python component"),
        ("condition-1", "data_gate-passed", ["check-data-gate", "wait-gcp-resources"], "group"),
        ("condition-1/check-gate", "gate", ["read-training"], "python component"),
        ("condition-1/condition-2", "gate-passed", ["check-gate", "read-training"], "group"),
        (
            "condition-1/condition-2/condition-branches-3",
            "condition-branches-3",
            ["find-endpoint"],
            "group",
        ),
        (
            "condition-1/condition-2/condition-branches-3/condition-4",
            "deploy-endpoint-found",
            [],
            "group",
        ),
        (
            "condition-1/condition-2/condition-branches-3/condition-4/importer-2",
            "deploy-endpoint",
            [],
            "importer google.VertexEndpoint",
        ),
        (
            "condition-1/condition-2/condition-branches-3/condition-5",
            "deploy-endpoint-missing",
            [],
            "group",
        ),
        (
            "condition-1/condition-2/condition-branches-3/condition-5/endpoint-create",
            "deploy-create-endpoint",
            [],
            "v1.endpoint.create_endpoint.launcher",
        ),
        ("condition-1/condition-2/find-endpoint", "deploy-find-endpoint", [], "python component"),
        (
            "condition-1/condition-2/importer",
            "upload-model",
            [],
            "importer google.UnmanagedContainerModel",
        ),
        (
            "condition-1/condition-2/model-deploy",
            "deploy",
            ["condition-branches-3", "model-upload"],
            "v1.endpoint.deploy_model.launcher",
        ),
        (
            "condition-1/condition-2/model-upload",
            "upload",
            ["importer"],
            "v1.model.upload_model.launcher",
        ),
        (
            "condition-1/condition-2/undeploy-replaced",
            "deploy-undeploy-replaced",
            ["find-endpoint", "model-deploy"],
            "python component",
        ),
        ("condition-1/custom-training-job", "train", ["read-dataset"], "v1.custom_job.launcher"),
        # Inside the data gate's condition, which waits for the job: the reader takes the
        # wait's output from it.
        ("condition-1/read-dataset", "train-dataset", [], "python component"),
        (
            "condition-1/read-training",
            "train-model",
            ["custom-training-job", "read-dataset"],
            "python component",
        ),
        ("dataflow-flex-template", "dataset-launch", ["fingerprint-dataset"], launch),
        ("fingerprint-dataset", "dataset-fingerprint", [], "python component"),
        (
            "wait-gcp-resources",
            "dataset-wait",
            ["dataflow-flex-template"],
            "v1.wait_gcp_resources.launcher",
        ),
    ]


def _inside(pipeline: Any, *groups: str) -> Any:
    """The tasks inside nested condition groups, from the root down."""
    tasks = pipeline.root.dag.tasks
    for group in groups:
        tasks = pipeline.components[tasks[group].component_ref.name].dag.tasks
    return tasks


def _inputs(task: Any) -> dict[str, Any]:
    """A task's parameter inputs: constants as values, the others as where they come from."""
    from google.protobuf import json_format

    out: dict[str, Any] = {}
    for name, spec in task.inputs.parameters.items():
        if name.startswith("pipelinechannel--"):
            continue
        if spec.HasField("runtime_value"):
            out[name] = json_format.MessageToDict(spec.runtime_value.constant)
        elif spec.HasField("task_output_parameter"):
            ref = spec.task_output_parameter
            out[name] = f"<{ref.producer_task}.{ref.output_parameter_key}>"
        else:
            out[name] = f"<input {spec.component_input_parameter}>"
    return out


def _channel(name: str) -> str:
    return "{{$.inputs.parameters['pipelinechannel--" + name + "']}}"


def test_the_dataset_job_is_launched_with_its_fingerprint_and_waited_on(pipeline: Any) -> None:
    tasks = pipeline.root.dag.tasks
    fingerprint = _channel("fingerprint-dataset-Output")
    assert _inputs(tasks["dataflow-flex-template"]) == {
        "project": "my-project",
        "location": "us-central1",
        "container_spec_gcs_path": "gs://my-bucket/beamforge/templates/chicago_taxi.json",
        "job_name": f"chicago-taxi-dataset-{fingerprint}",
        "parameters": {
            "spec": "gs://my-bucket/beamforge/templates/chicago_taxi.spec.yaml",
            "input": _channel("input"),
            "output": _channel("gcs_root") + "/dataset",
        },
        "service_account_email": "",
        "network": "",
        "kms_key_name": "",
        "additional_user_labels": {
            "beamforge-chain": "chicago_taxi",
            "beamforge-fingerprint": fingerprint,
        },
    }
    # The wait follows the launch, on the job it launched; training starts after the wait.
    wait = tasks["wait-gcp-resources"]
    assert list(wait.dependent_tasks) == ["dataflow-flex-template"]
    assert _inputs(wait) == {"gcp_resources": "<dataflow-flex-template.gcp_resources>"}
    # The data gate reads the committed manifest once the job finished; training, inside the
    # gate's condition, gets the finished job through the condition.
    assert _inputs(tasks["check-data-gate"])["gcp_resources"] == (
        "<wait-gcp-resources.gcp_resources>"
    )
    channels = tasks["condition-1"].inputs.parameters
    assert sorted(channels) == [
        "pipelinechannel--check-data-gate-Output",
        "pipelinechannel--gcs_root",
        "pipelinechannel--model_name",
        "pipelinechannel--wait-gcp-resources-gcp_resources",
    ]
    job = channels["pipelinechannel--wait-gcp-resources-gcp_resources"].task_output_parameter
    assert (job.producer_task, job.output_parameter_key) == ("wait-gcp-resources", "gcp_resources")
    trained = _inside(pipeline, "condition-1")
    assert _inputs(trained["read-dataset"])["gcp_resources"] == (
        "<input pipelinechannel--wait-gcp-resources-gcp_resources>"
    )
    assert list(trained["custom-training-job"].dependent_tasks) == ["read-dataset"]
    # Only the fingerprint is never cached: it looks at GCS every run.
    caching = {k: t.caching_options.enable_cache for k, t in tasks.items() if k != "condition-1"}
    assert caching == {
        "check-data-gate": True,
        "dataflow-flex-template": True,
        "fingerprint-dataset": False,
        "wait-gcp-resources": True,
    }
    inner = {k: t.caching_options.enable_cache for k, t in trained.items() if k != "condition-2"}
    assert inner == {
        "check-gate": True,
        "custom-training-job": True,
        "read-dataset": True,
        "read-training": True,
    }
    written = json.loads(_inputs(tasks["fingerprint-dataset"])["step"])
    assert written["inputs"] == ["${input}"]
    assert _inputs(tasks["fingerprint-dataset"])["parameters"] == {
        "gcs_root": _channel("gcs_root"),
        "input": _channel("input"),
    }


def test_training_is_a_custom_job_with_the_aip_contract(pipeline: Any) -> None:
    tasks = _inside(pipeline, "condition-1")
    assert _inputs(tasks["read-dataset"]) == {
        "root": _channel("gcs_root") + "/dataset",
        "gcp_resources": "<input pipelinechannel--wait-gcp-resources-gcp_resources>",
        "train": json.dumps(
            yaml.safe_load(CHAIN.read_text())["steps"][2], sort_keys=True, default=str
        ),
        "parameters": {},
        "base_root": "gs://my-bucket/beamforge/chicago_taxi/train",
    }
    assert _inputs(tasks["custom-training-job"]) == {
        "project": "my-project",
        "location": "us-central1",
        "display_name": "chicago_taxi-train",
        "worker_pool_specs": [
            {
                "machine_spec": {"machine_type": "n1-standard-4"},
                "replica_count": 1.0,
                "container_spec": {
                    "image_uri": "us-docker.pkg.dev/my-project/beamforge/taxi-trainer:latest",
                    "command": ["python", "-m", "examples.chicago_taxi.trainer.task"],
                    "args": ["--model", "gradient_boosting"],
                    "env": [
                        {"name": "AIP_DATA_FORMAT", "value": _channel("read-dataset-data_format")},
                        {
                            "name": "AIP_TRAINING_DATA_URI",
                            "value": _channel("read-dataset-training_data_uri"),
                        },
                        {
                            "name": "AIP_VALIDATION_DATA_URI",
                            "value": _channel("read-dataset-validation_data_uri"),
                        },
                    ],
                },
            }
        ],
        "base_output_directory": "<read-dataset.base_output_directory>",
        "service_account": "",
        "network": "",
        "encryption_spec_key_name": "",
        "labels": {"beamforge-chain": "chicago_taxi"},
        "timeout": "21600s",
    }
    assert _inputs(tasks["read-training"]) == {
        "base_output_directory": "<read-dataset.base_output_directory>",
        "artifact": "<read-dataset.artifact>",
        "gcp_resources": "<custom-training-job.gcp_resources>",
    }


def test_training_runs_only_when_the_data_gate_passes(pipeline: Any) -> None:
    tasks = pipeline.root.dag.tasks
    # The step as the chain file writes it, read from the dataset's committed manifest.
    assert _inputs(tasks["check-data-gate"]) == {
        "gate": '{"kind": "gate", "max": 0, "metric": "anomalies", "metrics": "dataset", '
        '"name": "data_gate"}',
        "parameters": {},
        "root": _channel("gcs_root") + "/dataset",
        "gcp_resources": "<wait-gcp-resources.gcp_resources>",
    }
    gated = tasks["condition-1"]
    assert gated.trigger_policy.condition == (
        "inputs.parameter_values['pipelinechannel--check-data-gate-Output'] == true"
    )
    assert sorted(_inside(pipeline, "condition-1")) == [
        "check-gate",
        "condition-2",
        "custom-training-job",
        "read-dataset",
        "read-training",
    ]


def test_upload_and_deploy_run_only_when_the_gate_passes(pipeline: Any) -> None:
    tasks = _inside(pipeline, "condition-1")
    assert json.loads(_inputs(tasks["check-gate"])["gate"]) == {
        "kind": "gate",
        "name": "gate",
        "metrics": "train",
        "metric": "auc",
        "min": 0.75,
    }
    assert _inputs(tasks["check-gate"])["metrics_json"] == "<read-training.metrics_json>"
    gated = tasks["condition-2"]
    assert gated.trigger_policy.condition == (
        "inputs.parameter_values['pipelinechannel--check-gate-Output'] == true"
    )
    inside = pipeline.components[gated.component_ref.name].dag.tasks
    assert _inputs(inside["model-upload"]) == {
        "project": "my-project",
        "location": "us-central1",
        "display_name": _channel("model_name"),
        "labels": {"beamforge-chain": "chicago_taxi"},
        "encryption_spec_key_name": "",
    }
    importer = pipeline.deployment_spec.fields["executors"].struct_value.fields["exec-importer"]
    from google.protobuf import json_format

    assert json_format.MessageToDict(importer)["importer"]["metadata"] == {
        "containerSpec": {
            "imageUri": "us-docker.pkg.dev/my-project/beamforge/taxi-predictor:latest",
            "predictRoute": "/predict",
            "healthRoute": "/health",
            "ports": [{"containerPort": 8080.0}],
            "env": [
                {"name": "PREDICTOR_CLASS", "value": "TaxiPredictor"},
                {"name": "PREDICTOR_MODULE", "value": "examples.chicago_taxi.predictor"},
            ],
        }
    }
    assert _inputs(inside["model-deploy"]) == {
        "traffic_split": {"0": 100.0},
        "dedicated_resources_machine_type": "n1-standard-2",
        "dedicated_resources_min_replica_count": 1.0,
        "dedicated_resources_max_replica_count": 1.0,
        "service_account": "",
    }
    deploy_artifacts = inside["model-deploy"].inputs.artifacts
    assert deploy_artifacts["model"].task_output_artifact.producer_task == "model-upload"
    # The endpoint is whichever branch ran: the one found, or the one created.
    assert deploy_artifacts["endpoint"].task_output_artifact.producer_task == (
        "condition-branches-3"
    )
    assert _inputs(inside["find-endpoint"]) == {
        "project": "my-project",
        "location": "us-central1",
        "display_name": "chicago-taxi-tips",
        "percentage": 100.0,
    }
    branches = pipeline.components[inside["condition-branches-3"].component_ref.name].dag.tasks
    assert [branches[k].trigger_policy.condition for k in sorted(branches)] == [
        "inputs.parameter_values['pipelinechannel--find-endpoint-found'] == true",
        "!(inputs.parameter_values['pipelinechannel--find-endpoint-found'] == true)",
    ]


def test_pipeline_parameters_are_the_chains(pipeline: Any) -> None:
    from launchers import chain as chains

    spec = chains.load_chain(str(CHAIN))
    parameters = pipeline.root.input_definitions.parameters
    assert {k: v.default_value.string_value for k, v in parameters.items()} == {
        name: p.default for name, p in spec.parameters.items()
    }
    assert {k: v.description for k, v in parameters.items()} == {
        name: p.description for name, p in spec.parameters.items()
    }


def _edited(tmp_path: pathlib.Path, edit: Any) -> pathlib.Path:
    data = yaml.safe_load(CHAIN.read_text())
    edit(data)
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _drop_train_gcp(data: dict[str, Any]) -> None:
    del data["steps"][2]["gcp"]


def _launch_dataflow(data: dict[str, Any]) -> None:
    data["steps"][0]["gcp"]["launch"] = "dataflow"


def _no_gcp(data: dict[str, Any]) -> None:
    del data["gcp"]


def _templated_image(data: dict[str, Any]) -> None:
    data["parameters"]["trainer"] = "trainer:1"
    data["steps"][2]["gcp"]["image_uri"] = "${trainer}"


def _no_train(data: dict[str, Any]) -> None:
    data["steps"] = data["steps"][:1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _launch_dataflow,
            "steps[0].gcp.launch: a Vertex AI pipeline launches the dataset job as a Flex "
            "Template, not 'dataflow'; use launch: flex_template with template: gs://... "
            "(beamforge template build makes one)",
        ),
        (_drop_train_gcp, "steps[2].gcp: the gcp target needs train's gcp section"),
        (_no_gcp, "gcp: the gcp target needs a gcp section (project, region, ...)"),
        (
            _templated_image,
            "steps[2].gcp.image_uri: refers to ${trainer}, but the pipeline's small components "
            "run in this image, which must be known when the chain is compiled; write it out",
        ),
        (
            _no_train,
            "steps: a Vertex AI pipeline needs a train step: its gcp.image_uri (with beamforge "
            "installed) runs the pipeline's own small components",
        ),
    ],
)
def test_what_a_vertex_pipeline_cannot_express_fails_at_compile_time(
    tmp_path: pathlib.Path, edit: Any, message: str
) -> None:
    chain = _edited(tmp_path, edit)
    out = tmp_path / "pipeline.yaml"
    result = _compile(chain, out)
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        f"error: {chain}: {message}\n",
    )
    assert not out.exists()


# The small components' work.


def _written(step: dict[str, Any]) -> str:
    return json.dumps(step, sort_keys=True)


def test_a_step_is_resolved_with_the_runs_parameter_values() -> None:
    from launchers.chain.spec import GateStep, TrainStep

    data = yaml.safe_load(CHAIN.read_text())
    train = copy.deepcopy(data["steps"][2])
    train["args"] = ["--model", "${model}"]
    step = gcp_steps.resolve_step(TrainStep, _written(train), {"model": "logistic"})
    assert step.args == ["--model", "logistic"]
    assert step.splits.validation == "eval"
    gate = gcp_steps.resolve_step(GateStep, _written(data["steps"][3]), {})
    assert (gate.metric, gate.min, gate.max) == ("auc", 0.75, None)
    from transforms.core.config import SpecError

    with pytest.raises(SpecError, match=r"^min: a gate needs min, max or both$|a gate needs"):
        gcp_steps.resolve_step(GateStep, _written({**data["steps"][3], "min": None}), {})


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"auc": 0.8}, (True, "auc = 0.8")),
        ({"auc": 0.75}, (True, "auc = 0.75")),
        ({"auc": 0.7}, (False, "step gate: auc = 0.7 is below min 0.75")),
        (
            {"accuracy": 0.9},
            (False, "step gate: metric 'auc' not reported; the trainer reported ['accuracy']"),
        ),
    ],
)
def test_the_gate_is_the_chains(metrics: dict[str, Any], expected: tuple[bool, str]) -> None:
    gate = {"name": "gate", "kind": "gate", "metrics": "train", "metric": "auc", "min": 0.75}
    assert gcp_steps.gate_result(_written(gate), {}, metrics) == expected


@pytest.mark.parametrize(
    ("current", "percentage", "split"),
    [
        ({}, 100, {"0": 100}),
        ({}, 20, {"0": 100}),
        ({"a": 0}, 20, {"0": 100}),
        ({"a": 100}, 100, {"0": 100}),
        ({"a": 100}, 20, {"a": 80, "0": 20}),
        ({"a": 50, "b": 50}, 25, {"a": 38, "b": 37, "0": 25}),
        ({"a": 70, "b": 30}, 10, {"a": 63, "b": 27, "0": 10}),
    ],
)
def test_a_new_model_takes_its_share_and_the_others_split_the_rest(
    current: dict[str, int], percentage: int, split: dict[str, int]
) -> None:
    assert gcp_steps.traffic_split(current, percentage) == split
    assert sum(split.values()) == 100


# The small components against the GCS emulator, run by kfp's local runner.


def _dataset_step(bucket: str) -> dict[str, Any]:
    step = copy.deepcopy(yaml.safe_load(CHAIN.read_text())["steps"][0])
    step["gcp"]["template"] = f"gs://{bucket}/templates/taxi.json"
    step["gcp"]["parameters"] = {"spec": f"gs://{bucket}/specs/taxi.yaml"}
    return step


@pytest.mark.emulator
def test_the_fingerprint_changes_exactly_when_what_the_job_reads_changes(
    gcs_emulator: Any,
) -> None:
    bucket = gcs_emulator.new_bucket("kfp-gcp-fingerprint")
    client = gcs_emulator.client()
    for name, data in [
        ("templates/taxi.json", b"{}"),
        ("specs/taxi.yaml", b"name: taxi\n"),
        ("raw/a.csv", b"x\n1\n"),
        ("raw/b.csv", b"x\n2\n"),
        ("raw/deeper/c.csv", b"x\n3\n"),
    ]:
        client.bucket(bucket).blob(name).upload_from_string(data)
    step = _written(_dataset_step(bucket))
    values = {"input": f"gs://{bucket}/raw/*.csv", "gcs_root": f"gs://{bucket}/out"}

    objects = gcp_steps.gcs_objects([values["input"], f"gs://{bucket}/raw/none.csv"], client=client)
    blobs = {b.name: b for b in client.list_blobs(bucket, prefix="raw/")}
    # One folder deep, as Beam's FileSystems.match reads a glob.
    assert objects == {
        f"gs://{bucket}/raw/{n}": f"{blobs[f'raw/{n}'].size}:{blobs[f'raw/{n}'].generation}:"
        f"{blobs[f'raw/{n}'].md5_hash}"
        for n in ("a.csv", "b.csv")
    } | {f"gs://{bucket}/raw/none.csv": "missing"}

    first = gcp_steps.dataset_fingerprint(step, values, client=client)
    assert len(first) == 40
    assert gcp_steps.dataset_fingerprint(step, values, client=client) == first
    # The same bytes written again are a new generation: the job would read a new object.
    client.bucket(bucket).blob("raw/a.csv").upload_from_string(b"x\n1\n")
    second = gcp_steps.dataset_fingerprint(step, values, client=client)
    assert second != first
    client.bucket(bucket).blob("specs/taxi.yaml").upload_from_string(b"name: taxi2\n")
    third = gcp_steps.dataset_fingerprint(step, values, client=client)
    assert third not in (first, second)
    # Another parameter value is another configuration.
    other = gcp_steps.dataset_fingerprint(
        step, {**values, "gcs_root": f"gs://{bucket}/out2"}, client=client
    )
    assert other not in (first, second, third)
    # A file outside the job's reach (the spec on this machine) does not count.
    assert gcp_steps.dataset_fingerprint(step, values, client=client) == third


@pytest.fixture()
def committed(gcs_emulator: Any, tmp_path: pathlib.Path) -> str:
    """A taxi dataset committed to gs:// (the emulator), as the Flex Template job writes it."""
    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec
    from tests.conftest import TAXI_SAMPLE

    bucket = gcs_emulator.new_bucket("kfp-gcp-components")
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (tmp_path / "trips.csv").write_text("".join(lines[:201]))
    root = f"gs://{bucket}/dataset"
    run_job(
        load_spec(str(REPO / "examples/chicago_taxi/pipeline.yaml")),
        output=root,
        inputs=[str(tmp_path / "trips.csv")],
    )
    return root


@pytest.mark.slow
@pytest.mark.emulator
def test_the_small_components_hand_the_dataset_to_training_and_gate_the_model(
    committed: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apache_beam.io.filesystems import FileSystems
    from kfp import local

    from launchers.chain.compile.gcp_components import components
    from launchers.chain.handoff import read_manifest

    # The local runner runs them in this interpreter, whatever their image.
    ops = components("python:3.11")
    monkeypatch.chdir(REPO)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    data = yaml.safe_load(CHAIN.read_text())
    bucket = committed.split("/")[2]

    handoff = ops.read_dataset(
        root=committed,
        gcp_resources="{}",
        train=_written(data["steps"][2]),
        parameters={},
        base_root=f"gs://{bucket}/stage/chicago_taxi/train",
    )
    manifest = read_manifest(committed)
    run = manifest["run"]["id"]
    base = handoff.outputs["base_output_directory"]
    assert base.startswith(f"gs://{bucket}/stage/chicago_taxi/train/{run}-")
    folder = f"{committed}/{run}"
    assert {
        k: v for k, v in handoff.outputs.items() if k not in ("outputs", "base_output_directory")
    } == {
        "training_data_uri": f"{folder}/train/part-*.parquet",
        "validation_data_uri": f"{folder}/eval/part-*.parquet",
        "test_data_uri": "",
        "data_format": "parquet",
        "artifact": manifest["artifact"]["path"],
    }
    assert json.loads(handoff.outputs["outputs"])["rows"] == {
        name: split["rows"] for name, split in manifest["splits"].items()
    }

    # What the CustomJob leaves: the trainer's model and metrics under AIP_MODEL_DIR.
    with FileSystems.create(f"{base}/model/metrics.json") as f:
        f.write(json.dumps({"auc": 0.8, "accuracy": 0.75, "model": "gradient_boosting"}).encode())
    trained = ops.read_training(
        base_output_directory=base, artifact=handoff.outputs["artifact"], gcp_resources="{}"
    )
    assert trained.outputs["model_dir"] == f"{base}/model"
    assert json.loads(trained.outputs["metrics_json"])["auc"] == 0.8
    assert trained.outputs["metrics"].metadata == {"auc": 0.8, "accuracy": 0.75}
    assert FileSystems.exists(f"{base}/model/artifact/transform.json")

    gate = _written(data["steps"][3])
    passed = ops.check_gate(gate=gate, parameters={}, metrics_json=trained.outputs["metrics_json"])
    assert passed.output is True
    stopped = ops.check_gate(gate=gate, parameters={}, metrics_json=json.dumps({"auc": 0.5}))
    assert stopped.output is False


@pytest.fixture()
def fake() -> Iterator[Any]:
    from tests import vertex_fake

    yield from vertex_fake.serve()


def test_the_endpoint_is_found_by_name_and_the_models_it_replaces_are_retired(fake: Any) -> None:
    from launchers import vertex
    from tests import vertex_fake

    vertex.init(
        vertex.VertexSettings(
            project=vertex_fake.PROJECT, region=vertex_fake.REGION, api_endpoint=fake.endpoint
        )
    )
    where = {"project": vertex_fake.PROJECT, "location": vertex_fake.REGION}
    assert gcp_steps.find_endpoint(**where, display_name="taxi", percentage=100) == {
        "found": False,
        "resource_name": "",
        "uri": "",
        "traffic_split": {"0": 100},
        "deployed_model_ids": [],
    }
    name = f"{vertex_fake.PARENT}/endpoints/77"
    fake.endpoints[name] = {
        "name": name,
        "displayName": "taxi",
        "deployedModels": [{"id": "7", "model": "m7"}, {"id": "8", "model": "m8"}],
        "trafficSplit": {"7": 70, "8": 30},
    }
    assert gcp_steps.find_endpoint(**where, display_name="taxi", percentage=10) == {
        "found": True,
        "resource_name": name,
        "uri": f"https://us-central1-aiplatform.googleapis.com/v1/{name}",
        "traffic_split": {"7": 63, "8": 27, "0": 10},
        "deployed_model_ids": ["7", "8"],
    }
    # Once a new model took all the traffic, the ones found before it are undeployed.
    fake.endpoints[name]["deployedModels"].append({"id": "9", "model": "m9"})
    fake.endpoints[name]["trafficSplit"] = {"9": 100, "7": 0, "8": 0}
    gcp_steps.undeploy(**where, endpoint=name, deployed_model_ids=["7", "8"])
    assert [c["deployedModelId"] for c in fake.calls("POST", ":undeployModel")] == ["7", "8"]
    assert [m["id"] for m in fake.endpoints[name]["deployedModels"]] == ["9"]
    gcp_steps.undeploy(**where, endpoint="", deployed_model_ids=[])
    assert len(fake.calls("POST", ":undeployModel")) == 2


def _settings(data: dict[str, Any]) -> None:
    data["gcp"] |= {
        "service_account": "runner@my-project.iam.gserviceaccount.com",
        "network": "projects/123/global/networks/ml-vpc",
        "kms_key": "projects/my-project/locations/us-central1/keyRings/r/cryptoKeys/k",
        "labels": {"team": "ml"},
        "pipeline_root": "gs://other-bucket/runs",
    }
    data["steps"][5]["gcp"]["traffic_percentage"] = 20


def test_the_chains_gcp_settings_reach_every_job(tmp_path: pathlib.Path) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    out = tmp_path / "pipeline.yaml"
    result = _compile(_edited(tmp_path, _settings), out)
    assert result.returncode == 0, result.stderr
    spec = json_format.ParseDict(yaml.safe_load(out.read_text()), pipeline_spec_pb2.PipelineSpec())
    assert spec.default_pipeline_root == "gs://other-bucket/runs"
    account = "runner@my-project.iam.gserviceaccount.com"
    key = "projects/my-project/locations/us-central1/keyRings/r/cryptoKeys/k"
    labels = {"team": "ml", "beamforge-chain": "chicago_taxi"}
    tasks = spec.root.dag.tasks
    launch = _inputs(tasks["dataflow-flex-template"])
    # Dataflow takes the network's name; Vertex AI its full path.
    assert (launch["service_account_email"], launch["network"], launch["kms_key_name"]) == (
        account,
        "ml-vpc",
        key,
    )
    assert launch["additional_user_labels"] == {
        **labels,
        "beamforge-fingerprint": _channel("fingerprint-dataset-Output"),
    }
    trained = _inside(spec, "condition-1")
    train = _inputs(trained["custom-training-job"])
    assert (
        train["service_account"],
        train["network"],
        train["encryption_spec_key_name"],
        train["labels"],
    ) == (account, "projects/123/global/networks/ml-vpc", key, labels)
    inside = _inside(spec, "condition-1", "condition-2")
    upload = _inputs(inside["model-upload"])
    assert (upload["encryption_spec_key_name"], upload["labels"]) == (key, labels)
    branches = spec.components[inside["condition-branches-3"].component_ref.name].dag.tasks
    missing = spec.components[branches["condition-5"].component_ref.name].dag.tasks
    create = _inputs(missing["endpoint-create"])
    assert (create["display_name"], create["encryption_spec_key_name"], create["labels"]) == (
        "chicago-taxi-tips",
        key,
        labels,
    )
    # A share of the traffic: the lookup splits the rest between the models already there,
    # and none of them is undeployed.
    deploy = _inputs(inside["model-deploy"])
    assert (deploy["traffic_split"], deploy["service_account"]) == (
        "<find-endpoint.traffic_split>",
        account,
    )
    assert _inputs(inside["find-endpoint"])["percentage"] == 20.0
    assert "undeploy-replaced" not in inside
