"""``beamforge serve build``: the serving image's build context and its Kubernetes manifests."""

from __future__ import annotations

import os
import pathlib
import shutil

import yaml

from launchers.chain.spec import ChainSpec
from launchers.gke.image import (
    APP_DIR,
    MODEL_DIR,
    dockerfile,
    project_root,
    requirement_pins,
    source_dirs,
    source_files,
)
from launchers.gke.manifests import manifests
from launchers.gke.settings import Serving, serving_settings
from transforms.core.config import SpecError

__all__ = ["K8S_DIR", "MARKER", "build_serving"]

K8S_DIR = "k8s"
# Written first by each build: the files it wrote, one a line, which the next build removes.
# A non-empty folder without it is someone else's, and no build writes there.
MARKER = ".beamforge-serving"
_MARKER_HEADER = (
    "# Written by beamforge serve build: the files below are replaced by the next build;\n"
    "# other files in this folder are left alone.\n"
)
_GENERATED = (APP_DIR, MODEL_DIR, K8S_DIR, "Dockerfile")
_SKIPPED = ("__pycache__", "*.pyc")


def build_serving(spec: ChainSpec, *, output: str) -> list[str]:
    """Writes the serving image's build context and manifests for the chain's ``serving:``.

    ``output`` gets ``Dockerfile``, ``app/`` (the project's source), ``model/`` (for
    ``model: copy``), ``k8s/`` (``serviceaccount.yaml``, ``deployment.yaml``,
    ``service.yaml``, ``hpa.yaml``) and :data:`MARKER`, the list of the files written.
    Everything is checked before anything is written. A rebuild first removes the files the
    marker lists, so nothing stale ships; files the build did not write are left alone.

    Args:
        spec: The validated chain.
        output: The directory to write (created if missing): new, empty, or an earlier
            build's.

    Returns:
        The files written, sorted.

    Raises:
        SpecError: at ``serving.KEY`` for a section that cannot be served (see
            :func:`~launchers.gke.settings.serving_settings`), at the model's key for a model
            directory that overlaps ``output``, and at ``-o`` for an ``output`` that is a
            file, a non-empty folder without the marker, or inside the project's source;
            each before anything is written or removed.
    """
    serving = serving_settings(spec)
    try:
        root = project_root()
        sources = source_files(serving.predictor, root)
        _check_model_dir(spec, serving, output)
        previous = _check_output(output, [*source_dirs(serving.predictor, root), root])
    except SpecError as exc:
        raise (exc if exc.path == "-o" else exc.located(spec.origin)) from None
    texts = {"Dockerfile": dockerfile(serving, chain=spec.name, pins=requirement_pins())}
    for name, manifest in manifests(serving).items():
        texts[os.path.join(K8S_DIR, name)] = yaml.safe_dump(manifest, sort_keys=False)
    copies = {os.path.join(APP_DIR, relative): str(root / relative) for relative in sources}
    if serving.model_dir is not None:
        copies.update(_model_files(serving.model_dir))

    for relative in previous:
        _remove(output, relative)
    # The marker first: a build that fails half-way is still one the next build may replace.
    planned = sorted([*copies, *texts])
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, MARKER), "w", encoding="utf-8") as f:
        f.write(_MARKER_HEADER + "".join(f"{relative}\n" for relative in planned))
    for relative, source in copies.items():
        target = os.path.join(output, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
    for relative, text in texts.items():
        target = os.path.join(output, relative)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    return sorted(os.path.join(output, relative) for relative in [*planned, MARKER])


def _model_files(model_dir: str) -> dict[str, str]:
    """{path in the build context: path in the model directory} of the model's files."""
    files = {}
    for directory, dirs, names in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in names:
            if name.endswith(".pyc"):
                continue
            source = os.path.join(directory, name)
            files[os.path.join(MODEL_DIR, os.path.relpath(source, model_dir))] = source
    return files


def _overlap(a: pathlib.Path, b: pathlib.Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _check_model_dir(spec: ChainSpec, serving: Serving, output: str) -> None:
    """Refuses a ``model: copy`` directory that is, holds or is inside ``output``."""
    if serving.model_dir is None:
        return
    model = pathlib.Path(serving.model_dir).resolve()
    if _overlap(model, pathlib.Path(output).resolve()):
        given = isinstance(spec.serving, dict) and spec.serving.get("model_dir") is not None
        raise SpecError(
            "serving.model_dir" if given else "serving.model",
            f"model directory {serving.model_dir} overlaps the output folder {output}; the "
            "build would overwrite the model it copies: give another -o",
        )


def _check_output(output: str, sources: list[pathlib.Path]) -> list[str]:
    """The files an earlier build in ``output`` wrote (none for a new or empty folder).

    ``sources[-1]`` is the project's root: an output holding it would write over the
    project; an output inside one of the other (collected) folders would ship itself.
    """
    resolved = pathlib.Path(output).resolve()
    root = sources[-1]
    for folder in sources[:-1]:
        if resolved.is_relative_to(folder):
            raise SpecError(
                "-o",
                f"{output} is inside {folder.relative_to(root)}/, which the image's app/ is "
                "copied from: give a folder outside it (e.g. build/serving)",
            )
    if root.is_relative_to(resolved):
        raise SpecError(
            "-o", f"{output} holds the project ({root}): give a folder of its own (build/serving)"
        )
    if not os.path.lexists(output):
        return []
    if not os.path.isdir(output):
        raise SpecError("-o", f"{output} is a file; give a folder for the build")
    marker = os.path.join(output, MARKER)
    if not os.path.isfile(marker):
        if os.listdir(output):
            raise SpecError(
                "-o",
                f"{output} is not empty and has no {MARKER} (it is not a serve build's "
                "folder): give a new or empty folder",
            )
        return []
    with open(marker, encoding="utf-8") as f:
        listed = f.read().removeprefix(_MARKER_HEADER)
    return [line for line in listed.split("\n") if line]


def _remove(output: str, relative: str) -> None:
    """Removes one file an earlier build listed, and the folders it leaves empty.

    Only paths under the build's own names are touched: an edited marker cannot point
    outside ``output``.
    """
    parts = pathlib.PurePath(relative).parts
    if not parts or parts[0] not in _GENERATED or ".." in parts or os.path.isabs(relative):
        return
    target = os.path.join(output, relative)
    if os.path.isfile(target) or os.path.islink(target):
        os.remove(target)
    parent = os.path.dirname(relative)
    while parent:
        try:
            os.rmdir(os.path.join(output, parent))
        except OSError:  # not empty (other files), or already gone
            break
        parent = os.path.dirname(parent)
