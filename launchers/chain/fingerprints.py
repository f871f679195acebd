"""Step fingerprints: a step runs again when anything it depends on changed.

A step's fingerprint covers its configuration, the content of the files it reads (the dataset
spec and its inputs, the training code), the outputs of the steps it refers to and the
fingerprint of the step before it, so a changed input or spec invalidates that step and
everything downstream.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from launchers.chain.errors import ChainError
from launchers.chain.spec import DatasetStep, PredictStep, TrainStep
from launchers.chain.state import StepState


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprints(patterns: Sequence[str]) -> dict[str, str]:
    """Content hashes of local files (globs expanded); size and mtime of remote ones."""
    out: dict[str, str] = {}
    for pattern in patterns:
        if "://" in pattern:
            from apache_beam.io.filesystems import FileSystems

            for match in FileSystems.match([pattern]):
                for meta in match.metadata_list:
                    out[meta.path] = f"{meta.size_in_bytes}:{meta.last_updated_in_seconds}"
            continue
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in paths:
            out[path] = _sha256_file(path) if os.path.isfile(path) else "missing"
    return out


def _code_files(step: TrainStep) -> list[str]:
    """The trainer's source: the script, or every .py file beside the module."""
    if step.script:
        return [step.script]
    assert step.module is not None
    # The trainer runs with the working directory on its path: look there first.
    local = os.path.join(*step.module.split("."))
    if os.path.isfile(local + ".py"):
        folder = os.path.dirname(local) or "."
    elif os.path.isfile(os.path.join(local, "__main__.py")):
        folder = local
    else:
        try:
            found = importlib.util.find_spec(step.module)
        except ModuleNotFoundError:
            found = None
        if found is None or not found.origin:
            raise ChainError(step.name, f"module {step.module!r} cannot be found")
        folder = os.path.dirname(found.origin)
    return sorted(glob.glob(os.path.join(folder, "*.py")))


def _config(step: Any) -> dict[str, Any]:
    return {"kind": step.KIND, **dataclasses.asdict(step)}


def fingerprint(step: Any, target: str, previous: str, referenced: Mapping[str, StepState]) -> str:
    """The fingerprint of a step's inputs.

    Args:
        step: The step.
        target: ``local`` or ``gcp``.
        previous: The fingerprint of the step before it ('' for the first).
        referenced: The states of the steps it refers to (their outputs count).
    """
    files: dict[str, str] = {}
    if isinstance(step, DatasetStep):
        files = file_fingerprints([step.spec, *step.inputs])
    elif isinstance(step, TrainStep):
        files = file_fingerprints(_code_files(step))
    elif isinstance(step, PredictStep):
        # New rows in the same files are new work. A BigQuery table is not read here: its
        # rows changing does not make the step run again (change the step to rescore).
        files = file_fingerprints([i for i in step.inputs if not i.startswith("bq://")])
    document = {
        "config": _config(step),
        "target": target,
        "previous": previous,
        "files": files,
        "referenced": {k: v.outputs for k, v in sorted(referenced.items())},
    }
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
