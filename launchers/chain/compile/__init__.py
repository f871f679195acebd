"""A chain compiled for an orchestrator: Kubeflow Pipelines (Vertex AI Pipelines) or Airflow.

:func:`compile_chain` writes the pipeline or DAG file for a target:

- ``--to kfp --target local`` (:mod:`~launchers.chain.compile.kfp_local`): lightweight
  components that run the chain's own local step code, for ``kfp.local``;
- ``--to kfp --target gcp`` (:mod:`~launchers.chain.compile.kfp_gcp`): Google Cloud Pipeline
  Components (Dataflow Flex Template, CustomJob, Model upload, endpoint deploy);
- ``--to airflow --target local|gcp`` (:mod:`~launchers.chain.compile.airflow_dag`): a DAG
  file for Cloud Composer, with the Google provider's operators on the gcp target.

The orchestrator libraries are imported only when a chain is compiled, never when
``beamforge`` starts.
"""

from __future__ import annotations

from launchers.chain.spec import ChainSpec
from transforms.core.config import SpecError

ORCHESTRATORS = ("kfp", "airflow")
COMPILE_TARGETS = ("local", "gcp")


def compile_chain(spec: ChainSpec, *, to: str, target: str, output: str) -> str:
    """Writes ``spec`` as a pipeline of orchestrator ``to`` for ``target``.

    Returns:
        ``output``.

    Raises:
        SpecError: for an unknown orchestrator or target, or a chain the orchestrator cannot
            express (at the YAML path of what it cannot express).
    """
    if to not in ORCHESTRATORS:
        raise SpecError(
            "", f"unknown orchestrator {to!r}; expected one of {', '.join(ORCHESTRATORS)}"
        )
    if target not in COMPILE_TARGETS:
        raise SpecError(
            "", f"unknown target {target!r}; expected one of {', '.join(COMPILE_TARGETS)}"
        )
    if not (to == "kfp" and target == "gcp"):
        _refuse_champion_gates(spec, to, target)
    _refuse_canaries(spec, to, target)
    if not (to == "airflow" and target == "local"):
        _refuse_predict_steps(spec, to, target)
    if to == "kfp" and target == "local":
        from launchers.chain.compile.kfp_local import compile_kfp

        return compile_kfp(spec, target=target, output=output)
    if to == "kfp":
        from launchers.chain.compile.kfp_gcp import compile_kfp_gcp

        return compile_kfp_gcp(spec, output=output)
    from launchers.chain.compile.airflow_dag import compile_airflow

    return compile_airflow(spec, target=target, output=output)


def _refuse_champion_gates(spec: ChainSpec, to: str, target: str) -> None:
    """A champion gate compiles for Vertex AI Pipelines only (``--to kfp --target gcp``).

    There the gate finds the deployed model on the deploy step's endpoint. The local tasks
    keep no chain state to find a deployed server in, and the Airflow gate is not written
    yet: a gate that could not find the champion would pass every time.
    """
    for i, step in enumerate(spec.steps):
        if getattr(step, "champion", None) is not None:
            raise SpecError(
                f"steps[{i}].champion",
                f"a champion gate ({step.name}) compiles for --to kfp --target gcp only, not "
                f"--to {to} --target {target}; run it with beamforge chain or drop champion",
                source=spec.origin,
            )


def _refuse_predict_steps(spec: ChainSpec, to: str, target: str) -> None:
    """A predict step compiles into a local Airflow DAG only (its task runs the step as
    ``beamforge chain`` does); the other pipelines have no scoring task yet, and leaving
    the step out would make a pipeline that silently does less than the chain."""
    for i, step in enumerate(spec.steps):
        if step.KIND == "predict":
            raise SpecError(
                f"steps[{i}].kind",
                f"a predict step ({step.name}) compiles for --to airflow --target local only, "
                f"not --to {to} --target {target}; run it with beamforge chain (local or gcp) "
                "or beamforge predict",
                source=spec.origin,
            )


def _refuse_canaries(spec: ChainSpec, to: str, target: str) -> None:
    """A canary deployment is run by ``beamforge chain`` only: the compiled deploy tasks
    deploy at once, and compiling the canary away would make a pipeline that skips the
    judgement the chain promises (:mod:`launchers.chain.canary`)."""
    for i, step in enumerate(spec.steps):
        if step.KIND != "deploy":
            continue
        gcp_canary = step.gcp is not None and step.gcp.canary is not None
        if step.canary is not None or gcp_canary:
            raise SpecError(
                f"steps[{i}].{'canary' if step.canary is not None else 'gcp.canary'}",
                f"a canary deployment ({step.name}) is run by beamforge chain only, not "
                f"compiled (--to {to} --target {target}); run the chain with beamforge chain "
                "or drop canary",
                source=spec.origin,
            )


def pipeline_name(chain_name: str) -> str:
    """The chain's name as a pipeline or DAG id (lower case letters, digits and dashes)."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", chain_name.lower()).strip("-") or "chain"


__all__ = ["COMPILE_TARGETS", "ORCHESTRATORS", "compile_chain", "pipeline_name"]
