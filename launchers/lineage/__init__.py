"""Lineage: what every run and chain step read and wrote, in ML Metadata.

Artifacts (raw files, datasets, transform artifacts, statistics, validation results, models,
endpoints; :mod:`~launchers.lineage.model`) are identified by kind, URI and content
(:mod:`~launchers.lineage.artifacts`); executions (dataset runs, trainings, uploads,
deployments) link them. Two stores share one interface (:mod:`~launchers.lineage.store`):
ML Metadata on SQLite (``{workdir}/metadata.sqlite``, :mod:`~launchers.lineage.sqlite_store`)
and Vertex ML Metadata through the Vertex SDK (:mod:`~launchers.lineage.vertex_store`).
Steps record as they finish (:mod:`~launchers.lineage.record`); ``beamforge lineage`` reads
the path back from a dataset, model or endpoint to its raw files, or forward from a raw file
(:mod:`~launchers.lineage.query`).
"""

from __future__ import annotations

from launchers.lineage.model import (
    ARTIFACT_KINDS,
    EXECUTION_KINDS,
    Artifact,
    Event,
    Execution,
    Graph,
)
from launchers.lineage.query import Node, lineage, resolve, walk_back, walk_forward
from launchers.lineage.record import (
    STORE_FILE,
    chain_store,
    record_dataset_run,
    record_step,
    step_lineage,
)
from launchers.lineage.store import LineageError, LineageStore

__all__ = [
    "ARTIFACT_KINDS",
    "EXECUTION_KINDS",
    "STORE_FILE",
    "Artifact",
    "Event",
    "Execution",
    "Graph",
    "LineageError",
    "LineageStore",
    "Node",
    "chain_store",
    "lineage",
    "record_dataset_run",
    "record_step",
    "resolve",
    "step_lineage",
    "walk_back",
    "walk_forward",
]
