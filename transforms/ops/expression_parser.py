"""The expression language's syntax: parsing and checking expressions, never running them.

Expressions use Python syntax and are parsed with :mod:`ast`; nothing is ever passed to
``eval``. :func:`parse` refuses at spec load every construct outside the language (listed in
:mod:`transforms.ops.expressions`), a call of an unknown function or with the wrong number
of arguments, and an expression beyond the size limits; :mod:`transforms.ops.expression_eval`
evaluates what it accepts.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence

from transforms.core.schema import HIDDEN_PREFIX, parse_type

# Size limits, checked at parse time (see transforms.ops.expressions).
MAX_EXPRESSION_NODES = 1_000
MAX_EXPRESSION_DEPTH = 100
# Longest expression text quoted in full in an error message.
_QUOTED_CHARS = 80

# Functions of the language: name -> (min args, max args).
FUNCTION_ARITY: dict[str, tuple[int, int]] = {
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
FUNCTIONS = tuple(sorted(FUNCTION_ARITY))

# Arithmetic and comparison operators of the language, by syntax-tree node type.
BINARY_OPERATORS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
COMPARISONS: dict[type, str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
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
        raise ValueError(f"invalid expression {quoted(expr)}: {exc.msg}") from exc
    except (RecursionError, MemoryError):
        # CPython's parser gives up on very deep nesting before building a tree.
        raise ValueError(
            f"expression {quoted(expr)} is too large or too deeply nested to parse; the "
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
                f"unknown name {unknown[0]!r} in {quoted(expr)}; columns are "
                f"{', '.join(c for c in columns if not c.startswith(HIDDEN_PREFIX))}; "
                f"functions are {', '.join(FUNCTIONS)}"
            )
    return Expr(expr, tree, tuple(sorted(names)))


def quoted(source: str) -> str:
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
                    f"expression {quoted(source)} has more than {MAX_EXPRESSION_NODES:,} "
                    f"nodes (names, literals, operators and calls), the limit; split it "
                    "into several expression steps"
                )
            if deepest > MAX_EXPRESSION_DEPTH:
                raise ValueError(
                    f"expression {quoted(source)} nests more than {MAX_EXPRESSION_DEPTH} "
                    "levels deep, the limit; split it into several expression steps"
                )
            depth += 1
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))


def _check(node: ast.AST, source: str, names: set[str]) -> None:
    def fail(what: str) -> ValueError:
        return ValueError(
            f"{what} is not allowed in expression {quoted(source)}; use column names, literals, "
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
        if type(node.op) not in BINARY_OPERATORS:
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
            if type(op) not in COMPARISONS:
                raise fail(f"comparison {type(op).__name__}")
        _check(node.left, source, names)
        for comparator in node.comparators:
            _check(comparator, source, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTION_ARITY:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ValueError(
                f"unknown function {called!r} in {quoted(source)}; functions are {', '.join(FUNCTIONS)}"
            )
        if node.keywords:
            raise fail("a keyword argument")
        low, high = FUNCTION_ARITY[node.func.id]
        if not low <= len(node.args) <= high:
            count = str(low) if low == high else f"{low} or {high}"
            raise ValueError(
                f"{node.func.id}() takes {count} arguments, got {len(node.args)} in {quoted(source)}"
            )
        if node.func.id == "cast":
            target = node.args[1]
            if not (isinstance(target, ast.Constant) and isinstance(target.value, str)):
                raise ValueError(f"cast() needs a type name string literal in {quoted(source)}")
            parse_type(target.value)
        checked = node.args[:1] if node.func.id == "cast" else node.args
        for arg in checked:
            _check(arg, source, names)
    else:
        raise fail(type(node).__name__)
