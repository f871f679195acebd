"""Lightweight Python components, one per kind of chain step, for the ``local`` target.

kfp copies each function's source into the pipeline file and runs it in a fresh Python
process, so every import sits inside the function, the outputs are declared inline, and the
work is done by :mod:`launchers.chain.compile.steps`, the same code
``beamforge chain --target local`` runs. The functions take the chain file, the step name,
the chain's parameter values (``parameters``, the pipeline's parameters by name) and the
outputs of the step they refer to as JSON text (``outputs``); a few values are also outputs
of their own, for conditions and for reading a run. ``fingerprint`` is not read: it is the
step's fingerprint, there so that kfp's cache key changes when the step's configuration or
the files it reads change.
"""

# mypy: disable-error-code="valid-type"
# (kfp reads each output list from a NamedTuple(...) call in the annotation, which mypy refuses.)
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

# kfp and the project are installed where the components run: nothing is pip-installed.
_LOCAL = {"install_kfp_package": False, "base_image": "python:3.11"}


@dsl.component(**_LOCAL)  # type: ignore[arg-type]
def fingerprint_step(chain_file: str, step_name: str, parameters: dict) -> str:
    """The step's fingerprint (configuration and files read), as ``beamforge chain`` keys it."""
    from launchers.chain.compile.steps import step_fingerprint

    return step_fingerprint(chain_file, step_name, parameters)


@dsl.component(**_LOCAL)  # type: ignore[arg-type]
def dataset_step(chain_file: str, step_name: str, parameters: dict, fingerprint: str) -> NamedTuple(
    "DatasetOutputs", [("outputs", str), ("root", str), ("run", str)]
):
    """Runs a dataset step: its outputs, the committed dataset's root and run id."""
    import json

    from launchers.chain.compile.steps import run_local_step

    outputs = run_local_step(chain_file, step_name, "{}", parameters)
    return (json.dumps(outputs), outputs["root"], outputs["run"])  # type: ignore[return-value]


@dsl.component(**_LOCAL)  # type: ignore[arg-type]
def train_step(
    chain_file: str,
    step_name: str,
    parameters: dict,
    fingerprint: str,
    dataset: str,
    metrics: Output[Metrics],
) -> NamedTuple("TrainOutputs", [("outputs", str), ("model_dir", str)]):
    """Runs a training step on a dataset step's outputs; logs its numeric metrics."""
    import json
    import os

    from launchers.chain.compile.steps import run_local_step

    outputs = run_local_step(chain_file, step_name, dataset, parameters)
    for name, value in outputs["metrics"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(name, value)
    # The artifact's file holds the whole metrics document: a cache reuses an artifact
    # only while its file exists.
    os.makedirs(os.path.dirname(metrics.path), exist_ok=True)
    with open(metrics.path, "w", encoding="utf-8") as f:
        json.dump(outputs["metrics"], f, sort_keys=True)
    return (json.dumps(outputs), outputs["model_dir"])  # type: ignore[return-value]


@dsl.component(**_LOCAL)  # type: ignore[arg-type]
def gate_step(
    chain_file: str, step_name: str, parameters: dict, fingerprint: str, train: str
) -> bool:
    """Checks a gate; whether it passed is the condition around the steps after it.

    The one output is the task's ``Output``: kfp's local runner (2.17.3) resolves a
    condition on a single output but not on a named one.
    """
    from launchers.chain.compile.steps import check_gate

    passed, value, reason = check_gate(chain_file, step_name, train, parameters)
    # A stopped gate is no failed task: the reason is in the task's log.
    print(f"gate {step_name}: value {value:.6g}; " + (reason or "passed"))
    return passed


@dsl.component(**_LOCAL)  # type: ignore[arg-type]
def upload_step(
    chain_file: str, step_name: str, parameters: dict, fingerprint: str, train: str
) -> NamedTuple("UploadOutputs", [("outputs", str), ("model", str)]):
    """Registers a training step's model (locally, a record of it)."""
    import json

    from launchers.chain.compile.steps import run_local_step

    outputs = run_local_step(chain_file, step_name, train, parameters)
    return (json.dumps(outputs), outputs["model"])  # type: ignore[return-value]


@dsl.component(**_LOCAL)  # type: ignore[arg-type]
def deploy_step(
    chain_file: str, step_name: str, parameters: dict, fingerprint: str, upload: str
) -> NamedTuple("DeployOutputs", [("outputs", str), ("predict_url", str)]):
    """Serves an uploaded model on a local server that outlives the task."""
    import json

    from launchers.chain.compile.steps import run_local_step

    outputs = run_local_step(chain_file, step_name, upload, parameters)
    return (json.dumps(outputs), outputs["predict_url"])  # type: ignore[return-value]
