"""Feature steps: scaling, bucketing, vocabularies, hashing and crosses.

Each step is a :class:`~transforms.core.steps.Step`; fitted ones return an analyzer from
:mod:`transforms.ops.analyzers` or :mod:`transforms.ops.quantiles` and apply its JSON output.
Calendar parts (``timestamp_parts``) are in :mod:`transforms.ops.time_parts` and typed copies
(``copy``) in :mod:`transforms.ops.clean`. Where tf.Transform has the same
operation the numbers are tf.Transform's:

- ``z_score``: ``(x - mean) / sqrt(population variance)`` in float32 (float64 for float64
  input); with zero variance the output is ``x - mean`` (what ``tft.scale_to_z_score``'s
  code computes).
- ``min_max``: ``(x - min) / (max - min)`` projected on ``[output_min, output_max]`` in
  float32; when ``min >= max`` (a single distinct value, or no data) ``sigmoid(x)`` is
  projected instead (``tft.scale_by_min_max``).
- ``bucketize``: fitted boundaries are float32 and values are compared as float32; bucket
  ``i`` holds ``boundaries[i-1] <= x < boundaries[i]``, so a value equal to a boundary goes
  to the bucket above it; NaN goes to the last bucket (``tft.apply_buckets``). Repeated
  boundaries are kept, as tf.Transform keeps them (the bucket between is empty).
- ``vocabulary``: ids are positions in the fitted vocabulary (descending frequency, ties by
  descending bytes; empty string and values with line breaks left out); other values get
  ``vocab_size + Fingerprint64(value) % num_oov_buckets``, or ``default_value`` without OOV
  buckets. An empty fitted vocabulary is replaced by tf.Transform's one dummy entry so ids
  agree in that corner too.
- ``hash_bucket`` and ``cross``: ``Fingerprint64(value) % num_buckets``
  (``tf.strings.to_hash_bucket_fast``).

Non-finite values: every fitted statistic leaves NaN, ``inf`` and ``-inf`` out, as if they
were missing (:mod:`transforms.ops.analyzers`), so a few of them never change the parameters
every other row is transformed with. Applied to a row, such a value gives that row's own
result: NaN and infinities stay non-finite through ``z_score``, ``min_max`` and ``log``
(which rejects ``-inf`` as out of its domain); ``bucketize`` puts NaN and ``inf`` in the
last bucket and ``-inf`` in the first; a float ``vocabulary`` maps them out of the
vocabulary. Columns only hold them where the source allows them, or where a step made them.

Nulls: ``z_score``, ``min_max``, ``log``, ``bucketize``, ``timestamp_parts`` and ``copy``
keep a null input null. ``vocabulary``, ``hash_bucket`` and ``cross`` treat null as the
empty string, so every row gets an id (a null goes to an OOV bucket or ``default_value``).

Steps take ``column`` (or ``columns``) and ``output``; ``output: null`` replaces the column
in place. Every other column, hidden ``__`` ones included, passes through.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.config import Within
from transforms.core.fingerprint import fingerprint64, hash_buckets
from transforms.core.steps import Analyzer, Fitted, Rejection, Step, StepResult
from transforms.ops.analyzers import Moments, ValueCounts
from transforms.ops.arrays import column_of, string_form
from transforms.ops.columns import put_column
from transforms.ops.quantiles import Quantiles

OUT_OF_DOMAIN = "out_of_domain"

# tf.Transform's stand-in for an empty string vocabulary (analyzers.py).
EMPTY_VOCABULARY_DUMMY = "49d0cd50-04bb-48c0-bc6f-5b575dce351a"

# Limits of size parameters (spec load refuses values beyond them):
# - fitted bucketize: num_buckets - 1 boundaries are computed, held and written to the
#   artifact, and each bucket should hold enough rows to mean something; 10,000 buckets is
#   far past the resolution a feature needs (tf.Transform users rarely exceed 100).
MAX_QUANTILE_BUCKETS = 10_000
# - hash_bucket, cross, num_oov_buckets and top_k: ids are computed, never materialised, so
#   memory does not grow with them; the bound is the id space of the models that consume
#   them (embedding and one-hot sizes are int32) and keeps vocabulary + OOV ids in int64.
MAX_CATEGORICAL_IDS = 2**31 - 1
_QUANTILE_BUCKETS = Within(1, MAX_QUANTILE_BUCKETS, "finer buckets are below the sketch's accuracy")
_HASH_BUCKETS = Within(1, MAX_CATEGORICAL_IDS, "the int32 id space of embeddings")
_IDS = Within(0, MAX_CATEGORICAL_IDS, "the int32 id space of embeddings")


def _float_type(tp: pa.DataType) -> pa.DataType:
    # tf.Transform keeps float64 as float64 and computes everything else in float32.
    return pa.float64() if pa.types.is_float64(tp) else pa.float32()


def _numeric(array: pa.Array, column: str) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.int8())
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        raise ValueError(f"column {column!r} is {array.type}; this step needs a numeric column")
    return array


def _to_numpy(array: pa.Array, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Values as ``dtype`` (nulls as NaN or 0) and the null mask."""
    nulls = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    filled = array.fill_null(0) if array.null_count else array
    return filled.to_numpy(zero_copy_only=False).astype(dtype), nulls


def _with_nulls(values: np.ndarray, nulls: np.ndarray, tp: pa.DataType) -> pa.Array:
    return pa.array(values, tp, mask=nulls if nulls.any() else None)


@dataclasses.dataclass(kw_only=True)
class _ColumnStep(Step):
    """A step reading one column and writing one (``output`` or the column itself)."""

    column: str
    output: str | None = None

    @property
    def target(self) -> str:
        return self.output or self.column

    def input_columns(self) -> list[str]:
        return [self.column]

    def output_columns(self) -> list[str]:
        return [self.target]


@dataclasses.dataclass(kw_only=True)
class ZScore(_ColumnStep):
    """Standardises a numeric column with the data set's mean and population variance.

    The mean and variance are fitted on the finite values only (NaN and infinities are
    left out like nulls), so a few non-finite values never make the whole column NaN; a
    non-finite input value gives a non-finite output for its own row. A fitted variance
    recorded as null (beyond float64's range) scales every value to 0, as an infinite
    variance would in tf.Transform; a null mean (no such artifact is written) counts as 0.
    """

    op: ClassVar[str] = "z_score"

    def analyzer(self) -> Analyzer[Any]:
        return Moments(self.column)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        assert fitted is not None
        array = _numeric(column_of(batch, self.column), self.column)
        tp = _float_type(array.type)
        dtype = tp.to_pandas_dtype()
        x, nulls = _to_numpy(array, dtype)
        mean, variance = fitted["mean"], fitted["variance"]
        with np.errstate(over="ignore"):
            mean = dtype(0.0 if mean is None else mean)
            std = np.sqrt(dtype(math.inf if variance is None else variance))
        centred = x - mean
        result = centred / std if std != 0 else centred
        return StepResult(put_column(batch, self.target, _with_nulls(result, nulls, tp)))


@dataclasses.dataclass(kw_only=True)
class MinMax(_ColumnStep):
    """Scales a numeric column to ``[output_min, output_max]`` with the data set's range."""

    op: ClassVar[str] = "min_max"

    output_min: float = 0.0
    output_max: float = 1.0

    def validate(self) -> None:
        if self.output_min >= self.output_max:
            raise ValueError(
                f"output_min ({self.output_min}) must be less than output_max ({self.output_max})"
            )

    def analyzer(self) -> Analyzer[Any]:
        return Moments(self.column)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        assert fitted is not None
        array = _numeric(column_of(batch, self.column), self.column)
        x, nulls = _to_numpy(array, np.float32)
        low, high = fitted["min"], fitted["max"]
        with np.errstate(over="ignore"):
            if low is not None and high is not None and np.float32(low) < np.float32(high):
                scaled = (x - np.float32(low)) / (np.float32(high) - np.float32(low))
            else:
                scaled = np.float32(1) / (np.float32(1) + np.exp(-x))
        result = scaled * np.float32(self.output_max - self.output_min) + np.float32(
            self.output_min
        )
        values = _with_nulls(result.astype(np.float32), nulls, pa.float32())
        return StepResult(put_column(batch, self.target, values))


@dataclasses.dataclass(kw_only=True)
class Log(_ColumnStep):
    """Natural (or ``base``) logarithm of ``column + offset``.

    Rows where ``column + offset <= 0`` are rejected with reason ``out_of_domain``. Output
    is float32 for float32 or integer input, float64 for float64 input.
    """

    op: ClassVar[str] = "log"

    offset: float = 0.0
    base: float | None = None

    def validate(self) -> None:
        if self.base is not None and (self.base <= 0 or self.base == 1):
            raise ValueError(f"base must be positive and not 1, got {self.base}")

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        array = _numeric(column_of(batch, self.column), self.column)
        tp = _float_type(array.type)
        dtype = tp.to_pandas_dtype()
        x, nulls = _to_numpy(array, dtype)
        shifted = x + dtype(self.offset)
        bad = (shifted <= 0) & ~nulls
        with np.errstate(divide="ignore", invalid="ignore"):
            result = np.log(np.where(bad, dtype(1), shifted))
            if self.base is not None:
                result = result / dtype(math.log(self.base))
        rejections: tuple[Rejection, ...] = ()
        if bad.any():
            original = array.to_pylist()
            messages = np.full(len(x), "", dtype=object)
            for row in np.flatnonzero(bad):
                messages[row] = (
                    f"log of {self.column}={original[row]!r} + offset {self.offset} is "
                    "undefined: needs a value + offset > 0"
                )
            rejections = (Rejection(bad, OUT_OF_DOMAIN, messages),)
        values = _with_nulls(result.astype(dtype), nulls, tp)
        return StepResult(put_column(batch, self.target, values), rejections)


@dataclasses.dataclass(kw_only=True)
class Bucketize(_ColumnStep):
    """Bucket index (int64) of a numeric column, by fitted quantiles or fixed boundaries.

    Give exactly one of ``num_buckets`` (boundaries fitted at the quantiles of the data
    set) or ``boundaries`` (ascending; compared in float64).
    """

    op: ClassVar[str] = "bucketize"

    num_buckets: Annotated[int, _QUANTILE_BUCKETS] | None = None
    boundaries: list[float] | None = None

    def validate(self) -> None:
        if (self.num_buckets is None) == (self.boundaries is None):
            raise ValueError("give exactly one of num_buckets (fitted) or boundaries (fixed)")
        if self.num_buckets is not None and self.num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {self.num_buckets}")
        if self.boundaries is not None and self.boundaries != sorted(self.boundaries):
            raise ValueError(f"boundaries must be ascending, got {self.boundaries}")

    def analyzer(self) -> Analyzer[Any] | None:
        if self.num_buckets is None:
            return None
        return Quantiles(self.column, self.num_buckets)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        array = _numeric(column_of(batch, self.column), self.column)
        if self.boundaries is not None:
            dtype: Any = np.float64
            edges = np.asarray(self.boundaries, dtype=np.float64)
        else:
            assert fitted is not None
            # tf.Transform's quantile boundaries are float32 and values are cast to them.
            dtype = np.float64 if pa.types.is_float64(array.type) else np.float32
            edges = np.asarray(fitted["boundaries"], dtype=np.float32).astype(dtype)
        x, nulls = _to_numpy(array, dtype)
        # side="right": a value equal to a boundary belongs to the bucket above; NaN sorts
        # after every boundary, to the last bucket.
        buckets = np.searchsorted(edges, x, side="right").astype(np.int64)
        values = _with_nulls(buckets, nulls, pa.int64())
        return StepResult(put_column(batch, self.target, values))


@dataclasses.dataclass(kw_only=True)
class Vocabulary(_ColumnStep):
    """Integer ids (int64) from the data set's vocabulary of a column.

    Args (spec keys):
        top_k: Keep the most frequent values only.
        frequency_threshold: Keep values seen at least this often.
        num_oov_buckets: Hash other values into this many ids after the vocabulary.
        default_value: Id of other values when ``num_oov_buckets`` is 0.
    """

    op: ClassVar[str] = "vocabulary"

    top_k: Annotated[int, _IDS] | None = None
    frequency_threshold: Annotated[int, Within(0)] | None = None
    num_oov_buckets: Annotated[int, _IDS] = 0
    default_value: int = -1

    def validate(self) -> None:
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.frequency_threshold is not None and self.frequency_threshold < 0:
            raise ValueError(f"frequency_threshold must be >= 0, got {self.frequency_threshold}")
        if self.num_oov_buckets < 0:
            raise ValueError(f"num_oov_buckets must be >= 0, got {self.num_oov_buckets}")

    def analyzer(self) -> Analyzer[Any]:
        return ValueCounts(self.column, self.top_k, self.frequency_threshold)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        assert fitted is not None
        vocabulary = list(fitted["vocabulary"]) or [EMPTY_VOCABULARY_DUMMY]
        strings = string_form(column_of(batch, self.column))
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks()
        # Look up each distinct value once, then spread the ids over the rows.
        encoded = pc.dictionary_encode(strings.fill_null(""))
        distinct = encoded.dictionary
        found = pc.index_in(distinct, value_set=pa.array(vocabulary, pa.string()))
        ids, missing = _to_numpy(found, np.int64)
        if missing.any():
            if self.num_oov_buckets:
                oov = fingerprint64(distinct) % np.uint64(self.num_oov_buckets)
                ids = np.where(missing, len(vocabulary) + oov.astype(np.int64), ids)
            else:
                ids = np.where(missing, self.default_value, ids)
        rows = ids[encoded.indices.to_numpy(zero_copy_only=False)]
        return StepResult(put_column(batch, self.target, pa.array(rows, pa.int64())))


@dataclasses.dataclass(kw_only=True)
class HashBucket(_ColumnStep):
    """``Fingerprint64(string form) % num_buckets`` as int64 (``to_hash_bucket_fast``)."""

    op: ClassVar[str] = "hash_bucket"

    num_buckets: Annotated[int, _HASH_BUCKETS]

    def validate(self) -> None:
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {self.num_buckets}")

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        strings = string_form(column_of(batch, self.column))
        return StepResult(put_column(batch, self.target, hash_buckets(strings, self.num_buckets)))


@dataclasses.dataclass(kw_only=True)
class Cross(Step):
    """Hash bucket of several columns joined: ``Fingerprint64("a_X_b") % num_buckets``.

    ``output`` defaults to the column names joined with ``_X_``.
    """

    op: ClassVar[str] = "cross"

    columns: list[str]
    num_buckets: Annotated[int, _HASH_BUCKETS]
    separator: str = "_X_"
    output: str | None = None

    def validate(self) -> None:
        if len(self.columns) < 2:
            raise ValueError(f"cross needs at least two columns, got {self.columns}")
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {self.num_buckets}")

    @property
    def target(self) -> str:
        return self.output or "_X_".join(self.columns)

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return [self.target]

    def default_name(self) -> str:
        return f"{self.op}:{self.target}"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        parts = [string_form(column_of(batch, c)).fill_null("") for c in self.columns]
        joined = pc.binary_join_element_wise(*parts, self.separator)
        return StepResult(put_column(batch, self.target, hash_buckets(joined, self.num_buckets)))


STEPS = (ZScore, MinMax, Log, Bucketize, Vocabulary, HashBucket, Cross)
