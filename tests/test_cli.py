"""The beamforge command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO, TAXI_SAMPLE

BEAMFORGE = [sys.executable, "-m", "launchers.cli"]


def _run(*args: str, cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*BEAMFORGE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_validate_accepts_the_taxi_example() -> None:
    done = _run("validate", "examples/chicago_taxi/pipeline.yaml")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == "examples/chicago_taxi/pipeline.yaml: valid (chicago_taxi: 13 steps, splits train, eval)\n"
    )


def test_validate_names_the_file_path_value_and_choices(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: j\nsource: {format: csv, schema: {a: string}}\n"
        "features:\n  - {op: vocabulary, column: a, top_k: many}\n"
    )
    done = _run("validate", str(spec))
    assert done.returncode == 2
    assert done.stderr == f"error: {spec}: features[0].top_k: got 'many'; expected an integer\n"


def test_unknown_op_lists_the_valid_ones(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: j\nsource: {format: csv, schema: {a: string}}\nclean: [{op: scrub}]\n")
    done = _run("validate", str(spec))
    assert done.returncode == 2
    assert (
        f"error: {spec}: clean[0].op: unknown op 'scrub'; valid ops are allowed_values, bucketize, cast"
        in done.stderr
    )


@pytest.mark.slow
def test_run_prints_a_summary_and_writes_the_dataset(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    done = _run(
        "run",
        "examples/chicago_taxi/pipeline.yaml",
        "--input",
        str(TAXI_SAMPLE),
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    train, eval_ = manifest["splits"]["train"]["rows"], manifest["splits"]["eval"]["rows"]
    assert train + eval_ == 3001
    lines = done.stdout.splitlines()
    assert lines[0].startswith("chicago_taxi: 3,001 rows read in ")
    assert lines[1].split() == ["train", f"{train:,}", "rows", "1", "file(s)"]
    assert lines[2].split() == ["eval", f"{eval_:,}", "rows", "1", "file(s)"]
    assert lines[3].split() == ["rejected", "0", "rows"]
    assert f"manifest  {out}/manifest.json" in done.stdout
    assert "running chicago_taxi" in done.stderr


def test_missing_input_fails_with_the_pattern(tmp_path: pathlib.Path) -> None:
    done = _run(
        "run",
        "examples/chicago_taxi/pipeline.yaml",
        "--input",
        str(tmp_path / "none*.csv"),
        "--output",
        str(tmp_path / "o"),
    )
    assert done.returncode == 2
    assert f"error: no file matches '{tmp_path}/none*.csv'" in done.stderr


def test_unknown_beam_option_is_refused(tmp_path: pathlib.Path) -> None:
    done = _run(
        "run",
        "examples/chicago_taxi/pipeline.yaml",
        "--output",
        str(tmp_path / "o"),
        "--direct_num_wokers=2",
    )
    assert done.returncode == 2
    assert "error: unknown pipeline options: direct_num_wokers" in done.stderr


@pytest.mark.slow
def test_unbalanced_counts_fail_the_run(tmp_path: pathlib.Path) -> None:
    # A rejected fraction above errors.max_fraction fails the run and writes no manifest.
    data = tmp_path / "d.csv"
    data.write_text("a\n1\nx\ny\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: j\nsource: {format: csv, schema: {a: int64}}\nerrors: {max_fraction: 0.5}\n"
    )
    done = _run("run", str(spec), "--input", str(data), "--output", str(tmp_path / "o"))
    assert done.returncode == 1
    assert "2 of 3 rows were rejected, more than errors.max_fraction=0.5" in done.stderr
    assert not (tmp_path / "o" / "manifest.json").exists()
