"""Where a run's rows went: the row ledger of its manifest and its dead letters' reasons.

Pure functions of the manifest's ``counts`` and ``steps`` and of error records
(:class:`transforms.core.errors.ErrorRecord` as dicts); nothing here reads a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

# Examples kept per reason: enough to see the pattern, few enough to read.
EXAMPLES_PER_REASON = 3


@dataclasses.dataclass(frozen=True)
class StepRow:
    """One step of the run: rows in, rejected, dropped on purpose, rows out."""

    step: str
    rows_in: int
    rejected: int
    dropped: int
    rows_out: int


@dataclasses.dataclass(frozen=True)
class ReasonRow:
    """Rows one step took out for one reason.

    Attributes:
        step: The step (``read`` for readers).
        outcome: ``rejected`` (sent to the dead letters) or ``dropped`` (on purpose:
            deduplication, filters).
        reason: The reason code.
        rows: How many rows.
    """

    step: str
    outcome: str
    reason: str
    rows: int


@dataclasses.dataclass(frozen=True)
class Ledger:
    """A run's rows: read = written + rejected + dropped.

    Attributes:
        read: Rows read.
        written: Rows written, by split.
        rejected: Rows sent to the dead letters.
        dropped: Rows dropped on purpose.
        steps: Each step's counts, in the order the run recorded them.
        reasons: Rejected and dropped rows by step and reason: steps in run order, then
            rejected before dropped, then most rows first.
    """

    read: int
    written: dict[str, int]
    rejected: int
    dropped: int
    steps: tuple[StepRow, ...]
    reasons: tuple[ReasonRow, ...]

    @property
    def total_written(self) -> int:
        """Rows written over all splits."""
        return sum(self.written.values())

    @property
    def balanced(self) -> bool:
        """Whether every row read is accounted for."""
        return self.read == self.total_written + self.rejected + self.dropped


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def ledger_of(manifest: Mapping[str, Any]) -> Ledger:
    """The row ledger of a dataset run's manifest (its ``counts`` and ``steps``)."""
    counts = manifest.get("counts") or {}
    steps = tuple(
        StepRow(
            step=str(s.get("step", "")),
            rows_in=_int(s.get("rows_in")),
            rejected=_int(s.get("rejected")),
            dropped=_int(s.get("dropped")),
            rows_out=_int(s.get("rows_out")),
        )
        for s in manifest.get("steps") or []
        if isinstance(s, dict)
    )
    order = {row.step: index for index, row in enumerate(steps)}
    reasons = [
        ReasonRow(step=str(step), outcome=outcome, reason=str(reason), rows=_int(rows))
        for outcome in ("rejected", "dropped")
        for step, by_reason in (counts.get(outcome) or {}).items()
        for reason, rows in (by_reason or {}).items()
    ]
    reasons.sort(
        key=lambda r: (order.get(r.step, len(order)), r.outcome != "rejected", -r.rows, r.reason)
    )
    written = counts.get("written") or {}
    return Ledger(
        read=_int(counts.get("read")),
        written={str(split): _int(rows) for split, rows in written.items()},
        rejected=_int(counts.get("total_rejected")),
        dropped=_int(counts.get("total_dropped")),
        steps=steps,
        reasons=tuple(reasons),
    )


@dataclasses.dataclass(frozen=True)
class ErrorExample:
    """One dead-letter record, as the report shows it."""

    source: str
    message: str
    payload: str


@dataclasses.dataclass(frozen=True)
class ErrorReason:
    """The dead-letter records of one step and reason: how many, and the first few."""

    step: str
    reason: str
    count: int
    examples: tuple[ErrorExample, ...]


@dataclasses.dataclass(frozen=True)
class ErrorSummary:
    """A run's dead-letter records by reason, most frequent first (ties by step, reason)."""

    total: int
    reasons: tuple[ErrorReason, ...]


def summarize_errors(
    records: Iterable[Mapping[str, Any]], *, examples: int = EXAMPLES_PER_REASON
) -> ErrorSummary:
    """Counts error records by (step, reason) and keeps the first ``examples`` of each.

    Args:
        records: Error records as dicts (:meth:`ErrorRecord.to_dict`), in file order.
        examples: How many records to keep per reason.
    """
    counts: dict[tuple[str, str], int] = {}
    kept: dict[tuple[str, str], list[ErrorExample]] = {}
    total = 0
    for record in records:
        total += 1
        key = (str(record.get("step", "")), str(record.get("reason", "")))
        counts[key] = counts.get(key, 0) + 1
        sample = kept.setdefault(key, [])
        if len(sample) < examples:
            sample.append(
                ErrorExample(
                    source=str(record.get("source", "")),
                    message=str(record.get("message", "")),
                    payload=str(record.get("payload", "")),
                )
            )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ErrorSummary(
        total=total,
        reasons=tuple(
            ErrorReason(step=step, reason=reason, count=n, examples=tuple(kept[(step, reason)]))
            for (step, reason), n in ranked
        ),
    )


__all__ = [
    "EXAMPLES_PER_REASON",
    "ErrorExample",
    "ErrorReason",
    "ErrorSummary",
    "Ledger",
    "ReasonRow",
    "StepRow",
    "ledger_of",
    "summarize_errors",
]
