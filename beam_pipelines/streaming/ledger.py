"""The ledger of a streaming run: what every bundle counted, summed and checked when it ends.

Every record read is written, rejected or dropped, and every row written is aggregated or
rejected by each aggregation. Each bundle's counts are written as one line of
``counts/part-*.jsonl`` (``[kind, step, reason, n]``); :func:`summarize` adds them up with
what the files hold, and :func:`balance_problems` says what does not add up.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.core.batch_steps import DROPPED, READ, REJECTED, WRITTEN
from transforms.core.errors import ErrorRecord
from transforms.core.manifest import (
    CountKey,
    CountsMismatchError,
    check_balance,
    nest_counts,
    sum_counts,
)
from transforms.streaming.windows import MISSED_WINDOWS, STEP_PREFIX

READ_KEY: CountKey = (READ, "read", "")
WRITTEN_KEY: CountKey = (WRITTEN, "rows", "")
# Rows BigQuery rejects were written to the row files first: error records only.
BIGQUERY_STEP = "bigquery"
DUPLICATE = "duplicate_message"


def read_counts(rows: int) -> collections.Counter[CountKey]:
    """The count of ``rows`` records read."""
    return collections.Counter({READ_KEY: rows})


def written_counts(rows: int) -> collections.Counter[CountKey]:
    """The count of ``rows`` rows written."""
    return collections.Counter({WRITTEN_KEY: rows})


def duplicate_counts(_: Any) -> collections.Counter[CountKey]:
    """A repeated message: read, and dropped on purpose."""
    return collections.Counter({READ_KEY: 1, (DROPPED, "read", DUPLICATE): 1})


def read_error_counts(error: ErrorRecord) -> collections.Counter[CountKey]:
    """A record the source could not read: read, and rejected at its step for its reason."""
    return collections.Counter({READ_KEY: 1, (REJECTED, error.step, error.reason): 1})


def jsonl_counts(counters: Sequence[Mapping[CountKey, int]]) -> bytes:
    """One line per bundle: its counters summed, as ``[kind, step, reason, n]``."""
    total = sum_counts(counters)
    return (json.dumps([[*key, n] for key, n in sorted(total.items()) if n]) + "\n").encode()


def _lines(pattern: str) -> list[str]:
    (result,) = FileSystems.match([pattern])
    out: list[str] = []
    for m in sorted(result.metadata_list, key=lambda m: m.path):
        with FileSystems.open(m.path) as f:
            out += [line for line in f.read().decode("utf-8").splitlines() if line]
    return out


def _count_lines(pattern: str) -> int:
    # The row files hold one JSON object per line, each line ending in a newline.
    (result,) = FileSystems.match([pattern])
    total = 0
    for m in result.metadata_list:
        with FileSystems.open(m.path) as f:
            total += f.read().count(b"\n")
    return total


def _ledger(root: str) -> collections.Counter[CountKey]:
    total: collections.Counter[CountKey] = collections.Counter()
    for line in _lines(FileSystems.join(root, "counts", "*.jsonl")):
        for kind, step, reason, n in json.loads(line):
            total[(kind, step, reason)] += n
    return total


def summarize(root: str, fmt: str = "jsonl") -> dict[str, Any]:
    """Counts what a run wrote, and checks that every record is accounted for.

    Returns:
        ``rows_written``, ``rows_rejected``, ``errors`` (by step and reason) and
        ``aggregate_rows`` (per table) counted in the files; ``counts`` (the ledger: read,
        written, rejected and dropped by step and reason) and ``aggregations`` (rows each
        aggregation took in, aggregated and rejected); ``balanced`` and the ``problems``
        found when it is not.
    """
    if fmt == "jsonl":
        rows = _count_lines(FileSystems.join(root, "rows", "*.jsonl"))
    else:
        (result,) = FileSystems.match([FileSystems.join(root, "rows", "*.parquet")])
        rows = 0
        for m in result.metadata_list:
            with FileSystems.open(m.path) as f:
                rows += pq.read_metadata(f).num_rows
    by_reason: dict[str, dict[str, int]] = {}
    for line in _lines(FileSystems.join(root, "errors", "*.jsonl")):
        e = json.loads(line)
        by_reason.setdefault(e["step"], {}).setdefault(e["reason"], 0)
        by_reason[e["step"]][e["reason"]] += 1
    tables: dict[str, int] = {}
    (result,) = FileSystems.match([FileSystems.join(root, "aggregates", "*", "*.jsonl")])
    for m in result.metadata_list:
        table = m.path.rstrip("/").split("/")[-2]
        with FileSystems.open(m.path) as f:
            tables[table] = tables.get(table, 0) + len(f.read().splitlines())
    rejected = sum(
        n for step, r in by_reason.items() if not step.startswith(STEP_PREFIX) for n in r.values()
    )
    ledger = _ledger(root)
    windows = {k: n for k, n in ledger.items() if k[1].startswith(STEP_PREFIX)}
    nested = nest_counts({k: n for k, n in ledger.items() if k not in windows})
    aggregations: dict[str, dict[str, Any]] = {}
    for (kind, step, reason), n in sorted(windows.items()):
        agg = aggregations.setdefault(
            step[len(STEP_PREFIX) :], {"aggregated": 0, "rejected": {}, MISSED_WINDOWS: 0}
        )
        if kind == REJECTED:
            agg["rejected"][reason] = agg["rejected"].get(reason, 0) + n
        else:
            agg[kind] += n
    for agg in aggregations.values():
        agg["rows_in"] = agg["aggregated"] + sum(agg["rejected"].values())
    summary = {
        "rows_written": rows,
        "rows_rejected": rejected,
        "errors": by_reason,
        "aggregate_rows": tables,
        "counts": nested,
        "aggregations": aggregations,
    }
    problems = balance_problems(summary)
    summary["balanced"] = not problems
    summary["problems"] = problems
    return summary


def balance_problems(summary: Mapping[str, Any]) -> list[str]:
    """What does not add up in a :func:`summarize` result (empty when everything does).

    Every record read is written, rejected or dropped; the ledger's written rows are the
    rows in the files; every aggregation took in every written row; every rejection has its
    error record (rows BigQuery rejects are error records only: they were written to the
    files first).
    """
    nested = summary["counts"]
    problems = []
    try:
        check_balance(nested)
    except CountsMismatchError as exc:
        problems.append(str(exc))
    if nested["total_written"] != summary["rows_written"]:
        problems.append(
            f"{nested['total_written']} rows were written but the row files hold "
            f"{summary['rows_written']}"
        )
    for name, agg in sorted(summary["aggregations"].items()):
        if agg["rows_in"] != nested["total_written"]:
            problems.append(
                f"aggregation {name!r} took in {agg['rows_in']} rows (aggregated "
                f"{agg['aggregated']}, rejected {agg['rejected']}) of "
                f"{nested['total_written']} written"
            )
    expected = {
        (step, reason): n for step, r in nested["rejected"].items() for reason, n in r.items()
    }
    expected.update(
        ((STEP_PREFIX + name, reason), n)
        for name, agg in summary["aggregations"].items()
        for reason, n in agg["rejected"].items()
    )
    found = {
        (step, reason): n
        for step, r in summary["errors"].items()
        if step != BIGQUERY_STEP
        for reason, n in r.items()
    }
    if {k: n for k, n in expected.items() if n} != found:
        problems.append(f"rejections counted {expected} but error records {found}")
    return problems


__all__ = [
    "BIGQUERY_STEP",
    "DUPLICATE",
    "READ_KEY",
    "WRITTEN_KEY",
    "balance_problems",
    "duplicate_counts",
    "jsonl_counts",
    "read_counts",
    "read_error_counts",
    "summarize",
    "written_counts",
]
