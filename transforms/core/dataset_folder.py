"""What a dataset folder's ``manifest.json`` says, read without Beam or a cloud client.

A dataset folder (see :mod:`transforms.io.commit`) holds ``manifest.json``, which names the
run whose files are the dataset and that run's transform artifact. Readers that only follow
the manifest (the serving :class:`~transforms.serving.preprocessor.Preprocessor`, an
``--artifact DATASET`` flag) use these functions; writing and committing stay in
:mod:`transforms.io`.
"""

from __future__ import annotations

import json
from typing import Any

from transforms.core import files
from transforms.core.errors import InputError

MANIFEST = "manifest.json"


def resolve_dataset(path: str) -> tuple[str, dict[str, Any]] | None:
    """The manifest of the dataset in folder ``path``, or None if it holds none.

    Returns:
        ``(manifest path, manifest)``.

    Raises:
        InputError: naming the manifest when it is not valid JSON.
    """
    manifest_path = files.join(path, MANIFEST)
    found = files.read_bytes(manifest_path)
    if found is None:
        return None
    try:
        manifest = json.loads(found.decode("utf-8"))
    except ValueError as exc:
        raise InputError(manifest_path, f"is not valid JSON ({exc})") from None
    return manifest_path, manifest


def resolve_artifact_dir(path: str) -> str:
    """The artifact folder ``path`` stands for.

    A dataset folder (one holding ``manifest.json``) stands for the artifact its manifest
    lists; any other path is an artifact folder itself.

    Raises:
        InputError: naming the manifest when it lists no artifact.
    """
    if files.is_remote(path) and not path.startswith("gs://"):
        return path
    found = resolve_dataset(path)
    if found is None:
        return path
    manifest_path, manifest = found
    artifact = manifest.get("artifact") if isinstance(manifest, dict) else None
    if not isinstance(artifact, dict) or not isinstance(artifact.get("path"), str):
        raise InputError(manifest_path, "names no artifact (key artifact.path is missing)")
    return str(artifact["path"])


def resolve_run(path: str) -> tuple[str, dict[str, Any]]:
    """The committed run ``path`` names: an output folder, its ``manifest.json``, or the
    run folder its manifest names.

    Returns:
        ``(manifest path, manifest)``.

    Raises:
        InputError: naming ``path`` when no manifest names it: a run that did not finish
            (or that a later run replaced), or not a dataset at all.
    """
    folder = path.rstrip("/")
    if folder.endswith("/" + MANIFEST) or folder == MANIFEST:
        folder = folder[: -len(MANIFEST)].rstrip("/") or "."
    found = resolve_dataset(folder)
    if found is not None:
        return found
    parent = folder.rsplit("/", 1)[0] if "/" in folder else "."
    found = resolve_dataset(parent)
    if found is not None:
        run = found[1].get("run") if isinstance(found[1], dict) else None
        root = run.get("root") if isinstance(run, dict) else None
        if isinstance(root, str) and root.rstrip("/").endswith(folder.rsplit("/", 1)[-1]):
            return found
        raise InputError(
            path,
            f"is not the committed run of {parent}: its manifest names "
            f"{root!r} (a run that did not finish, or one a later run replaced)",
        )
    if files.exists(folder):
        raise InputError(path, f"holds no {MANIFEST}: not a dataset, or a run that did not finish")
    raise InputError(path, "does not exist")
