"""Row accounting and the manifest: the commit marker of a dataset run.

A run is complete when ``manifest.json`` exists; it is written after everything else. It
records where every row went: rows read = rows written + rows rejected + rows dropped on
purpose. A run whose counts do not balance fails instead of writing a manifest.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transforms.core import files
from transforms.core.batch_steps import DROPPED, READ, REJECTED, WRITTEN

CountKey = tuple[str, str, str]


class CountsMismatchError(RuntimeError):
    """The counts of a run do not balance: some rows are unaccounted for.

    Raised by the launcher's checks and inside the pipeline alike; the CLI recognises it by
    its type (exit code 1), wherever it was raised.

    Attributes:
        message: What does not balance, naming the counts and where to look.
    """

    def __init__(self, message: str) -> None:
        # One argument, the whole message: Beam re-raises an exception from a DoFn as
        # ``type(exc)(message + step)``, so the copy keeps this type.
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # Beam pickles exceptions raised in workers back to the launcher.
        return (type(self), (self.message,))


def sum_counts(counters: Iterable[Mapping[CountKey, int]]) -> collections.Counter[CountKey]:
    """Adds up count Counters."""
    total: collections.Counter[CountKey] = collections.Counter()
    for c in counters:
        total.update(c)
    return total


def nest_counts(counts: Mapping[CountKey, int]) -> dict[str, Any]:
    """Turns (kind, step, reason) counts into the manifest's nested ``counts`` section."""
    out: dict[str, Any] = {"read": 0, "written": {}, "rejected": {}, "dropped": {}}
    for (kind, step, reason), n in sorted(counts.items()):
        if kind == READ:
            out["read"] += n
        elif kind == WRITTEN:
            out["written"][step] = out["written"].get(step, 0) + n
        elif kind in (REJECTED, DROPPED):
            out[kind].setdefault(step, {})
            out[kind][step][reason] = out[kind][step].get(reason, 0) + n
        else:
            raise ValueError(f"unknown count kind {kind!r}")
    for kind in (REJECTED, DROPPED):
        out[f"total_{kind}"] = sum(
            n for by_reason in out[kind].values() for n in by_reason.values()
        )
    out["total_written"] = sum(out["written"].values())
    return out


def check_balance(nested: Mapping[str, Any]) -> None:
    """Raises CountsMismatchError unless read == written + rejected + dropped."""
    read = nested["read"]
    accounted = nested["total_written"] + nested["total_rejected"] + nested["total_dropped"]
    if read != accounted:
        raise CountsMismatchError(
            f"row counts do not balance: read {read} but written {nested['total_written']} + "
            f"rejected {nested['total_rejected']} + dropped {nested['total_dropped']} = {accounted}"
        )


def step_table(step_names: Sequence[str], nested: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows in and out of every step, in order, derived from the counts.

    ``read`` comes first (malformed records are rejected there), then each step; ``rows_in``
    of a step is ``rows_out`` of the one before.
    """
    rows = nested["read"]
    table = []
    for name in ["read", *step_names]:
        rejected = sum(nested["rejected"].get(name, {}).values())
        dropped = sum(nested["dropped"].get(name, {}).values())
        out = rows - rejected - dropped
        table.append(
            {
                "step": name,
                "rows_in": rows,
                "rejected": rejected,
                "dropped": dropped,
                "rows_out": out,
            }
        )
        rows = out
    return table


def dumps(obj: Any) -> str:
    """Stable, readable, strict JSON for manifest, stats and artifact files.

    A number with no JSON form (NaN, an infinity, NumPy's included) is written as null, so
    the text parses with any strict JSON reader; NumPy scalars and arrays become JSON
    numbers and lists; any other object that JSON cannot hold is written as its ``str``.
    """
    import math

    import numpy as np

    def strict(value: Any) -> Any:
        if isinstance(value, np.generic | np.ndarray):
            value = value.tolist()
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, Mapping):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [strict(v) for v in value]
        return value

    text = json.dumps(
        strict(obj), indent=2, sort_keys=False, ensure_ascii=False, default=str, allow_nan=False
    )
    return text + "\n"


def write_text(path: str, text: str) -> None:
    """Writes a small text file (local or gs://) in one go."""
    files.write_bytes(path, text.encode("utf-8"), "application/json")
