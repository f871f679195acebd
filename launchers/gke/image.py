"""The serving image: its Dockerfile and the build context (project source, model).

The image runs the same command line the chain's local target runs
(``python -m launchers.serving``, :func:`launchers.serving.start_server`), configured only by
the ``AIP_*`` environment a Vertex AI endpoint gives a custom serving container. The same
image therefore serves on GKE (with the manifests of :mod:`launchers.gke.manifests`) and as a
Vertex AI model's serving container.

Build context layout (``docker build -t IMAGE DIR``)::

    Dockerfile
    app/       setup.py, pyproject.toml and the project's packages (.py files), plus the
               predictor's package when it lives outside them -> /app (the WORKDIR)
    model/     the model directory with its transform artifact (model: copy) -> /app/model
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re

from launchers.gke.settings import Serving
from transforms.core.config import SpecError

__all__ = [
    "APP_DIR",
    "BASE_IMAGE",
    "MODEL_DIR",
    "PROJECT_PACKAGES",
    "SERVER_COMMAND",
    "SERVER_REQUIREMENTS",
    "SERVER_UID",
    "WORKDIR",
    "dockerfile",
    "env_value",
    "project_root",
    "requirement_pins",
    "source_dirs",
    "source_files",
]

# Pinned to a patch release: a rebuild gets the same interpreter the project is tested with.
BASE_IMAGE = "python:3.11.14-slim-bookworm"
WORKDIR = "/app"
APP_DIR = "app"
MODEL_DIR = "model"
# Numeric, so that Kubernetes can check runAsNonRoot against the image without a passwd file.
SERVER_UID = 10001
# The local target's command line (launchers.serving.local.start_server), listening on every
# interface of the container instead of loopback.
SERVER_COMMAND = ("python", "-m", "launchers.serving", "--host", "0.0.0.0")
PROJECT_PACKAGES = ("transforms", "beam_pipelines", "launchers")
_PROJECT_FILES = ("setup.py", "pyproject.toml", "README.md")
# What the server needs beyond the project's own dependencies: the CPR model server with
# FastAPI and uvicorn (the gcp extra's aiplatform[prediction]), and scikit-learn and joblib to
# unpickle the chain's models (the train extra). BigQuery, Dataflow, Cloud Build, tensorflow
# and the orchestrators stay out of the image.
SERVER_REQUIREMENTS = ("google-cloud-aiplatform[prediction]", "scikit-learn", "joblib")


def project_root() -> pathlib.Path:
    """The project's source tree (the directory holding ``setup.py``).

    Raises:
        SpecError: if beamforge runs from an installed copy without its source.
    """
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "setup.py").is_file():
        raise SpecError(
            "serving", f"the serving image is built from beamforge's source tree; {root} is not one"
        )
    return root


def requirement_pins() -> list[str]:
    """:data:`SERVER_REQUIREMENTS` pinned to the versions installed here (and so tested)."""
    pins = []
    for requirement in SERVER_REQUIREMENTS:
        name = re.split(r"[\[<>=!~;]", requirement, maxsplit=1)[0]
        pins.append(f"{requirement}=={importlib.metadata.version(name)}")
    return pins


def source_dirs(predictor: str, root: pathlib.Path) -> list[pathlib.Path]:
    """The directories :func:`source_files` collects whole: the project's packages and,
    for a predictor outside them, its own package (or module's directory)."""
    dirs = [root / package for package in PROJECT_PACKAGES]
    parts = predictor.partition(":")[0].split(".")
    if parts[0] not in PROJECT_PACKAGES:
        as_file = root.joinpath(*parts).with_suffix(".py")
        dirs.append(root.joinpath(*parts[:-1]) if as_file.is_file() else root.joinpath(*parts))
    return dirs


def source_files(predictor: str, root: pathlib.Path) -> list[str]:
    """The project files the image carries, relative to ``root``, sorted.

    The project's packages and packaging files, and, when the predictor's module is outside
    those packages (``examples.chicago_taxi.predictor``), the ``__init__.py`` of each package
    above it and every module of its own package (the predictor may import its neighbours).

    Raises:
        SpecError: at ``serving.predictor`` if its module is not in the project's tree.
    """
    files = [name for name in _PROJECT_FILES if (root / name).is_file()]
    for package in PROJECT_PACKAGES:
        files.extend(_modules(root, package))
    module = predictor.partition(":")[0]
    parts = module.split(".")
    if parts[0] in PROJECT_PACKAGES:
        return sorted(files)
    as_file = root.joinpath(*parts).with_suffix(".py")
    as_package = root.joinpath(*parts, "__init__.py")
    if not (as_file.is_file() or as_package.is_file()):
        raise SpecError(
            "serving.predictor",
            f"module {module} is not in the project ({root}); the image carries only the "
            "project's source",
        )
    for depth in range(1, len(parts)):
        init = pathlib.Path(*parts[:depth], "__init__.py")
        if (root / init).is_file():
            files.append(init.as_posix())
    own_package = pathlib.Path(*parts[:-1]) if as_file.is_file() else pathlib.Path(*parts)
    files.extend(_modules(root, own_package.as_posix()))
    return sorted(set(files))


def _modules(root: pathlib.Path, package: str) -> list[str]:
    found = []
    for directory, dirs, names in os.walk(root / package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in names:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return [pathlib.Path(p).as_posix() for p in found]


def env_value(value: str) -> str:
    """``value`` as a double-quoted Dockerfile word that docker reads back literally.

    In double quotes, docker's word processing still expands ``$NAME`` and treats ``\\``
    as an escape; ``\\``, ``"`` and ``$`` escaped are read as themselves. Line breaks
    cannot be written this way: the settings refuse them before.

    Raises:
        ValueError: for a value with a line break.
    """
    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r} holds a line break")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def dockerfile(serving: Serving, *, chain: str, pins: list[str]) -> str:
    """The serving image's Dockerfile.

    Args:
        serving: The resolved serving settings.
        chain: The chain's name (in the header comment).
        pins: The pinned server requirements (:func:`requirement_pins`).
    """
    module, _, cls = serving.predictor.partition(":")
    storage = MODEL_DIR if serving.model_dir is not None else serving.storage_uri
    env = {
        "AIP_HTTP_PORT": str(serving.port),
        "AIP_PREDICT_ROUTE": serving.predict_route,
        "AIP_HEALTH_ROUTE": serving.health_route,
        "AIP_STORAGE_URI": str(storage),
        "PREDICTOR_MODULE": module,
        "PREDICTOR_CLASS": cls,
    }
    installs = " \\\n        ".join(f'"{pin}"' for pin in pins)
    lines = [
        f"# The prediction server of chain {chain!r}: written by beamforge serve build.",
        f"#   docker build -t {serving.image} .",
        "# The same image serves on GKE (k8s/) and as a Vertex AI custom serving container:",
        "# both configure it through AIP_HTTP_PORT, AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE and",
        "# AIP_STORAGE_URI.",
        f"FROM {BASE_IMAGE}",
        "",
        "ENV PYTHONDONTWRITEBYTECODE=1 \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"WORKDIR {WORKDIR}",
        "",
        "# The project's source first: a new model does not reinstall the dependencies.",
        f"COPY {APP_DIR}/ {WORKDIR}/",
        "# The server's requirements only (no BigQuery, Dataflow, tensorflow or orchestrators).",
        "RUN pip install --no-cache-dir \\",
        f"        {installs} \\",
        f"        {WORKDIR} \\",
        f"    && useradd --no-log-init --no-create-home --shell /usr/sbin/nologin "
        f"--uid {SERVER_UID} serving",
    ]
    if serving.model_dir is not None:
        lines += [
            "",
            "# The model and its transform artifact, read-only for the server's user.",
            f"COPY {MODEL_DIR}/ {WORKDIR}/{MODEL_DIR}/",
        ]
    lines += ["", f"USER {SERVER_UID}", ""]
    if serving.model_dir is not None:
        lines.append(
            "# AIP_STORAGE_URI is relative to the WORKDIR; Vertex AI sets its own copy's path."
        )
    lines.append("ENV " + " \\\n    ".join(f"{k}={env_value(v)}" for k, v in env.items()))
    lines += [
        f"EXPOSE {serving.port}",
        f"CMD {json.dumps(list(SERVER_COMMAND))}",
        "",
    ]
    return "\n".join(lines)
