"""Running a chain: its steps in order on one target, resuming from the state file.

A re-run resumes after the last completed step and never repeats a finished one whose
fingerprint is unchanged and whose outputs the backend still finds; the state is written
after every step, completed or failed. The evaluation gate is the one step the chain does
itself: it needs no backend.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from launchers.chain.backends import Backend, StepContext, backend_for
from launchers.chain.errors import ChainError, GateFailedError
from launchers.chain.fingerprints import fingerprint
from launchers.chain.spec import (
    ChainSpec,
    DatasetStep,
    DeployStep,
    GateStep,
    PredictStep,
    TrainStep,
    UploadStep,
    check_target,
)
from launchers.chain.state import COMPLETED, FAILED, PENDING, StepState, load_state, save_state

_LOG = logging.getLogger(__name__)


def evaluate_gate(
    step: GateStep,
    metrics: Mapping[str, Any],
    validation: str | None = None,
    *,
    dataset: bool = False,
) -> dict[str, Any]:
    """Checks a gate against a training step's metrics or a dataset's validation counts.

    Args:
        step: The gate.
        metrics: The metrics of the step it names.
        validation: A dataset's ``validation.json``: a failure then names what was found
            (the drifted columns, the unexpected values).
        dataset: Whether the gate names a dataset step: one whose run recorded no
            validation is then named as such, not taken for a trainer.

    Returns:
        The gate's outputs (metric, value, bounds).

    Raises:
        GateFailedError: if the metric is missing, not a number, or out of bounds.
    """
    if step.min is None and step.max is None:
        # A champion-only gate: the comparison recomputes the metric itself.
        return {"metric": step.metric, "value": metrics.get(step.metric), "min": None, "max": None}
    if step.metric not in metrics:
        if dataset and validation is None:
            raise GateFailedError(
                step.name,
                f"metric {step.metric!r} not reported; the dataset's run recorded no "
                "validation (give its job spec a validation: section)",
            )
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
        who = "the dataset's validation" if validation or dataset else "the trainer"
        raise GateFailedError(
            step.name, f"metric {step.metric!r} not reported; {who} reported {numeric}"
        )
    value = metrics[step.metric]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateFailedError(step.name, f"metric {step.metric!r} is {value!r}, not a number")
    problem = None
    if step.min is not None and value < step.min:
        problem = f"{step.metric} = {value:.6g} is below min {step.min:g}"
    if step.max is not None and value > step.max:
        problem = f"{step.metric} = {value:.6g} is above max {step.max:g}"
    if problem is not None:
        if validation:
            problem += f": {findings(validation)}"
        raise GateFailedError(step.name, problem)
    return {"metric": step.metric, "value": value, "min": step.min, "max": step.max}


def findings(validation: str, most: int = 6) -> str:
    """What a dataset's ``validation.json`` found, in one line (the first ``most`` anomalies)."""
    import json

    from transforms.core import files

    raw = files.read_bytes(validation)
    if raw is None:
        return f"{validation} is missing"
    anomalies = json.loads(raw.decode("utf-8")).get("anomalies", [])
    shown = "; ".join(str(a.get("message", a)) for a in anomalies[:most])
    more = len(anomalies) - most
    return shown + (f"; and {more} more in {validation}" if more > 0 else f" (see {validation})")


@dataclasses.dataclass
class ChainReport:
    """What a chain run did.

    Attributes:
        ran: Steps that ran, in order.
        skipped: Completed steps that were reused.
        outputs: Every step's outputs by name (reused ones included).
        state_path: Where the state is.
    """

    ran: list[str]
    skipped: list[str]
    outputs: dict[str, dict[str, Any]]
    state_path: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_chain(
    spec: ChainSpec,
    *,
    target: str = "local",
    backend: Backend | None = None,
    on_step: Callable[[str, str], None] | None = None,
) -> ChainReport:
    """Runs the chain's steps in order on ``target``, resuming from the persisted state.

    Args:
        spec: The validated chain.
        target: ``local`` or ``gcp``.
        backend: The backend (default: :func:`backend_for` the target).
        on_step: Called with (step name, ``running``/``skipped``/``completed``/``failed``).

    Returns:
        The report.

    Raises:
        ChainError: the step that stopped the chain (the gate: GateFailedError); the state
            records it as failed and the steps after it do not run.
    """
    check_target(spec, target)
    backend = backend or backend_for(spec, target)
    path = spec.state_path(target)
    state = load_state(path, spec.name, target)
    report = ChainReport(ran=[], skipped=[], outputs={}, state_path=path)
    previous = ""
    notify = on_step or (lambda name, what: None)
    for step in spec.steps:
        referenced = {getattr(step, f): state.steps[getattr(step, f)] for f in step.REFS}
        fp = fingerprint(step, target, previous, referenced)
        old = state.steps.get(step.name)
        if (
            old is not None
            and old.status == COMPLETED
            and old.fingerprint == fp
            and _still_valid(backend, step, old.outputs)
        ):
            # The run count of the step before is part of the next fingerprint: a step that
            # ran again invalidates what follows even if its outputs look the same.
            previous = f"{fp}:{old.runs}"
            report.skipped.append(step.name)
            report.outputs[step.name] = old.outputs
            notify(step.name, "skipped")
            continue
        ctx = StepContext(
            chain=spec,
            target=target,
            inputs={k: v.outputs for k, v in referenced.items()},
            previous_outputs=old.outputs if old else {},
        )
        current = StepState(
            status=PENDING,
            fingerprint=fp,
            started=_now(),
            runs=(old.runs if old else 0) + 1,
            outputs=old.outputs if old else {},
        )
        notify(step.name, "running")
        _LOG.info("chain %s: running step %s (%s)", spec.name, step.name, step.KIND)
        try:
            outputs = _run_step(backend, step, ctx)
        except Exception as exc:
            current.status = FAILED
            current.finished = _now()
            current.error = str(exc)
            state.steps[step.name] = current
            save_state(path, state)
            notify(step.name, "failed")
            if isinstance(exc, ChainError):
                raise
            raise ChainError(step.name, str(exc)) from exc
        previous = f"{fp}:{current.runs}"
        current.status = COMPLETED
        current.finished = _now()
        current.outputs = outputs
        state.steps[step.name] = current
        save_state(path, state)
        report.ran.append(step.name)
        report.outputs[step.name] = outputs
        notify(step.name, "completed")
    return report


def _still_valid(backend: Backend, step: Any, outputs: dict[str, Any]) -> bool:
    if isinstance(step, PredictStep):
        # The same on every target: the manifest the step committed still publishes its run.
        from launchers.chain.predict_step import predict_outputs_valid

        return predict_outputs_valid(outputs)
    return backend.still_valid(step, outputs)


def _run_step(backend: Backend, step: Any, ctx: StepContext) -> dict[str, Any]:
    if isinstance(step, DatasetStep):
        return backend.dataset(step, ctx)
    if isinstance(step, TrainStep):
        return backend.train(step, ctx)
    if isinstance(step, GateStep):
        source = ctx.inputs[step.metrics]
        dataset = isinstance(ctx.chain.step(step.metrics), DatasetStep)
        outputs = evaluate_gate(
            step, source.get("metrics", {}), source.get("validation"), dataset=dataset
        )
        if step.champion is not None:
            from launchers.chain.champion import champion_gate

            outputs |= champion_gate(ctx.chain, step, ctx.target, source["model_dir"])
        return outputs
    if isinstance(step, UploadStep):
        return backend.upload(step, ctx)
    if isinstance(step, DeployStep):
        return backend.deploy(step, ctx)
    if isinstance(step, PredictStep):
        from launchers.chain.predict_step import run_predict_step

        return run_predict_step(
            step,
            ctx,
            dataflow_api_endpoint=ctx.chain.gcp.dataflow_api_endpoint if ctx.chain.gcp else None,
        )
    raise TypeError(f"unknown step type {type(step).__name__}")  # pragma: no cover
