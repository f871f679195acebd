"""The ``python -m`` entry points, run as real subprocesses: a user's mistake is one line.

Each of ``python -m beam_pipelines.dataset``, ``python -m beam_pipelines.streaming``, the
Flex Template launcher ``beam_pipelines/flex_main.py`` and ``python -m launchers.serving``
ends a mistake with exactly one stderr line, ``error: <message>`` naming the file, key, flag
or variable at fault, and exit code 2; a run that works still works.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, TAXI_SAMPLE

TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
STREAMING_SPEC = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
# The server's environment variables, none of which the mistakes below may inherit.
SERVER_VARIABLES = (
    "AIP_STORAGE_URI",
    "AIP_HTTP_PORT",
    "AIP_PREDICT_ROUTE",
    "AIP_HEALTH_ROUTE",
    "PREDICTOR_MODULE",
    "PREDICTOR_CLASS",
    "HANDLER_MODULE",
    "HANDLER_CLASS",
    "BEAMFORGE_MAX_REQUEST_BYTES",
)
TIMEOUT = 300


class EchoPredictor:
    """A predictor with no model, for the server's success path (CPR's Predictor protocol)."""

    def load(self, artifacts_uri: str, **kwargs: Any) -> None:
        self.uri = artifacts_uri

    def preprocess(self, prediction_input: Any) -> Any:
        return prediction_input["instances"]

    def predict(self, instances: Any) -> Any:
        return instances

    def postprocess(self, prediction_results: Any) -> Any:
        return {"predictions": prediction_results}


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def _run(
    *args: str, extra_env: Mapping[str, str] | None = None, cwd: pathlib.Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(extra_env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _one_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Asserts exit code 2 and one stderr line, ``error: ...`` naming each of ``names``."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0]
    return lines[0]


def _spec_with(tmp_path: pathlib.Path, source: pathlib.Path, edit: Any) -> pathlib.Path:
    data = yaml.safe_load(source.read_text())
    edit(data)
    path = tmp_path / f"edited-{source.name}"
    path.write_text(yaml.safe_dump(data))
    return path


def _bad_dataflow_key(data: dict[str, Any]) -> None:
    data["dataflow"] = {"regon": "us-central1"}


# ---------------------------------------------------------------------------------------------
# python -m beam_pipelines.dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The taxi example on 60 rows, run by ``python -m beam_pipelines.dataset``."""
    root = tmp_path_factory.mktemp("dataset")
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (root / "trips.csv").write_text("".join(lines[:61]))
    result = _run(
        "-m",
        "beam_pipelines.dataset",
        str(TAXI_SPEC),
        "--input",
        str(root / "trips.csv"),
        "--output",
        str(root / "ds"),
    )
    assert result.returncode == 0, result.stderr
    return root / "ds"


def test_dataset_module_runs_a_spec(dataset: pathlib.Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())

    assert manifest["counts"]["read"] == 60
    assert manifest["pipeline"] == "chicago_taxi"


def test_dataset_module_names_a_missing_spec_file(tmp_path: pathlib.Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    line = _one_error(_run("-m", "beam_pipelines.dataset", missing), missing)

    assert line == f"error: {missing}: spec file not found"


def test_dataset_module_names_an_unknown_spec_key(tmp_path: pathlib.Path) -> None:
    spec = _spec_with(tmp_path, TAXI_SPEC, _bad_dataflow_key)

    _one_error(_run("-m", "beam_pipelines.dataset", str(spec)), str(spec), "dataflow.regon")


def test_dataset_module_usage_names_the_module() -> None:
    result = _run("-m", "beam_pipelines.dataset", "--help")

    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m beam_pipelines.dataset ")
    for flag in ("--input", "--output", "--artifact"):
        assert re.search(rf"^  {flag} \S+ +\w", result.stdout, re.MULTILINE), flag
    assert "overrides output.path of the spec" in " ".join(result.stdout.split())


# ---------------------------------------------------------------------------------------------
# python -m beam_pipelines.streaming


def test_streaming_module_names_an_unknown_spec_key(tmp_path: pathlib.Path) -> None:
    spec = _spec_with(tmp_path, STREAMING_SPEC, _bad_dataflow_key)

    _one_error(_run("-m", "beam_pipelines.streaming", str(spec)), str(spec), "dataflow.regon")


def test_streaming_module_names_a_bad_max_files(
    tmp_path: pathlib.Path, dataset: pathlib.Path
) -> None:
    def negative(data: dict[str, Any]) -> None:
        data["streaming"]["files"]["max_files"] = -1

    spec = _spec_with(tmp_path, STREAMING_SPEC, negative)
    result = _run(
        "-m",
        "beam_pipelines.streaming",
        str(spec),
        "--artifact",
        str(dataset),
        "--output",
        str(tmp_path / "out"),
    )

    _one_error(result, "max_files", "-1")


def test_streaming_module_runs_a_spec(tmp_path: pathlib.Path, dataset: pathlib.Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (incoming / "a.csv").write_text("".join(lines[:21]))

    def one_file(data: dict[str, Any]) -> None:
        data["streaming"]["files"].update(
            path=str(incoming / "*.csv"), max_files=1, poll_seconds=0.1
        )

    spec = _spec_with(tmp_path, STREAMING_SPEC, one_file)
    result = _run(
        "-m",
        "beam_pipelines.streaming",
        str(spec),
        "--artifact",
        str(dataset),
        "--output",
        str(tmp_path / "out"),
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["balanced"] is True


def test_streaming_module_usage_names_the_module() -> None:
    result = _run("-m", "beam_pipelines.streaming", "--help")

    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m beam_pipelines.streaming ")
    for flag in ("--artifact", "--output"):
        assert re.search(rf"^  {flag} \S+ +\w", result.stdout, re.MULTILINE), flag
    assert "overrides streaming.artifact of the spec" in " ".join(result.stdout.split())


# ---------------------------------------------------------------------------------------------
# The Flex Template launcher


def test_flex_main_names_a_missing_parameter() -> None:
    result = _run(str(REPO / "beam_pipelines" / "flex_main.py"))

    _one_error(result, "--spec")


def test_flex_main_names_a_bad_spec(tmp_path: pathlib.Path) -> None:
    spec = _spec_with(tmp_path, TAXI_SPEC, _bad_dataflow_key)
    result = _run(str(REPO / "beam_pipelines" / "flex_main.py"), f"--spec={spec}")

    _one_error(result, str(spec), "dataflow.regon")


# ---------------------------------------------------------------------------------------------
# python -m launchers.serving

PREDICTOR = f"{__name__}:EchoPredictor"


def test_server_without_a_model_dir_names_the_flag_and_variable() -> None:
    line = _one_error(_run("-m", "launchers.serving"), "--model-dir", "AIP_STORAGE_URI")

    assert line == "error: --model-dir or AIP_STORAGE_URI is required"


def test_server_without_a_port_names_the_flag_and_variable(tmp_path: pathlib.Path) -> None:
    result = _run("-m", "launchers.serving", "--model-dir", str(tmp_path), "--predictor", PREDICTOR)

    line = _one_error(result)
    assert line == "error: --port or AIP_HTTP_PORT is required"


def test_server_without_a_predictor_names_the_flag_and_variable(tmp_path: pathlib.Path) -> None:
    result = _run("-m", "launchers.serving", "--model-dir", str(tmp_path), "--port", "18765")

    _one_error(result, "--predictor", "PREDICTOR_MODULE")


def test_server_names_a_port_variable_that_is_not_a_number(tmp_path: pathlib.Path) -> None:
    result = _run(
        "-m",
        "launchers.serving",
        "--model-dir",
        str(tmp_path),
        "--predictor",
        PREDICTOR,
        extra_env={"AIP_HTTP_PORT": "http"},
    )

    _one_error(result, "AIP_HTTP_PORT", "'http'")


@pytest.mark.parametrize(
    ("predictor", "named"),
    [
        ("examples.chicago_taxi.predictor:Nope", "has no class 'Nope'"),
        (
            "examples.chicago_taxi.nope:TaxiPredictor",
            "no module named 'examples.chicago_taxi.nope'",
        ),
        ("TaxiPredictor", "must be 'module:Class'"),
    ],
)
def test_server_names_a_predictor_it_cannot_find(
    tmp_path: pathlib.Path, predictor: str, named: str
) -> None:
    result = _run(
        "-m",
        "launchers.serving",
        "--model-dir",
        str(tmp_path),
        "--port",
        "18765",
        "--predictor",
        predictor,
    )

    _one_error(result, "--predictor", predictor, named)


def test_server_names_the_model_file_it_cannot_load(tmp_path: pathlib.Path) -> None:
    result = _run(
        "-m",
        "launchers.serving",
        "--model-dir",
        str(tmp_path),
        "--port",
        "18765",
        "--predictor",
        "examples.chicago_taxi.predictor:TaxiPredictor",
    )

    _one_error(result, str(tmp_path / "model.joblib"), "FileNotFoundError")


def test_server_usage_names_the_module() -> None:
    result = _run("-m", "launchers.serving", "--help")

    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m launchers.serving ")
    for flag in ("--model-dir", "--predictor", "--host", "--port", "--max-request-bytes"):
        assert re.search(rf"^  {flag} \S+\s+\w", result.stdout, re.MULTILINE), flag
    for variable in ("AIP_STORAGE_URI", "PREDICTOR_MODULE", "AIP_HTTP_PORT"):
        assert f"overrides {variable}" in " ".join(result.stdout.split())


@pytest.fixture
def server_on_port_zero(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launchers.serving",
            "--model-dir",
            str(tmp_path),
            "--predictor",
            PREDICTOR,
            "--port",
            "0",
        ],
        env=_env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        # The first line names the bound port (the server prints it once it is listening).
        yield process, process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_server_on_port_zero_listens_on_the_port_it_prints(
    server_on_port_zero: tuple[subprocess.Popen[str], str], tmp_path: pathlib.Path
) -> None:
    process, line = server_on_port_zero
    found = re.fullmatch(
        rf"serving {re.escape(str(tmp_path))} at http://127\.0\.0\.1:(\d+)\n", line
    )

    assert found, line
    port = int(found.group(1))
    assert port != 0
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=json.dumps({"instances": [1, 2]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    # Listening since the line was printed: the request waits for the server's loop.
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())

    assert answer == {"predictions": [1, 2]}
    assert process.poll() is None
