"""Lineage in ML Metadata on SQLite: ``{workdir}/metadata.sqlite`` beside a chain's state.

The ``beamforge.*`` types are registered once per store object (registering an unchanged
type again is a no-op in ML Metadata). Each artifact carries its identity as its external
id, so ML Metadata itself reuses an artifact recorded before (a raw file two runs read is
one artifact); each execution is written with its artifacts, events and context in one
transaction (``put_execution``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Sequence
from typing import Any, Literal

from launchers.lineage.model import (
    ARTIFACT_KINDS,
    CONTEXT_TYPE,
    EXECUTION_KINDS,
    INPUT,
    OUTPUT,
    Artifact,
    Event,
    Execution,
    Graph,
    Value,
)
from launchers.lineage.store import LineageError

FINGERPRINT = "fingerprint"


class SqliteStore:
    """ML Metadata on a local SQLite file (created on first write)."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        """Opens the store at ``path``.

        Args:
            path: The SQLite file.
            create: Create the file (and its folder) when missing. Otherwise the store is
                opened read-only (for queries: nothing is written, not even the types),
                and a missing file or one that is not an ML Metadata store is a
                :class:`LineageError`.

        Raises:
            LineageError: ``path`` is not a local path, or ``create`` is false and there is
                no ML Metadata store at ``path``.
        """
        from ml_metadata.metadata_store import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        if "://" in path:
            raise LineageError(f"{path}: an ML Metadata SQLite store is a local file")

        # Generated protobuf classes are invisible to type checkers.
        pb: Any = metadata_store_pb2
        if not create:
            # ML Metadata creates its tables in any SQLite file it opens, even read-only
            # (then it fails); a query must leave the file as it was, so look first.
            _check_store(path)
        if create:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = path
        mode = pb.SqliteMetadataSourceConfig
        config.sqlite.connection_mode = mode.READWRITE_OPENCREATE if create else mode.READONLY
        self.path = path
        self._pb = pb
        self._create = create
        try:
            self._store = metadata_store.MetadataStore(config)
        except RuntimeError as exc:
            raise LineageError(f"{path}: not an ML Metadata store ({exc})") from exc
        self._types: dict[str, int] = {}
        self._kinds: dict[int, str] = {}

    def _register(self) -> None:
        """Registers the beamforge types (once per store object).

        A store opened for reading only looks the types up: a kind never recorded there
        has no type, and nothing of that kind is found.
        """
        if self._types:
            return
        if not self._create:
            self._lookup()
            return
        pb = self._pb
        for kind in ARTIFACT_KINDS.values():
            t = pb.ArtifactType(name=kind.mlmd_type)
            _declare(t, kind.properties, pb)
            self._remember(kind.name, self._store.put_artifact_type(t, can_add_fields=True))
        for kind in EXECUTION_KINDS.values():
            e = pb.ExecutionType(name=kind.mlmd_type)
            _declare(e, kind.properties, pb)
            self._remember(kind.name, self._store.put_execution_type(e, can_add_fields=True))
        context = pb.ContextType(name=CONTEXT_TYPE)
        self._types[CONTEXT_TYPE] = self._store.put_context_type(context, can_add_fields=True)

    def _lookup(self) -> None:
        """Reads the ids of the beamforge types already in the store (writes nothing)."""
        names = {kind.mlmd_type: kind.name for kind in ARTIFACT_KINDS.values()}
        names.update({kind.mlmd_type: kind.name for kind in EXECUTION_KINDS.values()})
        stored = [*self._store.get_artifact_types(), *self._store.get_execution_types()]
        for t in stored:
            if t.name in names:
                self._remember(names[t.name], t.id)
        for c in self._store.get_context_types():
            if c.name == CONTEXT_TYPE:
                self._types[CONTEXT_TYPE] = c.id

    def _remember(self, kind: str, type_id: int) -> None:
        self._types[kind] = type_id
        self._kinds[type_id] = kind

    def record(
        self,
        execution: Execution,
        inputs: Sequence[Artifact],
        outputs: Sequence[Artifact],
        *,
        context: str,
    ) -> str:
        """Stores the execution, its artifacts (reused when known), events and context."""
        self._register()
        pb = self._pb
        run = pb.Execution(type_id=self._types[execution.kind])
        run.last_known_state = pb.Execution.COMPLETE
        _set(
            run,
            {"name": execution.name, **execution.properties},
            EXECUTION_KINDS[execution.kind].properties,
        )
        pairs = []
        for artifacts, event_type in ((inputs, pb.Event.INPUT), (outputs, pb.Event.OUTPUT)):
            for artifact in artifacts:
                proto = pb.Artifact(
                    type_id=self._types[artifact.kind],
                    uri=artifact.uri,
                    external_id=f"{artifact.kind}:{artifact.key}",
                    state=pb.Artifact.LIVE,
                )
                declared = ARTIFACT_KINDS[artifact.kind].properties
                _set(proto, {FINGERPRINT: artifact.fingerprint, **artifact.properties}, declared)
                pairs.append((proto, pb.Event(type=event_type)))
        chain = pb.Context(type_id=self._types[CONTEXT_TYPE], name=context)
        execution_id, _, _ = self._store.put_execution(
            run,
            pairs,
            [chain],
            reuse_context_if_already_exist=True,
            reuse_artifact_if_already_exist_by_external_id=True,
        )
        return str(execution_id)

    def find(self, uri: str) -> list[Artifact]:
        """The beamforge artifacts stored with this URI."""
        self._register()
        return [
            self._artifact(a)
            for a in self._store.get_artifacts_by_uri(uri)
            if a.type_id in self._kinds
        ]

    def graph(self, artifact_ids: Sequence[str]) -> Graph:
        """The connected component of these artifacts (events followed both ways)."""
        self._register()
        pending = {int(i) for i in artifact_ids}
        seen_artifacts: set[int] = set()
        seen_executions: set[int] = set()
        events = []
        while pending:
            seen_artifacts |= pending
            found = self._store.get_events_by_artifact_ids(sorted(pending))
            new_executions = {e.execution_id for e in found} - seen_executions
            seen_executions |= new_executions
            pending = set()
            if new_executions:
                around = self._store.get_events_by_execution_ids(sorted(new_executions))
                events.extend(around)
                pending = {e.artifact_id for e in around} - seen_artifacts
        graph = Graph()
        if seen_artifacts:
            for a in self._store.get_artifacts_by_id(sorted(seen_artifacts)):
                if a.type_id in self._kinds:
                    graph.artifacts[str(a.id)] = self._artifact(a)
        if seen_executions:
            for e in self._store.get_executions_by_id(sorted(seen_executions)):
                if e.type_id in self._kinds:
                    graph.executions[str(e.id)] = self._execution(e)
        kinds: dict[int, Literal["input", "output"]] = {
            self._pb.Event.INPUT: INPUT,
            self._pb.Event.OUTPUT: OUTPUT,
        }
        unique = {(e.artifact_id, e.execution_id, e.type) for e in events if e.type in kinds}
        graph.events = [Event(str(a), str(x), kinds[t]) for a, x, t in sorted(unique)]
        return graph

    def _artifact(self, proto: Any) -> Artifact:
        props = _values(proto)
        fingerprint = str(props.pop(FINGERPRINT, ""))
        return Artifact(
            kind=self._kinds[proto.type_id],
            uri=proto.uri,
            fingerprint=fingerprint,
            properties=props,
            id=str(proto.id),
            created=proto.create_time_since_epoch / 1000.0,
        )

    def _execution(self, proto: Any) -> Execution:
        props = _values(proto)
        name = str(props.pop("name", ""))
        return Execution(
            kind=self._kinds[proto.type_id],
            name=name,
            properties=props,
            id=str(proto.id),
            created=proto.create_time_since_epoch / 1000.0,
        )


def _check_store(path: str) -> None:
    """Raises :class:`LineageError` unless ``path`` is an ML Metadata SQLite file.

    Opens the file read-only with SQLite itself, which never creates or changes it.
    """
    if not os.path.isfile(path):
        raise LineageError(f"{path}: no lineage store (metadata.sqlite) there")
    # ML Metadata keeps its schema version in MLMDEnv; every store it made has that table.
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'MLMDEnv'"
            ).fetchone()
    except sqlite3.Error as exc:
        raise LineageError(f"{path}: not an ML Metadata store ({exc})") from exc
    if found is None:
        what = "an empty file" if os.path.getsize(path) == 0 else "a SQLite file"
        raise LineageError(f"{path}: {what}, not an ML Metadata store (no MLMDEnv table)")


def _declare(message: Any, properties: dict[str, type], pb: Any) -> None:
    message.properties[FINGERPRINT] = pb.STRING
    for name, kind in properties.items():
        message.properties[name] = {int: pb.INT, float: pb.DOUBLE}.get(kind, pb.STRING)


def _set(message: Any, values: dict[str, Value], declared: dict[str, type]) -> None:
    for name, value in values.items():
        # Declared properties keep their declared type; the rest are custom properties.
        if name in declared or name == FINGERPRINT:
            target = message.properties[name]
            kind = declared.get(name, str)
        else:
            target = message.custom_properties[name]
            kind = type(value)
        if kind is int and not isinstance(value, bool):
            target.int_value = int(value)
        elif kind is float:
            target.double_value = float(value)
        else:
            target.string_value = str(value)


def _values(proto: Any) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for props in (proto.properties, proto.custom_properties):
        for name, value in props.items():
            which = value.WhichOneof("value")
            if which in ("int_value", "double_value", "string_value"):
                out[name] = getattr(value, which)
    return out
