"""Recording lineage when a step finishes: what it read and what it wrote.

A chain records into the store of its target: ML Metadata at ``{workdir}/metadata.sqlite``
on the local target, Vertex ML Metadata (the SDK as the gcp backend initialised it) on the
gcp target. ``beamforge run`` records into ``{output}/metadata.sqlite``. Recording happens
after the step's work is done, and a failure to record is a one-line warning: lineage never
costs a finished step.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from typing import Any

from launchers.lineage import artifacts
from launchers.lineage.model import Artifact, Execution, Value
from launchers.lineage.store import LineageStore

_LOG = logging.getLogger(__name__)
STORE_FILE = "metadata.sqlite"


def record_dataset_run(manifest: dict[str, Any], store_path: str) -> None:
    """Records a committed ``beamforge run``: the raw files it read, what it wrote.

    Never raises: a failure is logged as a one-line warning (the run has committed).

    Args:
        manifest: The run's manifest.
        store_path: The SQLite store (``{output}/metadata.sqlite``).
    """
    try:
        from launchers.lineage.sqlite_store import SqliteStore

        execution = _dataset_execution(manifest, {})
        store = SqliteStore(store_path)
        store.record(
            execution,
            artifacts.run_inputs(manifest),
            artifacts.run_outputs(manifest),
            context=f"pipeline:{manifest.get('pipeline', '')}",
        )
    except Exception as exc:
        _LOG.warning("lineage of run %s not recorded: %s", manifest.get("run", {}).get("id"), exc)


def chain_store(chain: Any, target: str) -> LineageStore:
    """The lineage store of a chain on a target."""
    if target == "gcp":
        from launchers.lineage.vertex_store import VertexStore

        return VertexStore(chain.gcp.project, chain.gcp.region)
    from launchers.lineage.sqlite_store import SqliteStore

    return SqliteStore(posixpath.join(chain.workdir, STORE_FILE))


def record_step(ctx: Any, step: Any, outputs: Mapping[str, Any]) -> None:
    """Records a finished chain step in the chain's store; never raises.

    Args:
        ctx: The step's :class:`~launchers.chain.backends.StepContext`.
        step: The step (dataset, train, upload or deploy; others record nothing).
        outputs: What the step returned.
    """
    try:
        found = step_lineage(ctx, step, outputs)
        if found is not None:
            execution, read, written = found
            store = chain_store(ctx.chain, ctx.target)
            store.record(execution, read, written, context=f"chain:{ctx.chain.name}")
    except Exception as exc:
        _LOG.warning("lineage of step %s not recorded: %s", step.name, exc)


def step_lineage(
    ctx: Any, step: Any, outputs: Mapping[str, Any]
) -> tuple[Execution, list[Artifact], list[Artifact]] | None:
    """A finished chain step's execution, with the artifacts it read and wrote."""
    from launchers.chain.handoff import read_manifest

    where: dict[str, Value] = {"chain": ctx.chain.name, "step": step.name, "target": ctx.target}
    if step.KIND == "dataset":
        manifest = read_manifest(str(outputs["root"]))
        return (
            _dataset_execution(manifest, where),
            artifacts.run_inputs(manifest),
            artifacts.run_outputs(manifest),
        )
    name = f"{ctx.chain.name}/{step.name}"
    if step.KIND == "train":
        dataset = ctx.inputs[step.dataset]
        read = [
            artifacts.dataset_of_step(dataset),
            artifacts.transform_artifact(dataset["artifact"], dataset["artifact_sha256"]),
        ]
        metrics: dict[str, Value] = {
            f"metric_{k}": v
            for k, v in dict(outputs.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if "job" in outputs:
            where["job"] = str(outputs["job"])
        return (
            Execution("train", name, where | metrics),
            read,
            [artifacts.model(str(outputs["model_dir"]))],
        )
    if step.KIND == "upload":
        trained = artifacts.model(str(outputs["model_dir"]))
        registered = artifacts.uploaded_model(outputs, trained)
        return Execution("upload", name, where), [trained], [registered]
    if step.KIND == "deploy":
        upload = ctx.inputs[step.model]
        registered = artifacts.uploaded_model(upload, artifacts.model(str(upload["model_dir"])))
        return Execution("deploy", name, where), [registered], [artifacts.endpoint(outputs)]
    return None


def _dataset_execution(manifest: Mapping[str, Any], where: dict[str, Value]) -> Execution:
    counts = manifest["counts"]
    props: dict[str, Value] = {
        "run_id": str(manifest["run"]["id"]),
        "pipeline": str(manifest.get("pipeline", "")),
        "spec": str(manifest.get("spec", {}).get("origin", "")),
        "spec_sha256": str(manifest.get("spec", {}).get("sha256", "")),
        "rows_read": int(counts["read"]),
        "rows_written": int(counts["total_written"]),
        "rows_rejected": int(counts["total_rejected"]),
    }
    return Execution("dataset_run", str(manifest["run"]["id"]), where | props)
