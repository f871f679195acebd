"""The artifact's steps compiled once into NumPy column functions, for serving.

:func:`transforms.core.batch_steps.apply_steps` runs each step over an Arrow batch: right for
data sets, but a request of one row pays every step's Arrow overhead. A :class:`Plan` runs
the same steps over :class:`~transforms.serving.columns.Column`\\ s instead:

- ``fill_missing`` with a constant, ``z_score``, ``bucketize``, ``vocabulary`` and ``copy``
  (without a type) are NumPy functions computing what the step's own ``apply`` computes, in
  the same types;
- an ``expression`` of float columns, numeric literals, ``+ - *``, one comparison and
  ``cast(..., 'int64')`` (labels such as ``cast(tips > fare * 0.2, 'int64')``) is computed
  in NumPy as Arrow computes it (a literal takes the column's float type, nulls propagate);
  other expressions and ``filter`` run their own ``apply`` on a batch of the columns they
  read;
- every other step runs its own ``apply`` on a batch of every column.

Rejections and drops come back as :class:`Refusal`\\ s for the caller to account for, as
``apply_steps`` does. :func:`compile_plan` returns None only when a fitted step has no
fitted parameters; a column a compiled step does not take at run time raises
:class:`~transforms.serving.columns.UnsupportedError`, and the
:class:`~transforms.serving.preprocessor.Preprocessor` serves that call by the batch path.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from transforms.core.fingerprint import fingerprint64
from transforms.core.steps import Fitted, Step
from transforms.ops.clean import Copy
from transforms.ops.expressions import Expression, Filter
from transforms.ops.features import EMPTY_VOCABULARY_DUMMY, Bucketize, Vocabulary, ZScore
from transforms.ops.fitted_clean import FillMissing
from transforms.serving.columns import Column, UnsupportedError, from_arrow, is_number, is_text

Columns = dict[str, Column]

# Out-of-vocabulary ids are remembered per value up to this many values per step.
_OOV_CACHE = 4096


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Rows a step refuses: a mask over the rows the step saw, one reason, messages."""

    kind: str  # "rejected" or "dropped"
    mask: np.ndarray
    reason: str
    messages: list[str]


Op = Callable[[Columns], list[Refusal]]


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """One step: its name (for error records) and its function over the columns."""

    name: str
    run: Op


@dataclasses.dataclass(frozen=True)
class Plan:
    """The compiled steps, in order."""

    steps: list[CompiledStep]


def compile_plan(steps: Sequence[Step], fitted: Mapping[str, Fitted]) -> Plan | None:
    """Compiles ``steps`` with their fitted parameters.

    Returns None when a fitted step has no parameters (the general path says so).
    """
    compiled: list[CompiledStep] = []
    for step in steps:
        params = fitted.get(step.name)
        if params is None and step.analyzer() is not None:
            return None
        compiled.append(CompiledStep(step.name, _compile(step, params)))
    return Plan(compiled)


def _compile(step: Step, fitted: Fitted | None) -> Op:
    if isinstance(step, FillMissing) and step.strategy == "constant":
        return _fill(step)
    if isinstance(step, ZScore) and fitted is not None:
        return _z_score(step, fitted)
    if isinstance(step, Bucketize) and (fitted is not None or step.boundaries is not None):
        return _bucketize(step, fitted)
    if isinstance(step, Vocabulary) and fitted is not None:
        return _vocabulary(step, fitted)
    if isinstance(step, Copy) and step.type is None:
        return _copy(step)
    if isinstance(step, Expression):
        return _expression(step, _through_arrow(step, fitted, reads_only=True))
    if isinstance(step, Filter):
        return _through_arrow(step, fitted, reads_only=True)
    return _through_arrow(step, fitted, reads_only=False)


def _get(columns: Columns, name: str) -> Column:
    column = columns.get(name)
    if column is None:
        raise UnsupportedError(f"no column {name!r}")
    return column


def _fill(step: FillMissing) -> Op:
    # The fill value in each column's type, found once per type by the step itself.
    fills: dict[tuple[str, pa.DataType], Any] = {}

    def fill_value(name: str, tp: pa.DataType) -> Any:
        key = (name, tp)
        if key not in fills:
            probe = pa.RecordBatch.from_arrays([pa.nulls(1, tp)], names=[name])
            one = dataclasses.replace(step, columns=[name])
            fills[key] = one.apply(probe, None).batch.column(0)[0].as_py()
        return fills[key]

    def run(columns: Columns) -> list[Refusal]:
        for name in step.columns:
            column = _get(columns, name)
            if not (is_number(column.type) or is_text(column.type)):
                raise UnsupportedError(f"fill_missing on {column.type}")
            if not column.has_nulls:
                continue
            value = fill_value(name, column.type)
            if value is None:
                continue
            values = column.values.copy()
            values[column.nulls] = value
            columns[name] = Column(values, np.zeros(len(values), dtype=bool), column.type, False)
        return []

    return run


def _numeric(columns: Columns, name: str) -> Column:
    column = _get(columns, name)
    if not is_number(column.type):
        raise UnsupportedError(f"{name} is {column.type}")
    return column


def _z_score(step: ZScore, fitted: Fitted) -> Op:
    mean_value, variance = fitted["mean"], fitted["variance"]

    def run(columns: Columns) -> list[Refusal]:
        column = _numeric(columns, step.column)
        wide = pa.types.is_float64(column.type)
        dtype: Any = np.float64 if wide else np.float32
        x = column.values.astype(dtype)
        with np.errstate(over="ignore"):
            mean = dtype(0.0 if mean_value is None else mean_value)
            std = np.sqrt(dtype(math.inf if variance is None else variance))
        centred = x - mean
        result = centred / std if std != 0 else centred
        out_type = pa.float64() if wide else pa.float32()
        columns[step.target] = Column(result, column.nulls, out_type, column.has_nulls)
        return []

    return run


def _bucketize(step: Bucketize, fitted: Fitted | None) -> Op:
    def run(columns: Columns) -> list[Refusal]:
        column = _numeric(columns, step.column)
        if step.boundaries is not None:
            dtype: Any = np.float64
            edges = np.asarray(step.boundaries, dtype=np.float64)
        else:
            assert fitted is not None
            dtype = np.float64 if pa.types.is_float64(column.type) else np.float32
            edges = np.asarray(fitted["boundaries"], dtype=np.float32).astype(dtype)
        x = column.values.astype(dtype)
        buckets = np.searchsorted(edges, x, side="right").astype(np.int64)
        columns[step.target] = Column(buckets, column.nulls, pa.int64(), column.has_nulls)
        return []

    return run


def _vocabulary(step: Vocabulary, fitted: Fitted) -> Op:
    vocabulary = list(fitted["vocabulary"]) or [EMPTY_VOCABULARY_DUMMY]
    ids: dict[str, int] = {}
    for i, word in enumerate(vocabulary):
        ids.setdefault(word, i)
    oov: dict[str, int] = {}

    def lookup_missing(words: list[str]) -> None:
        if step.num_oov_buckets:
            hashed = fingerprint64(pa.array(words, pa.string())) % np.uint64(step.num_oov_buckets)
            found = (len(vocabulary) + hashed.astype(np.int64)).tolist()
        else:
            found = [step.default_value] * len(words)
        if len(oov) + len(words) > _OOV_CACHE:
            oov.clear()
        oov.update(zip(words, found, strict=True))

    def run(columns: Columns) -> list[Refusal]:
        column = _get(columns, step.column)
        if not is_text(column.type):
            raise UnsupportedError(f"vocabulary of {column.type}")
        words = ["" if w is None else w for w in column.values.tolist()]
        unknown = [w for w in set(words) if w not in ids and w not in oov]
        if unknown:
            lookup_missing(unknown)
        out = np.array([ids[w] if w in ids else oov[w] for w in words], dtype=np.int64)
        columns[step.target] = Column(out, np.zeros(len(out), dtype=bool), pa.int64(), False)
        return []

    return run


def _copy(step: Copy) -> Op:
    pairs = list(zip(step.columns, step.output_columns(), strict=True))

    def run(columns: Columns) -> list[Refusal]:
        for source, target in pairs:
            columns[target] = _get(columns, source)
        return []

    return run


def _through_arrow(step: Step, fitted: Fitted | None, *, reads_only: bool) -> Op:
    """The step's own ``apply`` on an Arrow batch: of the columns it reads (``reads_only``,
    for steps that declare every column they read), else of every column."""
    reads = list(step.input_columns())
    writes = list(step.output_columns())

    def run(columns: Columns) -> list[Refusal]:
        names = reads if reads_only else list(columns)
        present = [_get(columns, name) for name in names]
        batch = pa.RecordBatch.from_arrays(
            [c.to_arrow() for c in present],
            schema=pa.schema(zip(names, [c.type for c in present], strict=True)),
        )
        result = step.apply(batch, fitted)
        out = result.batch
        if result.batch.num_rows != batch.num_rows:
            raise UnsupportedError(f"step {step.name!r} changed the number of rows")
        if reads_only:
            for name in writes:
                columns[name] = from_arrow(out.column(out.schema.names.index(name)))
        else:
            columns.clear()
            for index, name in enumerate(out.schema.names):
                columns[name] = from_arrow(out.column(index))
        refusals = []
        for kind, outcomes in (("rejected", result.rejections), ("dropped", result.drops)):
            for outcome in outcomes:
                mask = np.asarray(outcome.mask, dtype=bool)
                if isinstance(outcome.message, str):
                    messages = [outcome.message] * len(mask)
                else:
                    messages = [str(m) for m in np.asarray(outcome.message, dtype=object)]
                refusals.append(Refusal(kind, mask, outcome.reason, messages))
        return refusals

    return run


# Expressions computed in NumPy: float arithmetic and comparisons, as Arrow computes them
# (a numeric literal takes the float column's type; nulls propagate), cast to int64 of the
# boolean result. Anything else runs through the step's own apply.
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
# Integer literals up to this size are exact in float32.
_EXACT_FLOAT32 = 2**24


class _NotCompiledError(Exception):
    """An expression outside the NumPy subset."""


# A compiled node: columns -> (values, nulls, type); a literal is (value, None, None).
_Node = Callable[[Columns], tuple[Any, Any, Any]]


def _expression(step: Expression, fallback: Op) -> Op:
    """``step`` in NumPy when its expression is in the subset, else ``fallback``."""
    if step.type not in (None, "int64"):
        return fallback
    try:
        node = _node(step.parsed.tree)
    except _NotCompiledError:
        return fallback

    def run(columns: Columns) -> list[Refusal]:
        try:
            values, nulls, tp = node(columns)
        except _NotCompiledError:
            return fallback(columns)
        if tp is None or not (pa.types.is_boolean(tp) or pa.types.is_int64(tp)):
            return fallback(columns)
        if step.type == "int64":
            values, tp = values.astype(np.int64), pa.int64()
        size = len(next(iter(columns.values())).values) if columns else 0
        if nulls is None:
            nulls = np.zeros(size, dtype=bool)
        columns[step.output] = Column(np.asarray(values), nulls, tp, bool(nulls.any()))
        return []

    return run


def _node(tree: ast.expr) -> _Node:
    if isinstance(tree, ast.Name) and tree.id not in ("True", "False", "None"):
        name = tree.id

        def column(columns: Columns) -> tuple[Any, Any, Any]:
            found = columns.get(name)
            if found is None or found.type not in (pa.float32(), pa.float64()):
                raise _NotCompiledError(name)
            return found.values, found.nulls, found.type

        return column
    if isinstance(tree, ast.Constant) and type(tree.value) in (int, float):
        value = tree.value
        if type(value) is int and abs(value) > _EXACT_FLOAT32:
            raise _NotCompiledError(repr(value))
        return lambda columns: (value, None, None)
    if isinstance(tree, ast.BinOp) and type(tree.op) in _ARITHMETIC:
        return _binary(_node(tree.left), _node(tree.right), _ARITHMETIC[type(tree.op)], None)
    if isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _COMPARE:
        compare = _COMPARE[type(tree.ops[0])]
        return _binary(_node(tree.left), _node(tree.comparators[0]), compare, pa.bool_())
    if (
        isinstance(tree, ast.Call)
        and isinstance(tree.func, ast.Name)
        and tree.func.id == "cast"
        and len(tree.args) == 2
        and isinstance(tree.args[1], ast.Constant)
        and tree.args[1].value == "int64"
    ):
        inner = _node(tree.args[0])

        def cast(columns: Columns) -> tuple[Any, Any, Any]:
            values, nulls, tp = inner(columns)
            if tp is None or not pa.types.is_boolean(tp):
                raise _NotCompiledError("cast of a non-boolean")
            return values.astype(np.int64), nulls, pa.int64()

        return cast
    raise _NotCompiledError(ast.dump(tree))


def _binary(
    left: _Node, right: _Node, function: Callable[[Any, Any], Any], result: pa.DataType | None
) -> _Node:
    def run(columns: Columns) -> tuple[Any, Any, Any]:
        a, a_nulls, a_type = left(columns)
        b, b_nulls, b_type = right(columns)
        if a_type is None and b_type is None:
            raise _NotCompiledError("two literals")
        tp = a_type or b_type
        if a_type is not None and b_type is not None and a_type != b_type:
            raise _NotCompiledError("mixed types")
        dtype = tp.to_pandas_dtype()
        if a_type is None:
            a = dtype(a)
        if b_type is None:
            b = dtype(b)
        with np.errstate(all="ignore"):
            values = function(a, b)
        if a_nulls is None:
            nulls = b_nulls
        elif b_nulls is None:
            nulls = a_nulls
        else:
            nulls = a_nulls | b_nulls
        return values, nulls, result or tp

    return run
