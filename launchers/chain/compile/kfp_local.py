"""A chain as a Kubeflow Pipelines (Vertex AI Pipelines) pipeline, for the ``local`` target.

Each step becomes a task of :mod:`launchers.chain.compile.components`, in the chain's order;
a step's task takes the JSON outputs of the step it refers to, and every step after a gate
sits inside ``dsl.If(gate.output == True)``: a gate that stops skips the rest of the pipeline
(``beamforge chain`` stops with an error instead).

The pipeline's parameters are the chain's (same names, same defaults), plus ``chain_file``,
which defaults to the chain file's absolute path; every task gets the parameters' values
and loads the chain with them, as ``beamforge chain --param`` does. Relative paths in the
chain are read from the working directory the pipeline runs in.

What a rerun repeats: kfp's cache (``kfp.local.init(enable_caching=True)``, or Vertex AI's)
reuses a task whose inputs are all unchanged. Each step's task takes, besides the outputs of
the step before, a fingerprint computed fresh by a task of its own (never cached) from the
step's configuration and the content of the files it reads: the same fingerprint
``beamforge chain`` resumes on. A changed input file or setting reruns that step, and a step
whose upstream outputs changed reruns too. Unlike ``beamforge chain``, kfp does not check
that a reused task's outputs still exist; the deploy step, whose output is a running
server, is never reused.
"""

# No postponed annotations here: kfp reads the pipeline function's parameter types.
import contextlib
import os
from collections.abc import Mapping
from typing import Any

from launchers.chain.compile import pipeline_name
from launchers.chain.compile.kfp_parameters import pipeline_function
from launchers.chain.spec import ChainSpec
from transforms.core.config import SpecError

_PARAMETER = {"train": "dataset", "gate": "train", "upload": "train", "deploy": "upload"}
# Steps whose result cannot be reused from a record of it.
_NEVER_CACHED = {"deploy"}


def compile_kfp(spec: ChainSpec, *, target: str = "local", output: str) -> str:
    """Writes the chain as a pipeline (the IR YAML kfp and Vertex AI Pipelines run).

    Args:
        spec: The validated chain (its ``origin`` is the chain file the tasks load).
        target: ``local``: the steps do their work with the local step code.
        output: The pipeline file to write.

    Returns:
        ``output``.

    Raises:
        SpecError: for a step kind the pipeline cannot express, at the step's YAML path.
    """
    from kfp import compiler, dsl

    from launchers.chain.compile import components

    if target != "local":
        raise SpecError("", f"compile_kfp builds the local target, not {target!r}")
    ops = {
        "dataset": components.dataset_step,
        "train": components.train_step,
        "gate": components.gate_step,
        "upload": components.upload_step,
        "deploy": components.deploy_step,
    }
    for i, step in enumerate(spec.steps):
        if step.KIND not in ops:
            raise SpecError(
                f"steps[{i}].kind", f"a {step.KIND} step has no kfp component", source=spec.origin
            )

    def body(channels: Mapping[str, Any]) -> None:
        _add_tasks(spec, ops, channels)

    pipeline = dsl.pipeline(
        name=pipeline_name(spec.name), description=f"chain {spec.name} (local)"
    )(pipeline_function(spec, body, extra={"chain_file": os.path.abspath(spec.origin)}))
    # Checked and built: only now is anything written.
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    compiler.Compiler().compile(pipeline, output)
    return output


def _add_tasks(spec: ChainSpec, ops: dict[str, Any], channels: Mapping[str, Any]) -> None:
    from kfp import dsl

    from launchers.chain.compile import components

    chain_file = channels["chain_file"]
    parameters = {name: channels[name] for name in spec.parameters}
    tasks: dict[str, Any] = {}
    previous = None
    with contextlib.ExitStack() as conditions:
        for step in spec.steps:
            common: dict[str, Any] = {
                "chain_file": chain_file,
                "step_name": step.name,
                "parameters": parameters,
            }
            fingerprint = components.fingerprint_step(**common)
            fingerprint.set_display_name(f"{step.name}-fingerprint")
            # Computed on every run: it is what tells the cache whether the step changed.
            fingerprint.set_caching_options(False)
            kwargs: dict[str, Any] = {**common, "fingerprint": fingerprint.output}
            for field in step.REFS:
                # The step's parameter is named for the kind it refers to (train: dataset, ...).
                upstream = tasks[getattr(step, field)]
                kwargs[_PARAMETER[step.KIND]] = upstream.outputs["outputs"]
            task = ops[step.KIND](**kwargs)
            task.set_display_name(step.name)
            task.set_caching_options(step.KIND not in _NEVER_CACHED)
            if previous is not None:
                # The chain's order holds even between steps that pass each other nothing.
                task.after(previous)
            tasks[step.name] = task
            previous = task
            if step.KIND == "gate":
                conditions.enter_context(
                    dsl.If(task.output == True, name=f"{step.name}-passed")  # noqa: E712
                )
