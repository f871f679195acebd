"""A chain as a Kubeflow Pipelines (Vertex AI Pipelines) pipeline, for the ``local`` target.

Each step becomes a task of :mod:`launchers.chain.compile.components`, in the chain's order;
a step's task takes the JSON outputs of the step it refers to, and every step after a gate
sits inside ``dsl.If(gate.output == True)``: a gate that stops skips the rest of the pipeline
(``beamforge chain`` stops with an error instead). The pipeline's one parameter,
``chain_file``, defaults to the chain file's absolute path; relative paths in the chain are
read from the working directory the pipeline runs in, as ``beamforge chain`` reads them.
"""

# No postponed annotations here: kfp reads the pipeline function's parameter types.
import contextlib
import os
from typing import Any

from launchers.chain.compile import pipeline_name
from launchers.chain.spec import ChainSpec
from transforms.core.config import SpecError

COMPILE_TARGETS = ("local",)


def compile_kfp(spec: ChainSpec, *, target: str = "local", output: str) -> str:
    """Writes the chain as a pipeline (the IR YAML kfp and Vertex AI Pipelines run).

    Args:
        spec: The validated chain (its ``origin`` is the chain file the tasks load).
        target: Where the steps do their work; only ``local`` is built.
        output: The pipeline file to write.

    Returns:
        ``output``.

    Raises:
        SpecError: for another target, or a step kind the pipeline cannot express, at the
            step's YAML path.
    """
    from kfp import compiler, dsl

    from launchers.chain.compile import components

    if target not in COMPILE_TARGETS:
        raise SpecError("", f"compiling for target {target!r} is not built yet; use local")
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
    chain_file = os.path.abspath(spec.origin)

    @dsl.pipeline(name=pipeline_name(spec.name), description=f"chain {spec.name} ({target})")
    def pipeline(chain_file: str = chain_file) -> None:
        _add_tasks(spec, ops, chain_file)

    compiler.Compiler().compile(pipeline, output)
    return output


def _add_tasks(spec: ChainSpec, ops: dict[str, Any], chain_file: Any) -> None:
    from kfp import dsl

    tasks: dict[str, Any] = {}
    previous = None
    with contextlib.ExitStack() as conditions:
        for step in spec.steps:
            kwargs: dict[str, Any] = {"chain_file": chain_file, "step_name": step.name}
            for field in step.REFS:
                # The step's parameter is named for the kind it refers to (train: dataset, ...).
                upstream = tasks[getattr(step, field)]
                kwargs[_PARAMETER[step.KIND]] = upstream.outputs["outputs"]
            task = ops[step.KIND](**kwargs)
            task.set_display_name(step.name)
            # A re-run pipeline does the work again, as a changed input would need.
            task.set_caching_options(False)
            if previous is not None:
                # The chain's order holds even between steps that pass each other nothing.
                task.after(previous)
            tasks[step.name] = task
            previous = task
            if step.KIND == "gate":
                conditions.enter_context(
                    dsl.If(task.output == True, name=f"{step.name}-passed")  # noqa: E712
                )


_PARAMETER = {"train": "dataset", "gate": "train", "upload": "train", "deploy": "upload"}
