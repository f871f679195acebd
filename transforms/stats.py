"""Dataset statistics: per-column counts, moments, quantiles and most frequent values.

:class:`DatasetStats` is an :class:`~transforms.steps.Analyzer`, so pipelines combine it
over the whole data set like any fitted step (per split, then merged). Its output is the
``stats.json`` written next to a dataset. Every batch is summarised with vectorised
pyarrow/NumPy calls; per-value Python runs only over the distinct values of a batch.
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

from transforms.analyzers import (
    DEFAULT_SKETCH_K,
    MomentsAccumulator,
    QuantileSketch,
    quantiles_of,
)
from transforms.schema import HIDDEN_PREFIX, type_name
from transforms.steps import Analyzer

# Map size (log2) of the frequent-strings sketch: counts are exact while a column has fewer
# than 0.75 * 2**13 = 6144 distinct values, and estimates (with a known bound) beyond.
_FREQUENT_LG_MAX = 13


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
        nan: NaN values (float columns); counted in ``count``, left out of the moments,
            quantiles and top values.
        moments: Count, mean and centred sum of squares of the numeric values.
        sketch: Quantile sketch of the numeric values.
        counts: Exact value counts while the column has at most ``max_distinct`` values;
            None once it has more (numeric and discrete columns).
        frequent: Frequent-values sketch (string columns).
    """

    count: int = 0
    missing: int = 0
    empty: int = 0
    nan: int = 0
    moments: MomentsAccumulator | None = None
    sketch: QuantileSketch | None = None
    counts: dict[Any, int] | None = None
    frequent: FrequentStrings | None = None


Accumulator = dict[str, ColumnAccumulator]


class DatasetStats(Analyzer[Accumulator]):
    """Per-column statistics of a data set, mergeable across workers.

    ``extract_output`` returns, for each visible column of ``schema`` in order::

        {"type": spec type name, "count": non-null values, "missing": nulls,
         # string columns
         "empty": empty strings,
         # numeric columns (NaN left out of all but "count", and counted in "nan")
         "nan": NaN values (float columns), "mean", "std" (population), "min", "max",
         "quantiles": [q0, q1/quantiles, ..., q1] (KLL sketch; the ends are the exact
                      min and max),
         # most frequent values, ties by value
         "top_values": [{"value": v, "count": n}, ...]}

    ``top_values`` is exact for string columns with fewer than 6144 distinct values (an
    estimate beyond); numeric, boolean, date and time columns have it only while they have
    at most ``max_distinct`` distinct values (it is left out otherwise). Dates and times are
    given as ISO-8601 strings. Statistics that do not exist (the mean of an empty column, an
    infinite value's std) are null, so the output is valid JSON. Hidden ``__`` columns are
    skipped.

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

    # --- accumulation ----------------------------------------------------------------------

    def _new_column(self, tp: pa.DataType) -> ColumnAccumulator:
        kind = _kind(tp)
        acc = ColumnAccumulator()
        if kind == "numeric":
            acc.moments = MomentsAccumulator()
            acc.sketch = QuantileSketch(DEFAULT_SKETCH_K)
        if kind in ("numeric", "discrete"):
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
        present = values.drop_null()
        if not len(present):
            return
        if acc.frequent is not None:
            acc.empty += int(pc.sum(pc.equal(present, "")).as_py() or 0)
            counted = pc.value_counts(present)
            acc.frequent.update(
                counted.field("values").to_pylist(), counted.field("counts").to_pylist()
            )
        if acc.moments is not None and acc.sketch is not None:
            numbers = present.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            finite_or_inf = numbers[~np.isnan(numbers)]
            acc.nan += len(numbers) - len(finite_or_inf)
            if len(finite_or_inf):
                mean = float(finite_or_inf.mean())
                with np.errstate(invalid="ignore"):
                    m2 = float(np.square(finite_or_inf - mean).sum())
                acc.moments.merge(
                    MomentsAccumulator(
                        count=len(finite_or_inf),
                        mean=mean,
                        m2=m2,
                        total=float(finite_or_inf.sum()),
                        minimum=float(finite_or_inf.min()),
                        maximum=float(finite_or_inf.max()),
                    )
                )
            if pa.types.is_floating(present.type):
                present = present.filter(pc.invert(pc.is_nan(present)))
        if acc.counts is not None and len(present):
            counted = pc.value_counts(present)
            batch_counts = dict(
                zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                )
            )
            merged = self._merge_counts(dict(acc.counts), batch_counts)
            if merged is None:
                _replay(acc)
            acc.counts = merged
        # While a numeric column has few distinct values its exact counts give the quantiles;
        # the sketch is fed only once it has more (the counts replayed into it first).
        if acc.sketch is not None and acc.counts is None and len(present):
            acc.sketch.update(present.to_numpy(zero_copy_only=False).astype(np.float64, copy=False))

    def _merge_counts(
        self, left: dict[Any, int] | None, right: dict[Any, int] | None
    ) -> dict[Any, int] | None:
        if left is None or right is None:
            return None
        for value, count in right.items():
            left[value] = left.get(value, 0) + count
        # Beyond max_distinct the column is not "a few values": stop counting for good.
        return left if len(left) <= self.max_distinct else None

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        result = self.create_accumulator()
        for accumulator in accumulators:
            for name, into in result.items():
                other = accumulator[name]
                into.count += other.count
                into.missing += other.missing
                into.empty += other.empty
                into.nan += other.nan
                if into.moments is not None and other.moments is not None:
                    into.moments.merge(other.moments)
                if into.frequent is not None and other.frequent is not None:
                    into.frequent.merge(other.frequent)
                merged = self._merge_counts(
                    dict(into.counts) if into.counts is not None else None,
                    dict(other.counts) if other.counts is not None else None,
                )
                if into.sketch is not None and other.sketch is not None and merged is None:
                    # Whichever side still holds exact counts feeds them to the sketch.
                    _replay(into)
                    if other.counts is not None:
                        into.sketch.update(_expanded(other.counts))
                    else:
                        into.sketch.merge(other.sketch)
                into.counts = merged
        return result

    # --- output ----------------------------------------------------------------------------

    def extract_output(self, accumulator: Accumulator) -> dict[str, Any]:
        return {f.name: self._column_output(f.type, accumulator[f.name]) for f in self.schema}

    def _column_output(self, tp: pa.DataType, acc: ColumnAccumulator) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type_name(tp), "count": acc.count, "missing": acc.missing}
        if acc.frequent is not None:
            out["empty"] = acc.empty
        if acc.moments is not None and acc.sketch is not None:
            integer = pa.types.is_integer(tp)
            if pa.types.is_floating(tp):
                out["nan"] = acc.nan
            m = acc.moments
            if m.count:
                std = math.sqrt(m.m2 / m.count) if math.isfinite(m.m2) else math.nan
                ranks = [i / self.quantiles for i in range(self.quantiles + 1)]
                if acc.counts is not None:
                    quantiles = _exact_quantiles(acc.counts, ranks)
                else:
                    quantiles = quantiles_of(acc.sketch, ranks)
                # The sketch may compact the extremes away; the exact ones are known.
                quantiles[0], quantiles[-1] = m.minimum, m.maximum
                out.update(
                    mean=_number(m.mean, False),
                    std=_number(std, False),
                    min=_number(m.minimum, integer),
                    max=_number(m.maximum, integer),
                    quantiles=[_number(q, integer) for q in quantiles],
                )
            else:
                out.update(mean=None, std=None, min=None, max=None, quantiles=[])
        if acc.frequent is not None:
            out["top_values"] = [{"value": v, "count": n} for v, n in acc.frequent.top(self.top_k)]
        elif acc.counts is not None:
            ranked = sorted(acc.counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top_k]
            out["top_values"] = [{"value": _json_value(v), "count": n} for v, n in ranked]
        return out


def _expanded(counts: dict[Any, int]) -> np.ndarray:
    """The values behind exact counts, each repeated its count times (sorted)."""
    if not counts:
        return np.zeros(0, dtype=np.float64)
    items = sorted(counts.items())
    values = np.array([float(v) for v, _ in items], dtype=np.float64)
    return np.repeat(values, [n for _, n in items])


def _replay(acc: ColumnAccumulator) -> None:
    """Moves a numeric column from exact counts to its sketch (counts are about to go)."""
    if acc.sketch is not None and acc.counts:
        acc.sketch.update(_expanded(acc.counts))


def _exact_quantiles(counts: dict[Any, int], ranks: list[float]) -> list[float]:
    """Quantiles from exact value counts: the smallest value whose cumulative share >= rank."""
    items = sorted((float(v), n) for v, n in counts.items())
    values = np.array([v for v, _ in items])
    cumulative = np.cumsum([n for _, n in items])
    total = cumulative[-1]
    return [
        float(values[min(np.searchsorted(cumulative, r * total), len(values) - 1)]) for r in ranks
    ]


def _number(x: float, integer: bool) -> float | int | None:
    if not math.isfinite(x):
        return None
    return int(x) if integer else float(x)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def json_safe(obj: Any) -> Any:
    """Returns ``obj`` with NaN and infinities replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def stats_to_json(stats: dict[str, Any]) -> str:
    """Serialises :meth:`DatasetStats.extract_output` as stable, indented, valid JSON."""
    return json.dumps(json_safe(stats), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
