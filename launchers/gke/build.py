"""``beamforge serve build``: the serving image's build context and its Kubernetes manifests."""

from __future__ import annotations

import os
import shutil

import yaml

from launchers.chain.spec import ChainSpec
from launchers.gke.image import (
    APP_DIR,
    MODEL_DIR,
    dockerfile,
    project_root,
    requirement_pins,
    source_files,
)
from launchers.gke.manifests import manifests
from launchers.gke.settings import serving_settings
from transforms.core.config import SpecError

__all__ = ["K8S_DIR", "build_serving"]

K8S_DIR = "k8s"


def build_serving(spec: ChainSpec, *, output: str) -> list[str]:
    """Writes the serving image's build context and manifests for the chain's ``serving:``.

    ``output`` gets ``Dockerfile``, ``app/`` (the project's source), ``model/`` (for
    ``model: copy``) and ``k8s/`` (``serviceaccount.yaml``, ``deployment.yaml``,
    ``service.yaml``, ``hpa.yaml``). Everything is checked before anything is written; the
    ``app/``, ``model/`` and ``k8s/`` of an earlier build are replaced whole, so nothing stale
    ships. Other files in ``output`` are left alone.

    Args:
        spec: The validated chain.
        output: The directory to write (created if missing).

    Returns:
        The files written, sorted.

    Raises:
        SpecError: at ``serving.KEY`` for a section that cannot be served (see
            :func:`~launchers.gke.settings.serving_settings`), before anything is written.
    """
    serving = serving_settings(spec)
    try:
        root = project_root()
        sources = source_files(serving.predictor, root)
    except SpecError as exc:
        raise exc.located(spec.origin) from None
    texts = {"Dockerfile": dockerfile(serving, chain=spec.name, pins=requirement_pins())}
    for name, manifest in manifests(serving).items():
        texts[os.path.join(K8S_DIR, name)] = yaml.safe_dump(manifest, sort_keys=False)

    for owned in (APP_DIR, MODEL_DIR, K8S_DIR):
        shutil.rmtree(os.path.join(output, owned), ignore_errors=True)
    written = []
    for relative in sources:
        target = os.path.join(output, APP_DIR, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(root / relative, target)
        written.append(target)
    if serving.model_dir is not None:
        target = os.path.join(output, MODEL_DIR)
        shutil.copytree(
            serving.model_dir, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        for directory, _, names in os.walk(target):
            written.extend(os.path.join(directory, name) for name in names)
    for relative, text in texts.items():
        target = os.path.join(output, relative)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        written.append(target)
    return sorted(written)
