"""The ``local`` target's DAG: each step runs beamforge's own step code in the project's Python.

Airflow's environment cannot hold beamforge (its Google provider and tensorflow-transform
need different Google API clients), so each task is an ``ExternalPythonOperator`` running
:mod:`launchers.chain.compile.steps` -- the code ``beamforge chain --target local`` runs --
with the project's Python. Its path, and the directory the chain's relative paths are read
from, are written at compile time and can be overridden by ``BEAMFORGE_PYTHON`` and
``BEAMFORGE_DIR`` where the DAG runs. Steps pass their outputs as JSON text through XCom; the
DAG run's params reach the steps as the chain's parameter values.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from launchers.chain.compile import airflow_runtime
from launchers.chain.compile.airflow_dag import DagParts
from launchers.chain.compile.airflow_source import Code, call, identifier, literal, timedelta
from launchers.chain.spec import ChainSpec, DeployStep, GateStep, TrainStep
from transforms.core.config import SpecError

# A local server gets this long to start, on top of its own start timeout.
_DEPLOY_MARGIN_SECONDS = 60.0

_DOC = """\
Each step runs the code ``beamforge chain --target local`` runs
(launchers.chain.compile.steps), in the project's Python: Airflow's own environment cannot
hold beamforge. Set BEAMFORGE_PYTHON to that Python and BEAMFORGE_DIR to the directory the
chain's relative paths are read from, where they differ from the ones compiled in. Steps
hand each other their outputs as JSON through XCom."""


def local_parts(spec: ChainSpec) -> DagParts:
    """The tasks, constants and functions of a local-target DAG."""
    # params['name'], not params.name: Jinja would give params.items the dict's method.
    parameters = {name: f"{{{{ params[{name!r}] }}}}" for name in spec.parameters}
    constants = (
        f"CHAIN_FILE = {literal(os.path.abspath(spec.origin))}\n"
        "# The project's Python, where beamforge is installed.\n"
        f'PYTHON = os.environ.get("BEAMFORGE_PYTHON", {literal(sys.executable)})\n'
        "# The chain's relative paths are read from here, as beamforge chain reads them from\n"
        "# where it is started.\n"
        f'DIRECTORY = os.environ.get("BEAMFORGE_DIR", {literal(os.getcwd())})\n'
        "# The chain's parameters, as the DAG run's params give them.\n"
        f"PARAMETERS = {literal(parameters)}\n"
    )
    names: set[str] = set()
    variables: dict[str, str] = {}
    order: list[str] = []
    tasks: list[str] = []
    step_names = {s.name for s in spec.steps}
    for i, step in enumerate(spec.steps):
        var = identifier(step.name, names)
        variables[step.name] = var
        upstream: Any = "{}"
        if step.REFS:
            (field,) = step.REFS
            upstream = Code(f"{variables[getattr(step, field)]}.output")
        arguments: list[tuple[str, Any]] = [
            ("task_id", step.name),
            ("python", Code("PYTHON")),
            (
                "python_callable",
                Code("evaluate_gate" if isinstance(step, GateStep) else "run_step"),
            ),
            (
                "op_args",
                [
                    Code("CHAIN_FILE"),
                    step.name,
                    upstream,
                    Code("PARAMETERS"),
                    Code("DIRECTORY"),
                ],
            ),
            # The project's Python has no Airflow: the callable gets no Airflow context.
            ("expect_airflow", False),
        ]
        timeout = _timeout(step)
        if timeout is not None:
            arguments.append(("execution_timeout", timedelta(timeout)))
        tasks.append(call(var, "ExternalPythonOperator", arguments, 1))
        order.append(var)
        if isinstance(step, GateStep):
            decision = f"{step.name}_passed"
            if decision in step_names:
                raise SpecError(
                    f"steps[{i}].name",
                    f"the DAG names gate {step.name!r}'s decision task {decision!r}, "
                    "which is also a step's name; rename one",
                    source=spec.origin,
                )
            decision_var = identifier(decision, names)
            tasks.append(
                call(
                    decision_var,
                    "ShortCircuitOperator",
                    [
                        ("task_id", decision),
                        ("python_callable", Code("gate_decision")),
                        ("op_args", [Code(f"{var}.output")]),
                    ],
                    1,
                )
            )
            order.append(decision_var)
    # The chain's order holds even between steps that pass each other nothing.
    edges = "    " + " >> ".join(order)
    if len(edges) > 100:
        # Too long for a line: one task a line, as ruff format writes it.
        edges = "    (\n" + "".join(f"        {'>> ' * (i > 0)}{v}\n" for i, v in enumerate(order))
        edges += "    )"
    tasks.append(edges + "\n")
    return DagParts(
        doc=_DOC,
        imports=[
            "import os",
            "from airflow.providers.standard.operators.python import (\n"
            "    ExternalPythonOperator,\n"
            "    ShortCircuitOperator,\n"
            ")",
        ],
        constants=constants,
        functions=airflow_runtime.source(airflow_runtime.LOCAL_FUNCTIONS),
        tasks="\n".join(tasks),
        default_args={
            "owner": "beamforge",
            # A local step that failed once (a busy port, a killed process) may pass again.
            "retries": 1,
            "retry_delay": timedelta(30),
        },
    )


def _timeout(step: Any) -> float | None:
    if isinstance(step, TrainStep):
        return step.timeout
    if isinstance(step, DeployStep):
        return step.start_timeout + _DEPLOY_MARGIN_SECONDS
    return None
