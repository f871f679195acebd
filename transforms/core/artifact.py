"""The transform artifact: fitted steps written once, read back for every apply.

Layout under the artifact directory (a local path or ``gs://``, see
:mod:`transforms.core.files`)::

    transform.json                  steps, fitted parameters, schemas, sha256, versions
    vocabularies/{step}.txt         one vocabulary value per line, in id order

``transform.json`` is indented JSON meant to be read by people. Every fitted ``vocabulary``
list lives in its own text file and ``transform.json`` refers to it as
``{"file": "vocabularies/...", "size": n}``. In the text files a backslash is written ``\\\\``,
a line feed ``\\n`` and a carriage return ``\\r``, so every value round-trips.

``sha256`` is the hash of the canonical content (sorted-key compact JSON of everything but
the hash and the versions, with vocabularies inline): reading recomputes it, so an edited
``transform.json`` or vocabulary file, or a missing one, fails loudly. ``transform.json`` is
written last, so a directory without it holds no artifact. It holds no creation time (the
run's manifest has one): fitting the same data with the same code gives the same bytes.

Every file is strict JSON: a fitted statistic that has no finite value (a variance beyond
float64's range, a quantile of an empty column) is written as ``null``, and a non-finite
number in a step's parameters cannot be written at all. Reading refuses ``NaN`` and
``Infinity`` tokens, and names the file and the key when one is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as md
import json
import math
import platform
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from transforms.core import files
from transforms.core.config import SpecError
from transforms.core.dataset_folder import resolve_artifact_dir
from transforms.core.steps import BuildStep, Step

FORMAT_VERSION = 1
TRANSFORM_FILE = "transform.json"
VOCABULARY_DIR = "vocabularies"
VOCABULARY_KEY = "vocabulary"
# The ``fitted`` key under which a run through tf.Transform records its backend (a
# ``preprocessing_fn`` and its ``transform_fn`` SavedModel) instead of native steps' values.
PREPROCESSING_FN_KEY = "__preprocessing_fn"

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r"}


class ArtifactError(ValueError):
    """An artifact is missing, incomplete, modified or of an unknown format version."""


@dataclasses.dataclass
class Artifact:
    """Everything needed to replay preprocessing: steps, their fitted parameters, schemas.

    Attributes:
        pipeline: Name of the job that fitted it.
        steps: One :func:`~transforms.ops.registry.build_step` mapping per step, in order.
        fitted: Analyzer outputs by step name.
        input_schema: Raw column -> spec type name.
        output_columns: Dataset columns, in order.
        output_schema: Output column -> spec type name.
        format_version: Layout version of the files.
        allow_non_finite: Input float columns that accept NaN and infinities (the source's
            ``allow_non_finite``); serving rejects them in every other float column.
    """

    pipeline: str
    steps: list[dict[str, Any]]
    fitted: dict[str, dict[str, Any]]
    input_schema: dict[str, str]
    output_columns: list[str]
    output_schema: dict[str, str]
    format_version: int = FORMAT_VERSION
    allow_non_finite: list[str] = dataclasses.field(default_factory=list)

    def build_steps(self, build_step: BuildStep) -> list[Step]:
        """Builds the steps from their mappings.

        Args:
            build_step: Builds one step from its mapping (the ops registry's
                :func:`~transforms.ops.registry.build_step`).

        Raises:
            transforms.core.config.SpecError: if a mapping no longer builds (an unknown op or
                parameter in this version of the code).
        """
        return [build_step(mapping, f"artifact.steps[{i}]") for i, mapping in enumerate(self.steps)]

    def content(self) -> dict[str, Any]:
        """The hashed content: every field, vocabularies inline."""
        content = dataclasses.asdict(self)
        if not self.allow_non_finite:
            del content["allow_non_finite"]  # hashes as artifacts written before the field
        return content


# Keys transform.json must hold, with the JSON type of each.
_REQUIRED: dict[str, type] = {
    "format_version": int,
    "pipeline": str,
    "sha256": str,
    "steps": list,
    "fitted": dict,
    "input_schema": dict,
    "output_columns": list,
    "output_schema": dict,
}


def content_hash(artifact: Artifact) -> str:
    """Returns the sha256 hex digest of the artifact's canonical JSON.

    Raises:
        ValueError: if the content holds a non-finite number (strict JSON has none).
    """
    canonical = json.dumps(
        artifact.content(),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN and infinity (NumPy's too) replaced by None, recursively."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic | np.ndarray):
        return _finite_or_null(value.tolist())
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _non_finite_at(value: Any, where: str) -> str | None:
    """The path of the first non-finite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite_at(v, f"{where}.{k}")
            if found:
                return found
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _non_finite_at(v, f"{where}[{i}]")
            if found:
                return found
    return None


def _strict_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which is not a JSON number")


def escape_line(value: str) -> str:
    """Escapes a vocabulary value so it fits on one line."""
    return re.sub(r"[\\\n\r]", lambda m: _ESCAPES[m.group(0)], value)


def unescape_line(line: str) -> str:
    """Inverse of :func:`escape_line`."""
    return re.sub(r"\\[\\nr]", lambda m: _UNESCAPES[m.group(0)], line)


def _file_name(step_name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", step_name).strip(".") or "step"
    name, i = base, 1
    while name in used:
        i += 1
        name = f"{base}-{i}"
    used.add(name)
    return f"{VOCABULARY_DIR}/{name}.txt"


def _is_vocabulary(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape outputs, recorded with every run."""
    out = {"python": platform.python_version()}
    for dist in ("beamforge", "apache-beam", "pyarrow", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _write(path: str, text: str, mime_type: str) -> None:
    files.write_bytes(path, text.encode("utf-8"), mime_type)


def _read(path: str, what: str) -> str:
    data = files.read_bytes(path)
    if data is None:
        raise ArtifactError(f"{what} {path} is missing")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not UTF-8 text: {exc}") from None


def write_artifact(directory: str, artifact: Artifact) -> str:
    """Writes ``artifact`` under ``directory``; returns its content hash (sha256 hex).

    Fitted statistics without a finite value are written (and hashed) as null.

    Raises:
        ArtifactError: if a step's parameters hold a non-finite number (nothing written).
    """
    for i, step in enumerate(artifact.steps):
        found = _non_finite_at(step, f"steps[{i}]")
        if found:
            raise ArtifactError(
                f"cannot write {TRANSFORM_FILE}: {found} is not a finite number, and the "
                "artifact is strict JSON; give a finite value in the spec"
            )
    artifact = dataclasses.replace(artifact, fitted=_finite_or_null(artifact.fitted))
    digest = content_hash(artifact)
    used: set[str] = set()
    fitted: dict[str, dict[str, Any]] = {}
    for step_name, params in artifact.fitted.items():
        params = dict(params)
        vocabulary = params.get(VOCABULARY_KEY)
        if isinstance(vocabulary, list) and _is_vocabulary(vocabulary):
            relative = _file_name(step_name, used)
            text = "".join(escape_line(v) + "\n" for v in vocabulary)
            _write(files.join(directory, relative), text, "text/plain")
            params[VOCABULARY_KEY] = {"file": relative, "size": len(vocabulary)}
        fitted[step_name] = params
    document = {
        "format_version": artifact.format_version,
        "pipeline": artifact.pipeline,
        "sha256": digest,
        "versions": versions(),
        "input_schema": artifact.input_schema,
        "steps": artifact.steps,
        "fitted": fitted,
        "output_columns": artifact.output_columns,
        "output_schema": artifact.output_schema,
        "allow_non_finite": artifact.allow_non_finite,
    }
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _write(files.join(directory, TRANSFORM_FILE), text, "application/json")
    return digest


def read_artifact(directory: str, build_step: BuildStep) -> Artifact:
    """Reads and verifies the artifact under ``directory``.

    ``directory`` may be a dataset folder: its manifest names the artifact to read.

    Args:
        directory: The artifact directory, or a dataset folder.
        build_step: Builds one step from its mapping (the ops registry's
            :func:`~transforms.ops.registry.build_step`), to check that every step still
            builds and that its fitted parameters have every key its analyzer writes.

    Raises:
        ArtifactError: if ``transform.json`` or a vocabulary file is missing, is not strict
            JSON (or not UTF-8), lacks a key (the message names the file and the key), has
            a value of the wrong type, a vocabulary file's length disagrees with
            ``transform.json``, the format version is unknown, a step no longer builds, or
            the content does not hash to the recorded sha256 (the files were changed after
            they were written).
    """

    directory = resolve_artifact_dir(directory)
    path = files.join(directory, TRANSFORM_FILE)
    text = _read(path, "artifact file")
    try:
        document = json.loads(text, parse_constant=_strict_constant)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}; refit") from None
    except RecursionError:
        raise ArtifactError(f"{path} is not a transform artifact: it nests too deeply") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{path} is not a JSON object")
    version = document.get("format_version")
    if "format_version" in document and version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {version!r}; this code reads version {FORMAT_VERSION}"
        )
    for key, kind in _REQUIRED.items():
        if key not in document:
            raise ArtifactError(f"{path}: missing key {key!r}")
        if not isinstance(document[key], kind) or isinstance(document[key], bool):
            raise ArtifactError(
                f"{path}: {key!r} is {type(document[key]).__name__}; expected "
                f"{'an object' if kind is dict else 'a ' + kind.__name__}"
            )
    fitted: dict[str, dict[str, Any]] = {}
    for step_name, params in document["fitted"].items():
        if not isinstance(params, dict):
            raise ArtifactError(f"{path}: fitted[{step_name!r}] is not an object")
        params = dict(params)
        reference = params.get(VOCABULARY_KEY)
        if isinstance(reference, dict) and "file" in reference:
            if "size" not in reference:
                raise ArtifactError(
                    f"{path}: missing key fitted[{step_name!r}][{VOCABULARY_KEY!r}]['size']"
                )
            vocab_path = files.join(directory, reference["file"])
            text = _read(vocab_path, f"vocabulary file of step {step_name!r}")
            lines = text.split("\n")
            if lines[-1] != "":
                raise ArtifactError(f"{vocab_path} is truncated (no final line break)")
            values = [unescape_line(line) for line in lines[:-1]]
            if len(values) != reference["size"]:
                raise ArtifactError(
                    f"{vocab_path} has {len(values)} values but {TRANSFORM_FILE} records "
                    f"{reference['size']}; the artifact was modified after it was written"
                )
            params[VOCABULARY_KEY] = values
        fitted[step_name] = params
    _check_fitted(path, document["steps"], fitted, build_step)
    artifact = Artifact(
        pipeline=document["pipeline"],
        steps=document["steps"],
        fitted=fitted,
        input_schema=document["input_schema"],
        output_columns=document["output_columns"],
        output_schema=document["output_schema"],
        format_version=document["format_version"],
        allow_non_finite=list(document.get("allow_non_finite", [])),
    )
    recorded = document["sha256"]
    actual = content_hash(artifact)
    if recorded != actual:
        raise ArtifactError(
            f"artifact {directory} does not match its sha256: {TRANSFORM_FILE} records "
            f"{recorded} but the content hashes to {actual}; the files were modified after "
            "they were written (refit, or restore the original files)"
        )
    return artifact


def _check_fitted(
    path: str, steps: list[Any], fitted: Mapping[str, Any], build_step: BuildStep
) -> None:
    """Every fitted step has its parameters, with every key its analyzer writes.

    The expected keys are those of the analyzer's output on no data, so a key deleted from
    ``transform.json`` is named here rather than found missing in the middle of a run.
    """
    for i, mapping in enumerate(steps):
        try:
            step = build_step(mapping, f"steps[{i}]")
        except SpecError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        analyzer = step.analyzer()
        if analyzer is None:
            continue
        if step.name not in fitted:
            raise ArtifactError(f"{path}: missing key fitted[{step.name!r}]")
        expected = analyzer.extract_output(analyzer.create_accumulator())
        _check_keys(path, f"fitted[{step.name!r}]", expected, fitted[step.name])


def _check_keys(path: str, where: str, expected: Mapping[str, Any], actual: Any) -> None:
    if not isinstance(actual, Mapping):
        raise ArtifactError(f"{path}: {where} is {type(actual).__name__}; expected an object")
    for key, value in expected.items():
        if key not in actual:
            raise ArtifactError(f"{path}: missing key {where}[{key!r}]")
        if isinstance(value, Mapping):
            _check_keys(path, f"{where}[{key!r}]", value, actual[key])
