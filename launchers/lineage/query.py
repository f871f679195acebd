"""Reading lineage: what a target is, the path back to its raw files, what a raw file made.

A target is a dataset (output folder, run folder or ``manifest.json``), a model (folder,
``gs://`` URI, ``local:`` name or Vertex AI model), an endpoint (the local server's URL or a
Vertex AI endpoint) or a raw file. Walking back follows, from each artifact, the execution
that wrote it (the latest, when the same content was written again) to what that execution
read, down to the raw files; walking forward follows every execution that read an artifact
to what it wrote.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from launchers.lineage.artifacts import location, raw_file, vertex_uri
from launchers.lineage.model import ARTIFACT_KINDS, INPUT, OUTPUT, Artifact, Execution, Graph
from launchers.lineage.store import LineageError, LineageStore

# The order kinds are listed in, from raw data to served model.
ORDER = list(ARTIFACT_KINDS)
_HEADINGS = {
    "raw_file": "raw files",
    "dataset": "datasets",
    "transform_artifact": "transform artifacts",
    "statistics": "statistics",
    "validation": "validation results",
    "model": "models",
    "endpoint": "endpoints",
}


@dataclasses.dataclass
class Node:
    """An artifact on the way back, with the execution that wrote it and what that read.

    Attributes:
        artifact: The artifact.
        execution: The execution that wrote it (None for a raw file or an unknown origin).
        inputs: What that execution read.
        repeated: The execution was already shown higher up (its inputs are not repeated).
    """

    artifact: Artifact
    execution: Execution | None = None
    inputs: list[Node] = dataclasses.field(default_factory=list)
    repeated: bool = False


def candidate_uris(target: str) -> list[str]:
    """The artifact URIs ``target`` may stand for, most specific first."""
    if target.startswith("projects/"):
        return [vertex_uri(target), target]
    if target.startswith(("http://", "https://")):
        stripped = target.rstrip("/")
        scheme, _, rest = stripped.partition("://")
        # A local server's predict or health URL names the server.
        return [stripped, f"{scheme}://{rest.split('/', 1)[0]}"]
    if target.startswith("local:"):
        return [target]
    uris = [location(target).rstrip("/") or "/"]
    dataset = _dataset_root(target)
    if dataset is not None:
        uris.insert(0, dataset)
    return uris


def _dataset_root(target: str) -> str | None:
    """The committed run folder a dataset path names (its output folder, its
    ``manifest.json`` or the run folder itself), or None if it names no dataset."""
    from transforms.core.dataset_folder import MANIFEST, resolve_dataset
    from transforms.core.errors import InputError

    folder = target.rstrip("/")
    if folder.endswith(MANIFEST):
        folder = folder[: -len(MANIFEST)].rstrip("/") or "."
    parent = folder.rsplit("/", 1)[0] if "/" in folder else "."
    for candidate in (folder, parent):
        try:
            found = resolve_dataset(candidate)
        except InputError:
            return None
        run = found[1].get("run") if found and isinstance(found[1], dict) else None
        root = run.get("root") if isinstance(run, dict) else None
        if not isinstance(root, str):
            continue
        # The parent's manifest names the committed run; an older run folder is not it.
        if candidate == folder or location(root) == location(folder):
            return location(root)
    return None


def resolve(store: LineageStore, target: str, where: str) -> Artifact:
    """The recorded artifact ``target`` names.

    A URI recorded with several contents (a raw file changed in place, a URL served by
    successive servers) stands for the content a local file has now when that was
    recorded, else the latest recorded.

    Raises:
        LineageError: if ``store`` (described by ``where``) has nothing for ``target``.
    """
    for uri in candidate_uris(target):
        found = store.find(uri)
        if not found:
            continue
        current = _current_fingerprint(uri) if any(a.kind == "raw_file" for a in found) else None
        same = [a for a in found if a.fingerprint == current]
        return max(same or found, key=lambda a: (a.created, ORDER.index(a.kind)))
    raise LineageError(f"{target}: no dataset, model, endpoint or raw file recorded in {where}")


def _current_fingerprint(uri: str) -> str | None:
    if "://" in uri or not os.path.isfile(uri):
        return None
    return raw_file(uri).fingerprint


def walk_back(graph: Graph, artifact: Artifact) -> Node:
    """The path from ``artifact`` back to the raw files it was made from."""
    shown: set[str] = set()

    def visit(a: Artifact) -> Node:
        producers = graph.producers(a.id)
        if not producers:
            return Node(a)
        execution = producers[0]
        if execution.id in shown:
            return Node(a, execution, repeated=True)
        shown.add(execution.id)
        read = sorted(graph.linked(execution.id, INPUT), key=lambda x: (ORDER.index(x.kind), x.uri))
        return Node(a, execution, [visit(x) for x in read])

    return visit(graph.artifacts.get(artifact.id, artifact))


def walk_forward(graph: Graph, artifact: Artifact) -> list[tuple[Artifact, Execution]]:
    """Everything made from ``artifact``, each with the execution that wrote it, in the
    order of :data:`ORDER` then URI."""
    made: dict[str, tuple[Artifact, Execution]] = {}
    pending = [artifact.id]
    done: set[str] = set()
    while pending:
        current = pending.pop()
        if current in done:
            continue
        done.add(current)
        for execution in graph.consumers(current):
            for out in graph.linked(execution.id, OUTPUT):
                made.setdefault(out.id, (out, execution))
                pending.append(out.id)
    return sorted(made.values(), key=lambda p: (ORDER.index(p[0].kind), p[0].uri, p[0].created))


def identity(artifact: Artifact) -> str:
    """What identifies an artifact, in a few words."""
    p = artifact.properties
    if artifact.kind == "raw_file":
        hashes = [f"{k} {p[k]}" for k in ("sha256", "md5", "crc32c", "generation") if k in p]
        return ", ".join([f"size {p.get('size')}", *hashes])
    if artifact.kind == "dataset":
        splits = ", ".join(
            f"{k.removeprefix('rows_')} {v}" for k, v in sorted(p.items()) if k.startswith("rows_")
        )
        return f"run {p.get('run_id')}, rows {p.get('rows')} ({splits})"
    if artifact.kind == "endpoint":
        if "resourceName" in p:
            return f"{p['resourceName']}, deployed model {p.get('deployed_model_id')}"
        return f"pid {p.get('pid')}"
    return artifact.fingerprint.replace(":", " ", 1)


def describe(artifact: Artifact) -> str:
    """One line: kind, URI and identity."""
    return f"{artifact.kind} {artifact.uri} [{identity(artifact)}]"


def format_back(node: Node, indent: str = "") -> list[str]:
    """The path back as indented lines."""
    lines = [indent + describe(node.artifact)]
    if node.execution is not None:
        note = " (shown above)" if node.repeated else ""
        lines.append(f"{indent}  <- {node.execution.kind} {node.execution.name}{note}")
        for child in node.inputs:
            lines.extend(format_back(child, indent + "     "))
    return lines


def format_forward(artifact: Artifact, made: list[tuple[Artifact, Execution]]) -> list[str]:
    """What a raw file made, grouped by kind."""
    lines = [describe(artifact)]
    if not made:
        lines.append("  nothing recorded was made from it")
    for kind in ORDER:
        group = [(a, x) for a, x in made if a.kind == kind]
        if group:
            lines.append(f"{_HEADINGS[kind]} made from it ({len(group)}):")
            lines.extend(f"  {describe(a)} <- {x.kind} {x.name}" for a, x in group)
    return lines


def artifact_json(artifact: Artifact) -> dict[str, Any]:
    """An artifact as JSON (its id in the store included)."""
    return dataclasses.asdict(artifact)


def back_json(node: Node) -> dict[str, Any]:
    """The path back as nested JSON: artifact, produced_by {execution, inputs}."""
    out: dict[str, Any] = {"artifact": artifact_json(node.artifact), "produced_by": None}
    if node.execution is not None:
        out["produced_by"] = {
            "execution": dataclasses.asdict(node.execution),
            "repeated": node.repeated,
            "inputs": [back_json(child) for child in node.inputs],
        }
    return out


def lineage(store: LineageStore, target: str, where: str) -> tuple[list[str], dict[str, Any]]:
    """The lineage of ``target``: text lines and JSON.

    Raw files are walked forward (what was made from them), anything else back.

    Raises:
        LineageError: if the store has nothing for ``target``.
    """
    artifact = resolve(store, target, where)
    graph = store.graph([artifact.id])
    if artifact.kind == "raw_file":
        made = walk_forward(graph, artifact)
        return format_forward(artifact, made), {
            "target": artifact_json(artifact),
            "direction": "forward",
            "made": [
                {"artifact": artifact_json(a), "execution": dataclasses.asdict(x)} for a, x in made
            ],
        }
    node = walk_back(graph, artifact)
    return format_back(node), {"target": artifact_json(artifact), "direction": "back"} | {
        "lineage": back_json(node)
    }
