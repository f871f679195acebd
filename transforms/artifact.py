"""The transform artifact: fitted steps written once, read back for every apply.

Layout under the artifact directory (a local path or ``gs://``, through Beam's
``FileSystems``)::

    transform.json                  steps, fitted parameters, schemas, sha256, versions
    vocabularies/{step}.txt         one vocabulary value per line, in id order

``transform.json`` is indented JSON meant to be read by people. Every fitted ``vocabulary``
list lives in its own text file and ``transform.json`` refers to it as
``{"file": "vocabularies/...", "size": n}``. In the text files a backslash is written ``\\\\``,
a line feed ``\\n`` and a carriage return ``\\r``, so every value round-trips.

``sha256`` is the hash of the canonical content (sorted-key compact JSON of everything but
the hash, the creation time and the versions, with vocabularies inline): reading recomputes
it, so an edited ``transform.json`` or vocabulary file, or a missing one, fails loudly.
``transform.json`` is written last, so a directory without it holds no artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as md
import json
import platform
import re
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.errors import utc_now_iso
from transforms.steps import Step, build_step

FORMAT_VERSION = 1
TRANSFORM_FILE = "transform.json"
VOCABULARY_DIR = "vocabularies"
VOCABULARY_KEY = "vocabulary"

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r"}


class ArtifactError(ValueError):
    """An artifact is missing, incomplete, modified or of an unknown format version."""


@dataclasses.dataclass
class Artifact:
    """Everything needed to replay preprocessing: steps, their fitted parameters, schemas.

    Attributes:
        pipeline: Name of the job that fitted it.
        steps: One :func:`~transforms.steps.build_step` mapping per step, in order.
        fitted: Analyzer outputs by step name.
        input_schema: Raw column -> spec type name.
        output_columns: Dataset columns, in order.
        output_schema: Output column -> spec type name.
        format_version: Layout version of the files.
    """

    pipeline: str
    steps: list[dict[str, Any]]
    fitted: dict[str, dict[str, Any]]
    input_schema: dict[str, str]
    output_columns: list[str]
    output_schema: dict[str, str]
    format_version: int = FORMAT_VERSION

    def build_steps(self) -> list[Step]:
        """Builds the steps from their mappings.

        Raises:
            transforms.config.SpecError: if a mapping no longer builds (an unknown op or
                parameter in this version of the code).
        """
        return [build_step(mapping, f"artifact.steps[{i}]") for i, mapping in enumerate(self.steps)]

    def content(self) -> dict[str, Any]:
        """The hashed content: every field, vocabularies inline."""
        return dataclasses.asdict(self)


def content_hash(artifact: Artifact) -> str:
    """Returns the sha256 hex digest of the artifact's canonical JSON."""
    canonical = json.dumps(
        artifact.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
    with FileSystems.create(
        path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        f.write(text.encode("utf-8"))


def _read(path: str, what: str) -> str:
    if not FileSystems.exists(path):
        raise ArtifactError(f"{what} {path} is missing")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data: bytes = f.read()
    return data.decode("utf-8")


def write_artifact(directory: str, artifact: Artifact) -> str:
    """Writes ``artifact`` under ``directory``; returns its content hash (sha256 hex)."""
    digest = content_hash(artifact)
    used: set[str] = set()
    fitted: dict[str, dict[str, Any]] = {}
    for step_name, params in artifact.fitted.items():
        params = dict(params)
        vocabulary = params.get(VOCABULARY_KEY)
        if isinstance(vocabulary, list) and _is_vocabulary(vocabulary):
            relative = _file_name(step_name, used)
            text = "".join(escape_line(v) + "\n" for v in vocabulary)
            _write(FileSystems.join(directory, relative), text, "text/plain")
            params[VOCABULARY_KEY] = {"file": relative, "size": len(vocabulary)}
        fitted[step_name] = params
    document = {
        "format_version": artifact.format_version,
        "pipeline": artifact.pipeline,
        "sha256": digest,
        "created_at": utc_now_iso(),
        "versions": versions(),
        "input_schema": artifact.input_schema,
        "steps": artifact.steps,
        "fitted": fitted,
        "output_columns": artifact.output_columns,
        "output_schema": artifact.output_schema,
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    _write(FileSystems.join(directory, TRANSFORM_FILE), text, "application/json")
    return digest


def read_artifact(directory: str) -> Artifact:
    """Reads and verifies the artifact under ``directory``.

    ``directory`` may be a dataset folder: its manifest names the artifact to read.

    Raises:
        ArtifactError: if ``transform.json`` or a vocabulary file is missing, a vocabulary
            file's length disagrees with ``transform.json``, the format version is unknown,
            or the content does not hash to the recorded sha256 (the files were changed
            after they were written).
    """
    from transforms.commit import resolve_artifact_dir

    directory = resolve_artifact_dir(directory)
    path = FileSystems.join(directory, TRANSFORM_FILE)
    try:
        document = json.loads(_read(path, "artifact file"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {version!r}; this code reads version {FORMAT_VERSION}"
        )
    fitted: dict[str, dict[str, Any]] = {}
    for step_name, params in document["fitted"].items():
        params = dict(params)
        reference = params.get(VOCABULARY_KEY)
        if isinstance(reference, dict) and "file" in reference:
            vocab_path = FileSystems.join(directory, reference["file"])
            text = _read(vocab_path, f"vocabulary file of step {step_name!r}")
            lines = text.split("\n")
            if lines[-1] != "":
                raise ArtifactError(f"{vocab_path} is truncated (no final line break)")
            values = [unescape_line(line) for line in lines[:-1]]
            if len(values) != reference.get("size"):
                raise ArtifactError(
                    f"{vocab_path} has {len(values)} values but {TRANSFORM_FILE} records "
                    f"{reference.get('size')}; the artifact was modified after it was written"
                )
            params[VOCABULARY_KEY] = values
        fitted[step_name] = params
    artifact = Artifact(
        pipeline=document["pipeline"],
        steps=document["steps"],
        fitted=fitted,
        input_schema=document["input_schema"],
        output_columns=document["output_columns"],
        output_schema=document["output_schema"],
        format_version=version,
    )
    recorded = document.get("sha256")
    actual = content_hash(artifact)
    if recorded != actual:
        raise ArtifactError(
            f"artifact {directory} does not match its sha256: {TRANSFORM_FILE} records "
            f"{recorded} but the content hashes to {actual}; the files were modified after "
            "they were written (refit, or restore the original files)"
        )
    return artifact
