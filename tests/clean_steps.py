"""Helpers shared by the cleaning step tests: batches, rejections, building and fitting steps."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa

from transforms.core.steps import Step, StepResult
from transforms.ops.registry import build_step


def batch(**columns: pa.Array | list) -> pa.RecordBatch:
    return pa.record_batch(
        {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()}
    )


def with_source(**columns: pa.Array | list) -> pa.RecordBatch:
    """A batch with hidden source columns: file ``in.csv``, lines 2, 3, ..."""
    n = len(next(iter(columns.values())))
    return batch(**columns, __file=["in.csv"] * n, __line=pa.array(range(2, n + 2), pa.int64()))


def rejected(result: StepResult) -> list[tuple[list[int], str, list[str]]]:
    """Rejections as (rows, reason, messages of those rows)."""
    out = []
    for r in result.rejections:
        rows = [int(i) for i in np.flatnonzero(r.mask)]
        msgs = (
            [r.message] * len(rows) if isinstance(r.message, str) else [r.message[i] for i in rows]
        )
        out.append((rows, r.reason, msgs))
    return out


def build(item: dict, path: str = "clean[0]") -> Step:
    return build_step(item, path)


def fit(step: Step, *batches: pa.RecordBatch) -> dict:
    """Fits a step's analyzer over batches, split across two merged accumulators."""
    analyzer = step.analyzer()
    assert analyzer is not None
    accs = []
    for part in (batches[::2], batches[1::2]):
        acc = analyzer.create_accumulator()
        for b in part:
            acc = analyzer.add_batch(acc, b)
        accs.append(pickle.loads(pickle.dumps(acc)))
    out = analyzer.extract_output(analyzer.merge_accumulators(accs))
    return json.loads(json.dumps(out))
