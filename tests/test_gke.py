"""The serving container and its Kubernetes manifests (``launchers.gke``).

A small local chain (400 raw trips -> dataset -> training subprocess -> upload -> deploy) gives
a model and the local target's server. The image's build context is generated from the
chain's state; the manifests pass ``kubernetes-validate --strict`` and the Dockerfile passes
hadolint, both the real binaries. The server is then started from the Dockerfile's own
command line and environment, in a directory laid out as the image's COPY instructions lay it
out (no docker), and answers the same raw rows exactly as the chain's server does.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import gcp_storage_emulator  # noqa: F401  (missing: fail here, never skip)
import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from launchers.gke import SERVER_COMMAND, build_serving
from launchers.gke.quantities import cpu_cores, memory_bytes
from tests.conftest import REPO, TAXI_SAMPLE
from tests.emulators import Gcs

BIN = pathlib.Path(sys.executable).parent
KUBERNETES_VALIDATE = BIN / "kubernetes-validate"
HADOLINT = BIN / "hadolint"
PREDICTOR = "examples.chicago_taxi.predictor:TaxiPredictor"
IMAGE = "us-docker.pkg.dev/my-project/beamforge/taxi-predictor:1.0"
GSA = "taxi-predictor@my-project.iam.gserviceaccount.com"
ROWS = 400


def _chain(tmp: pathlib.Path, serving_section: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": "taxi_tips",
        "workdir": str(tmp / "work"),
        "steps": [
            {
                "name": "dataset",
                "kind": "dataset",
                "spec": str(REPO / "examples/chicago_taxi/pipeline.yaml"),
                "inputs": [str(tmp / "trips.csv")],
                "output": str(tmp / "dataset"),
            },
            {
                "name": "train",
                "kind": "train",
                "dataset": "dataset",
                "module": "examples.chicago_taxi.trainer.task",
                "args": ["--model", "logistic"],
            },
            {
                "name": "upload",
                "kind": "upload",
                "model": "train",
                "predictor": PREDICTOR,
                "gcp": {"image_uri": IMAGE, "env": {"LOG_LEVEL": "info"}},
            },
            {"name": "deploy", "kind": "deploy", "model": "upload"},
        ],
        **({"serving": serving_section} if serving_section is not None else {}),
    }


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[chains.ChainSpec, dict[str, Any]]]:
    """The chain run on the local target: its spec and the deploy step's outputs."""
    tmp = tmp_path_factory.mktemp("chain")
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (tmp / "trips.csv").write_text("".join(lines[: ROWS + 1]))
    section = {"namespace": "serving", "gcp_service_account": GSA, "env": {"WORKERS": "1"}}
    spec = chains.parse_chain(_chain(tmp, section), origin=str(tmp / "chain.yaml"))
    with pytest.MonkeyPatch.context() as patch:
        # The local server imports the predictor from the working tree, as `make demo` does.
        patch.chdir(REPO)
        report = chains.run_chain(spec)
    server = serving.LocalServer.from_json(report.outputs["deploy"]["server"])
    try:
        yield spec, report.outputs["deploy"]
    finally:
        serving.stop_server(server)


@pytest.fixture(scope="module")
def built(
    deployed: tuple[chains.ChainSpec, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> pathlib.Path:
    spec, _ = deployed
    output = tmp_path_factory.mktemp("build") / "serving"
    written = build_serving(spec, output=str(output))
    assert written == sorted(str(p) for p in output.rglob("*") if p.is_file())
    return output


def _raw_rows(limit: int) -> list[dict[str, Any]]:
    with TAXI_SAMPLE.open(newline="") as f:
        rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows[-limit:]  # trips the model was not trained on


# --- the generated files -----------------------------------------------------------------------


def test_the_dockerfile_runs_the_local_servers_command_configured_by_aip_env(
    built: pathlib.Path, deployed: tuple[chains.ChainSpec, dict[str, Any]]
) -> None:
    pins = " \\\n".join(
        f'        "{name}=={importlib.metadata.version(dist)}"'
        for name, dist in (
            ("google-cloud-aiplatform[prediction]", "google-cloud-aiplatform"),
            ("scikit-learn", "scikit-learn"),
            ("joblib", "joblib"),
        )
    )
    assert (built / "Dockerfile").read_text() == (
        "# The prediction server of chain 'taxi_tips': written by beamforge serve build.\n"
        f"#   docker build -t {IMAGE} .\n"
        "# The same image serves on GKE (k8s/) and as a Vertex AI custom serving container:\n"
        "# both configure it through AIP_HTTP_PORT, AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE and\n"
        "# AIP_STORAGE_URI.\n"
        "FROM python:3.11.14-slim-bookworm\n"
        "\n"
        "ENV PYTHONDONTWRITEBYTECODE=1 \\\n"
        "    PYTHONUNBUFFERED=1 \\\n"
        "    PIP_DISABLE_PIP_VERSION_CHECK=1\n"
        "WORKDIR /app\n"
        "\n"
        "# The project's source first: a new model does not reinstall the dependencies.\n"
        "COPY app/ /app/\n"
        "# The server's requirements only (no BigQuery, Dataflow, tensorflow or orchestrators).\n"
        "RUN pip install --no-cache-dir \\\n"
        f"{pins} \\\n"
        "        /app \\\n"
        "    && useradd --no-log-init --no-create-home --shell /usr/sbin/nologin --uid 10001 "
        "serving\n"
        "\n"
        "# The model and its transform artifact, read-only for the server's user.\n"
        "COPY model/ /app/model/\n"
        "\n"
        "USER 10001\n"
        "\n"
        "# AIP_STORAGE_URI is relative to the WORKDIR; Vertex AI sets its own copy's path.\n"
        'ENV AIP_HTTP_PORT="8080" \\\n'
        '    AIP_PREDICT_ROUTE="/predict" \\\n'
        '    AIP_HEALTH_ROUTE="/health" \\\n'
        '    AIP_STORAGE_URI="model" \\\n'
        '    PREDICTOR_MODULE="examples.chicago_taxi.predictor" \\\n'
        '    PREDICTOR_CLASS="TaxiPredictor"\n'
        "EXPOSE 8080\n"
        'CMD ["python", "-m", "launchers.serving", "--host", "0.0.0.0"]\n'
    )
    # The model is the one the chain's state records, byte for byte.
    _, outputs = deployed
    state = json.loads(pathlib.Path(deployed[0].state_path("local")).read_text())
    model_dir = pathlib.Path(state["steps"]["upload"]["outputs"]["model_dir"])
    for name in ("model.joblib", "metrics.json", "artifact/transform.json"):
        assert (built / "model" / name).read_bytes() == (model_dir / name).read_bytes()
    app = built / "app"
    assert (app / "setup.py").read_bytes() == (REPO / "setup.py").read_bytes()
    assert (app / "launchers/serving/app.py").is_file()
    # The predictor's package and the packages above it, nothing else outside the project's.
    assert sorted(p.name for p in app.iterdir()) == [
        "README.md",
        "beam_pipelines",
        "examples",
        "launchers",
        "pyproject.toml",
        "setup.py",
        "transforms",
    ]

    def modules(root: pathlib.Path) -> list[str]:
        return sorted(
            p.relative_to(root).as_posix()
            for p in [root / "examples/__init__.py", *root.glob("examples/chicago_taxi/**/*.py")]
        )

    assert modules(app) == modules(REPO)
    assert "examples/chicago_taxi/predictor.py" in modules(app)
    assert not list(app.rglob("__pycache__")) and not list(app.rglob("*.csv"))
    assert outputs["predict_url"].startswith("http://127.0.0.1:")


def test_the_manifests(built: pathlib.Path) -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted((built / "k8s").iterdir())}
    assert sorted(docs) == ["deployment.yaml", "hpa.yaml", "service.yaml", "serviceaccount.yaml"]
    labels = {"app.kubernetes.io/name": "taxi-tips", "app.kubernetes.io/part-of": "beamforge"}
    assert docs["serviceaccount.yaml"] == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "taxi-tips",
            "namespace": "serving",
            "labels": labels,
            "annotations": {"iam.gke.io/gcp-service-account": GSA},
        },
    }
    deployment = docs["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "taxi-tips"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["image"] == IMAGE
    assert container["env"] == [
        {"name": "AIP_HTTP_PORT", "value": "8080"},
        {"name": "AIP_PREDICT_ROUTE", "value": "/predict"},
        {"name": "AIP_HEALTH_ROUTE", "value": "/health"},
        {"name": "AIP_STORAGE_URI", "value": "model"},
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "WORKERS", "value": "1"},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert deployment["spec"]["replicas"] == 1
    assert docs["service.yaml"]["spec"] == {
        "type": "ClusterIP",
        "selector": {"app.kubernetes.io/name": "taxi-tips"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    assert docs["hpa.yaml"]["apiVersion"] == "autoscaling/v2"
    assert docs["hpa.yaml"]["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "taxi-tips"},
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70},
                },
            }
        ],
    }
    # Plain YAML: no anchors or aliases for a reader (or kubectl diff) to resolve.
    assert not any("&id" in p.read_text() for p in (built / "k8s").iterdir())


def _run(command: list[str | pathlib.Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, check=False
    )


def _kubernetes_validate(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    assert KUBERNETES_VALIDATE.is_file(), f"{KUBERNETES_VALIDATE} is missing: pip install .[dev]"
    return _run([KUBERNETES_VALIDATE, "--strict", "--kubernetes-version", "1.33", path])


def _gs_build(tmp_path: pathlib.Path) -> pathlib.Path:
    section = {
        "model": "gs://my-bucket/models/taxi",
        "name": "tips",
        "replicas": 2,
        "autoscale": {"min": 2, "max": 6, "target_cpu": 60},
        "resources": {"requests": {"cpu": 1, "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "service": {"type": "LoadBalancer", "port": 8080},
        "service_account": "tips-sa",
    }
    spec = chains.parse_chain(_chain(tmp_path, section), origin="chain.yaml")
    build_serving(spec, output=str(tmp_path / "out"))
    return tmp_path / "out"


def test_the_manifests_pass_kubernetes_validate_strict(
    built: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    gs_build = _gs_build(tmp_path)
    for build in (built, gs_build):
        for path in sorted((build / "k8s").iterdir()):
            result = _kubernetes_validate(path)
            assert result.returncode == 0, result.stdout + result.stderr
            assert " passed for resource " in result.stdout + result.stderr
    # --strict is what catches a misspelt field: the check is not vacuous.
    broken = yaml.safe_load((built / "k8s/deployment.yaml").read_text())
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 1}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = _kubernetes_validate(tmp_path / "broken.yaml")
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


def test_the_dockerfile_passes_hadolint(built: pathlib.Path, tmp_path: pathlib.Path) -> None:
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: pip install .[dev]"
    for build in (built, _gs_build(tmp_path)):
        result = _run([HADOLINT, build / "Dockerfile"])
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # hadolint does check: an unpinned install is refused.
    unpinned = re.sub(r'"joblib==[^"]+"', '"joblib"', (built / "Dockerfile").read_text())
    (tmp_path / "Dockerfile").write_text(unpinned)
    result = _run([HADOLINT, tmp_path / "Dockerfile"])
    assert result.returncode == 1 and "DL3013" in result.stdout


def test_a_gs_model_is_read_at_start_not_copied(tmp_path: pathlib.Path) -> None:
    build = _gs_build(tmp_path)
    dockerfile = (build / "Dockerfile").read_text()
    assert "COPY model/" not in dockerfile
    assert '    AIP_STORAGE_URI="gs://my-bucket/models/taxi" \\\n' in dockerfile
    assert not (build / "model").exists()
    deployment = yaml.safe_load((build / "k8s/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "AIP_STORAGE_URI", "value": "gs://my-bucket/models/taxi"} in container["env"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert deployment["spec"]["replicas"] == 2
    account = yaml.safe_load((build / "k8s/serviceaccount.yaml").read_text())
    # No Google service account named: no Workload Identity annotation.
    assert account["metadata"] == {
        "name": "tips-sa",
        "namespace": "default",
        "labels": {"app.kubernetes.io/name": "tips", "app.kubernetes.io/part-of": "beamforge"},
    }
    service = yaml.safe_load((build / "k8s/service.yaml").read_text())
    assert (service["spec"]["type"], service["spec"]["ports"][0]["port"]) == ("LoadBalancer", 8080)


# --- the image's command line, run here --------------------------------------------------------


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _docker_words(text: str) -> list[str]:
    """The words docker reads from an ENV line (its shell-word rules, with ``\\`` the escape).

    Outside quotes ``\\`` takes the next character literally; in single quotes nothing is
    special; in double quotes only ``\\"``, ``\\$`` and ``\\\\`` are escapes (any other
    backslash stays). An unescaped ``$`` outside single quotes is a variable docker would
    expand: that fails here, as the generated Dockerfile must never rely on it.
    """
    words: list[str] = []
    word: list[str] | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        word = word if word is not None else []
        if char == "'":
            end = text.index("'", i + 1)
            word.append(text[i + 1 : end])
            i = end + 1
        elif char == '"':
            i += 1
            while text[i] != '"':
                assert text[i] != "$", f"docker would expand ${text[i + 1 :]!r}"
                if text[i] == "\\" and text[i + 1] in '"$\\':
                    i += 1
                word.append(text[i])
                i += 1
            i += 1
        else:
            assert char != "$", f"docker would expand ${text[i + 1 :]!r}"
            if char == "\\":
                i += 1
            word.append(text[i])
            i += 1
    if word is not None:
        words.append("".join(word))
    return words


def _image_layout(build: pathlib.Path, root: pathlib.Path) -> tuple[dict[str, str], str, list[str]]:
    """Lays out ``build``'s COPY instructions under ``root``; returns (ENV, WORKDIR, CMD)."""
    env: dict[str, str] = {}
    workdir = "/"
    command: list[str] = []
    for instruction, args in _dockerfile_instructions((build / "Dockerfile").read_text()):
        if instruction == "ENV":
            env.update(dict(item.split("=", 1) for item in _docker_words(args)))
        elif instruction == "WORKDIR":
            workdir = args
        elif instruction == "COPY":
            source, target = args.split()
            shutil.copytree(build / source, root / target.lstrip("/"), dirs_exist_ok=True)
        elif instruction == "CMD":
            command = json.loads(args)
        else:
            assert instruction in ("FROM", "RUN", "USER", "EXPOSE"), instruction
    return env, workdir, command


_WHERE = """
import examples.chicago_taxi.predictor as predictor
import launchers.serving as server
import transforms.serving.preprocessor as preprocessor
print(server.__file__, predictor.__file__, preprocessor.__file__)
"""


@contextlib.contextmanager
def _image_server(built: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[serving.LocalServer]:
    """The server of the image ``built`` describes, started as the image starts it."""
    root = tmp_path / "root"
    image_env, workdir, command = _image_layout(built, root)
    assert (
        command
        == list(SERVER_COMMAND)
        == [
            "python",
            "-m",
            "launchers.serving",
            "--host",
            "0.0.0.0",
        ]
    )
    deployment = yaml.safe_load((built / "k8s/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = serving.free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(image_env)
    env.update({e["name"]: e["value"] for e in container["env"]})
    # The only changes: this venv's interpreter for the image's `python`, loopback for every
    # interface, and a free port for 8080 (the rest of the machine may use it).
    env["AIP_HTTP_PORT"] = str(port)
    argv = [sys.executable, *command[1:-1], "127.0.0.1"]
    app = root / workdir.lstrip("/")
    # The image's files are root's and read-only to the server: so they are here.
    for path in [app, *app.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    # The image's copies are what runs (the working directory comes first on sys.path), not
    # this checkout: a module missing from the build context would fail here.
    where = subprocess.run(
        [sys.executable, "-c", _WHERE],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.split() == [
        str(app / "launchers/serving/__init__.py"),
        str(app / "examples/chicago_taxi/predictor.py"),
        str(app / "transforms/serving/preprocessor.py"),
    ]
    log = tmp_path / "image-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=app,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = serving.LocalServer(pid=process.pid, host="127.0.0.1", port=port, log=str(log))
    try:
        deadline = time.monotonic() + 120
        while not serving.is_healthy(server, timeout=1.0):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert pathlib.Path(log).read_text().splitlines()[0] == (
            f"serving {env['AIP_STORAGE_URI']} at http://127.0.0.1:{port}"
        )
        yield server
    finally:
        serving.stop_server(server)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        for path in [app, *app.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def image_server(built: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[serving.LocalServer]:
    """The server started as the image of the chain's build starts it, on 127.0.0.1."""
    with _image_server(built, tmp_path) as server:
        yield server


def test_the_image_command_answers_as_the_chains_server(
    image_server: serving.LocalServer, deployed: tuple[chains.ChainSpec, dict[str, Any]]
) -> None:
    _, outputs = deployed
    rows = [*_raw_rows(60), dict(_raw_rows(1)[0], trip_seconds="a while")]
    parameters = {"return_features": True}
    from_chain = serving.predict(outputs["predict_url"], rows, parameters=parameters)
    from_image = serving.predict(image_server.predict_url, rows, parameters=parameters)
    assert from_image == from_chain
    assert len(from_image) == 61
    assert all(sorted(p) == ["features", "probability", "tips_xf"] for p in from_image[:60])
    assert from_image[60] == {
        "error": {
            "reason": "unparseable_value",
            "message": "key 'trip_seconds': 'a while' is not a valid int64",
        }
    }
    # The image's server is the same server: a client's mistake gets the same 400.
    with pytest.raises(serving.ServerError) as info:
        serving.predict(image_server.predict_url, [1])
    assert str(info.value) == (
        f'{image_server.predict_url} answered 400: {{"error":"the predictor refused the '
        'request: every instance must be a mapping of column to value"}'
    )


# --- bad input: one line at serving.KEY, nothing written ---------------------------------------


def _model_dir(tmp_path: pathlib.Path, *, artifact: bool = True) -> str:
    directory = tmp_path / "model"
    (directory / "artifact" if artifact else directory).mkdir(parents=True)
    return str(directory)


def _serving_error(
    tmp_path: pathlib.Path, data: dict[str, Any], *, upload: bool = True, **chain_keys: Any
) -> str:
    chain = _chain(tmp_path, data)
    chain["workdir"] = str(tmp_path / "work")
    if not upload:
        chain["steps"] = [s for s in chain["steps"] if s["kind"] not in ("upload", "deploy")]
    chain.update(chain_keys)
    spec = chains.parse_chain(chain, origin="chain.yaml")
    output = tmp_path / "out"
    with pytest.raises(chains.SpecError) as info:
        build_serving(spec, output=str(output))
    assert not output.exists()
    return str(info.value)


def test_no_model_no_upload_step(tmp_path: pathlib.Path) -> None:
    assert _serving_error(tmp_path, {"image": IMAGE}, upload=False) == (
        "chain.yaml: serving.model: no model to serve: give model (copy with model_dir, or a "
        "gs:// path) or add an upload step"
    )


def test_copy_without_upload_step_needs_model_dir(tmp_path: pathlib.Path) -> None:
    assert _serving_error(tmp_path, {"model": "copy"}, upload=False) == (
        "chain.yaml: serving.model_dir: model: copy needs model_dir: there is no upload step to "
        "take the model from"
    )


def test_no_predictor_without_upload_step(tmp_path: pathlib.Path) -> None:
    section = {"image": IMAGE, "model": "copy", "model_dir": _model_dir(tmp_path)}
    assert _serving_error(tmp_path, section, upload=False) == (
        "chain.yaml: serving.predictor: no predictor: give predictor (module:Class) or add an "
        "upload step"
    )


def test_copy_model_dir_that_does_not_exist(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere"
    assert _serving_error(tmp_path, {"model_dir": str(missing)}) == (
        f"chain.yaml: serving.model_dir: model directory {missing} does not exist"
    )


def test_copy_model_dir_without_transform_artifact(tmp_path: pathlib.Path) -> None:
    directory = _model_dir(tmp_path, artifact=False)
    assert _serving_error(tmp_path, {"model_dir": directory}) == (
        f"chain.yaml: serving.model_dir: model directory {directory} has no transform artifact "
        "(artifact/); the chain's train step copies it there"
    )


def test_copy_from_a_chain_that_has_not_run(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "work" / "state-local.json"
    assert _serving_error(tmp_path, {}) == (
        "chain.yaml: serving.model: model: copy takes the model of step 'upload' from the chain's "
        f"local state ({state}), which has none yet: run the chain first, or give model_dir"
    )


def test_copy_from_a_state_whose_model_is_gone(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "work" / "state-local.json"
    gone = tmp_path / "work" / "train" / "model"
    chains.save_state(
        str(state),
        chains.ChainState(
            chain="taxi_tips",
            target="local",
            steps={
                "upload": chains.StepState(
                    status="completed", fingerprint="x", outputs={"model_dir": str(gone)}
                )
            },
        ),
    )
    assert _serving_error(tmp_path, {}) == (
        f"chain.yaml: serving.model: the chain's local state ({state}) names model directory "
        f"{gone} for step 'upload', which does not exist: run the chain again, or give model_dir"
    )


@pytest.mark.parametrize(
    ("section", "error"),
    [
        (
            {"autoscale": {"min": 5, "max": 2}},
            "serving.autoscale: min (5) is more than max (2) replicas",
        ),
        (
            {"replicas": 4, "autoscale": {"min": 1, "max": 3}},
            "serving.replicas: 4 is outside the autoscaler's min..max (1..3)",
        ),
        (
            {"autoscale": {"target_cpu": 150}},
            "serving.autoscale.target_cpu: got 150; expected an integer from 1 to 100 (percent "
            "of the CPU request)",
        ),
        (
            {"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "2Gi"}}},
            "serving.resources.requests.memory: 4Gi is more than its limit (2Gi)",
        ),
        (
            {"resources": {"limits": {"cpu": "lots"}}},
            "serving.resources.limits.cpu: 'lots' is not a CPU quantity; expected cores (1, 0.5) "
            "or millicores (500m)",
        ),
        (
            {"resources": {"requests": {"memory": "1GB"}}},
            "serving.resources.requests.memory: '1GB' is not a memory quantity; expected bytes "
            "with a unit (512Mi, 2Gi, 500M)",
        ),
        (
            {"resources": {"requests": {"memory": "1Gi"}}},
            "serving.resources.requests.cpu: the autoscaler's target_cpu is a percent of the CPU "
            "request: give one",
        ),
        (
            {"model": "s3://bucket/model"},
            "serving.model: expected copy or a gs://BUCKET/PATH model, got 's3://bucket/model'",
        ),
        (
            {"model": "gs://bucket/model", "model_dir": "demo-chain/train/model"},
            "serving.model_dir: is only for model: copy",
        ),
        (
            {"image": "taxi-predictor:latest"},
            "serving.image: 'taxi-predictor:latest' is not a registry path; expected "
            "REGISTRY/PATH[:TAG], e.g. us-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG",
        ),
        (
            {"gcp_service_account": "taxi-predictor"},
            "serving.gcp_service_account: 'taxi-predictor' is not a Google service account; "
            "expected NAME@PROJECT.iam.gserviceaccount.com",
        ),
        (
            {"namespace": "ML_Serving"},
            "serving.namespace: 'ML_Serving' is not a Kubernetes name: lower-case letters, digits "
            "and -, up to 63 characters",
        ),
        (
            {"predictor": "examples.elsewhere.predictor:P"},
            "serving.predictor: module examples.elsewhere.predictor is not in the project "
            f"({REPO}); the image carries only the project's source",
        ),
        (
            {"env": {"AIP_HTTP_PORT": "9000"}},
            "serving.env.AIP_HTTP_PORT: AIP_*, PREDICTOR_* and HANDLER_* are set from the upload "
            "step and the model",
        ),
        (
            {"service": {"type": "Ingress"}},
            "serving.service.type: got 'Ingress'; expected one of 'ClusterIP', 'NodePort', "
            "'LoadBalancer'",
        ),
        (
            {"name": "1taxi"},
            "serving.name: '1taxi' is not a Kubernetes Service name: lower-case letters, digits "
            "and -, starting with a letter and ending with a letter or digit, up to 63 characters",
        ),
        (
            {"name": "taxi-"},
            "serving.name: 'taxi-' is not a Kubernetes Service name: lower-case letters, digits "
            "and -, starting with a letter and ending with a letter or digit, up to 63 characters",
        ),
        (
            {"namespace": "-serving"},
            "serving.namespace: '-serving' is not a Kubernetes name: lower-case letters, digits "
            "and -, up to 63 characters",
        ),
        (
            {"service_account": "Taxi_SA"},
            "serving.service_account: 'Taxi_SA' is not a Kubernetes service account name: "
            "lower-case letters, digits, - and ., each dot-separated part starting and ending "
            "with a letter or digit, up to 253 characters",
        ),
        (
            {"service_account": "taxi..sa"},
            "serving.service_account: 'taxi..sa' is not a Kubernetes service account name: "
            "lower-case letters, digits, - and ., each dot-separated part starting and ending "
            "with a letter or digit, up to 253 characters",
        ),
        (
            {"predictor": "examples.chicago_taxi.predictor:class"},
            "serving.predictor: expected module:Class (a dotted path of Python identifiers, a "
            "colon, an identifier), got 'examples.chicago_taxi.predictor:class'",
        ),
        (
            {"predictor": "examples/chicago_taxi/predictor:TaxiPredictor"},
            "serving.predictor: expected module:Class (a dotted path of Python identifiers, a "
            "colon, an identifier), got 'examples/chicago_taxi/predictor:TaxiPredictor'",
        ),
        (
            {"resources": {"requests": {"cpu": "0"}}},
            "serving.resources.requests.cpu: '0' is zero; give a positive quantity",
        ),
        (
            {"resources": {"requests": {"cpu": "500m", "memory": "0Mi"}}},
            "serving.resources.requests.memory: '0Mi' is zero; give a positive quantity",
        ),
        (
            {"resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}},
            "serving.resources.requests.cpu: 1500m is more than its limit (1, the default "
            "limit: give resources.limits)",
        ),
        (
            {"resources": {"limits": {"cpu": "250m", "memory": "2Gi"}}},
            "serving.resources.requests.cpu: 500m (the default request) is more than its limit "
            "(250m)",
        ),
        (
            {"replica": 2},
            "serving.replica: unknown key 'replica'; valid keys are image, model, model_dir, "
            "predictor, name, namespace, replicas, resources, autoscale, service_account, "
            "gcp_service_account, service, env",
        ),
    ],
)
def test_bad_serving_keys(tmp_path: pathlib.Path, section: dict[str, Any], error: str) -> None:
    # A model that exists, so that each case fails on its own key.
    data = copy.deepcopy(section)
    if "model" not in data:
        data.setdefault("model_dir", _model_dir(tmp_path))
    assert _serving_error(tmp_path, data) == f"chain.yaml: {error}"


def test_no_image_and_no_upload_image(tmp_path: pathlib.Path) -> None:
    chain = _chain(tmp_path, {"model_dir": _model_dir(tmp_path)})
    del chain["steps"][2]["gcp"]
    spec = chains.parse_chain(chain, origin="chain.yaml")
    with pytest.raises(chains.SpecError) as info:
        build_serving(spec, output=str(tmp_path / "out"))
    assert str(info.value) == (
        "chain.yaml: serving.image: no image: give image (a registry path) or the upload step's "
        "gcp.image_uri"
    )
    assert not (tmp_path / "out").exists()


def test_a_chain_name_that_is_no_kubernetes_name(tmp_path: pathlib.Path) -> None:
    assert _serving_error(tmp_path, {"model_dir": _model_dir(tmp_path)}, name="taxi_") == (
        "chain.yaml: serving.name: the chain name 'taxi_' is not a Kubernetes Service name: "
        "lower-case letters, digits and -, starting with a letter and ending with a letter or "
        "digit, up to 63 characters; give serving.name"
    )


def test_no_serving_section(tmp_path: pathlib.Path) -> None:
    spec = chains.parse_chain(_chain(tmp_path, None), origin="chain.yaml")
    with pytest.raises(chains.SpecError) as info:
        build_serving(spec, output=str(tmp_path / "out"))
    assert str(info.value) == (
        "chain.yaml: serving: the chain has no serving section (image, model, ...)"
    )


def test_quantities() -> None:
    assert cpu_cores("500m") == cpu_cores("0.5") == cpu_cores(".5")
    assert cpu_cores("2") > cpu_cores("1500m")
    assert memory_bytes("1Gi") == 2**30 and memory_bytes("500M") == 500 * 10**6
    assert memory_bytes("1Gi") > memory_bytes("1G")
    # Kubernetes' decimal exponent, and the exa suffix it must not be taken for.
    assert memory_bytes("1e9") == memory_bytes("1E9") == memory_bytes("1G") == 10**9
    assert memory_bytes("1E") == 10**18 and memory_bytes("5e-1") == Decimal("0.5")
    assert cpu_cores("5e-1") == cpu_cores("500m") and cpu_cores("2E+0") == 2
    for bad in ("", "1.5.0", "-1", "1 m", "1Gi", "1e3m", "1e"):
        with pytest.raises(ValueError, match="is not a CPU quantity"):
            cpu_cores(bad)
    for bad in ("1GB", "Gi", "1gi", "1e", "e9", "1e9Gi", "1.5e"):
        with pytest.raises(ValueError, match="is not a memory quantity"):
            memory_bytes(bad)


def test_a_gs_model_is_read_by_the_image_command_at_start(
    deployed: tuple[chains.ChainSpec, dict[str, Any]],
    gcs_emulator: Gcs,
    tmp_path: pathlib.Path,
) -> None:
    spec, outputs = deployed
    state = json.loads(pathlib.Path(spec.state_path("local")).read_text())
    model_dir = pathlib.Path(state["steps"]["upload"]["outputs"]["model_dir"])
    bucket = gcs_emulator.client().bucket(gcs_emulator.new_bucket("beamforge-gke-models"))
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        bucket.blob(f"taxi/{path.relative_to(model_dir).as_posix()}").upload_from_filename(path)
    chain = _chain(tmp_path, {"model": "gs://beamforge-gke-models/taxi"})
    build = tmp_path / "build"
    build_serving(chains.parse_chain(chain, origin="chain.yaml"), output=str(build))
    rows = _raw_rows(20)
    # STORAGE_EMULATOR_HOST (set by the emulator's fixture) is the only addition to the env.
    with _image_server(build, tmp_path) as server:
        from_image = serving.predict(server.predict_url, rows)
    assert from_image == serving.predict(outputs["predict_url"], rows)


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_rebuild_replaces_what_the_build_wrote_and_keeps_the_rest(
    tmp_path: pathlib.Path,
) -> None:
    chain = _chain(tmp_path, {"model_dir": _model_dir(tmp_path)})
    (tmp_path / "model" / "model.joblib").write_text("model")
    spec = chains.parse_chain(chain, origin="chain.yaml")
    output = tmp_path / "out"
    first = build_serving(spec, output=str(output))
    assert first == [str(output / name) for name in _files(output)]
    marker = (output / ".beamforge-serving").read_text().splitlines()
    assert marker[:2] == [
        "# Written by beamforge serve build: the files below are replaced by the next build;",
        "# other files in this folder are left alone.",
    ]
    assert marker[2:] == [n for n in _files(output) if n != ".beamforge-serving"]
    assert "model/model.joblib" in marker and "k8s/hpa.yaml" in marker
    # The user's own files, beside and inside the generated folders, survive every rebuild;
    # an edited marker cannot reach outside the generated names.
    mine = ["notes.txt", "k8s/ingress.yaml", "app/extra.cfg", "model/README"]
    for name in mine:
        (output / name).write_text("mine")
    (tmp_path / "outside.txt").write_text("mine")
    with (output / ".beamforge-serving").open("a") as f:
        f.write("../outside.txt\nnotes.txt\nk8s/../notes.txt\n")
    assert build_serving(spec, output=str(output)) == first
    assert _files(output) == sorted([*(_files_of(first, output)), *mine])
    assert (tmp_path / "outside.txt").read_text() == "mine"
    assert all((output / name).read_text() == "mine" for name in mine)
    # What the build wrote before and writes no more goes: a gs:// model copies nothing.
    gs_chain = _chain(tmp_path, {"model": "gs://my-bucket/models/taxi"})
    gs_written = build_serving(
        chains.parse_chain(gs_chain, origin="chain.yaml"), output=str(output)
    )
    assert not any("/model/" in path for path in gs_written)
    assert _files(output) == sorted([*(_files_of(gs_written, output)), *mine])
    assert _files(output / "model") == ["README"]


def _files_of(paths: list[str], folder: pathlib.Path) -> list[str]:
    return [pathlib.Path(p).relative_to(folder).as_posix() for p in paths]


def _build_error(spec: chains.ChainSpec, output: pathlib.Path) -> str:
    with pytest.raises(chains.SpecError) as info:
        build_serving(spec, output=str(output))
    return str(info.value)


def test_a_folder_the_build_did_not_write_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    spec = chains.parse_chain(
        _chain(tmp_path, {"model_dir": _model_dir(tmp_path)}), origin="chain.yaml"
    )
    output = tmp_path / "out"
    (output / "k8s").mkdir(parents=True)
    (output / "k8s/ingress.yaml").write_text("mine")
    assert _build_error(spec, output) == (
        f"-o: {output} is not empty and has no .beamforge-serving (it is not a serve build's "
        "folder): give a new or empty folder"
    )
    assert _files(output) == ["k8s/ingress.yaml"]
    (tmp_path / "file").write_text("mine")
    assert _build_error(spec, tmp_path / "file") == (
        f"-o: {tmp_path / 'file'} is a file; give a folder for the build"
    )
    assert (tmp_path / "file").read_text() == "mine"
    # An empty folder is taken (and marked).
    (tmp_path / "empty").mkdir()
    build_serving(spec, output=str(tmp_path / "empty"))
    assert (tmp_path / "empty/.beamforge-serving").is_file()


@pytest.mark.parametrize("where", ["inside", "equal", "holding"])
def test_a_model_dir_overlapping_the_output_is_refused_untouched(
    tmp_path: pathlib.Path, where: str
) -> None:
    model = tmp_path / "out" / "model" if where == "inside" else tmp_path / "m"
    (model / "artifact").mkdir(parents=True)
    (model / "model.joblib").write_text("model")
    output = {"inside": tmp_path / "out", "equal": model, "holding": model / "build"}[where]
    if where == "inside":
        # Even a folder an earlier build marked: the model in it is not the build's to remove.
        (output / ".beamforge-serving").write_text("model/model.joblib\n")
    spec = chains.parse_chain(_chain(tmp_path, {"model_dir": str(model)}), origin="chain.yaml")
    assert _build_error(spec, output) == (
        f"chain.yaml: serving.model_dir: model directory {model} overlaps the output folder "
        f"{output}; the build would overwrite the model it copies: give another -o"
    )
    assert (model / "model.joblib").read_text() == "model"
    assert sorted(p.name for p in model.iterdir()) == ["artifact", "model.joblib"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m" if where != "inside" else "out"]


def test_the_chains_model_dir_inside_the_output_is_refused(
    deployed: tuple[chains.ChainSpec, dict[str, Any]],
) -> None:
    spec, _ = deployed
    state = json.loads(pathlib.Path(spec.state_path("local")).read_text())
    model_dir = state["steps"]["upload"]["outputs"]["model_dir"]
    before = _files(pathlib.Path(spec.workdir))
    assert _build_error(spec, pathlib.Path(spec.workdir)) == (
        f"{spec.origin}: serving.model: model directory {model_dir} overlaps the output folder "
        f"{spec.workdir}; the build would overwrite the model it copies: give another -o"
    )
    assert _files(pathlib.Path(spec.workdir)) == before


@pytest.mark.parametrize(
    ("inside", "folder"),
    [
        ("launchers/srv", "launchers"),
        ("transforms/core/srv", "transforms"),
        ("examples/chicago_taxi/srv", "examples/chicago_taxi"),
    ],
)
def test_an_output_inside_the_projects_source_is_refused(
    tmp_path: pathlib.Path, inside: str, folder: str
) -> None:
    spec = chains.parse_chain(
        _chain(tmp_path, {"model_dir": _model_dir(tmp_path)}), origin="chain.yaml"
    )
    output = REPO / inside
    assert _build_error(spec, output) == (
        f"-o: {output} is inside {folder}/, which the image's app/ is copied from: give a "
        "folder outside it (e.g. build/serving)"
    )
    assert not output.exists()
    # A model read from gs://: a clone under /tmp holds this test's own folder too, and a
    # copied model there would be refused first, for overlapping the output.
    remote = chains.parse_chain(
        _chain(tmp_path, {"model": "gs://my-bucket/models/taxi"}), origin="chain.yaml"
    )
    assert _build_error(remote, REPO.parent) == (
        f"-o: {REPO.parent} holds the project ({REPO}): give a folder of its own (build/serving)"
    )


def test_env_values_reach_the_image_literally(tmp_path: pathlib.Path) -> None:
    chain = _chain(tmp_path, {"model": 'gs://my-bucket/m"o$HOME\\d$PATH'})
    chain["steps"][2]["gcp"].update(predict_route="/v1/$HOME/predict", health_route='/health"\\$')
    spec = chains.parse_chain(chain, origin="chain.yaml")
    build_serving(spec, output=str(tmp_path / "out"))
    text = (tmp_path / "out/Dockerfile").read_text()
    assert (
        '    AIP_PREDICT_ROUTE="/v1/\\$HOME/predict" \\\n'
        '    AIP_HEALTH_ROUTE="/health\\"\\\\\\$" \\\n'
        '    AIP_STORAGE_URI="gs://my-bucket/m\\"o\\$HOME\\\\d\\$PATH" \\\n'
    ) in text
    env, _, _ = _image_layout(tmp_path / "out", tmp_path / "root")
    deployment = yaml.safe_load((tmp_path / "out/k8s/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    expected = {
        "AIP_HTTP_PORT": "8080",
        "AIP_PREDICT_ROUTE": "/v1/$HOME/predict",
        "AIP_HEALTH_ROUTE": '/health"\\$',
        "AIP_STORAGE_URI": 'gs://my-bucket/m"o$HOME\\d$PATH',
        "PREDICTOR_MODULE": "examples.chicago_taxi.predictor",
        "PREDICTOR_CLASS": "TaxiPredictor",
    }
    assert {k: v for k, v in env.items() if k in expected} == expected
    assert {e["name"]: e["value"] for e in container["env"][:4]} == {
        k: expected[k] for k in list(expected)[:4]
    }
    # A POSIX shell, whose double quotes docker's follow, reads the same words (with
    # variables set, so that one expanded would show).
    (line,) = [line for line in _dockerfile_instructions(text) if "AIP_HTTP_PORT" in line[1]]
    shell = subprocess.run(
        ["sh", "-c", f"printf '%s\\n' {line[1]}"],
        env={"HOME": "/root", "PATH": os.defpath},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert dict(word.split("=", 1) for word in shell.stdout.splitlines()) == expected
    result = _run([HADOLINT, tmp_path / "out/Dockerfile"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # The test's reader would catch an unescaped $: the check is not vacuous.
    with pytest.raises(AssertionError, match="docker would expand"):
        _docker_words('A="/v1/$HOME"')


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"predictor": "examples.chicago_taxi.predictor:Taxi Predictor"},
            "steps[2].predictor: expected module:Class (a dotted path of Python identifiers, a "
            "colon, an identifier), got 'examples.chicago_taxi.predictor:Taxi Predictor'",
        ),
        (
            {"gcp": {"image_uri": IMAGE, "predict_route": "/pre dict"}},
            "steps[2].gcp.predict_route: '/pre dict' is not a route: it starts with / and holds "
            "no whitespace",
        ),
        (
            {"gcp": {"image_uri": IMAGE, "health_route": "health"}},
            "steps[2].gcp.health_route: 'health' is not a route: it starts with / and holds no "
            "whitespace",
        ),
        (
            {"gcp": {"image_uri": IMAGE, "port": 80}},
            "steps[2].gcp.port: the server cannot listen on port 80: it runs as a non-root user "
            "without capabilities; give 1024..65535 (the Service's port may still be 80)",
        ),
    ],
)
def test_bad_upload_settings_for_the_image(
    tmp_path: pathlib.Path, change: dict[str, Any], error: str
) -> None:
    chain = _chain(tmp_path, {"model_dir": _model_dir(tmp_path)})
    chain["steps"][2].update(change)
    spec = chains.parse_chain(chain, origin="chain.yaml")
    assert _build_error(spec, tmp_path / "out") == f"chain.yaml: {error}"
    assert not (tmp_path / "out").exists()


def test_exponent_quantities_are_kubernetes_quantities(tmp_path: pathlib.Path) -> None:
    section = {
        "model_dir": _model_dir(tmp_path),
        "resources": {"requests": {"cpu": "5e-1", "memory": "1e9"}},
        "service_account": "taxi.predictor",
    }
    spec = chains.parse_chain(_chain(tmp_path, section), origin="chain.yaml")
    build_serving(spec, output=str(tmp_path / "out"))
    deployment = tmp_path / "out/k8s/deployment.yaml"
    (container,) = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == {"cpu": "5e-1", "memory": "1e9"}
    for name in ("deployment.yaml", "serviceaccount.yaml"):
        result = _kubernetes_validate(tmp_path / "out/k8s" / name)
        assert result.returncode == 0, result.stdout + result.stderr
