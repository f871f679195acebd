"""Job spec loading: everything checkable is checked before any work."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from beam_pipelines.spec import load_spec, parse_spec
from transforms.config import SpecError


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "job",
        "source": {"format": "csv", "path": "in.csv", "schema": {"id": "int64", "city": "string"}},
        "clean": [{"op": "required", "columns": ["id"]}],
    }
    spec.update(overrides)
    return spec


def _problem(data: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, origin="job.yaml")
    return str(info.value)


def test_a_valid_spec_loads_with_defaults() -> None:
    spec = parse_spec(_spec())
    assert spec.name == "job"
    assert [s.name for s in spec.steps] == ["required:id"]
    assert spec.split.names == ["train", "eval"]
    assert spec.output.formats == ["parquet"]
    assert spec.output_columns(["id", "city"]) == ["id", "city"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"sorce": {}},
            "job.yaml: sorce: unknown key 'sorce'; valid keys are name, source, clean, features, label, split, output, errors, transform, dataflow, streaming, description",
        ),
        (
            {"clean": [{"op": "frobnicate"}]},
            "job.yaml: clean[0].op: unknown op 'frobnicate'; valid ops are ",
        ),
        ({"clean": [{"columns": ["id"]}]}, "job.yaml: clean[0]: missing 'op'; valid ops are "),
        (
            {"clean": [{"op": "required", "columns": "id"}]},
            "job.yaml: clean[0].columns: got 'id'; expected list of str",
        ),
        (
            {"clean": [{"op": "range", "column": "id", "min": "low"}]},
            "job.yaml: clean[0].min: got 'low'",
        ),
        (
            {"clean": [{"op": "required", "columns": ["id"], "colour": 1}]},
            "job.yaml: clean[0].colour: unknown key 'colour'",
        ),
        (
            {"output": {"formats": ["xml"]}},
            "job.yaml: output.formats[0]: got 'xml'; expected one of 'parquet', 'tfrecord', 'csv', 'jsonl'",
        ),
        ({"source": {"format": "csv", "path": "x"}}, "job.yaml: source: schema is required"),
        ({"source": {"format": "csv", "schema": {"a": "decimal"}}}, "unknown type 'decimal'"),
        (
            {"split": {"fractions": {"train": 0.9}}},
            "job.yaml: split: split.fractions must sum to 1",
        ),
        (
            {"split": {"key": ["nope"]}},
            "job.yaml: split: split column 'nope' is not a source column; source columns are id, city",
        ),
        ({"label": {"column": "y"}}, "job.yaml: label.column: label column 'y' does not exist"),
        ({"output": {"columns": ["id", "zzz"]}}, "job.yaml: output.columns: unknown column 'zzz'"),
        (
            {"transform": {"fit_on": "holdout"}},
            "job.yaml: transform.fit_on: got 'holdout'; expected 'all' or a split name: train, eval",
        ),
        (
            {
                "clean": [
                    {"op": "required", "columns": ["id"]},
                    {"op": "required", "columns": ["city"], "name": "required:id"},
                ]
            },
            "job.yaml: clean[1].name: step name 'required:id' is already used by clean[0]",
        ),
        (
            {
                "clean": [
                    {"op": "drop_columns", "columns": ["city"]},
                    {"op": "required", "columns": ["city"]},
                ]
            },
            "job.yaml: clean[1]: step 'required:city' reads unknown column 'city'; available columns are id",
        ),
    ],
)
def test_invalid_specs_name_the_path_the_value_and_the_choices(
    overrides: dict, message: str
) -> None:
    assert message in _problem(_spec(**overrides))


def test_missing_name_and_non_mapping() -> None:
    data = _spec()
    del data["name"]
    assert _problem(data) == "job.yaml: name: required key 'name' is missing"
    assert _problem(["a"]).startswith("job.yaml: <root>: got ['a']; expected a mapping")


def test_load_spec_reads_yaml_and_names_the_file(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: j\nsource: {format: csv, schema: {a: int64}}\n")
    assert load_spec(str(good)).origin == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: <root>: not valid YAML"):
        load_spec(str(bad))
    with pytest.raises(FileNotFoundError, match="spec file not found"):
        load_spec(str(tmp_path / "missing.yaml"))


def test_spec_hash_changes_with_the_spec() -> None:
    assert parse_spec(_spec()).sha256() == parse_spec(_spec()).sha256()
    assert parse_spec(_spec()).sha256() != parse_spec(_spec(name="other")).sha256()
