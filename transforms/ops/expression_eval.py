"""Vectorised evaluation of parsed expressions over record batches.

Evaluation is vectorised with ``pyarrow.compute``. A numeric literal combined with a
floating column takes the column's type, so ``tips > fare * 0.2`` on float32 columns is
``tips > fare * float32(0.2)``, exactly what tf.Transform computes. Nulls propagate. Values
an expression cannot compute for some rows (a failed ``cast``, an integer ``//`` or ``%`` by
zero) are reported per row (:func:`evaluate_checked`); what each operation does with
non-finite numbers is in :mod:`transforms.ops.expressions`.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import HIDDEN_PREFIX, parse_type
from transforms.ops.expression_parser import BINARY_OPERATORS, COMPARISONS, FUNCTIONS, Expr

_COMPARE: dict[str, Callable[..., Any]] = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal value (kept apart from arrays so it can take a column's type)."""

    value: Any


Value: TypeAlias = "pa.Array | pa.ChunkedArray | pa.Scalar | Lit"


class _Context:
    """Per-batch evaluation state: the batch and the rows that could not be computed."""

    def __init__(self, batch: pa.RecordBatch, source: str) -> None:
        self.batch = batch
        self.source = source
        self.failed = np.zeros(batch.num_rows, dtype=bool)
        self.messages = np.full(batch.num_rows, "", dtype=object)

    def fail(self, mask: np.ndarray, message: str) -> None:
        new = mask & ~self.failed
        self.messages[new] = message
        self.failed |= mask


@dataclasses.dataclass
class Evaluated:
    """Result of :func:`evaluate_checked`.

    Attributes:
        values: One value per row (rows in ``failed`` hold null).
        failed: Rows the expression could not compute.
        messages: Why, per row (empty where not failed).
    """

    values: pa.Array
    failed: np.ndarray
    messages: np.ndarray


def evaluate_checked(expr: Expr, batch: pa.RecordBatch) -> Evaluated:
    """Evaluates ``expr`` over ``batch``, reporting rows it cannot compute.

    Raises:
        ValueError: if the expression reads a column the batch does not have (listing the
            columns) or combines types that do not go together (e.g. a string plus a number).
    """
    missing = [c for c in expr.columns if c not in batch.schema.names]
    if missing:
        visible = [n for n in batch.schema.names if not n.startswith(HIDDEN_PREFIX)]
        raise ValueError(
            f"unknown name {missing[0]!r} in {expr.source!r}; columns are {', '.join(visible)}; "
            f"functions are {', '.join(FUNCTIONS)}"
        )
    context = _Context(batch, expr.source)
    try:
        result = _eval(expr.tree, context)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(f"cannot evaluate {expr.source!r}: {exc}") from exc
    values = _as_array(result, batch.num_rows)
    if context.failed.any():
        values = pc.if_else(pa.array(context.failed), pa.scalar(None, values.type), values)
    return Evaluated(values, context.failed, context.messages)


def evaluate(expr: Expr, batch: pa.RecordBatch) -> pa.Array:
    """Evaluates ``expr`` over ``batch``: one value per row.

    Raises:
        ValueError: as :func:`evaluate_checked`, and if any row cannot be computed (the first
            such row's reason is given).
    """
    result = evaluate_checked(expr, batch)
    if result.failed.any():
        row = int(np.flatnonzero(result.failed)[0])
        raise ValueError(f"{expr.source!r} failed on row {row}: {result.messages[row]}")
    return result.values


def _as_array(value: Value, length: int) -> pa.Array:
    if isinstance(value, Lit):
        value = _scalar(value.value, None)
    if isinstance(value, pa.Scalar):
        if value.type == pa.null():
            return pa.nulls(length)
        return pa.repeat(value, length)
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    return value


def _scalar(value: Any, like: pa.DataType | None) -> pa.Scalar:
    """A literal as a scalar, taking ``like``'s type where that keeps the literal's meaning."""
    if value is None:
        return pa.scalar(None, like) if like is not None else pa.scalar(None)
    if isinstance(value, bool):
        return pa.scalar(value, pa.bool_())
    if like is not None and isinstance(value, int | float):
        if pa.types.is_floating(like):
            return pa.scalar(value, like)
        if pa.types.is_integer(like) and isinstance(value, int):
            return pa.scalar(value, pa.int64())
    if isinstance(value, int):
        return pa.scalar(value, pa.int64())
    if isinstance(value, float):
        return pa.scalar(value, pa.float64())
    return pa.scalar(value, pa.string())


def _type(value: Value) -> pa.DataType | None:
    return None if isinstance(value, Lit) else value.type


def _operands(left: Value, right: Value) -> tuple[Any, Any]:
    """Turns literals into scalars typed after the other operand."""
    if isinstance(left, Lit) and isinstance(right, Lit):
        return _scalar(left.value, None), _scalar(right.value, None)
    if isinstance(left, Lit):
        return _scalar(left.value, _type(right)), right
    if isinstance(right, Lit):
        return left, _scalar(right.value, _type(left))
    return left, right


def _folded(left: Value, right: Value, result: Any) -> Value:
    # An operation on two literals stays a literal so it can still adapt to a column later.
    if isinstance(left, Lit) and isinstance(right, Lit) and isinstance(result, pa.Scalar):
        return Lit(result.as_py())
    return result


def _is_int(tp: pa.DataType) -> bool:
    return pa.types.is_integer(tp)


def _valid_mask(value: Any, length: int) -> np.ndarray:
    """Rows where ``value`` is non-null and non-zero (for integer division checks)."""
    array = _as_array(value, length)
    zero = pc.equal(array, pa.scalar(0, array.type))
    return np.asarray(zero.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _binary(op: str, left: Value, right: Value, context: _Context) -> Value:
    a, b = _operands(left, right)
    n = context.batch.num_rows
    if op == "+":
        if pa.types.is_string(a.type) and pa.types.is_string(b.type):
            result = pc.binary_join_element_wise(a, b, "")
        else:
            result = pc.add(a, b)
    elif op == "-":
        result = pc.subtract(a, b)
    elif op == "*":
        result = pc.multiply(a, b)
    elif op == "/":
        if _is_int(a.type) and _is_int(b.type):
            a, b = pc.cast(a, pa.float64()), pc.cast(b, pa.float64())
        result = pc.divide(a, b)
    elif op in ("//", "%"):
        if _is_int(a.type) and _is_int(b.type):
            zero = _valid_mask(b, n)
            if zero.any():
                context.fail(zero, f"integer {op} by zero")
                b = pc.if_else(pa.array(zero), pa.scalar(1, b.type), _as_array(b, n))
            # Python's floor semantics computed exactly in integers (Arrow truncates).
            truncated = pc.divide(a, b)
            if op == "//":
                fix = pc.and_(
                    pc.not_equal(pc.multiply(truncated, b), a),
                    pc.not_equal(pc.less(a, 0), pc.less(b, 0)),
                )
                result = pc.subtract(truncated, pc.cast(fix, truncated.type))
            else:
                remainder = pc.subtract(a, pc.multiply(truncated, b))
                fix = pc.and_(
                    pc.not_equal(remainder, 0), pc.not_equal(pc.less(remainder, 0), pc.less(b, 0))
                )
                result = pc.add(remainder, pc.if_else(fix, b, pc.multiply(b, 0)))
        else:
            quotient = pc.floor(pc.divide(a, b))
            result = quotient if op == "//" else pc.subtract(a, pc.multiply(quotient, b))
    else:  # "**"
        if _is_int(a.type) and _is_int(b.type):
            a = pc.cast(a, pa.float64())
        result = pc.power(a, b)
    return _folded(left, right, result)


def _eval(node: ast.expr, context: _Context) -> Value:
    if isinstance(node, ast.Constant):
        return Lit(node.value)
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return Lit({"True": True, "False": False, "None": None}[node.id])
        return context.batch.column(context.batch.schema.get_field_index(node.id))
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, context)
        right = _eval(node.right, context)
        return _binary(BINARY_OPERATORS[type(node.op)], left, right, context)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, context)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(operand, Lit):
            return Lit(-operand.value if isinstance(node.op, ast.USub) else not operand.value)
        return pc.negate(operand) if isinstance(node.op, ast.USub) else pc.invert(operand)
    if isinstance(node, ast.BoolOp):
        combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
        values = [_eval(v, context) for v in node.values]
        combined = values[0]
        for value in values[1:]:
            a, b = _operands(combined, value)
            combined = _folded(combined, value, combine(a, b))
        return combined
    if isinstance(node, ast.Compare):
        left = _eval(node.left, context)
        result: Value | None = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, context)
            a, b = _operands(left, right)
            part = _folded(left, right, _COMPARE[COMPARISONS[type(op)]](a, b))
            if result is None:
                result = part
            else:
                x, y = _operands(result, part)
                result = _folded(result, part, pc.and_kleene(x, y))
            left = right
        assert result is not None
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _call(node.func.id, node.args, context)
    raise AssertionError(f"unchecked node {ast.dump(node)}")


def _unary_array(value: Value) -> Any:
    return _scalar(value.value, None) if isinstance(value, Lit) else value


def _call(name: str, args: list[ast.expr], context: _Context) -> Value:
    if name == "cast":
        target = args[1]
        assert isinstance(target, ast.Constant) and isinstance(target.value, str)
        return _cast(_eval(args[0], context), parse_type(target.value), context)
    values = [_eval(a, context) for a in args]
    if name == "where":
        cond = _unary_array(values[0])
        a, b = _operands(values[1], values[2])
        # A null condition is not true: take the "else" branch, as a filter would drop it.
        if isinstance(cond, pa.Scalar):
            return values[1] if cond.as_py() else values[2]
        return pc.if_else(cond.fill_null(False), a, b)
    if name == "is_null":
        value = values[0]
        if isinstance(value, Lit):
            return Lit(value.value is None)
        return pc.is_null(value)
    if name == "fill_null":
        value, fill = _operands(values[0], values[1])
        if isinstance(values[0], Lit):
            return values[1] if values[0].value is None else values[0]
        if isinstance(fill, pa.Scalar) and fill.type != value.type:
            fill = fill.cast(value.type)
        return pc.coalesce(value, fill)
    if name == "round":
        digits = 0
        if len(values) == 2:
            if not isinstance(values[1], Lit) or not isinstance(values[1].value, int):
                raise ValueError(
                    f"round()'s ndigits must be an integer literal in {context.source!r}"
                )
            digits = values[1].value
        # Half to even, as Python's round().
        return _lift(values[0], lambda x: pc.round(x, digits, round_mode="half_to_even"))
    functions: dict[str, Callable[[Any], Any]] = {
        "abs": pc.abs,
        "log": pc.ln,
        "sqrt": pc.sqrt,
        "lower": pc.utf8_lower,
        "upper": pc.utf8_upper,
        "len": lambda x: pc.cast(pc.utf8_length(x), pa.int64()),
    }
    return _lift(values[0], functions[name])


def _lift(value: Value, function: Callable[[Any], Any]) -> Value:
    if isinstance(value, Lit):
        result = function(_scalar(value.value, None))
        return Lit(result.as_py())
    return function(value)


def checked_cast(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Casts safely; values that do not fit become null and are flagged.

    Returns:
        The cast array and a boolean mask of the rows whose non-null value failed to cast.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    try:
        return pc.cast(values, target), np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Slow path, only for batches with bad values: cast each distinct value on its own.
    encoded = pc.dictionary_encode(values)
    good: list[Any] = []
    ok = np.ones(len(encoded.dictionary), dtype=bool)
    for i in range(len(encoded.dictionary)):
        try:
            good.append(pc.cast(encoded.dictionary.slice(i, 1), target)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            good.append(None)
            ok[i] = False
    indices = encoded.indices
    cast = pc.take(pa.array(good, target), indices)
    index = indices.fill_null(0).to_numpy(zero_copy_only=False)
    failed = ~ok[index] & ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return cast, failed


def _cast(value: Value, target: pa.DataType, context: _Context) -> Value:
    if isinstance(value, Lit):
        return (
            pa.scalar(value.value).cast(target)
            if value.value is not None
            else pa.scalar(None, target)
        )
    array = _as_array(value, context.batch.num_rows)
    cast, failed = checked_cast(array, target)
    if failed.any():
        shown = array.to_pylist()
        for row in np.flatnonzero(failed):
            if not context.failed[row]:
                context.failed[row] = True
                context.messages[row] = f"cannot cast {shown[row]!r} to {target}"
    return cast
