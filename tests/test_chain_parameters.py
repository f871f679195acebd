"""The chain's parameter table and schedule: parsing, substitution, and the errors users see.

``${name}`` references are checked against the table, resolved from defaults and
``--param`` values before the steps are validated, and kept as placeholders for compilers
(:func:`~launchers.chain.parameters.overlay`). Schedules are checked field by field, so a
bad cron fails when the chain is read, with its YAML path.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from launchers.chain import SpecError, parse_chain
from launchers.chain.parameters import (
    overlay,
    parse_assignments,
    references,
    render,
    substitute,
)
from launchers.chain.schedule import Schedule, cron_problem
from tests.conftest import REPO, beamforge

PIPELINE = str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")
CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"


def _chain(**extra: Any) -> dict[str, Any]:
    return {
        "name": "taxi",
        "workdir": "out",
        "parameters": {
            "input": {"default": "data/a.csv", "description": "raw trips"},
            "day": "2024-01-01",
            "model_name": {"description": "display name"},
        },
        "steps": [
            {
                "name": "dataset",
                "kind": "dataset",
                "spec": PIPELINE,
                "inputs": ["${input}", "archive/${day}/*.csv"],
                "output": "out/ds-${day}",
                "gcp": {
                    "output": "gs://b/ds/${day}",
                    "launch": "flex_template",
                    "template": "gs://b/t.json",
                    "parameters": {"note": "cost $$5 on ${day}"},
                },
            },
            {"name": "train", "kind": "train", "dataset": "dataset", "script": "t.py"},
            {
                "name": "upload",
                "kind": "upload",
                "model": "train",
                "predictor": "m:P",
                "display_name": "${model_name}",
            },
        ],
        **extra,
    }


def test_references_resolve_from_defaults_and_given_values() -> None:
    spec = parse_chain(_chain(), origin="x.yaml", values={"model_name": "taxi-tips"})
    assert spec.values == {"input": "data/a.csv", "day": "2024-01-01", "model_name": "taxi-tips"}
    dataset = spec.steps[0]
    assert dataset.inputs == ["data/a.csv", "archive/2024-01-01/*.csv"]
    assert dataset.output == "out/ds-2024-01-01"
    assert dataset.gcp.output == "gs://b/ds/2024-01-01"
    # Only $${ is an escape (of ${); any other $ stays as written.
    assert dataset.gcp.parameters == {"note": "cost $$5 on 2024-01-01"}
    assert spec.steps[2].display_name == "taxi-tips"
    assert [p.description for p in spec.parameters.values()] == ["raw trips", "", "display name"]

    given = parse_chain(
        _chain(), origin="x.yaml", values={"model_name": "m", "input": "gs://b/in/*.csv"}
    )
    assert given.steps[0].inputs == ["gs://b/in/*.csv", "archive/2024-01-01/*.csv"]


def test_overlay_puts_an_orchestrators_placeholders_where_parameters_are() -> None:
    spec = parse_chain(_chain(), origin="x.yaml", values={"model_name": "m"})
    steps = overlay(spec.steps, spec.raw_steps, lambda name: f"{{{{ params.{name} }}}}")
    assert steps[0].inputs == ["{{ params.input }}", "archive/{{ params.day }}/*.csv"]
    assert steps[0].output == "out/ds-{{ params.day }}"
    assert steps[0].gcp.parameters == {"note": "cost $$5 on {{ params.day }}"}
    assert steps[2].display_name == "{{ params.model_name }}"
    # Fields without references keep their resolved values; the spec itself is untouched.
    assert steps[1].script == "t.py"
    assert spec.steps[0].inputs == ["data/a.csv", "archive/2024-01-01/*.csv"]


def test_reference_helpers() -> None:
    assert references("a ${x} $${y} ${z}") == ["x", "z"]
    assert render("a ${x} $${y} $$ $5", {"x": "1"}.__getitem__) == "a 1 ${y} $$ $5"
    assert substitute({"k": ["${x}", 3, None]}, {"x": "v"}) == {"k": ["v", 3, None]}
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(SpecError, match=r"--param: got 'a'; expected NAME=VALUE"):
        parse_assignments(["a"])


def _set(path: list[Any], value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "values", "message"),
    [
        (
            _set(["steps", 0, "inputs", 1], "archive/${dya}/*.csv"),
            {"model_name": "m"},
            "x.yaml: steps[0].inputs[1]: ${dya} is not a parameter of this chain; "
            "parameters: input, day, model_name",
        ),
        (
            lambda d: None,
            {},
            "x.yaml: parameters.model_name: has no default and no value; "
            "give --param model_name=VALUE or a default",
        ),
        (
            lambda d: None,
            {"model_name": "m", "inptu": "x"},
            "x.yaml: parameters: --param inptu: no such parameter; "
            "the chain's parameters: input, day, model_name",
        ),
        (
            _set(["parameters", "Input"], "x"),
            {"model_name": "m"},
            "x.yaml: parameters.Input: a parameter name is lower-case letters, digits and _, "
            "starting with a letter, up to 63 characters, and not a Python keyword",
        ),
        (
            _set(["parameters", "chain_file"], "x"),
            {"model_name": "m"},
            "x.yaml: parameters.chain_file: 'chain_file' is reserved; choose another name",
        ),
        (
            _set(["parameters", "day"], {"default": "x", "type": "date"}),
            {"model_name": "m"},
            "x.yaml: parameters.day.type: unknown key 'type'; valid keys are default, description",
        ),
        (
            _set(["parameters", "day"], {"default": ["x"]}),
            {"model_name": "m"},
            "x.yaml: parameters.day.default: got ['x']; write the default as quoted text",
        ),
        (
            _set(["steps", 0, "gcp", "output"], "${day}"),
            {"model_name": "m"},
            "x.yaml: steps[0].gcp: output must be a gs:// path, got '2024-01-01'",
        ),
        (
            _set(["schedule"], "0 25 * * *"),
            {"model_name": "m"},
            "x.yaml: schedule.cron: '0 25 * * *' is not valid cron: hour '25' is out of range; "
            "expected 0-23",
        ),
        (
            _set(["schedule"], {"cron": "@daily"}),
            {"model_name": "m"},
            "x.yaml: schedule.cron: '@daily' is not valid cron: expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 1",
        ),
        (
            _set(["schedule"], {"cron": "0 3 * * *", "timezone": "Mars/Base"}),
            {"model_name": "m"},
            "x.yaml: schedule.timezone: 'Mars/Base' is not an IANA time zone "
            "(e.g. UTC, Europe/Paris)",
        ),
        (
            _set(["schedule"], {"cron": "0 3 * * *", "start": "tomorrow"}),
            {"model_name": "m"},
            "x.yaml: schedule.start: got 'tomorrow'; expected a date, YYYY-MM-DD",
        ),
        (
            _set(
                ["gcp"],
                {
                    "project": "p",
                    "region": "r",
                    "staging_bucket": "gs://b",
                    "labels": {"Team": "ml"},
                },
            ),
            {"model_name": "m"},
            "x.yaml: gcp.labels.Team: label keys and values are lower-case letters, digits, _ "
            "and -, up to 63 characters (keys start with a letter)",
        ),
        (
            _set(["parameters", "day"], 10),
            {"model_name": "m"},
            "x.yaml: parameters.day: got 10; write the default as quoted text",
        ),
        (
            _set(["parameters", "class"], "x"),
            {"model_name": "m"},
            "x.yaml: parameters.class: a parameter name is lower-case letters, digits and _, "
            "starting with a letter, up to 63 characters, and not a Python keyword",
        ),
        (
            _set(["parameters", "day"], "line one\nline two"),
            {"model_name": "m"},
            "x.yaml: parameters.day: got 'line one\\nline two'; a parameter value is one line "
            "without control characters",
        ),
        (
            _set(["parameters", "day"], {"default": "x", "description": ["a"]}),
            {"model_name": "m"},
            "x.yaml: parameters.day.description: got ['a']; expected one line of text",
        ),
        (
            _set(["steps", 0, "output"], "out/${day"),
            {"model_name": "m"},
            "x.yaml: steps[0].output: 'out/${day' has a ${ with no closing }; "
            "write $${ for a literal ${",
        ),
        (
            _set(["steps", 2, "predictor"], "${model_name}:P"),
            {"model_name": "m"},
            "x.yaml: steps[2].predictor: refers to ${model_name}, but a step's predictor is "
            "fixed when the chain is read and compiled; parameters stand in the other text fields",
        ),
        (
            _set(["steps", 1, "dataset"], "${day}"),
            {"model_name": "m"},
            "x.yaml: steps[1].dataset: refers to ${day}, but a step's dataset is fixed when the "
            "chain is read and compiled; parameters stand in the other text fields",
        ),
        (
            _set(["workdir"], "/tmp/${day}"),
            {"model_name": "m"},
            "x.yaml: workdir: '/tmp/${day}': parameters (${name}) can be used only in the steps",
        ),
        (
            _set(["name"], "taxi-${day}"),
            {"model_name": "m"},
            "x.yaml: name: got 'taxi-${day}'; a name is letters, digits, _ and -, starting with a "
            "letter, up to 63 characters (it names pipelines, DAGs, jobs and labels)",
        ),
        (
            _set(["name"], "2024"),
            {"model_name": "m"},
            "x.yaml: name: got '2024'; a name is letters, digits, _ and -, starting with a "
            "letter, up to 63 characters (it names pipelines, DAGs, jobs and labels)",
        ),
        (
            _set(["steps", 1, "name"], "train step"),
            {"model_name": "m"},
            "x.yaml: steps[1].name: got 'train step'; a name is letters, digits, _ and -, "
            "starting with a letter, up to 63 characters (it names pipelines, DAGs, jobs and "
            "labels)",
        ),
        (
            _set(["steps", 1, "timeout"], -5),
            {"model_name": "m"},
            "x.yaml: steps[1].timeout: got -5; expected a number from 1.0 to 604800.0 "
            "(seconds, a week at most)",
        ),
        (
            _set(["steps", 1, "timeout"], "${day}"),
            {"model_name": "m"},
            "x.yaml: steps[1].timeout: '${day}' refers to a parameter, but parameters stand only "
            "in text values; this one is not text (got '2024-01-01'; expected a number)",
        ),
        (
            _set(["schedule"], "0 3 30 2 *"),
            {"model_name": "m"},
            "x.yaml: schedule.cron: '0 3 30 2 *' is not valid cron: day of month '30' never "
            "falls in month '2': it never fires",
        ),
        (
            _set(["schedule"], {"cron": "0 3 * * *", "start": "20240101"}),
            {"model_name": "m"},
            "x.yaml: schedule.start: got '20240101'; expected a date, YYYY-MM-DD",
        ),
        (
            _set(["schedule"], {"cron": "0 3 * * *", "catchup": True}),
            {"model_name": "m"},
            "x.yaml: schedule.catchup: catching up needs a start date to catch up from",
        ),
        (
            _set(["schedule"], {"cron": "0 3 * * *", "timezone": "localtime"}),
            {"model_name": "m"},
            "x.yaml: schedule.timezone: 'localtime' is not an IANA time zone "
            "(e.g. UTC, Europe/Paris)",
        ),
    ],
)
def test_bad_parameters_and_schedules_fail_with_the_yaml_path(
    edit: Any, values: dict[str, str], message: str
) -> None:
    data = _chain()
    edit(data)
    with pytest.raises(SpecError) as caught:
        parse_chain(data, origin="x.yaml", values=values)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "text",
    ["0 3 * * *", "*/15 * * * MON-FRI", "0 0 1 jan,jul *", "5,35 8-18/2 1-15 * 0", "0 0 * * 7"],
)
def test_valid_cron(text: str) -> None:
    assert cron_problem(text) == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("61 * * * *", "minute '61' is out of range; expected 0-59"),
        ("0 0 0 * *", "day of month '0' is out of range; expected 1-31"),
        ("0 0 * 13 *", "month '13' is out of range; expected 1-12 or JAN..DEC"),
        ("0 0 * * FUN", "day of week 'FUN' is out of range; expected 0-7 or SUN..SAT"),
        ("5-1 * * * *", "minute range '5-1' runs backwards"),
        ("*/0 * * * *", "minute '*/0': a step must be at least 1"),
        ("0 3 ? * *", "day of month '?' is not a value, range, list or step"),
        ("0 3 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
    ],
)
def test_invalid_cron(text: str, problem: str) -> None:
    assert cron_problem(text) == problem


def test_a_yaml_date_is_a_schedule_start_and_a_day_of_week_makes_any_day_fire() -> None:
    data = yaml.safe_load("schedule: {cron: '0 3 30 2 MON', start: 2026-12-01}")
    spec = parse_chain(_chain(**data), origin="x.yaml", values={"model_name": "m"})
    assert spec.schedule == Schedule(cron="0 3 30 2 MON", start="2026-12-01")


def test_param_values_are_one_line_and_given_once() -> None:
    with pytest.raises(SpecError, match=r"^--param day: is given twice$"):
        parse_assignments(["day=1", "day=2"])
    with pytest.raises(SpecError, match=r"^--param day: got 'a\\nb'; a parameter value is one"):
        parse_assignments(["day=a\nb"])


def test_schedule_shorthand_and_defaults() -> None:
    spec = parse_chain(_chain(schedule="0 3 * * *"), origin="x.yaml", values={"model_name": "m"})
    assert spec.schedule == Schedule(cron="0 3 * * *")
    assert (spec.schedule.timezone, spec.schedule.max_concurrent_runs) == ("UTC", 1)
    assert parse_chain(_chain(), origin="x.yaml", values={"model_name": "m"}).schedule is None


def test_the_example_chain_declares_its_parameters_and_schedule() -> None:
    data = yaml.safe_load(CHAIN.read_text())
    spec = parse_chain(data, origin=str(CHAIN))
    assert {n: p.default for n, p in spec.parameters.items()} == {
        "input": "examples/chicago_taxi/data/sample.csv",
        "gcs_root": "gs://my-bucket/beamforge/chicago_taxi",
        "model_name": "chicago-taxi-tips",
    }
    assert spec.steps[0].inputs == ["examples/chicago_taxi/data/sample.csv"]
    assert spec.schedule == Schedule(cron="0 3 * * *", timezone="UTC")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return beamforge("chain", *args, timeout=120)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set(["parameters", "model_name"], {"description": "no default"}),
            "parameters.model_name: has no default and no value; "
            "give --param model_name=VALUE or a default",
        ),
        (
            _set(["schedule", "cron"], "0 3 * *"),
            "schedule.cron: '0 3 * *' is not valid cron: expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 4",
        ),
    ],
)
@pytest.mark.parametrize("to", ["kfp", "airflow"])
def test_compile_refuses_a_chain_it_cannot_run(
    tmp_path: pathlib.Path, edit: Any, message: str, to: str
) -> None:
    data = yaml.safe_load(CHAIN.read_text())
    edit(data)
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    result = _cli("compile", str(chain), "--to", to, "-o", str(out))
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        f"error: {chain}: {message}\n",
    )
    assert not out.exists()


def test_param_reaches_the_run_and_a_missing_default_can_be_given(tmp_path: pathlib.Path) -> None:
    data = yaml.safe_load(CHAIN.read_text())
    data["parameters"]["model_name"] = {"description": "no default"}
    data["workdir"] = str(tmp_path / "work")
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _cli("status", str(chain), "--param", "model_name=tips")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"chain chicago_taxi (local): state {tmp_path / 'work' / 'state-local.json'}"
    )
    bad = _cli("status", str(chain), "--param", "model_name")
    assert (bad.returncode, bad.stderr) == (
        2,
        "error: --param: got 'model_name'; expected NAME=VALUE\n",
    )


def _example_copy(folder: pathlib.Path, name: str = "chain.yaml", **changes: Any) -> pathlib.Path:
    data = yaml.safe_load(CHAIN.read_text())
    for key, edit in changes.items():
        edit(data) if callable(edit) else data.__setitem__(key, edit)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_compile_param_sets_the_compiled_default(tmp_path: pathlib.Path) -> None:
    import ast

    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    chain = _example_copy(tmp_path)
    pipeline, dag = tmp_path / "out" / "pipeline.yaml", tmp_path / "dags" / "taxi.py"
    for to, out in (("kfp", pipeline), ("airflow", dag)):
        result = _cli(
            "compile", str(chain), "--to", to, "--param", "model_name=tips-v2", "-o", str(out)
        )
        assert result.returncode == 0, result.stderr
    ir = json_format.ParseDict(
        yaml.safe_load(pipeline.read_text()), pipeline_spec_pb2.PipelineSpec()
    )
    defaults = {
        n: p.default_value.string_value for n, p in ir.root.input_definitions.parameters.items()
    }
    assert defaults["model_name"] == "tips-v2"
    assert defaults["input"] == "examples/chicago_taxi/data/sample.csv"
    # The DAG's params, read from the file as Python: Param(default, ...) per parameter.
    tree = ast.parse(dag.read_text())
    (params,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "DAG_PARAMS"
    ]
    assert isinstance(params, ast.Dict)
    assert {
        ast.literal_eval(k): ast.literal_eval(v.args[0])  # type: ignore[attr-defined,arg-type]
        for k, v in zip(params.keys, params.values, strict=True)
    } == {
        "input": "examples/chicago_taxi/data/sample.csv",
        "gcs_root": "gs://my-bucket/beamforge/chicago_taxi",
        "model_name": "tips-v2",
    }
    # The tasks read params['name']: Jinja would take params.items for the dict's method.
    assert "{{ params['model_name'] }}" in dag.read_text()
    assert "params.model_name" not in dag.read_text()


def test_dag_header_escapes_the_chain_files_path(tmp_path: pathlib.Path) -> None:
    import ast

    folder = tmp_path / 'odd"""\\name'
    chain = _example_copy(folder)
    dag = tmp_path / "dags" / "taxi.py"
    result = _cli("compile", str(chain), "--to", "airflow", "-o", str(dag))
    assert result.returncode == 0, result.stderr
    tree = ast.parse(dag.read_text())
    doc = ast.get_docstring(tree)
    assert doc is not None and f"beamforge chain compile {chain} --to airflow" in doc
    # Nothing runs at import but the docstring, imports, assignments, definitions and the DAG.
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds[0] == "Expr" and "Expr" not in kinds[1:]
    assert set(kinds[1:]) <= {"ImportFrom", "Import", "Assign", "FunctionDef", "ClassDef", "With"}


def test_jinja_marks_are_refused_for_airflow_only(tmp_path: pathlib.Path) -> None:
    def jinja(data: dict[str, Any]) -> None:
        data["steps"][2]["args"] = ["--tag", "{{ ds }}"]

    chain = _example_copy(tmp_path, jinja=jinja)
    dag = tmp_path / "dags" / "taxi.py"
    refused = _cli("compile", str(chain), "--to", "airflow", "-o", str(dag))
    assert (refused.returncode, refused.stderr) == (
        2,
        f"error: {chain}: steps[2].args[1]: '{{{{ ds }}}}' holds a Jinja mark ({{{{, {{% or {{#}}, "
        "which Airflow would render in a templated field; beamforge chain and kfp take it as "
        "written\n",
    )
    assert not dag.exists()
    kept = _cli("compile", str(chain), "--to", "kfp", "-o", str(tmp_path / "p.yaml"))
    assert kept.returncode == 0, kept.stderr


@pytest.mark.parametrize(
    ("to", "output", "problem"),
    [
        ("kfp", "chain.yaml", "is the chain file itself; write the compiled file elsewhere"),
        ("airflow", "chain.yaml", "is the chain file itself; write the compiled file elsewhere"),
        ("airflow", "dags/taxi.yaml", "Airflow loads DAGs only from .py files; name it NAME.py"),
    ],
)
def test_compile_output_that_would_do_harm_is_refused(
    tmp_path: pathlib.Path, to: str, output: str, problem: str
) -> None:
    chain = _example_copy(tmp_path)
    before = chain.read_text()
    out = tmp_path / output
    result = _cli("compile", str(chain), "--to", to, "-o", str(out))
    assert (result.returncode, result.stderr) == (2, f"error: -o {out}: {problem}\n")
    assert chain.read_text() == before
    assert output == "chain.yaml" or not out.exists()


def test_validate_takes_param_values(tmp_path: pathlib.Path) -> None:
    def required(data: dict[str, Any]) -> None:
        data["parameters"]["model_name"] = {"description": "display name"}

    chain = _example_copy(tmp_path, required=required)

    def validate(*flags: str) -> subprocess.CompletedProcess[str]:
        return beamforge("validate", str(chain), *flags, timeout=120)

    missing = validate()
    assert (missing.returncode, missing.stderr) == (
        2,
        f"error: {chain}: parameters.model_name: has no default and no value; "
        "give --param model_name=VALUE or a default\n",
    )
    given = validate("--param", "model_name=tips")
    assert (given.returncode, given.stderr) == (0, "")
    assert given.stdout == (
        f"{chain}: valid chain (chicago_taxi: 6 steps, "
        "dataset, data_gate, train, gate, upload, deploy)\n"
    )
