"""A chain as an Airflow DAG file (Cloud Composer), for the ``local`` or the ``gcp`` target.

:func:`compile_airflow` writes one Python file a user drops in their DAGs folder. It imports
only Airflow, its Google provider and the standard library; the functions its tasks call are
copied into it (:mod:`~launchers.chain.compile.airflow_runtime`). What the DAG shares with
``beamforge chain`` and the kfp pipeline:

- its ``params`` are the chain's parameters (same names, defaults and descriptions); a step
  field that refers to ``${name}`` becomes ``{{ params['name'] }}`` in a templated field (gcp),
  or the tasks hand the values to the chain's own code, which resolves the chain with them
  as ``--param`` would (local);
- its ``dag_id`` is the chain's name and its schedule the chain's ``schedule:`` (a
  ``CronTriggerTimetable`` in the schedule's time zone), or none;
- a gate is a ``ShortCircuitOperator``: a gate that stops skips every step after it and the
  run ends as a success with those tasks skipped (``beamforge chain`` stops with an error);
- Airflow keeps each task's state: clearing a failed task reruns it and what follows, with the
  finished tasks' XComs reused.

The task layouts of the two targets are in :mod:`~launchers.chain.compile.airflow_local` and
:mod:`~launchers.chain.compile.airflow_gcp`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

from launchers.chain.compile.airflow_source import Code, literal
from launchers.chain.spec import ChainSpec
from transforms.core.config import SpecError

_TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")


@dataclasses.dataclass
class DagParts:
    """What a target adds to the DAG file.

    Attributes:
        doc: Paragraphs of the file's docstring about how its tasks work.
        imports: ``from ... import ...`` lines besides the DAG's own.
        constants: Module-level assignments (source text).
        functions: The functions the tasks call (source text).
        tasks: The task definitions inside ``with DAG(...)`` (source text, indented).
        default_args: The DAG's ``default_args``.
    """

    doc: str
    imports: list[str]
    constants: str
    functions: str
    tasks: str
    default_args: dict[str, object]


def compile_airflow(spec: ChainSpec, *, target: str, output: str) -> str:
    """Writes ``spec`` as an Airflow DAG file for ``target``.

    Args:
        spec: The validated chain; the local DAG's tasks load its file (``origin``).
        target: ``local`` (the chain's own step code, in the project's Python) or ``gcp``
            (the Google provider's Dataflow and Vertex AI operators).
        output: The DAG file to write (its folder is created).

    Returns:
        ``output``.

    Raises:
        SpecError: at the YAML path of what the DAG cannot express (a step name that is no
            task id, a parameter without a default in a scheduled chain, a dataset launched
            otherwise than as a Flex Template on gcp, a missing gcp section).
    """
    _check_no_jinja(spec)
    for i, step in enumerate(spec.steps):
        if not _TASK_ID.fullmatch(step.name):
            raise SpecError(
                f"steps[{i}].name",
                f"{step.name!r} cannot be an Airflow task id; use letters, digits, _, - and .",
                source=spec.origin,
            )
    if spec.schedule is not None:
        for name, parameter in spec.parameters.items():
            if parameter.default is None:
                raise SpecError(
                    f"parameters.{name}",
                    "has no default, and Airflow starts a scheduled DAG's runs with its params' "
                    "defaults; give it a default or drop the schedule",
                    source=spec.origin,
                )
    if target == "local":
        from launchers.chain.compile.airflow_local import local_parts

        parts = local_parts(spec)
    elif target == "gcp":
        from launchers.chain.compile.airflow_gcp import gcp_parts

        parts = gcp_parts(spec)
    else:
        raise SpecError("", f"unknown target {target!r}; expected local or gcp")
    text = dag_file(spec, target, parts)
    folder = os.path.dirname(output)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    return output


def _check_no_jinja(spec: ChainSpec) -> None:
    """Refuses step text Airflow would render as a template where the others take it as is."""
    for path, text in _texts(spec.raw_steps, "steps"):
        if any(mark in text for mark in _JINJA):
            raise SpecError(
                path,
                f"{text!r} holds a Jinja mark ({{{{, {{% or {{#}}, which Airflow would render "
                "in a templated field; beamforge chain and kfp take it as written",
                source=spec.origin,
            )


_JINJA = ("{{", "{%", "{#")


def _texts(data: object, path: str) -> list[tuple[str, str]]:
    if isinstance(data, str):
        return [(path, data)]
    if isinstance(data, dict):
        return [t for k, v in data.items() for t in _texts(v, f"{path}.{k}")]
    if isinstance(data, list):
        return [t for i, v in enumerate(data) for t in _texts(v, f"{path}[{i}]")]
    return []


def _doc(text: str) -> str:
    """``text`` safe inside the file's triple-quoted docstring (it names the chain's file)."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def dag_id(chain_name: str) -> str:
    """The chain's name as a DAG id (letters, digits, ``_``, ``-`` and ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", chain_name).strip("_") or "chain"


def dag_file(spec: ChainSpec, target: str, parts: DagParts) -> str:
    """The whole DAG file's text."""
    imports: set[str] = set()
    stdlib = {"import datetime"}
    sdk = {"DAG", "Param"}
    for line in parts.imports:
        module = line.split()[1]
        if line.startswith("from airflow.sdk import "):
            sdk.update(n.strip() for n in line.split(" import ", 1)[1].split(","))
        elif module.split(".")[0] in sys.stdlib_module_names:
            stdlib.add(line)
        else:
            imports.add(line)
    imports.add(f"from airflow.sdk import {', '.join(sorted(sdk))}")
    schedule: object = None
    start_date: object = None
    catchup, max_active_runs = False, 1
    if spec.schedule is not None:
        imports.add("from airflow.timetables.trigger import CronTriggerTimetable")
        schedule = Code(
            f"CronTriggerTimetable({literal(spec.schedule.cron)}, "
            f"timezone={literal(spec.schedule.timezone)})"
        )
        catchup = spec.schedule.catchup
        max_active_runs = spec.schedule.max_concurrent_runs
        if spec.schedule.start is not None:
            stdlib.add("import zoneinfo")
            year, month, day = (int(x) for x in spec.schedule.start.split("-"))
            start_date = Code(
                f"datetime.datetime({year}, {month}, {day}, "
                f"tzinfo=zoneinfo.ZoneInfo({literal(spec.schedule.timezone)}))"
            )
    params = "".join(
        "    "
        + literal(name)
        + ": Param(\n"
        # A default becomes the value the chain is compiled with (--param overrides it); a
        # parameter without one stays required.
        + ("" if p.default is None else f"        {literal(spec.values[name])},\n")
        + '        type="string",\n'
        + f"        description={literal(p.description or name)},\n"
        + "    ),\n"
        for name, p in spec.parameters.items()
    )
    dag_args: list[tuple[str, object]] = [
        ("dag_id", dag_id(spec.name)),
        ("description", f"beamforge chain {spec.name} ({target} target)"),
        ("schedule", schedule),
        ("start_date", start_date),
        ("catchup", catchup),
        ("max_active_runs", max_active_runs),
        ("params", Code("DAG_PARAMS")),
        ("default_args", parts.default_args),
        ("tags", ["beamforge", "chain", target]),
    ]
    header = (
        f'"""Chain {_doc(spec.name)} as an Airflow DAG, {target} target.\n\n'
        f"Written by ``beamforge chain compile {_doc(spec.origin)} --to airflow "
        f"--target {target}``;\n"
        "compile the chain again rather than editing this file.\n\n"
        f"{_doc(parts.doc.rstrip())}\n\n"
        "The DAG's params are the chain's parameters (same names and defaults). A gate is a\n"
        "ShortCircuitOperator: a gate that stops skips every step after it, and the run\n"
        "succeeds with those tasks skipped.\n"
        '"""\n\n'
    )
    lines = [
        header,
        "from __future__ import annotations\n\n",
        # isort's order: plain imports, then from-imports.
        "".join(f"{line}\n" for line in sorted(stdlib, key=lambda x: (x.startswith("from"), x))),
        "\n",
        "".join(f"{line}\n" for line in sorted(imports)),
        "\n",
        "# The chain's parameters: the same names, defaults and descriptions.\n",
        ("DAG_PARAMS = {\n" + params + "}\n\n" if params else "DAG_PARAMS: dict = {}\n\n"),
        parts.constants.rstrip() + "\n\n\n",
        parts.functions.rstrip() + "\n\n\n",
        "with DAG(\n",
        *(
            f"    {name}={literal(value, 1, len(name) + 2)},\n"
            for name, value in dag_args
            if value is not None
        ),
        ") as dag:\n",
        parts.tasks,
    ]
    return "".join(lines)


__all__ = ["DagParts", "compile_airflow", "dag_file", "dag_id"]
