"""The state file: what a chain on one target has done, written after every step.

The file is local or ``gs://``. A local file is replaced whole through a rename, and a GCS
object appears whole when its upload completes, so a chain killed at any point leaves either
the state before a step or the state after it, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

COMPLETED = "completed"
FAILED = "failed"
PENDING = "pending"
STALE = "stale"
STATE_VERSION = 1


@dataclasses.dataclass
class StepState:
    """What the state file knows about one step."""

    status: str
    fingerprint: str
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: str = ""
    finished: str = ""
    error: str = ""
    runs: int = 0


@dataclasses.dataclass
class ChainState:
    """The persisted state of a chain on one target."""

    chain: str
    target: str
    steps: dict[str, StepState] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """The state file's text (sorted keys, so unchanged state reads the same)."""
        return json.dumps(
            {
                "version": STATE_VERSION,
                "chain": self.chain,
                "target": self.target,
                "steps": {k: dataclasses.asdict(v) for k, v in self.steps.items()},
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ChainState:
        """The state read back from :meth:`to_json`'s text."""
        data = json.loads(text)
        return cls(
            chain=data["chain"],
            target=data["target"],
            steps={k: StepState(**v) for k, v in data["steps"].items()},
        )


def load_state(path: str, chain: str, target: str) -> ChainState:
    """The state at ``path`` (local or gs://), or a fresh one if there is none."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return ChainState(chain=chain, target=target)
    with FileSystems.open(path) as f:
        return ChainState.from_json(f.read().decode("utf-8"))


def save_state(path: str, state: ChainState) -> None:
    """Writes the state; locally through a temporary file and a rename (never half-written)."""
    from apache_beam.io.filesystems import FileSystems

    data = state.to_json().encode("utf-8")
    if "://" not in path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    # A GCS object appears whole when its upload completes.
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(data)
