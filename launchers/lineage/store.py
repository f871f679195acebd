"""The interface both lineage stores implement: record an execution, find, read a graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from launchers.lineage.model import Artifact, Execution, Graph


class LineageError(Exception):
    """Lineage cannot be read: no store, or nothing recorded for what was asked."""


class LineageStore(Protocol):
    """Where lineage is kept: ML Metadata on SQLite, or Vertex ML Metadata."""

    def record(
        self,
        execution: Execution,
        inputs: Sequence[Artifact],
        outputs: Sequence[Artifact],
        *,
        context: str,
    ) -> str:
        """Stores an execution with its input and output artifacts, in ``context``.

        An artifact already stored with the same kind, URI and fingerprint is reused.

        Returns:
            The execution's id.
        """
        ...

    def find(self, uri: str) -> list[Artifact]:
        """The stored artifacts with this URI (of any kind or fingerprint)."""
        ...

    def graph(self, artifact_ids: Sequence[str]) -> Graph:
        """Everything connected to these artifacts through events, in either direction."""
        ...
