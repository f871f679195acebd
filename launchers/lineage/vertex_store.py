"""Lineage in Vertex ML Metadata (metadata store ``default``) through the Vertex SDK.

Artifacts get the system schemas Vertex AI's console understands (``system.Dataset``,
``system.Model``, ``google.VertexModel``, ``google.VertexEndpoint``, ``system.Artifact``);
their beamforge kind and fingerprint are kept in their metadata. An artifact's resource id is
derived from its identity, so recording a known artifact again finds it instead of making a
second one. The SDK must be initialised first (:func:`launchers.vertex.init`), as the gcp
backend does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from launchers.lineage.model import (
    ARTIFACT_KINDS,
    CONTEXT_SCHEMA,
    EXECUTION_KINDS,
    INPUT,
    OUTPUT,
    VERTEX_MODEL_SCHEMA,
    Artifact,
    Event,
    Execution,
    Graph,
    Value,
)

KIND = "beamforge_kind"
FINGERPRINT = "fingerprint"
# Vertex's Event.Type: INPUT = 1, OUTPUT = 2.
_EVENT_TYPES: dict[int, Literal["input", "output"]] = {1: INPUT, 2: OUTPUT}
# Artifacts other tools wrote (no beamforge kind in their metadata) by their schema.
_SCHEMA_KINDS = {
    "system.Dataset": "dataset",
    "system.Model": "model",
    VERTEX_MODEL_SCHEMA: "model",
    "google.VertexEndpoint": "endpoint",
}


class VertexStore:
    """Vertex ML Metadata in one project and region."""

    def __init__(self, project: str, location: str, *, store: str = "default") -> None:
        import logging

        # Imported first: the SDK sets its loggers up on import.
        from google.cloud.aiplatform.metadata import resource  # noqa: F401

        self.project = project
        self.location = location
        self.store = store
        # The SDK objects of artifacts found by URI: their clients query the lineage.
        self._found: dict[str, Any] = {}
        # The SDK logs "Resource ... not found." and "Creating Resource" at INFO (on stdout)
        # for every new artifact: for a get-or-create that is the expected path, not news.
        logging.getLogger("google.cloud.aiplatform.metadata.resource").setLevel(logging.WARNING)

    def _where(self) -> dict[str, Any]:
        from google.cloud.aiplatform import initializer

        # Execution.create's default for credentials is a typing object, not None: the
        # initialised credentials are passed to every call.
        return {
            "project": self.project,
            "location": self.location,
            "metadata_store_id": self.store,
            "credentials": initializer.global_config.credentials,
        }

    def record(
        self,
        execution: Execution,
        inputs: Sequence[Artifact],
        outputs: Sequence[Artifact],
        *,
        context: str,
    ) -> str:
        """Creates the execution and its events; artifacts are found or created."""
        from google.cloud import aiplatform
        from google.cloud.aiplatform_v1.types import Execution as GcaExecution

        read = [self._artifact_resource(a) for a in inputs]
        written = [self._artifact_resource(a) for a in outputs]
        run = aiplatform.Execution.create(
            schema_title=EXECUTION_KINDS[execution.kind].vertex_schema,
            display_name=execution.name,
            metadata={KIND: execution.kind, **execution.properties},
            state=GcaExecution.State.COMPLETE,
            **self._where(),
        )
        if read:
            run.assign_input_artifacts(read)
        if written:
            run.assign_output_artifacts(written)
        group: Any = aiplatform.Context.get_or_create(
            resource_id=_resource_id("chain", context),
            schema_title=CONTEXT_SCHEMA,
            display_name=context,
            **self._where(),
        )
        group.add_artifacts_and_executions(
            artifact_resource_names=[a.resource_name for a in read + written],
            execution_resource_names=[run.resource_name],
        )
        return str(run.resource_name)

    def _artifact_resource(self, artifact: Artifact) -> Any:
        """The artifact's resource: found by its identity's resource id, else created."""
        from google.api_core import exceptions
        from google.cloud import aiplatform

        schema = ARTIFACT_KINDS[artifact.kind].vertex_schema
        if artifact.kind == "model" and artifact.properties.get("registry") == "vertex":
            schema = VERTEX_MODEL_SCHEMA
        resource_id = _resource_id(artifact.kind, artifact.key)
        found = aiplatform.Artifact.get(resource_id, **self._where())
        if found is not None:
            return found
        try:
            return aiplatform.Artifact.create(
                schema_title=schema,
                resource_id=resource_id,
                uri=artifact.uri,
                display_name=artifact.uri.rstrip("/").rsplit("/", 1)[-1][:128],
                metadata={
                    KIND: artifact.kind,
                    FINGERPRINT: artifact.fingerprint,
                    **artifact.properties,
                },
                **self._where(),
            )
        except exceptions.AlreadyExists:
            # Another run recorded the same artifact in between.
            return aiplatform.Artifact.get(resource_id, **self._where())

    def find(self, uri: str) -> list[Artifact]:
        """The artifacts with this URI in the metadata store."""
        from google.cloud import aiplatform

        escaped = uri.replace("\\", "\\\\").replace('"', '\\"')
        found = aiplatform.Artifact.list(filter=f'uri="{escaped}"', **self._where())
        self._found |= {r.resource_name: r for r in found}
        return [a for a in (_artifact(r.gca_resource) for r in found) if a is not None]

    def graph(self, artifact_ids: Sequence[str]) -> Graph:
        """The lineage subgraphs of these artifacts (Vertex's transitive closure), merged."""
        from google.cloud import aiplatform

        graph = Graph()
        events: set[Event] = set()
        for name in artifact_ids:
            if name in graph.artifacts:
                continue
            resource = self._found.get(name) or aiplatform.Artifact(name, **self._where())
            sub = resource.api_client.query_artifact_lineage_subgraph(artifact=name)
            for a in sub.artifacts:
                converted = _artifact(a)
                if converted is not None:
                    graph.artifacts[a.name] = converted
            for e in sub.executions:
                graph.executions[e.name] = _execution(e)
            for ev in sub.events:
                kind = _EVENT_TYPES.get(int(ev.type_))
                if kind is not None:
                    events.add(Event(ev.artifact, ev.execution, kind))
        graph.events = sorted(events, key=lambda e: (e.execution, e.type, e.artifact))
        return graph


def _resource_id(prefix: str, text: str) -> str:
    """A metadata resource id (``[a-z0-9][a-z0-9-]{0,127}``) from a prefix and any text."""
    import hashlib

    slug = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    return f"{slug}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:40]}"


def _plain(metadata: Any) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for key, value in dict(metadata or {}).items():
        # Struct numbers are doubles: whole numbers come back as the ints they were.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str | int | float):
            out[str(key)] = value
    return out


def _created(resource: Any) -> float:
    stamp = getattr(resource, "create_time", None)
    return stamp.timestamp() if stamp else 0.0


def _artifact(resource: Any) -> Artifact | None:
    props = _plain(resource.metadata)
    kind = str(props.pop(KIND, "")) or _SCHEMA_KINDS.get(resource.schema_title, "")
    if kind not in ARTIFACT_KINDS:
        return None
    return Artifact(
        kind=kind,
        uri=resource.uri,
        fingerprint=str(props.pop(FINGERPRINT, "")),
        properties=props,
        id=resource.name,
        created=_created(resource),
    )


def _execution(resource: Any) -> Execution:
    props = _plain(resource.metadata)
    kind = str(props.pop(KIND, "")) or resource.schema_title
    return Execution(
        kind=kind,
        name=resource.display_name,
        properties=props,
        id=resource.name,
        created=_created(resource),
    )
