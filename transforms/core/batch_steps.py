"""Runs a list of steps over one batch, accounting for every row.

This is the pure core that batch pipelines, streaming pipelines and the serving
:class:`~transforms.serving.preprocessor.Preprocessor` share. It applies steps in order, removes
the rows each step refuses, turns rejections into :class:`~transforms.core.errors.ErrorRecord`s
carrying the row as it was read, and counts everything.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms.core.errors import ErrorRecord, row_payload
from transforms.core.schema import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN
from transforms.core.steps import Fitted, Rejection, Step

# Count keys are (kind, step, reason) triples; kinds are below. The manifest nests them.
READ = "read"
REJECTED = "rejected"
DROPPED = "dropped"
WRITTEN = "written"

Counts = collections.Counter  # Counter[tuple[str, str, str]]


@dataclasses.dataclass
class Applied:
    """Result of :func:`apply_steps` on one batch."""

    batch: pa.RecordBatch
    errors: list[ErrorRecord]
    counts: collections.Counter[tuple[str, str, str]]


def row_source(batch: pa.RecordBatch, index: int) -> str:
    """Returns ``path:line`` for a row of a batch that carries the hidden source columns."""
    names = batch.schema.names
    if FILE_COLUMN not in names:
        return ""
    path = batch.column(names.index(FILE_COLUMN))[index].as_py()
    line = batch.column(names.index(LINE_COLUMN))[index].as_py() if LINE_COLUMN in names else None
    return f"{path}:{line}" if line is not None else str(path)


def visible_row(batch: pa.RecordBatch, index: int) -> dict:
    """Returns one row as a dict without hidden columns."""
    row = batch.slice(index, 1).to_pylist()[0]
    return {k: v for k, v in row.items() if not k.startswith(HIDDEN_PREFIX)}


def _messages(rejection: Rejection, rows: np.ndarray) -> list[str]:
    if isinstance(rejection.message, str):
        return [rejection.message] * len(rows)
    return [str(m) for m in np.asarray(rejection.message, dtype=object)[rows]]


def apply_steps(
    batch: pa.RecordBatch,
    steps: Sequence[Step],
    fitted: Mapping[str, Fitted],
    *,
    pipeline: str,
    record_errors: bool = True,
) -> Applied:
    """Applies ``steps`` in order to ``batch``.

    Args:
        batch: Rows as read (may carry the hidden ``__file``/``__line`` columns, which are
            used for error sources and passed through).
        steps: Non-barrier steps, in spec order.
        fitted: Analyzer outputs by step name, for every fitted step in ``steps``.
        pipeline: Job name recorded in error records.
        record_errors: False skips building error records (fit passes only need the rows
            that survive); counts are kept either way.

    Returns:
        The surviving rows, one error record per rejected row (payload: the row as read),
        and counts of rejected and dropped rows by (kind, step, reason).

    Raises:
        ValueError: if a step returns a batch of the wrong length or a fitted step has no
            fitted parameters (both are code errors, not data errors).
    """
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    errors: list[ErrorRecord] = []
    raw = batch
    rows = np.arange(batch.num_rows)
    current = batch
    for step in steps:
        if step.is_barrier:
            raise ValueError(f"step {step.name!r} regroups the data set and cannot run per batch")
        params = fitted.get(step.name)
        if params is None and step.analyzer() is not None:
            raise ValueError(f"step {step.name!r} needs fitted parameters; none were given")
        result = step.apply(current, params)
        if result.batch.num_rows != current.num_rows:
            raise ValueError(
                f"step {step.name!r} returned {result.batch.num_rows} rows for {current.num_rows}"
            )
        refused = np.zeros(current.num_rows, dtype=bool)
        for kind, outcomes in ((REJECTED, result.rejections), (DROPPED, result.drops)):
            for outcome in outcomes:
                mask = np.asarray(outcome.mask, dtype=bool) & ~refused
                hit = np.flatnonzero(mask)
                if not len(hit):
                    continue
                refused |= mask
                counts[(kind, step.name, outcome.reason)] += len(hit)
                if kind == REJECTED and record_errors:
                    for local, message in zip(hit, _messages(outcome, hit), strict=True):
                        original = int(rows[local])
                        errors.append(
                            ErrorRecord(
                                pipeline=pipeline,
                                step=step.name,
                                reason=outcome.reason,
                                message=message,
                                payload=row_payload(visible_row(raw, original)),
                                source=row_source(raw, original),
                            )
                        )
        current = result.batch
        if refused.any():
            keep = ~refused
            current = current.filter(pa.array(keep))
            rows = rows[keep]
    return Applied(current, errors, counts)


def segments(steps: Sequence[Step]) -> list[tuple[list[Step], Step | None]]:
    """Splits steps at barrier steps: ``[(per_batch_steps, barrier_or_None), ...]``."""
    out: list[tuple[list[Step], Step | None]] = []
    current: list[Step] = []
    for step in steps:
        if step.is_barrier:
            out.append((current, step))
            current = []
        else:
            current.append(step)
    out.append((current, None))
    return out


def fit_groups(steps: Sequence[Step]) -> list[list[str]]:
    """Groups the fitted steps of one segment into passes over the data.

    Fitted steps share a pass unless one reads a column whose value depends on another
    fitted step of the same pass (directly, or through static steps in between), or a static
    step that reads such a column could change which rows the later one sees. Within a pass,
    each fitted step sees the batch exactly as the full apply would give it, so statistics
    are exact.

    Returns:
        Step names per pass, in order.
    """
    groups: list[list[str]] = []
    current: list[str] = []
    tainted: set[str] = set()
    dirty = False
    for step in steps:
        reads = set(step.input_columns())
        if step.analyzer() is not None:
            if current and (reads & tainted or dirty):
                groups.append(current)
                current, tainted, dirty = [], set(), False
            current.append(step.name)
            tainted |= set(step.output_columns())
        elif reads & tainted:
            tainted |= set(step.output_columns())
            dirty = True
    if current:
        groups.append(current)
    return groups


def fit_inputs(
    batch: pa.RecordBatch,
    steps: Sequence[Step],
    fitted: Mapping[str, Fitted],
    group: Sequence[str],
    *,
    pipeline: str,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Yields ``(step name, batch as that step sees it)`` for each step of a fit pass.

    Steps fitted in earlier passes are applied with ``fitted``; static steps are applied;
    steps of ``group`` are not applied (nothing later in the pass depends on them, see
    :func:`fit_groups`). Rejected rows are removed exactly as in the apply pass.
    """
    wanted = set(group)
    last = max((i for i, s in enumerate(steps) if s.name in wanted), default=-1)
    current = batch
    for step in steps[: last + 1]:
        if step.name in wanted:
            yield step.name, current
            continue
        current = apply_steps(current, [step], fitted, pipeline=pipeline, record_errors=False).batch
