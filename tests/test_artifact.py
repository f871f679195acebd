"""Tests for transforms.artifact: round trip, layout, escaping and tamper detection."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.artifact import (
    Artifact,
    ArtifactError,
    content_hash,
    escape_line,
    read_artifact,
    unescape_line,
    write_artifact,
)
from transforms.steps import build_step

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
    assert read_artifact(str(tmp_path / "art")) == artifact

    document = json.loads((tmp_path / "art/transform.json").read_text())
    assert document["sha256"] == digest
    assert document["format_version"] == 1
    assert set(document["versions"]) >= {"python", "apache-beam", "pyarrow", "numpy"}
    assert document["created_at"].endswith("Z")
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
    steps = read_artifact(str(tmp_path)).build_steps()
    assert [s.describe() for s in steps] == make_artifact().steps
    assert [s.name for s in steps] == ["vocabulary:s", "z_score:x", "expression:y"]


def test_empty_vocabulary_round_trips(tmp_path: pathlib.Path):
    artifact = make_artifact()
    artifact.fitted["vocabulary:s"]["vocabulary"] = []
    artifact.fitted["vocabulary:s"]["frequencies"] = []
    write_artifact(str(tmp_path), artifact)
    assert (tmp_path / "vocabularies/vocabulary_s.txt").read_text() == ""
    assert read_artifact(str(tmp_path)) == artifact


def test_clashing_sanitised_names_get_distinct_files(tmp_path: pathlib.Path):
    artifact = make_artifact()
    artifact.fitted["vocabulary_s"] = {"vocabulary": ["z"]}
    write_artifact(str(tmp_path), artifact)
    files = sorted(p.name for p in (tmp_path / "vocabularies").iterdir())
    assert files == ["vocabulary_s-2.txt", "vocabulary_s.txt"]
    assert read_artifact(str(tmp_path)) == artifact


def test_tampered_vocabulary_fails(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    vocab = tmp_path / "vocabularies/vocabulary_s.txt"
    vocab.write_text(vocab.read_text().replace("a\n", "b\n", 1))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        read_artifact(str(tmp_path))


def test_tampered_parameters_fail(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    path.write_text(path.read_text().replace('"mean": 1.5', '"mean": 1.6'))
    with pytest.raises(ArtifactError, match="the files were modified after they were written"):
        read_artifact(str(tmp_path))


def test_truncated_vocabulary_fails(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    vocab = tmp_path / "vocabularies/vocabulary_s.txt"
    vocab.write_text("a\n")
    with pytest.raises(ArtifactError, match=r"has 1 values but transform\.json records 6"):
        read_artifact(str(tmp_path))


def test_missing_files_fail(tmp_path: pathlib.Path):
    with pytest.raises(ArtifactError, match=r"artifact file .*transform.json is missing"):
        read_artifact(str(tmp_path))
    write_artifact(str(tmp_path), make_artifact())
    (tmp_path / "vocabularies/vocabulary_s.txt").unlink()
    with pytest.raises(
        ArtifactError, match=r"vocabulary file of step 'vocabulary:s' .* is missing"
    ):
        read_artifact(str(tmp_path))


def test_unknown_format_version_fails(tmp_path: pathlib.Path):
    write_artifact(str(tmp_path), make_artifact())
    path = tmp_path / "transform.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 9'))
    with pytest.raises(ArtifactError, match="format_version 9; this code reads version 1"):
        read_artifact(str(tmp_path))


@given(st.text())
def test_escaping_round_trips_and_stays_on_one_line(value):
    line = escape_line(value)
    assert "\n" not in line and "\r" not in line
    assert unescape_line(line) == value
