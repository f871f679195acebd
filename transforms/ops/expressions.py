"""A small, safe expression language over record batches, and the steps that use it.

Expressions use Python syntax and are parsed with :mod:`ast`; nothing is ever passed to
``eval``. What is allowed:

- column names, and numeric, string, boolean and ``None`` literals;
- arithmetic ``+ - * / // % **`` (``/`` is always true division; ``+`` joins strings),
  unary ``-``/``+``, comparisons (chains included), ``and``/``or``/``not`` (three-valued,
  as in SQL);
- functions: ``where(cond, a, b)``, ``is_null(x)``, ``fill_null(x, v)``, ``abs``, ``log``
  (natural), ``sqrt``, ``round(x[, ndigits])``, ``lower``, ``upper``, ``len``,
  ``cast(x, 'float32')``.

Evaluation is vectorised with ``pyarrow.compute``. A numeric literal combined with a
floating column takes the column's type, so ``tips > fare * 0.2`` on float32 columns is
``tips > fare * float32(0.2)``, exactly what tf.Transform computes. Nulls propagate.

Values an expression cannot compute for some rows (a failed ``cast``, an integer ``//`` or
``%`` by zero) are reported per row, and the steps reject those rows with reason
``expression_failed``.

Non-finite numbers. Float arithmetic follows IEEE 754 inside an expression, and the
``expression`` step checks what comes out: a row whose float result is NaN, ``inf`` or
``-inf`` is rejected with reason ``non_finite`` (the message names the output column and
the expression), so a non-finite number never enters a dataset or a fitted statistic
through an expression. Per operation:

- ``/`` by zero, ``//`` and ``%`` of floats by zero, ``log`` of 0 or of a negative number,
  ``sqrt`` of a negative number, ``**`` with a negative base and a fractional exponent, and
  ``+ - * **`` overflowing float range give NaN or an infinity: rejected if it reaches the
  result. So is a non-finite input value passed through (``abs``, ``round``, negation or
  arithmetic keep it non-finite), from a column the source allows to hold one.
- Comparisons, ``and``/``or``/``not``, ``is_null`` and ``where``'s condition give booleans
  with IEEE semantics (NaN compares false, ``inf > 1`` is true): this is intended, never
  rejected. ``where`` picks per row, so ``where(y != 0, x / y, 0.0)`` rejects nothing: the
  division's non-finite values are in the branch not taken.
- ``cast`` of a non-finite value to an integer type fails the row (``expression_failed``).
- Integer arithmetic never gives a non-finite value (``//`` and ``%`` by zero fail the row).
- The ``filter`` step keeps or drops by a boolean, so a non-finite value inside its
  condition only makes a comparison false.

Size. An expression may have at most ``MAX_EXPRESSION_NODES`` (1,000) syntax-tree nodes
(names, literals, operators and calls) and nest at most ``MAX_EXPRESSION_DEPTH`` (100)
deep; a longer or deeper one is refused when the spec is loaded, as is one too deep for
Python's parser. Evaluation recurses over the tree, so the bound keeps every expression
well inside Python's recursion limit; a longer computation can be split into several
``expression`` steps.

Steps registered here: ``expression`` (compute a column, e.g. a label) and ``filter`` (keep
rows where a condition is true).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import HIDDEN_PREFIX, parse_type
from transforms.core.steps import Fitted, Rejection, Step, StepResult, register

EXPRESSION_FAILED = "expression_failed"
NON_FINITE = "non_finite"

# Size limits, checked at parse time (see the module docstring).
MAX_EXPRESSION_NODES = 1_000
MAX_EXPRESSION_DEPTH = 100
# Longest expression text quoted in full in an error message.
_QUOTED_CHARS = 80


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal value (kept apart from arrays so it can take a column's type)."""

    value: Any


Value: TypeAlias = "pa.Array | pa.ChunkedArray | pa.Scalar | Lit"

_FUNCTIONS: dict[str, tuple[int, int]] = {
    # name: (min args, max args)
    "where": (3, 3),
    "is_null": (1, 1),
    "fill_null": (2, 2),
    "abs": (1, 1),
    "log": (1, 1),
    "sqrt": (1, 1),
    "round": (1, 2),
    "lower": (1, 1),
    "upper": (1, 1),
    "len": (1, 1),
    "cast": (2, 2),
}
FUNCTIONS = tuple(sorted(_FUNCTIONS))

_BINARY = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_COMPARE: dict[type, Callable[..., Any]] = {
    ast.Eq: pc.equal,
    ast.NotEq: pc.not_equal,
    ast.Lt: pc.less,
    ast.LtE: pc.less_equal,
    ast.Gt: pc.greater,
    ast.GtE: pc.greater_equal,
}


@dataclasses.dataclass(frozen=True)
class Expr:
    """A parsed, checked expression.

    Attributes:
        source: The expression text.
        tree: Its syntax tree.
        columns: Column names it reads, sorted.
    """

    source: str
    tree: ast.expr
    columns: tuple[str, ...]

    def __str__(self) -> str:
        return self.source


def parse(expr: str, columns: Sequence[str] | None = None) -> Expr:
    """Parses and checks an expression.

    Args:
        expr: The expression text, e.g. ``where(fare > 0, tips / fare, 0.0)``.
        columns: If given, the columns that exist; any other name is an error.

    Raises:
        ValueError: on a syntax error, a construct outside the language, a call of an unknown
            function or with the wrong number of arguments, an expression beyond
            ``MAX_EXPRESSION_NODES`` nodes or ``MAX_EXPRESSION_DEPTH`` levels of nesting,
            or (with ``columns``) an unknown name; the message lists what is valid.
    """
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"invalid expression {_quoted(expr)}: {exc.msg}") from exc
    except (RecursionError, MemoryError):
        # CPython's parser gives up on very deep nesting before building a tree.
        raise ValueError(
            f"expression {_quoted(expr)} is too large or too deeply nested to parse; the "
            f"limits are {MAX_EXPRESSION_NODES:,} nodes and {MAX_EXPRESSION_DEPTH} levels of "
            "nesting (split it into several expression steps)"
        ) from None
    _check_size(tree, expr)
    names: set[str] = set()
    _check(tree, expr, names)
    if columns is not None:
        unknown = sorted(names - set(columns))
        if unknown:
            raise ValueError(
                f"unknown name {unknown[0]!r} in {_quoted(expr)}; columns are "
                f"{', '.join(c for c in columns if not c.startswith(HIDDEN_PREFIX))}; "
                f"functions are {', '.join(FUNCTIONS)}"
            )
    return Expr(expr, tree, tuple(sorted(names)))


def _quoted(source: str) -> str:
    """The expression for an error message: in full if short, else its start and length."""
    if len(source) <= _QUOTED_CHARS:
        return repr(source)
    return f"{source[:_QUOTED_CHARS]!r}... ({len(source):,} characters)"


def _check_size(tree: ast.expr, source: str) -> None:
    """Refuses trees beyond the node and depth limits (iteratively: never recurses)."""
    nodes = 0
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            nodes += 1
            deepest = max(deepest, depth)
            if nodes > MAX_EXPRESSION_NODES:
                raise ValueError(
                    f"expression {_quoted(source)} has more than {MAX_EXPRESSION_NODES:,} "
                    f"nodes (names, literals, operators and calls), the limit; split it "
                    "into several expression steps"
                )
            if deepest > MAX_EXPRESSION_DEPTH:
                raise ValueError(
                    f"expression {_quoted(source)} nests more than {MAX_EXPRESSION_DEPTH} "
                    "levels deep, the limit; split it into several expression steps"
                )
            depth += 1
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))


def _check(node: ast.AST, source: str, names: set[str]) -> None:
    def fail(what: str) -> ValueError:
        return ValueError(
            f"{what} is not allowed in expression {_quoted(source)}; use column names, literals, "
            f"arithmetic, comparisons, and/or/not and the functions {', '.join(FUNCTIONS)}"
        )

    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return
        names.add(node.id)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool) and node.value is not None:
            raise fail(f"literal {node.value!r}")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise fail(f"operator {type(node.op).__name__}")
        _check(node.left, source, names)
        _check(node.right, source, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            raise fail(f"operator {type(node.op).__name__}")
        _check(node.operand, source, names)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, source, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise fail(f"comparison {type(op).__name__}")
        _check(node.left, source, names)
        for comparator in node.comparators:
            _check(comparator, source, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ValueError(
                f"unknown function {called!r} in {_quoted(source)}; functions are {', '.join(FUNCTIONS)}"
            )
        if node.keywords:
            raise fail("a keyword argument")
        low, high = _FUNCTIONS[node.func.id]
        if not low <= len(node.args) <= high:
            count = str(low) if low == high else f"{low} or {high}"
            raise ValueError(
                f"{node.func.id}() takes {count} arguments, got {len(node.args)} in {_quoted(source)}"
            )
        if node.func.id == "cast":
            target = node.args[1]
            if not (isinstance(target, ast.Constant) and isinstance(target.value, str)):
                raise ValueError(f"cast() needs a type name string literal in {_quoted(source)}")
            parse_type(target.value)
        checked = node.args[:1] if node.func.id == "cast" else node.args
        for arg in checked:
            _check(arg, source, names)
    else:
        raise fail(type(node).__name__)


# --- evaluation ---------------------------------------------------------------------------


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
        return _binary(_BINARY[type(node.op)], left, right, context)
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
            part = _folded(left, right, _COMPARE[type(op)](a, b))
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


# --- steps --------------------------------------------------------------------------------


def _non_finite(values: pa.Array) -> np.ndarray:
    """Rows holding NaN, inf or -inf (False for nulls and for non-float arrays)."""
    if not pa.types.is_floating(values.type):
        return np.zeros(len(values), dtype=bool)
    finite = pc.is_finite(values).fill_null(True)
    return ~np.asarray(finite.to_numpy(zero_copy_only=False), dtype=bool)


def _rejection(evaluated: Evaluated, source: str) -> tuple[Rejection, ...]:
    if not evaluated.failed.any():
        return ()
    messages = np.array([f"{source!r}: {m}" if m else "" for m in evaluated.messages], dtype=object)
    return (Rejection(evaluated.failed, EXPRESSION_FAILED, messages),)


def put_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    """Returns ``batch`` with column ``name`` replaced in place, or appended if new."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    index = batch.schema.get_field_index(name)
    if index >= 0:
        return batch.set_column(index, pa.field(name, values.type), values)
    return batch.append_column(pa.field(name, values.type), values)


@register
@dataclasses.dataclass(kw_only=True)
class Expression(Step):
    """Computes a column from an expression (this is how labels are computed).

    Example: ``{op: expression, output: tips_xf, expr: "cast(tips > fare * 0.2, 'int64')"}``.

    Rows the expression cannot compute are rejected with reason ``expression_failed``; so
    are rows whose value does not cast to ``type``. A row whose float value is NaN, ``inf``
    or ``-inf`` (``x / 0``, ``log(0)``, ``sqrt(-1)``, an overflow, a non-finite input) is
    rejected with reason ``non_finite``, naming the column and the expression; see the
    module docstring for what each operation does. Nulls propagate.
    """

    op: ClassVar[str] = "expression"

    output: str
    expr: str
    type: str | None = None

    def validate(self) -> None:
        self._parsed = parse(self.expr)
        if self.type is not None:
            parse_type(self.type)

    @property
    def parsed(self) -> Expr:
        if not hasattr(self, "_parsed"):
            self._parsed = parse(self.expr)
        return self._parsed

    def input_columns(self) -> list[str]:
        return list(self.parsed.columns)

    def output_columns(self) -> list[str]:
        return [self.output]

    def default_name(self) -> str:
        return f"{self.op}:{self.output}"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        evaluated = evaluate_checked(self.parsed, batch)
        values = evaluated.values
        rejections = list(_rejection(evaluated, self.expr))
        non_finite = _non_finite(values) & ~evaluated.failed
        if non_finite.any():
            rejections.append(self._non_finite_rejection(values, non_finite))
        if self.type is not None:
            values, failed = checked_cast(values, parse_type(self.type))
            if failed.any():
                shown = np.asarray(evaluated.values.to_pylist(), dtype=object)
                messages = np.array(
                    [f"{self.output}: value {v!r} does not fit {self.type}" for v in shown],
                    dtype=object,
                )
                rejections.append(Rejection(failed, EXPRESSION_FAILED, messages))
            # A float cast may overflow (1e300 to float32).
            overflow = _non_finite(values) & ~non_finite & ~evaluated.failed & ~failed
            if overflow.any():
                rejections.append(self._non_finite_rejection(values, overflow))
        return StepResult(put_column(batch, self.output, values), tuple(rejections))

    def _non_finite_rejection(self, values: pa.Array, mask: np.ndarray) -> Rejection:
        shown = values.to_numpy(zero_copy_only=False)
        messages = np.full(len(mask), "", dtype=object)
        for row in np.flatnonzero(mask):
            messages[row] = (
                f"{self.output}: expression {_quoted(self.expr)} gives {float(shown[row])}, "
                "not a finite number"
            )
        return Rejection(mask, NON_FINITE, messages)


@register
@dataclasses.dataclass(kw_only=True)
class Filter(Step):
    """Keeps rows where ``expr`` is true; a null result counts as false.

    ``action: drop`` drops the other rows on purpose, counted under ``reason``;
    ``action: reject`` sends them to the error output with ``reason``. Rows the expression
    cannot compute are rejected with reason ``expression_failed`` either way.
    """

    op: ClassVar[str] = "filter"

    expr: str
    reason: str
    action: Literal["drop", "reject"] = "drop"

    def validate(self) -> None:
        self._parsed = parse(self.expr)
        if not self.reason.strip():
            raise ValueError("reason must be a non-empty snake_case code, e.g. 'non_positive_fare'")

    @property
    def parsed(self) -> Expr:
        if not hasattr(self, "_parsed"):
            self._parsed = parse(self.expr)
        return self._parsed

    def input_columns(self) -> list[str]:
        return list(self.parsed.columns)

    def default_name(self) -> str:
        return f"{self.op}:{self.reason}"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        evaluated = evaluate_checked(self.parsed, batch)
        values = evaluated.values
        if not pa.types.is_boolean(values.type):
            raise ValueError(f"filter {self.expr!r} gives {values.type}, not a boolean")
        keep = np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        refused = ~keep & ~evaluated.failed
        outcome = Rejection(refused, self.reason, f"{self.expr!r} is not true")
        failed = _rejection(evaluated, self.expr)
        if self.action == "drop":
            return StepResult(batch, failed, (outcome,))
        return StepResult(batch, (*failed, outcome))
