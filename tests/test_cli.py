"""The beamforge command line, run as a real subprocess."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import apache_beam as beam
import pytest

from beam_pipelines.exit_codes import ExitCode
from beam_pipelines.failures import Failure, failure_of
from beam_pipelines.runner import make_options, make_pipeline
from launchers import cli
from tests.conftest import REPO, TAXI_SAMPLE
from transforms.core.artifact import ArtifactError
from transforms.core.config import SpecError
from transforms.core.errors import InputError
from transforms.core.manifest import CountsMismatchError

BEAMFORGE = [sys.executable, "-m", "launchers.cli"]
MULTI_PROCESSING = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


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


def test_validate_recognises_a_chain_spec(tmp_path: pathlib.Path) -> None:
    done = _run("validate", "examples/chicago_taxi/chain.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "examples/chicago_taxi/chain.yaml: valid chain "
        "(chicago_taxi: 6 steps, dataset, data_gate, train, gate, upload, deploy)\n"
    )
    spec = tmp_path / "chain.yaml"
    text = (REPO / "examples" / "chicago_taxi" / "chain.yaml").read_text()
    spec.write_text(text.replace("\nworkdir:", "\nworkdri:", 1))
    done = _run("validate", str(spec))
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {spec}: workdri: unknown key 'workdri'; "
        "valid keys are name, workdir, steps, state, gcp, parameters, schedule, trigger, serving, cicd\n"
    )


def test_a_misspelt_chain_action_names_the_actions() -> None:
    done = _run("chain", "stauts", "examples/chicago_taxi/chain.yaml")
    assert done.returncode == 2
    assert done.stderr == (
        "error: expected beamforge chain [ACTION] CHAIN.yaml, got "
        "'stauts examples/chicago_taxi/chain.yaml'; "
        "ACTION is one of run, status, stop, predict, compile, submit\n"
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
    assert f"{tmp_path}/none*.csv" in _error_line(done)


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
    assert done.returncode == ExitCode.FAILED
    # Raised inside the pipeline (the commit step), recognised by its type.
    assert _error_line(done).startswith(
        "error: 2 of 3 rows were rejected, more than errors.max_fraction=0.5; see "
    )
    assert not (tmp_path / "o" / "manifest.json").exists()


# --- one exit-code enum, one line per user error --------------------------------------------


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The run's one error line; fails unless there is exactly one and no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert done.stderr.splitlines()[-1] == errors[0]
    return errors[0]


def test_exit_codes_are_one_enum() -> None:
    from launchers.chain import ChainError, GateFailedError
    from launchers.dataflow.jobs import (
        JobCancelledError,
        JobDrainedError,
        JobFailedError,
        JobTimeoutError,
        JobUpdatedError,
    )

    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("FAILED", 1),
        ("USER_ERROR", 2),
        ("STOPPED", 3),
        ("DRAINED", 4),
        ("UPDATED", 5),
        ("TIMED_OUT", 6),
        ("INTERRUPTED", 130),
    ]
    # The codes the chain and job errors carry are the enum's.
    assert ChainError.exit_code == JobFailedError.exit_code == ExitCode.FAILED
    assert GateFailedError.exit_code == JobCancelledError.exit_code == ExitCode.STOPPED
    assert JobDrainedError.exit_code == ExitCode.DRAINED
    assert JobUpdatedError.exit_code == ExitCode.UPDATED
    assert JobTimeoutError.exit_code == ExitCode.TIMED_OUT


def test_validate_a_directory_or_a_missing_file(tmp_path: pathlib.Path) -> None:
    done = _run("validate", str(tmp_path))
    assert done.returncode == ExitCode.USER_ERROR
    assert done.stderr == f"error: {tmp_path}: is a directory; expected a YAML spec file\n"
    done = _run("validate", str(tmp_path / "nope.yaml"))
    assert done.returncode == ExitCode.USER_ERROR
    assert done.stderr == f"error: {tmp_path}/nope.yaml: spec file not found\n"
    done = _run("run", str(tmp_path), "--output", str(tmp_path / "o"))
    assert done.returncode == ExitCode.USER_ERROR
    assert done.stderr == f"error: {tmp_path}: is a directory; expected a YAML spec file\n"


def test_a_chain_file_that_is_a_directory(tmp_path: pathlib.Path) -> None:
    done = _run("chain", "status", str(tmp_path))
    assert done.returncode == ExitCode.USER_ERROR
    assert done.stderr == f"error: {tmp_path}: cannot be read: Is a directory\n"


def _spec(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: j\nsource: {format: csv, schema: {a: int64}}\n" + text)
    return spec


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "split: {fractions: {'../x': 0.5, eval: 0.5}}\n",
            "split.fractions.../x: split name '../x' cannot be used: split names are folder "
            "names, 1 to 63 letters, digits, '_' or '-', starting with a letter or digit",
        ),
        (
            "split: {fractions: {train: 0.5, errors: 0.5}}\n",
            "split.fractions.errors: split name 'errors' is reserved: a run writes artifact and "
            "errors beside its splits; choose another name",
        ),
        ("split: {fractions: {train: .nan, eval: 1.0}}\n", "split.fractions.train: got nan"),
        (
            "split: {fracions: {train: 1.0}}\n",
            "split.fracions: unknown key 'fracions'; valid keys are method, fractions, key, "
            "salt, column, cutoffs",
        ),
        (
            "features: [{op: hash_bucket, column: a, num_buckets: 1000000000000}]\n",
            "features[0].num_buckets: got 1,000,000,000,000; expected an integer from 1 to "
            "2,147,483,647",
        ),
        (
            "split: {fractions: {train: 0.5, train: 0.5}}\n",
            "<root>: not valid YAML: line 3, column 33: found the key 'train' twice",
        ),
    ],
)
def test_spec_mistakes_are_one_line(tmp_path: pathlib.Path, text: str, error: str) -> None:
    spec = _spec(tmp_path, text)
    done = _run("validate", str(spec))
    assert done.returncode == ExitCode.USER_ERROR, done.stderr
    assert done.stderr.startswith(f"error: {spec}: {error}"), done.stderr
    assert done.stderr.count("\n") == 1


def test_run_refuses_a_bad_split_name_before_writing(tmp_path: pathlib.Path) -> None:
    spec = _spec(tmp_path, "split: {fractions: {'../../escaped': 1.0}}\n")
    done = _run("run", str(spec), "--input", str(TAXI_SAMPLE), "--output", str(tmp_path / "o"))
    assert done.returncode == ExitCode.USER_ERROR
    assert done.stderr.startswith(
        f"error: {spec}: split.fractions.../../escaped: split name '../../escaped' cannot be used"
    )
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_an_input_directory_and_an_output_file_are_one_line(tmp_path: pathlib.Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "part.csv").write_text(TAXI_SAMPLE.read_text())
    spec = "examples/chicago_taxi/pipeline.yaml"
    done = _run("run", spec, "--input", str(inputs), "--output", str(tmp_path / "o"), "--quiet")
    assert done.returncode == ExitCode.USER_ERROR
    assert str(inputs) in _error_line(done)
    output = tmp_path / "taken.txt"
    output.write_text("not a folder")
    done = _run("run", spec, "--input", str(TAXI_SAMPLE), "--output", str(output), "--quiet")
    assert done.returncode == ExitCode.USER_ERROR
    assert done.stderr == f"error: {output}: --output is a file; give a folder for the dataset\n"
    assert output.read_text() == "not a folder"


def _truncated_gzip(tmp_path: pathlib.Path) -> pathlib.Path:
    # Its first lines read well (the reader's checks before the run pass); the file ends
    # mid-stream further on, where the pipeline meets it.
    data = gzip.compress(TAXI_SAMPLE.read_bytes())
    bad = tmp_path / "trips.csv.gz"
    bad.write_bytes(data[: len(data) * 8 // 10])
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in_process", "multi_processing"])
def test_an_input_error_inside_the_run_is_one_line(tmp_path: pathlib.Path, mode: str) -> None:
    bad = _truncated_gzip(tmp_path)
    beam_args = MULTI_PROCESSING if mode == "multi_processing" else []
    done = _run(
        "run",
        "examples/chicago_taxi/pipeline.yaml",
        "--input",
        str(bad),
        "--output",
        str(tmp_path / "o"),
        "--quiet",
        *beam_args,
    )
    assert done.returncode == ExitCode.USER_ERROR, done.stderr
    line = done.stderr.splitlines()[-1]
    assert line.startswith(f"error: {bad}: is a truncated or corrupt gzip file"), done.stderr
    assert "[while running" not in line
    assert not (tmp_path / "o" / "manifest.json").exists()
    # Neither Beam's own log of the failed bundle nor, with worker processes, the traceback
    # a worker prints to the stderr it inherits is shown.
    assert done.stderr == line + "\n"


def test_an_input_error_raised_by_a_dofn_is_one_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whatever the readers check before the run: here the DoFn itself raises.
    import transforms.io.read

    def unreadable(path: str, *args: Any, **kwargs: Any) -> Any:
        raise InputError(path, "cannot be read: Input/output error")

    monkeypatch.setattr(transforms.io.read, "read_file", unreadable)
    code = cli.main(
        [
            "run",
            "examples/chicago_taxi/pipeline.yaml",
            "--input",
            str(TAXI_SAMPLE),
            "--output",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert code == ExitCode.USER_ERROR
    assert capsys.readouterr().err == f"error: {TAXI_SAMPLE}: cannot be read: Input/output error\n"


def test_a_bug_inside_the_run_keeps_its_traceback(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transforms.io.read

    def broken(path: str, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr(transforms.io.read, "read_file", broken)
    argv = ["run", "examples/chicago_taxi/pipeline.yaml", "--input", str(TAXI_SAMPLE)]
    with pytest.raises(ValueError, match="a bug, not the user's mistake"):
        cli.main([*argv, "--output", str(tmp_path / "o"), "--quiet"])


# --- failure_of on the exceptions Beam really raises ----------------------------------------


def _raise_input_error(x: Any) -> Any:
    raise InputError("f.csv.gz", "is truncated")


def _raise_spec_error(x: Any) -> Any:
    raise SpecError("split.fractions", "bad")


def _raise_artifact_error(x: Any) -> Any:
    raise ArtifactError("artifact/transform.json is missing")


def _raise_counts_mismatch(x: Any) -> Any:
    raise CountsMismatchError("row counts do not balance: read 3 but 2")


def _bug_while_handling_an_input_error(x: Any) -> Any:
    try:
        raise InputError("f.csv.gz", "is truncated")
    except InputError:
        empty: dict[str, Any] = {}
        return empty["missing"]


def _raise_value_error(x: Any) -> Any:
    raise ValueError("a bug")


def _beam_failure(fn: Any, beam_args: list[str]) -> BaseException:
    p = make_pipeline(make_options(beam_args))
    _ = p | beam.Create([1, 2, 3]) | beam.Reshuffle() | beam.Map(fn)
    with pytest.raises(Exception) as info:
        p.run().wait_until_finish()
    return info.value


IN_PIPELINE_CASES = [
    (_raise_input_error, Failure(ExitCode.USER_ERROR, "f.csv.gz: is truncated")),
    (_raise_spec_error, Failure(ExitCode.USER_ERROR, "split.fractions: bad")),
    (
        _raise_artifact_error,
        Failure(ExitCode.USER_ERROR, "artifact/transform.json is missing"),
    ),
    (
        _raise_counts_mismatch,
        Failure(ExitCode.FAILED, "row counts do not balance: read 3 but 2"),
    ),
    (_bug_while_handling_an_input_error, None),
    (_raise_value_error, None),
]


@pytest.mark.parametrize(("fn", "expected"), IN_PIPELINE_CASES)
def test_failures_raised_in_a_dofn_are_found_by_type(fn: Any, expected: Any) -> None:
    assert failure_of(_beam_failure(fn, [])) == expected


@pytest.mark.slow
@pytest.mark.parametrize(("fn", "expected"), [IN_PIPELINE_CASES[0], IN_PIPELINE_CASES[4]])
def test_failures_raised_in_a_worker_process_are_found_by_type(
    fn: Any, expected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers import this module to unpickle the functions.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    exc = _beam_failure(fn, MULTI_PROCESSING)
    assert type(exc) is RuntimeError  # only the traceback's text crossed the process boundary
    assert failure_of(exc) == expected


def test_failures_raised_before_the_run() -> None:
    assert failure_of(InputError("x.csv", "missing")) == Failure(
        ExitCode.USER_ERROR, "x.csv: missing"
    )
    # A planning check that raises a plain ValueError is still the user's (until typed).
    assert failure_of(ValueError("no output path: give --output")) == Failure(
        ExitCode.USER_ERROR, "no output path: give --output"
    )
    assert failure_of(KeyError("x")) is None
    assert failure_of(RuntimeError("boom")) is None


def test_google_cloud_errors_before_the_run_are_one_line() -> None:
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    # What a bucket lookup raises when storage.googleapis.com stays out of reach.
    unreachable = api_exceptions.RetryError(
        "Timeout of 120.0s exceeded", ConnectionError("Max retries exceeded")
    )
    assert failure_of(unreachable) == Failure(
        ExitCode.FAILED,
        "Google Cloud request failed: Timeout of 120.0s exceeded, last exception: "
        "Max retries exceeded",
    )
    assert failure_of(api_exceptions.Forbidden("no storage.buckets.get on b")) == Failure(
        ExitCode.FAILED, "Google Cloud request failed: 403 no storage.buckets.get on b"
    )
    no_credentials = auth_exceptions.DefaultCredentialsError(
        "Your default credentials were not found."
    )
    assert failure_of(no_credentials) == Failure(
        ExitCode.USER_ERROR,
        "Google Cloud credentials: Your default credentials were not found.",
    )
