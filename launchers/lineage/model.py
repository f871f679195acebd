"""What lineage records: artifacts, executions, the events linking them, and their kinds.

An artifact is identified by its kind, its URI and a fingerprint of its content (a hash, a
run id, a server's process): the same file read by two runs is one artifact, a file changed
in place is a new one. An execution (a dataset run, a training, an upload, a deployment)
reads input artifacts and writes output artifacts; the events say which is which. The kinds
map onto ML Metadata type names (the local SQLite store) and onto Vertex ML Metadata's
system schemas.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Literal

Value = str | int | float
INPUT: Literal["input"] = "input"
OUTPUT: Literal["output"] = "output"


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of artifact or execution.

    Attributes:
        name: The kind's name in beamforge (``raw_file``, ``train``, ...).
        mlmd_type: The ML Metadata type it is registered as.
        vertex_schema: The Vertex ML Metadata schema title it is created with.
        properties: The properties the ML Metadata type declares, with their types (any
            other property is stored as a custom property).
    """

    name: str
    mlmd_type: str
    vertex_schema: str
    properties: dict[str, type] = dataclasses.field(default_factory=dict)


ARTIFACT_KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "raw_file",
            "beamforge.RawFile",
            "system.Artifact",
            {"size": int, "sha256": str, "md5": str, "crc32c": str, "generation": str},
        ),
        Kind(
            "dataset",
            "beamforge.Dataset",
            "system.Dataset",
            {"run_id": str, "output": str, "manifest": str, "rows": int},
        ),
        Kind(
            "transform_artifact", "beamforge.TransformArtifact", "system.Artifact", {"sha256": str}
        ),
        Kind("statistics", "beamforge.Statistics", "system.Artifact", {"sha256": str, "size": int}),
        Kind("validation", "beamforge.Validation", "system.Artifact", {"sha256": str, "size": int}),
        Kind("model", "beamforge.Model", "system.Model", {"sha256": str, "registry": str}),
        Kind("endpoint", "beamforge.Endpoint", "google.VertexEndpoint", {"url": str}),
    )
}
# A model in the Vertex AI Model Registry is a google.VertexModel, as the Vertex SDK records it.
VERTEX_MODEL_SCHEMA = "google.VertexModel"

EXECUTION_KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("dataset_run", "beamforge.DatasetRun", "system.Run", {"run_id": str}),
        Kind("train", "beamforge.Train", "system.ContainerExecution", {"step": str}),
        Kind("upload", "beamforge.Upload", "system.ContainerExecution", {"step": str}),
        Kind("deploy", "beamforge.Deploy", "system.ContainerExecution", {"step": str}),
    )
}
# What executions are grouped under: a chain (``chain:NAME``) or a pipeline run by
# ``beamforge run`` (``pipeline:NAME``).
CONTEXT_TYPE = "beamforge.Pipeline"
CONTEXT_SCHEMA = "system.Pipeline"


@dataclasses.dataclass
class Artifact:
    """A file, folder or service that an execution read or wrote.

    Attributes:
        kind: One of :data:`ARTIFACT_KINDS`.
        uri: Where it is: an absolute local path, a ``gs://`` URI, a URL, a resource URI.
        fingerprint: What it holds (``sha256:...``, ``md5:...``, a run id, ...); with the
            kind and the URI, its identity.
        properties: What else identifies it (size, hashes, row counts, run id).
        id: Its id in the store it was read from ("" before it is stored).
        created: When the store recorded it (seconds since the epoch; 0 before).
    """

    kind: str
    uri: str
    fingerprint: str
    properties: dict[str, Value] = dataclasses.field(default_factory=dict)
    id: str = ""
    created: float = 0.0

    @property
    def key(self) -> str:
        """The identity of the artifact: one artifact per kind, URI and fingerprint."""
        text = "\0".join((self.kind, self.uri, self.fingerprint))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass
class Execution:
    """One run of a step: what it was and where it came from.

    Attributes:
        kind: One of :data:`EXECUTION_KINDS`.
        name: What people call it (``chicago_taxi/train``, the dataset run's id).
        properties: The chain, step, target, run id, metrics.
        id: Its id in the store it was read from.
        created: When the store recorded it (seconds since the epoch).
    """

    kind: str
    name: str
    properties: dict[str, Value] = dataclasses.field(default_factory=dict)
    id: str = ""
    created: float = 0.0


@dataclasses.dataclass(frozen=True)
class Event:
    """An execution read (``input``) or wrote (``output``) an artifact."""

    artifact: str
    execution: str
    type: Literal["input", "output"]


@dataclasses.dataclass
class Graph:
    """A connected part of the lineage: artifacts and executions by id, and their events."""

    artifacts: dict[str, Artifact] = dataclasses.field(default_factory=dict)
    executions: dict[str, Execution] = dataclasses.field(default_factory=dict)
    events: list[Event] = dataclasses.field(default_factory=list)

    def producers(self, artifact: str) -> list[Execution]:
        """The executions that wrote an artifact, latest first."""
        found = {
            e.execution
            for e in self.events
            if e.artifact == artifact and e.type == OUTPUT and e.execution in self.executions
        }
        return _latest_first([self.executions[i] for i in found])

    def consumers(self, artifact: str) -> list[Execution]:
        """The executions that read an artifact, latest first."""
        found = {
            e.execution
            for e in self.events
            if e.artifact == artifact and e.type == INPUT and e.execution in self.executions
        }
        return _latest_first([self.executions[i] for i in found])

    def linked(self, execution: str, type_: str) -> list[Artifact]:
        """The artifacts an execution read (``input``) or wrote (``output``), in stored order."""
        seen: list[str] = []
        for e in self.events:
            if e.execution == execution and e.type == type_ and e.artifact not in seen:
                seen.append(e.artifact)
        return [self.artifacts[i] for i in seen if i in self.artifacts]


def _latest_first(executions: list[Execution]) -> list[Execution]:
    return sorted(executions, key=lambda e: (e.created, _numeric(e.id)), reverse=True)


def _numeric(value: str) -> tuple[int, str]:
    tail = value.rsplit("/", 1)[-1]
    return (int(tail), "") if tail.isdigit() else (0, tail)
