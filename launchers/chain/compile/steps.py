"""The chain's own local step code, called from inside a pipeline's components.

Each function loads the chain file, finds the step by name and runs it exactly as
``beamforge chain --target local`` does (:class:`~launchers.chain.backends.LocalBackend`,
:func:`~launchers.chain.run.evaluate_gate`); what a step hands the next travels as JSON text,
the form an orchestrator passes between tasks. No orchestrator library is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from launchers.chain.backends import LocalBackend, StepContext
from launchers.chain.errors import GateFailedError
from launchers.chain.fingerprints import fingerprint
from launchers.chain.run import evaluate_gate
from launchers.chain.spec import (
    DatasetStep,
    DeployStep,
    PredictStep,
    TrainStep,
    UploadStep,
    load_chain,
)


def _context(
    chain_file: str, step_name: str, upstream: str, parameters: Mapping[str, str] | None
) -> tuple[Any, StepContext]:
    # The orchestrator's parameter values resolve the chain as ``--param`` would.
    spec = load_chain(chain_file, dict(parameters or {}))
    step = spec.step(step_name)
    inputs: dict[str, dict[str, Any]] = {}
    if step.REFS:
        # Every kind refers to at most one earlier step, whose outputs come in as ``upstream``.
        (field,) = step.REFS
        inputs[getattr(step, field)] = json.loads(upstream)
    return step, StepContext(chain=spec, target="local", inputs=inputs, previous_outputs={})


def run_local_step(
    chain_file: str,
    step_name: str,
    upstream: str = "{}",
    parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Runs a dataset, train, upload, deploy or predict step on the local target.

    Args:
        chain_file: The chain spec file.
        step_name: The step to run.
        upstream: JSON outputs of the step it refers to (``{}`` for a dataset step).
        parameters: Values of the chain's parameters (the others take their defaults).

    Returns:
        The step's outputs, as the chain's state records them.
    """
    step, ctx = _context(chain_file, step_name, upstream, parameters)
    backend = LocalBackend()
    if isinstance(step, DatasetStep):
        return backend.dataset(step, ctx)
    if isinstance(step, TrainStep):
        return backend.train(step, ctx)
    if isinstance(step, UploadStep):
        return backend.upload(step, ctx)
    if isinstance(step, DeployStep):
        return backend.deploy(step, ctx)
    if isinstance(step, PredictStep):
        from launchers.chain.predict_step import run_predict_step

        return run_predict_step(step, ctx)
    raise TypeError(f"a {step.KIND} step is not run by run_local_step")


def check_gate(
    chain_file: str,
    step_name: str,
    upstream: str,
    parameters: Mapping[str, str] | None = None,
) -> tuple[bool, float, str]:
    """Evaluates a gate step against the outputs of the step it reads (train or dataset).

    Returns:
        Whether the gate passed, the metric's value (NaN when it is missing or not a
        number) and the reason it stopped (empty when it passed).
    """
    step, ctx = _context(chain_file, step_name, upstream, parameters)
    source = ctx.inputs[step.metrics]
    metrics = source.get("metrics", {})
    try:
        dataset = isinstance(ctx.chain.step(step.metrics), DatasetStep)
        outputs = evaluate_gate(step, metrics, source.get("validation"), dataset=dataset)
    except GateFailedError as exc:
        value = metrics.get(step.metric)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return False, float(value) if number else float("nan"), str(exc)
    return True, float(outputs["value"]), ""


def step_fingerprint(
    chain_file: str, step_name: str, parameters: Mapping[str, str] | None = None
) -> str:
    """The fingerprint of a step's own inputs: its configuration and the files it reads.

    The same function ``beamforge chain`` keys its resume on, without the outputs of the
    steps before it: an orchestrator's cache adds those itself, as the task's other inputs.
    """
    spec = load_chain(chain_file, dict(parameters or {}))
    return fingerprint(spec.step(step_name), "local", "", {})
