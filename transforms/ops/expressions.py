"""A small, safe expression language over record batches, and the steps that use it.

Expressions use Python syntax and are parsed with :mod:`ast`
(:mod:`transforms.ops.expression_parser`); nothing is ever passed to ``eval``. What is
allowed:

- column names, and numeric, string, boolean and ``None`` literals;
- arithmetic ``+ - * / // % **`` (``/`` is always true division; ``+`` joins strings),
  unary ``-``/``+``, comparisons (chains included), ``and``/``or``/``not`` (three-valued,
  as in SQL);
- functions: ``where(cond, a, b)``, ``is_null(x)``, ``fill_null(x, v)``, ``abs``, ``log``
  (natural), ``sqrt``, ``round(x[, ndigits])``, ``lower``, ``upper``, ``len``,
  ``cast(x, 'float32')``.

Evaluation (:mod:`transforms.ops.expression_eval`) is vectorised with ``pyarrow.compute``.
A numeric literal combined with a floating column takes the column's type, so
``tips > fare * 0.2`` on float32 columns is ``tips > fare * float32(0.2)``, exactly what
tf.Transform computes. Nulls propagate.

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

Steps defined here: ``expression`` (compute a column, e.g. a label) and ``filter`` (keep
rows where a condition is true).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import parse_type
from transforms.core.steps import Fitted, Rejection, Step, StepResult
from transforms.ops.columns import put_column
from transforms.ops.expression_eval import Evaluated, checked_cast, evaluate_checked
from transforms.ops.expression_parser import Expr, parse, quoted

EXPRESSION_FAILED = "expression_failed"
NON_FINITE = "non_finite"


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
                f"{self.output}: expression {quoted(self.expr)} gives {float(shown[row])}, "
                "not a finite number"
            )
        return Rejection(mask, NON_FINITE, messages)


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


STEPS = (Expression, Filter)
