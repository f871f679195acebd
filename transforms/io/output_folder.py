"""What an output folder holds, and the checks made on it before a run writes anything.

The layout (:mod:`transforms.io.commit` describes the protocol that keeps it)::

    manifest.json             the commit marker: names the run whose files are the dataset
    _lock.json                present while a run writes
    run-YYYYMMDDTHHMMSSZ-XXXXXXXX/
                              one folder per run; only the one manifest.json names is a dataset

This module names those files, reads the run a manifest names, refuses outputs and dead-letter
folders that would overlap a dataset, and finds the dataset or artifact a folder stands for.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets

from transforms.core.dataset_folder import MANIFEST, resolve_artifact_dir, resolve_dataset
from transforms.core.errors import InputError
from transforms.io.output_lock import parse_lock
from transforms.io.output_stores import is_gcs, join, store_for

__all__ = [
    "LOCK",
    "MANIFEST",
    "PARTIAL_WRITE",
    "RUN_DIR",
    "RUN_PREFIX",
    "check_errors_folder",
    "check_output",
    "enclosing_dataset",
    "manifest_run",
    "new_run_id",
    "resolve_artifact_dir",
    "resolve_dataset",
]

LOCK = "_lock.json"
RUN_PREFIX = "run-"
RUN_DIR = re.compile(r"run-\d{8}T\d{6}Z-[0-9a-f]{8}")
# What a killed write of the manifest or the lock leaves (a local store writes beside the
# file, then renames: transforms.io.output_stores).
PARTIAL_WRITE = re.compile(r"(manifest\.json|_lock\.json)\.tmp-[0-9a-f]{8}")
# The lineage store `beamforge run` keeps beside the runs (launchers.lineage: ML Metadata's
# SQLite file, and the journal SQLite may leave beside it).
LINEAGE_STORE = re.compile(r"metadata\.sqlite(-journal|-wal|-shm)?")
_GLOB_CHARS = set("*?[]{}")


def new_run_id(now: dt.datetime | None = None) -> str:
    """A run id: the UTC start time and 32 random bits, sortable by time."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{RUN_PREFIX}{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def manifest_run(data: bytes | None) -> str | None:
    """The run id a manifest's bytes name (None for no manifest or one without a run)."""
    if data is None:
        return None
    try:
        run = json.loads(data.decode("utf-8")).get("run", {})
    except (ValueError, AttributeError):
        return None
    found = run.get("id") if isinstance(run, dict) else None
    # Only a name this module makes: a manifest naming anything else (a path, "..") must
    # never lead a run to delete it.
    return found if isinstance(found, str) and RUN_DIR.fullmatch(found) else None


def enclosing_dataset(path: str) -> str | None:
    """The nearest folder above ``path`` that holds a dataset (a manifest or a lock)."""
    store = store_for(path)
    if is_gcs(path):
        from transforms.io.gcs import split_gcs_path

        bucket, name = split_gcs_path(path)
        parts = [p for p in name.split("/") if p]
        parents = [f"gs://{bucket}/" + "/".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)]
    else:
        here = os.path.abspath(path)
        parents = []
        while os.path.dirname(here) != here:
            here = os.path.dirname(here)
            parents.append(here)
    for parent in parents:
        manifest = store.read(join(parent, MANIFEST))
        lock = store.read(join(parent, LOCK))
        # Only beamforge's own files count: a manifest.json of anything else is not a dataset.
        if (manifest is not None and manifest_run(manifest[0]) is not None) or (
            lock is not None and parse_lock(lock[0]) is not None
        ):
            return parent
    return None


def check_errors_folder(errors: str, output: str) -> None:
    """Checks a dead-letter folder given apart from the output (the spec's ``errors.path``).

    Raises:
        InputError: if it is a file, lies inside the output or another dataset folder,
            holds a dataset itself, or cannot be created.
    """
    store = store_for(errors)
    if not is_gcs(errors):
        errors, output = os.path.abspath(errors), os.path.abspath(output)
        if os.path.exists(errors) and not os.path.isdir(errors):
            raise InputError(errors, "errors.path is a file; give a folder for the dead letters")
    inside = errors.rstrip("/") + "/"
    if inside.startswith(output.rstrip("/") + "/") or output.startswith(inside):
        raise InputError(
            errors,
            f"errors.path overlaps the output {output}; give a folder outside it (the default, "
            "a run's own errors/ folder, needs no errors.path)",
        )
    holder = enclosing_dataset(errors) or (
        errors if store.read(join(errors, MANIFEST)) or store.read(join(errors, LOCK)) else None
    )
    if holder is not None:
        raise InputError(errors, f"errors.path is inside the dataset folder {holder}")
    if not is_gcs(errors):
        try:
            os.makedirs(errors, exist_ok=True)
        except OSError as exc:
            raise InputError(errors, f"cannot create the errors folder: {exc.strerror}") from None
        if not os.access(errors, os.W_OK | os.X_OK):
            raise InputError(errors, "cannot write the errors folder (no permission)")


def check_output(root: str) -> None:
    """Checks that ``root`` can be a run's output folder before anything is written.

    Raises:
        InputError: if it is a file, or a folder holding anything but beamforge datasets.
    """
    store = store_for(root)
    if not is_gcs(root) and os.path.exists(root) and not os.path.isdir(root):
        raise InputError(root, "--output is a file; give a folder for the dataset")
    if _GLOB_CHARS & set(root):
        raise InputError(root, "an output path cannot hold any of * ? [ ] { }")
    holder = enclosing_dataset(root)
    if holder is not None:
        raise InputError(
            root,
            f"is inside the dataset folder {holder}, which its runs rewrite; give a folder "
            "outside it",
        )
    names = store.list_dir(root)
    foreign = [
        n
        for n in names
        if n not in (MANIFEST, LOCK)
        and not RUN_DIR.fullmatch(n)
        and not PARTIAL_WRITE.fullmatch(n)
        and not LINEAGE_STORE.fullmatch(n)
    ]
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(
            root,
            f"the output folder holds files that are not a beamforge dataset ({listed}); "
            "give an empty or new folder, or one a previous run wrote",
        )
    if MANIFEST in names:
        current = store.read(join(root, MANIFEST))
        if current is not None and manifest_run(current[0]) is None:
            raise InputError(
                join(root, MANIFEST),
                "is not a manifest this version of beamforge wrote (it names no run); "
                "remove the folder or give a new one",
            )
