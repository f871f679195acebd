"""Job spec loading: everything checkable is checked before any work."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from beam_pipelines.spec import load_spec, parse_spec
from transforms.core.config import SpecError
from transforms.core.errors import InputError


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
            "job.yaml: sorce: unknown key 'sorce'; valid keys are name, source, clean, features, label, split, output, errors, transform, validation, dataflow, streaming, description",
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
        (
            {"source": {"format": "csv", "schema": {"a": "decimal"}}},
            "job.yaml: source.schema.a: unknown type 'decimal'",
        ),
        (
            {"split": {"fractions": {"train": 0.9}}},
            "job.yaml: split.fractions: must sum to 1, got 0.9 ({'train': 0.9})",
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
    with pytest.raises(InputError) as info:
        load_spec(str(tmp_path / "missing.yaml"))
    assert str(info.value) == f"{tmp_path}/missing.yaml: spec file not found"
    with pytest.raises(InputError) as info:
        load_spec(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: is a directory; expected a YAML spec file"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\n")
    with pytest.raises(InputError, match=r"binary\.yaml: is not UTF-8 text \(byte 6\)"):
        load_spec(str(binary))


def test_yaml_errors_are_one_line_with_the_line_number(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: j\nsource: {format: csv\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(bad))
    assert str(info.value) == (
        f"{bad}: <root>: not valid YAML: line 3, column 1: expected ',' or '}}', but got "
        "'<stream end>' (while parsing a flow mapping)"
    )


def test_a_key_given_twice_is_refused(tmp_path: pathlib.Path) -> None:
    # YAML loaders keep the last of repeated keys silently: one split of two would vanish.
    spec = tmp_path / "twice.yaml"
    spec.write_text(
        "name: j\nsource: {format: csv, schema: {a: int64}}\n"
        "split:\n  fractions:\n    train: 0.5\n    train: 0.5\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(str(spec))
    assert str(info.value) == (
        f"{spec}: <root>: not valid YAML: line 6, column 5: found the key 'train' twice "
        "(while constructing a mapping)"
    )


def test_spec_hash_changes_with_the_spec() -> None:
    assert parse_spec(_spec()).sha256() == parse_spec(_spec()).sha256()
    assert parse_spec(_spec()).sha256() != parse_spec(_spec(name="other")).sha256()


# --- what cannot work is refused at load: sizes, non-finite numbers, split names ------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"output": {"num_shards": 1_000_000}},
            "job.yaml: output.num_shards: got 1,000,000; expected an integer from 0 to 10,000 "
            "(0 lets the runner decide)",
        ),
        (
            {"source": {"format": "csv", "schema": {"id": "int64"}, "batch_size": 10**12}},
            "job.yaml: source.batch_size: got 1,000,000,000,000; expected an integer from 1 to "
            "1,048,576 (rows per record batch held in memory)",
        ),
        (
            {"source": {"format": "csv", "schema": {"id": "int64"}, "split_bytes": 1}},
            "job.yaml: source.split_bytes: got 1; expected an integer of at least 1,048,576 (0 "
            "never splits; smaller ranges only add overhead)",
        ),
        (
            {"source": {"format": "csv", "schema": {"id": "int64"}, "split_bytes": 2**64}},
            "job.yaml: source.split_bytes: got 18446744073709551616; expected an integer from",
        ),
        (
            {"errors": {"max_fraction": float("nan")}},
            "job.yaml: errors.max_fraction: got nan; expected a finite number, or null for none",
        ),
        (
            {"features": [{"op": "bucketize", "column": "id", "num_buckets": 10**12}]},
            "job.yaml: features[0].num_buckets: got 1,000,000,000,000; expected an integer from "
            "1 to 10,000",
        ),
        (
            {"features": [{"op": "min_max", "column": "id", "output_max": float("inf")}]},
            "job.yaml: features[0].output_max: got inf; expected a finite number",
        ),
        (
            {"clean": [{"op": "range", "column": "id", "max": float("inf")}]},
            "job.yaml: clean[0].max: got inf; expected a finite number, or null for none",
        ),
        (
            {"split": {"fractions": {"train": 0.5, "artifact": 0.5}}},
            "job.yaml: split.fractions.artifact: split name 'artifact' is reserved",
        ),
        (
            {"split": {"fractions": {"train": float("nan"), "eval": 1.0}}},
            "job.yaml: split.fractions.train: got nan; expected a finite number",
        ),
        (
            {
                "source": {"format": "csv", "schema": {"id": "int64", "t": "timestamp"}},
                "split": {"method": "time", "column": "t", "cutoffs": {"../old": 5, "new": None}},
            },
            "job.yaml: split.cutoffs.../old: split name '../old' cannot be used",
        ),
    ],
)
def test_what_cannot_work_is_refused_at_load(overrides: dict, message: str) -> None:
    assert _problem(_spec(**overrides)).startswith(message)


def test_sizes_at_their_limits_load() -> None:
    spec = parse_spec(
        _spec(
            source={
                "format": "csv",
                "schema": {"id": "int64", "city": "string"},
                "batch_size": 1 << 20,
                "split_bytes": 0,
            },
            output={"num_shards": 10_000},
            features=[
                {"op": "bucketize", "column": "id", "num_buckets": 10_000},
                {"op": "hash_bucket", "column": "city", "num_buckets": 2**31 - 1},
            ],
        )
    )
    assert spec.output.num_shards == 10_000
    assert [s.name for s in spec.features] == ["bucketize:id", "hash_bucket:city"]


def test_a_feature_written_twice_is_refused() -> None:
    from beam_pipelines.spec import parse_spec
    from transforms.core.config import SpecError

    spec = {
        "name": "twice",
        "source": {"format": "csv", "schema": {"fare": "float64", "tips": "float64"}},
        "features": [
            {"op": "z_score", "column": "fare", "output": "x_xf"},
            {"op": "z_score", "column": "tips", "output": "x_xf"},
        ],
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, origin="twice.yaml")
    assert str(caught.value) == (
        "twice.yaml: features[1]: step 'z_score:tips' writes column 'x_xf', which step "
        "'z_score:fare' already wrote; give it another output name"
    )
