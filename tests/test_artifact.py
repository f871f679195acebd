"""Tests for transforms.core.artifact: round trip, layout, escaping and tamper detection."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.core.artifact import (
    Artifact,
    ArtifactError,
    content_hash,
    escape_line,
    read_artifact,
    unescape_line,
    write_artifact,
)
from transforms.ops.registry import build_step

STEPS = [
    {"op": "vocabulary", "column": "s", "num_oov_buckets": 2, "output": "s_xf"},
    {"op": "z_score", "column": "x"},
    {"op": "expression", "output": "y", "expr": "x * 2"},
]


def make_artifact() -> Artifact:
    steps = [build_step(m, f"steps[{i}]").describe() for i, m in enumerate(STEPS)]
    return Artifact(
        pipeline="demo",
        steps=steps,
        fitted={
            "vocabulary:s": {
                "vocabulary": ["a", "line\nbreak", "back\\slash", "", "cr\r", "é"],
                "frequencies": [6, 5, 4, 3, 2, 1],
                "distinct": 6,
            },
            "z_score:x": {
                "count": 3,
                "mean": 1.5,
                "variance": 0.25,
                "min": 1.0,
                "max": 2.0,
                "sum": 4.5,
            },
        },
        input_schema={"s": "string", "x": "float32"},
        output_columns=["s_xf", "x", "y"],
        output_schema={"s_xf": "int64", "x": "float32", "y": "float32"},
    )


def test_round_trip_and_layout(tmp_path: pathlib.Path):
    artifact = make_artifact()
    digest = write_artifact(str(tmp_path / "art"), artifact)
    assert digest == content_hash(artifact) and len(digest) == 64
    assert read_artifact(str(tmp_path / "art"), build_step) == artifact

    document = json.loads((tmp_path / "art/transform.json").read_text())
    assert document["sha256"] == digest
    assert document["format_version"] == 1
    assert set(document["versions"]) >= {"python", "apache-beam", "pyarrow", "numpy"}
    # No creation time: the same fit gives the same bytes (the manifest dates the run).
    assert "created_at" not in document
    assert document["fitted"]["vocabulary:s"]["vocabulary"] == {
        "file": "vocabularies/vocabulary_s.txt",
        "size": 6,
    }
    text = (tmp_path / "art/vocabularies/vocabulary_s.txt").read_text()
    assert text == "a\nline\\nbreak\nback\\\\slash\n\ncr\\r\né\n"
    # Human-readable: indented.
    assert (tmp_path / "art/transform.json").read_text().startswith('{\n  "format_version": 1,')


def test_build_steps_gives_equal_steps(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    steps = read_artifact(str(tmp_path), build_step).build_steps(build_step)
    assert [s.describe() for s in steps] == make_artifact().steps
    assert [s.name for s in steps] == ["vocabulary:s", "z_score:x", "expression:y"]


def test_empty_vocabulary_round_trips(tmp_path: pathlib.Path):
    artifact = make_artifact()
    artifact.fitted["vocabulary:s"]["vocabulary"] = []
    artifact.fitted["vocabulary:s"]["frequencies"] = []
    write_artifact(str(tmp_path), artifact)
    assert (tmp_path / "vocabularies/vocabulary_s.txt").read_text() == ""
    assert read_artifact(str(tmp_path), build_step) == artifact


def test_clashing_sanitised_names_get_distinct_files(tmp_path: pathlib.Path):
    artifact = make_artifact()
    artifact.fitted["vocabulary_s"] = {"vocabulary": ["z"]}
    write_artifact(str(tmp_path), artifact)
    files = sorted(p.name for p in (tmp_path / "vocabularies").iterdir())
    assert files == ["vocabulary_s-2.txt", "vocabulary_s.txt"]
    assert read_artifact(str(tmp_path), build_step) == artifact


def test_tampered_vocabulary_fails(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    vocab = tmp_path / "vocabularies/vocabulary_s.txt"
    vocab.write_text(vocab.read_text().replace("a\n", "b\n", 1))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        read_artifact(str(tmp_path), build_step)


def test_tampered_parameters_fail(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    path.write_text(path.read_text().replace('"mean": 1.5', '"mean": 1.6'))
    with pytest.raises(ArtifactError, match="the files were modified after they were written"):
        read_artifact(str(tmp_path), build_step)


def test_truncated_vocabulary_fails(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    vocab = tmp_path / "vocabularies/vocabulary_s.txt"
    vocab.write_text("a\n")
    with pytest.raises(ArtifactError, match=r"has 1 values but transform\.json records 6"):
        read_artifact(str(tmp_path), build_step)


def test_missing_files_fail(tmp_path: pathlib.Path):
    with pytest.raises(ArtifactError, match=r"artifact file .*transform.json is missing"):
        read_artifact(str(tmp_path), build_step)
    write_artifact(str(tmp_path), make_artifact())
    (tmp_path / "vocabularies/vocabulary_s.txt").unlink()
    with pytest.raises(
        ArtifactError, match=r"vocabulary file of step 'vocabulary:s' .* is missing"
    ):
        read_artifact(str(tmp_path), build_step)


def test_unknown_format_version_fails(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 9'))
    with pytest.raises(ArtifactError, match="format_version 9; this code reads version 1"):
        read_artifact(str(tmp_path), build_step)


@given(st.text())
def test_escaping_round_trips_and_stays_on_one_line(value):
    line = escape_line(value)
    assert "\n" not in line and "\r" not in line
    assert unescape_line(line) == value


def _strict_loads(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_writing_twice_gives_the_same_bytes(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path / "a"), make_artifact())
    write_artifact(str(tmp_path / "b"), make_artifact())
    for name in ("transform.json", "vocabularies/vocabulary_s.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_non_finite_statistics_are_written_as_null(tmp_path: pathlib.Path):
    artifact = make_artifact()
    artifact.fitted["z_score:x"].update(variance=math.inf, sum=np.float32("nan"))
    digest = write_artifact(str(tmp_path), artifact)
    document = _strict_loads((tmp_path / "transform.json").read_text())
    assert document["fitted"]["z_score:x"]["variance"] is None
    assert document["fitted"]["z_score:x"]["sum"] is None
    back = read_artifact(str(tmp_path), build_step)
    assert back.fitted["z_score:x"]["variance"] is None
    assert content_hash(back) == digest


def test_non_finite_step_parameter_is_refused_before_writing(tmp_path: pathlib.Path):
    artifact = make_artifact()
    artifact.steps[1] = {**artifact.steps[1], "output": None, "extra": [1.0, -math.inf]}
    with pytest.raises(ArtifactError, match=r"steps\[1\]\.extra\[1\] is not a finite number"):
        write_artifact(str(tmp_path), artifact)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "key",
    [
        "format_version",
        "pipeline",
        "sha256",
        "steps",
        "fitted",
        "input_schema",
        "output_columns",
        "output_schema",
    ],
)
def test_missing_top_level_key_names_file_and_key(tmp_path: pathlib.Path, key: str):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    document = json.loads(path.read_text())
    del document[key]
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError) as caught:
        read_artifact(str(tmp_path), build_step)
    message = str(caught.value)
    assert message == f"{path}: missing key {key!r}"
    assert "\n" not in message


@pytest.mark.parametrize(
    ("delete", "named"),
    [
        (lambda d: d["fitted"]["z_score:x"].pop("mean"), "fitted['z_score:x']['mean']"),
        (lambda d: d["fitted"].pop("vocabulary:s"), "fitted['vocabulary:s']"),
        (
            lambda d: d["fitted"]["vocabulary:s"]["vocabulary"].pop("size"),
            "fitted['vocabulary:s']['vocabulary']['size']",
        ),
    ],
)
def test_missing_fitted_key_names_file_and_key(tmp_path: pathlib.Path, delete, named: str):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    document = json.loads(path.read_text())
    delete(document)
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"^.*transform\.json: missing key ") as caught:
        read_artifact(str(tmp_path), build_step)
    assert str(caught.value) == f"{path}: missing key {named}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"format_version": 1, "pipeline": ', "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"format_version": 1, "x": NaN}', "it holds NaN, which is not a JSON number"),
        ('{"format_version": 1, "pipeline": 3}', "'pipeline' is int; expected a str"),
        (None, "is not UTF-8 text"),
    ],
)
def test_malformed_transform_json_fails_in_one_line(tmp_path: pathlib.Path, text, problem):
    path = tmp_path / "transform.json"
    if text is None:
        path.write_bytes(b"\xff\xfe{")
    else:
        path.write_text(text)
    with pytest.raises(ArtifactError, match=problem) as caught:
        read_artifact(str(tmp_path), build_step)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_wrong_types_are_named(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    document = json.loads(path.read_text())
    document["steps"] = {"not": "a list"}
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"'steps' is dict; expected a list"):
        read_artifact(str(tmp_path), build_step)
    document["steps"] = []
    document["fitted"]["z_score:x"] = [1, 2]
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"fitted\['z_score:x'\] is not an object"):
        read_artifact(str(tmp_path), build_step)


def test_cli_prints_a_broken_artifact_as_one_line(tmp_path: pathlib.Path):
    import contextlib
    import io

    from launchers.cli import main

    repo = pathlib.Path(__file__).resolve().parent.parent
    write_artifact(str(tmp_path / "art"), make_artifact())
    path = tmp_path / "art" / "transform.json"
    document = json.loads(path.read_text())
    del document["fitted"]["z_score:x"]["variance"]
    path.write_text(json.dumps(document))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                "run",
                str(repo / "examples/chicago_taxi/pipeline.yaml"),
                "--input",
                str(repo / "examples/chicago_taxi/data/sample.csv"),
                "--output",
                str(tmp_path / "out"),
                "--artifact",
                str(tmp_path / "art"),
                "--quiet",
            ]
        )
    assert code != 0
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error")]
    assert lines == [f"error: {path}: missing key fitted['z_score:x']['variance']"]
    assert "Traceback" not in err.getvalue()
