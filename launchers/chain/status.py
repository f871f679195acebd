"""``beamforge chain status``: each step's status, recomputed without running anything."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launchers.chain.backends.local import LocalBackend
from launchers.chain.fingerprints import fingerprint
from launchers.chain.spec import ChainSpec, check_target
from launchers.chain.state import COMPLETED, FAILED, PENDING, STALE, StepState, load_state


@dataclasses.dataclass(frozen=True)
class StepStatus:
    """One line of ``beamforge chain status``."""

    name: str
    kind: str
    status: str
    finished: str
    runs: int
    detail: str


def chain_status(spec: ChainSpec, target: str = "local") -> list[StepStatus]:
    """Each step's status: completed, stale (its inputs changed since), failed or pending.

    Nothing is run and no cloud API is called; fingerprints are recomputed from the spec,
    the files and the recorded outputs. On the local target a completed step whose outputs
    are gone (a stopped server, a dataset rerun elsewhere, a deleted model) is stale too, as
    the next run would find it.
    """
    check_target(spec, target)
    state = load_state(spec.state_path(target), spec.name, target)
    # Only the local checks are cheap and offline; the gcp ones ask the cloud.
    still_valid = LocalBackend().still_valid if target == "local" else None
    out: list[StepStatus] = []
    previous = ""
    upstream_changed = False
    for step in spec.steps:
        refs = {getattr(step, f) for f in step.REFS}
        old = state.steps.get(step.name)
        if all(r in state.steps for r in refs):
            fp = fingerprint(step, target, previous, {r: state.steps[r] for r in refs})
        else:
            fp = "unknown"
        previous = f"{fp}:{old.runs if old else 0}"
        if old is None:
            upstream_changed = True
            out.append(StepStatus(step.name, step.KIND, PENDING, "", 0, ""))
            continue
        status = old.status
        # Whatever follows a step that will run again runs again too.
        if status == COMPLETED and (
            old.fingerprint != fp
            or upstream_changed
            or (still_valid is not None and not still_valid(step, old.outputs))
        ):
            status = STALE
        upstream_changed = upstream_changed or status != COMPLETED
        out.append(
            StepStatus(step.name, step.KIND, status, old.finished, old.runs, _detail(old, status))
        )
    return out


def _detail(state: StepState, status: str) -> str:
    if status == FAILED:
        return state.error.splitlines()[0] if state.error else ""
    o = state.outputs
    counts = o.get("counts")
    if isinstance(counts, dict) and isinstance(o.get("output"), str):
        # A predict step: what its committed manifest counted, and where it went.
        return (
            f"{counts.get('total_written', 0):,} predicted, "
            f"{counts.get('total_rejected', 0):,} rejected -> {o['output']}"
        )
    for key in ("predict_url", "endpoint", "model", "model_dir", "root"):
        if key in o and isinstance(o[key], str):
            return o[key]
    champion = o.get("champion")
    if isinstance(champion, dict):
        value = o["challenger"]["value"]
        return f"{o['metric']} = {value:.4g}, champion {champion['value']:.4g}"
    if isinstance(o.get("value"), int | float):
        return f"{o['metric']} = {o['value']:.4g}"
    return ""


def format_status(spec: ChainSpec, target: str, rows: Sequence[StepStatus]) -> str:
    """The status table, one line per step."""
    lines = [f"chain {spec.name} ({target}): state {spec.state_path(target)}"]
    for r in rows:
        when = r.finished or "-"
        lines.append(f"  {r.name:<12} {r.kind:<8} {r.status:<10} {when:<26} {r.detail}")
    return "\n".join(lines)
