"""Dataset statistics: per-column counts, moments, quantiles and most frequent values.

:class:`DatasetStats` is an :class:`~transforms.core.steps.Analyzer`, so pipelines combine it
over the whole data set like any fitted step (per split, then merged). Its output is the
``stats.json`` written next to a dataset. Every batch is summarised with vectorised
pyarrow/NumPy calls; per-value Python runs only over the distinct values of a batch.

Numeric statistics are deterministic: moments are exact sums and quantiles come from the
order-independent :class:`~transforms.ops.quantiles.QuantileSummary`, so the same data gives
the same numbers however it was bundled and merged. NaN and infinities are counted per
column (``non_finite``) and left out of every other numeric statistic.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from typing import Any

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import HIDDEN_PREFIX, type_name
from transforms.core.steps import Analyzer
from transforms.ops.analyzers import MomentsAccumulator
from transforms.ops.arrays import precision_of, split_finite
from transforms.ops.quantiles import QuantileSummary, quantiles_of

# Map size (log2) of the frequent-strings sketch: counts are exact while a column has fewer
# than 0.75 * 2**13 = 6144 distinct values, and estimates (with a known bound) beyond.
_FREQUENT_LG_MAX = 13
# Distinct values a numeric column's quantile summary keeps exactly; beyond, quantiles are
# within a relative 2**-bits of exact (QuantileSummary), about 0.4% for data spanning 30
# binary orders of magnitude. Smaller than the fitting default: stats cover every column.
STATS_MAX_BINS = 1 << 14


def _kind(tp: pa.DataType) -> str:
    if pa.types.is_integer(tp) or pa.types.is_floating(tp):
        return "numeric"
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return "string"
    if (
        pa.types.is_boolean(tp)
        or pa.types.is_date(tp)
        or pa.types.is_timestamp(tp)
        or pa.types.is_time(tp)
    ):
        return "discrete"
    return "other"


class FrequentStrings:
    """A picklable frequent-items sketch of strings (datasketches' object is not picklable)."""

    def __init__(self, lg_max_map_size: int = _FREQUENT_LG_MAX) -> None:
        self.lg_max_map_size = lg_max_map_size
        self.sketch = datasketches.frequent_strings_sketch(lg_max_map_size)

    def update(self, values: Iterable[str], counts: Iterable[int]) -> None:
        """Adds each value ``count`` times."""
        for value, count in zip(values, counts, strict=True):
            self.sketch.update(value, int(count))

    def merge(self, other: FrequentStrings) -> FrequentStrings:
        """Folds ``other`` into this sketch and returns it."""
        if not other.sketch.is_empty():
            self.sketch.merge(other.sketch)
        return self

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` most frequent values with their (estimated) counts, ties by value."""
        if self.sketch.is_empty():
            return []
        items = self.sketch.get_frequent_items(
            datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES
        )
        ranked = sorted(((item[0], int(item[1])) for item in items), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:k]

    def __getstate__(self) -> dict[str, Any]:
        return {"lg": self.lg_max_map_size, "sketch": self.sketch.serialize()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.lg_max_map_size = state["lg"]
        self.sketch = datasketches.frequent_strings_sketch.deserialize(state["sketch"])


@dataclasses.dataclass
class ColumnAccumulator:
    """Everything :class:`DatasetStats` keeps for one column.

    Attributes:
        count: Non-null values.
        missing: Nulls.
        empty: Empty strings (string columns).
        non_finite: NaN, inf and -inf values (float columns); counted in ``count``, left out
            of the moments, quantiles and top values.
        moments: Exact count, sums, min and max of the finite values (numeric columns).
        summary: Quantile summary of the finite values (numeric columns); while exact it
            also gives their most frequent values.
        counts: Exact value counts while the column has at most ``max_distinct`` values;
            None once it has more (boolean, date and time columns).
        frequent: Frequent-values sketch (string columns).
    """

    count: int = 0
    missing: int = 0
    empty: int = 0
    non_finite: int = 0
    moments: MomentsAccumulator | None = None
    summary: QuantileSummary | None = None
    counts: dict[Any, int] | None = None
    frequent: FrequentStrings | None = None


Accumulator = dict[str, ColumnAccumulator]


class DatasetStats(Analyzer[Accumulator]):
    """Per-column statistics of a data set, mergeable across workers.

    ``extract_output`` returns, for each visible column of ``schema`` in order::

        {"type": spec type name, "count": non-null values, "missing": nulls,
         # string columns
         "empty": empty strings,
         # numeric columns: NaN, inf and -inf are counted in "count" and "non_finite"
         # (float columns) and left out of everything below
         "non_finite": NaN and infinite values, "mean", "std" (population), "min", "max",
         "quantiles": [q0, q1/quantiles, ..., q1] (the ends are the exact min and max),
         # most frequent values, ties by value
         "top_values": [{"value": v, "count": n}, ...]}

    Quantiles are exact while a column has at most 16,384 distinct finite values, and
    within a relative ``2**-bits`` of exact beyond (:class:`QuantileSummary`); the quantile
    at rank r is the smallest value v with ``#(values <= v) >= r * n``. ``top_values`` is
    exact for string columns with fewer than 6144 distinct values (an estimate beyond);
    numeric, boolean, date and time columns have it only while they have at most
    ``max_distinct`` distinct values (it is left out otherwise). Dates and times are given
    as ISO-8601 strings. Statistics that do not exist (the mean of an empty column, a
    variance beyond float64's range) are null, so the output is valid JSON. Hidden ``__``
    columns are skipped. Everything but string ``top_values`` past 6144 distinct values is
    independent of how the data was bundled and merged.

    Args:
        schema: Columns to describe (a batch may carry more; those are ignored).
        top_k: How many most frequent values to report.
        quantiles: Number of quantile intervals; ``quantiles + 1`` values are reported.
        max_distinct: Most distinct values a non-string column may have to get
            ``top_values``.
    """

    def __init__(
        self, schema: pa.Schema, top_k: int = 10, quantiles: int = 10, max_distinct: int = 100
    ) -> None:
        if top_k < 0:
            raise ValueError(f"top_k must be 0 or more, got {top_k}")
        if quantiles < 1:
            raise ValueError(f"quantiles must be at least 1, got {quantiles}")
        if max_distinct < 0:
            raise ValueError(f"max_distinct must be 0 or more, got {max_distinct}")
        self.schema = pa.schema([f for f in schema if not f.name.startswith(HIDDEN_PREFIX)])
        self.top_k = top_k
        self.quantiles = quantiles
        self.max_distinct = max_distinct
        # Top values of a numeric column are read from its summary while it is exact.
        self.max_bins = max(STATS_MAX_BINS, max_distinct)

    # --- accumulation ----------------------------------------------------------------------

    def _new_column(self, tp: pa.DataType) -> ColumnAccumulator:
        kind = _kind(tp)
        acc = ColumnAccumulator()
        if kind == "numeric":
            acc.moments = MomentsAccumulator()
            acc.summary = QuantileSummary(self.max_bins)
        if kind == "discrete":
            acc.counts = {}
        if kind == "string":
            acc.frequent = FrequentStrings()
        return acc

    def create_accumulator(self) -> Accumulator:
        return {f.name: self._new_column(f.type) for f in self.schema}

    def add_batch(self, accumulator: Accumulator, batch: pa.RecordBatch) -> Accumulator:
        names = batch.schema.names
        for field in self.schema:
            if field.name not in names:
                raise ValueError(
                    f"column {field.name!r} of the stats schema is not in the batch;"
                    f" batch columns are {', '.join(names)}"
                )
            values = batch.column(names.index(field.name))
            self._add_column(accumulator[field.name], values)
        return accumulator

    def _add_column(self, acc: ColumnAccumulator, values: pa.Array) -> None:
        nulls = values.null_count
        acc.missing += nulls
        acc.count += len(values) - nulls
        if len(values) == nulls:
            return
        if acc.moments is not None and acc.summary is not None:
            finite, dropped = split_finite(values)
            acc.non_finite += dropped
            acc.moments.add(finite, precision_of(values.type))
            acc.summary.update(finite)
            return
        present = values.drop_null()
        if acc.frequent is not None:
            acc.empty += int(pc.sum(pc.equal(present, "")).as_py() or 0)
            counted = pc.value_counts(present)
            acc.frequent.update(
                counted.field("values").to_pylist(), counted.field("counts").to_pylist()
            )
        if acc.counts is not None:
            counted = pc.value_counts(present)
            batch_counts = dict(
                zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                )
            )
            acc.counts = self._merge_counts(acc.counts, batch_counts)

    def _merge_counts(
        self, left: dict[Any, int] | None, right: dict[Any, int] | None
    ) -> dict[Any, int] | None:
        if left is None or right is None:
            return None
        merged = dict(left)
        for value, count in right.items():
            merged[value] = merged.get(value, 0) + count
        # Beyond max_distinct the column is not "a few values": stop counting for good.
        return merged if len(merged) <= self.max_distinct else None

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        result = self.create_accumulator()
        accumulators = list(accumulators)
        for name, into in result.items():
            summaries = []
            for accumulator in accumulators:
                other = accumulator[name]
                into.count += other.count
                into.missing += other.missing
                into.empty += other.empty
                into.non_finite += other.non_finite
                if into.moments is not None and other.moments is not None:
                    into.moments.merge(other.moments)
                if other.summary is not None:
                    summaries.append(other.summary)
                if into.frequent is not None and other.frequent is not None:
                    into.frequent.merge(other.frequent)
                if into.counts is not None:
                    into.counts = self._merge_counts(into.counts, other.counts)
            if into.summary is not None:
                into.summary.merge(*summaries)
        return result

    # --- output ----------------------------------------------------------------------------

    def extract_output(self, accumulator: Accumulator) -> dict[str, Any]:
        return {f.name: self._column_output(f.type, accumulator[f.name]) for f in self.schema}

    def _column_output(self, tp: pa.DataType, acc: ColumnAccumulator) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type_name(tp), "count": acc.count, "missing": acc.missing}
        if acc.frequent is not None:
            out["empty"] = acc.empty
        if acc.moments is not None and acc.summary is not None:
            integer = pa.types.is_integer(tp)
            if pa.types.is_floating(tp):
                out["non_finite"] = acc.non_finite
            m = acc.moments
            if m.count:
                variance = m.variance()
                std = math.sqrt(variance) if variance is not None else None
                ranks = [i / self.quantiles for i in range(self.quantiles + 1)]
                quantiles = quantiles_of(acc.summary, ranks)
                # Past its exact size the summary holds bin minima; the extremes are known.
                quantiles[0], quantiles[-1] = m.minimum, m.maximum
                out.update(
                    mean=_number(m.mean(), False),
                    std=_number(std, False),
                    min=_number(m.minimum, integer),
                    max=_number(m.maximum, integer),
                    quantiles=[_number(q, integer) for q in quantiles],
                )
            else:
                out.update(mean=None, std=None, min=None, max=None, quantiles=[])
            lows, cumulative = acc.summary.cumulative()
            if acc.summary.exact and len(lows) <= self.max_distinct:
                counts = np.diff(cumulative, prepend=0)
                ranked = sorted(zip(lows.tolist(), counts.tolist(), strict=True), key=_by_count)
                out["top_values"] = [
                    {"value": _number(v, integer), "count": int(n)} for v, n in ranked[: self.top_k]
                ]
        if acc.frequent is not None:
            out["top_values"] = [{"value": v, "count": n} for v, n in acc.frequent.top(self.top_k)]
        elif acc.counts is not None:
            ranked = sorted(acc.counts.items(), key=_by_count)[: self.top_k]
            out["top_values"] = [{"value": _json_value(v), "count": n} for v, n in ranked]
        return out


def _by_count(item: tuple[Any, int]) -> tuple[int, Any]:
    return (-item[1], item[0])


def _number(x: float | None, integer: bool) -> float | int | None:
    if x is None or not math.isfinite(x):
        return None
    return int(x) if integer else float(x)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def json_safe(obj: Any) -> Any:
    """Returns ``obj`` with NaN and infinities replaced by None, recursively.

    NumPy scalars become Python numbers; tuples become lists.
    """
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def stats_to_json(stats: dict[str, Any]) -> str:
    """Serialises :meth:`DatasetStats.extract_output` as stable, indented, strict JSON."""
    return json.dumps(json_safe(stats), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
