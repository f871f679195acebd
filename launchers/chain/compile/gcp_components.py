"""The small Python components of a chain compiled for Vertex AI Pipelines.

Google's components do the jobs; these few pass what one job hands the next, each a thin
wrapper over :mod:`launchers.chain.compile.gcp_steps`. They are plain functions here:
:func:`components` makes them components once the image they run in is known (the chain's
training image, see :mod:`launchers.chain.compile.kfp_gcp`). kfp copies each function's
source into the pipeline file, so every import sits inside the function.
"""

# mypy: disable-error-code="valid-type"
# (kfp reads each output list from a NamedTuple(...) call in the annotation, which mypy refuses.)
import dataclasses
from typing import Any, NamedTuple

from kfp.dsl import Metrics, Output


def fingerprint_dataset(step: str, parameters: dict) -> str:
    """The fingerprint of a dataset step's configuration and the GCS objects it reads."""
    from launchers.chain.compile.gcp_steps import dataset_fingerprint

    return dataset_fingerprint(step, parameters)


def read_dataset(
    root: str, gcp_resources: str, train: str, parameters: dict, base_root: str
) -> NamedTuple(
    "DatasetHandoff",
    [
        ("training_data_uri", str),
        ("validation_data_uri", str),
        ("test_data_uri", str),
        ("data_format", str),
        ("artifact", str),
        ("base_output_directory", str),
        ("outputs", str),
    ],
):
    """Reads a committed dataset's manifest: what its training step needs.

    ``gcp_resources`` (the finished Dataflow job) orders this task after the job and keys
    its cache entry on that job.
    """
    import json

    from launchers.chain.compile.gcp_steps import dataset_handoff

    handoff = dataset_handoff(root, train, parameters, base_root)
    env = handoff["env"]
    return (
        env["AIP_TRAINING_DATA_URI"],
        env.get("AIP_VALIDATION_DATA_URI", ""),
        env.get("AIP_TEST_DATA_URI", ""),
        env["AIP_DATA_FORMAT"],
        handoff["artifact"],
        handoff["base_output_directory"],
        json.dumps(handoff["outputs"], sort_keys=True),
    )


def read_training(
    base_output_directory: str, artifact: str, gcp_resources: str, metrics: Output[Metrics]
) -> NamedTuple("TrainingOutputs", [("model_dir", str), ("metrics_json", str)]):
    """Reads a finished CustomJob's metrics and copies the transform artifact beside its model.

    The numeric top-level metrics are logged on ``metrics`` too, for the Vertex AI console.
    """
    import json

    from launchers.chain.compile.gcp_steps import training_outputs

    outputs = training_outputs(base_output_directory, artifact)
    for name, value in outputs["metrics"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(name, value)
    return (outputs["model_dir"], json.dumps(outputs["metrics"], sort_keys=True))


def check_gate(gate: str, parameters: dict, metrics_json: str) -> bool:
    """Whether a gate passes; the condition around the steps after it."""
    import json

    from launchers.chain.compile.gcp_steps import gate_result

    passed, reason = gate_result(gate, parameters, json.loads(metrics_json))
    # A stopped gate is no failed task: the reason is in the task's log.
    print(("gate passed: " if passed else "gate stopped the pipeline: ") + reason)
    return passed


def check_champion_gate(
    gate: str,
    parameters: dict,
    metrics_json: str,
    model_dir: str,
    root: str,
    dataset: str,
    train: str,
    deploy: str,
    project: str,
    location: str,
) -> bool:
    """Whether a champion gate passes: the challenger beats the endpoint's model on eval rows."""
    import json

    from launchers.chain.compile.gcp_steps import champion_gate_result

    passed, reason = champion_gate_result(
        gate,
        parameters,
        json.loads(metrics_json),
        model_dir=model_dir,
        root=root,
        dataset=dataset,
        train=train,
        deploy=deploy,
        project=project,
        location=location,
    )
    print(("gate passed: " if passed else "gate stopped the pipeline: ") + reason)
    return passed


def check_data_gate(gate: str, parameters: dict, root: str, gcp_resources: str) -> bool:
    """Whether a gate on a dataset's validation passes; the condition around the steps after it.

    ``gcp_resources`` (the finished Dataflow job) orders this task after the job.
    """
    from launchers.chain.compile.gcp_steps import data_gate_result

    passed, reason = data_gate_result(gate, parameters, root)
    print(("gate passed: " if passed else "gate stopped the pipeline: ") + reason)
    return passed


def find_endpoint(project: str, location: str, display_name: str, percentage: int) -> NamedTuple(
    "Endpoint",
    [
        ("found", bool),
        ("resource_name", str),
        ("uri", str),
        ("traffic_split", dict),
        ("deployed_model_ids", list),
    ],
):
    """Looks an endpoint up by display name; the traffic split a new model taking ``percentage`` needs."""
    from launchers.chain.compile.gcp_steps import find_endpoint as find

    found = find(
        project=project, location=location, display_name=display_name, percentage=percentage
    )
    return (
        found["found"],
        found["resource_name"],
        found["uri"],
        found["traffic_split"],
        found["deployed_model_ids"],
    )


def undeploy_replaced(
    project: str, location: str, endpoint: str, deployed_model_ids: list, gcp_resources: str
) -> None:
    """Undeploys the models a deployment replaced; ``gcp_resources`` orders it after that."""
    from launchers.chain.compile.gcp_steps import undeploy

    undeploy(
        project=project, location=location, endpoint=endpoint, deployed_model_ids=deployed_model_ids
    )


@dataclasses.dataclass(frozen=True)
class Components:
    """The components, made for one image."""

    fingerprint_dataset: Any
    read_dataset: Any
    read_training: Any
    check_gate: Any
    check_champion_gate: Any
    check_data_gate: Any
    find_endpoint: Any
    undeploy_replaced: Any


def components(image: str) -> Components:
    """The components, running in ``image`` (which has beamforge and kfp installed)."""
    from kfp import dsl

    def make(func: Any) -> Any:
        # Nothing is pip-installed when a task starts: the image has what the tasks need,
        # and pipelines in a VPC with no route to a package index still run.
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        fingerprint_dataset=make(fingerprint_dataset),
        read_dataset=make(read_dataset),
        read_training=make(read_training),
        check_gate=make(check_gate),
        check_champion_gate=make(check_champion_gate),
        check_data_gate=make(check_data_gate),
        find_endpoint=make(find_endpoint),
        undeploy_replaced=make(undeploy_replaced),
    )
