"""Cleaning steps: casts, text normalisation and column housekeeping (drop, rename, copy).

Every step here is a :class:`~transforms.core.steps.Step` whose ``apply`` is a vectorised
``pyarrow.compute`` function of one batch. The checks that reject rows are in
:mod:`transforms.ops.checks`; the steps whose values can be fitted (``fill_missing``,
``clip``) in :mod:`transforms.ops.fitted_clean`.

Reason code: ``cast_failed`` (a value that does not convert in ``cast`` or in a typed
``copy``; the message names the column, the value and the type).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.schema import HIDDEN_PREFIX, parse_type, type_name
from transforms.core.steps import Fitted, Rejection, Step, StepResult
from transforms.ops.arrays import column_of
from transforms.ops.columns import (
    check_columns,
    column,
    put_column,
    replace_column,
    require_string,
    row_messages,
)
from transforms.ops.expression_eval import checked_cast

CAST_FAILED = "cast_failed"


# --- cast -----------------------------------------------------------------------------------


def cast_array(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Casts ``values`` to ``target`` (safe: no truncation or overflow).

    Values that do not convert become null and are flagged. The whole array is cast in one
    call; only when that fails is it split in halves until the failing values are isolated,
    so a batch with k bad values costs O(k log n) vectorised casts.

    Args:
        values: Any Arrow array.
        target: The Arrow type to cast to.

    Returns:
        The cast array (failures null) and a bool mask of the values that failed.

    Raises:
        ValueError: if Arrow has no cast between the two types at all (a spec error).
    """
    failed = np.zeros(len(values), dtype=bool)
    try:
        parts = _cast_parts(values, target, failed, 0)
    except pa.ArrowNotImplementedError as exc:
        raise ValueError(
            f"cannot cast {type_name(values.type)} to {type_name(target)}: {exc}"
        ) from exc
    if len(parts) == 1:
        return parts[0], failed
    return pa.concat_arrays(parts), failed


def _cast_parts(
    values: pa.Array, target: pa.DataType, failed: np.ndarray, offset: int
) -> list[pa.Array]:
    try:
        return [pc.cast(values, target, safe=True)]
    except pa.ArrowInvalid:
        if len(values) == 1:
            failed[offset] = True
            return [pa.nulls(1, target)]
    half = len(values) // 2
    return _cast_parts(values.slice(0, half), target, failed, offset) + _cast_parts(
        values.slice(half), target, failed, offset + half
    )


def _cast_message(name: str, tp: str, value: str) -> str:
    return f"cannot cast {name!r} value {value} to {tp}"


@dataclasses.dataclass(kw_only=True)
class Cast(Step):
    """Casts columns to spec types (``{fare: float32, trip_seconds: int64}``).

    A non-null value that does not convert (``'abc'`` to a number, ``1.5`` to an integer, an
    out-of-range integer) rejects the row with reason ``cast_failed``. Strings are not
    trimmed first: put a ``normalize_text`` step before the cast for padded input.
    """

    op: ClassVar[str] = "cast"

    columns: dict[str, str]

    def validate(self) -> None:
        check_columns(list(self.columns), "cast.columns")
        for name, tp in self.columns.items():
            try:
                parse_type(tp)
            except ValueError as exc:
                raise ValueError(f"cast.columns.{name}: {exc}") from None

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        rejections = []
        for name, tp in self.columns.items():
            values = column(batch, name)
            target = parse_type(tp)
            cast, failed = cast_array(values, target)
            if failed.any():
                messages = row_messages(failed, values, functools.partial(_cast_message, name, tp))
                rejections.append(Rejection(failed, CAST_FAILED, messages))
            batch = replace_column(batch, name, cast)
        return StepResult(batch, tuple(rejections))


# --- normalize text -------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class NormalizeText(Step):
    """Trims, lower-cases and collapses runs of whitespace in string columns.

    ``collapse_whitespace`` turns every run of Unicode whitespace into one space; with
    ``trim`` the ends are stripped afterwards. Nulls stay null.
    """

    op: ClassVar[str] = "normalize_text"

    columns: list[str]
    trim: bool = True
    lowercase: bool = False
    collapse_whitespace: bool = False

    def validate(self) -> None:
        check_columns(self.columns, "normalize_text.columns")
        if not (self.trim or self.lowercase or self.collapse_whitespace):
            raise ValueError(
                "normalize_text does nothing: set trim, lowercase or collapse_whitespace to true"
            )

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name in self.columns:
            values = column(batch, name)
            require_string(name, values, "normalize_text")
            if self.collapse_whitespace:
                values = pc.replace_substring_regex(values, r"\s+", " ")
            if self.trim:
                values = pc.utf8_trim_whitespace(values)
            if self.lowercase:
                values = pc.utf8_lower(values)
            batch = replace_column(batch, name, values)
        return StepResult(batch)


# --- drop and rename ------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class DropColumns(Step):
    """Removes columns from the data."""

    op: ClassVar[str] = "drop_columns"

    columns: list[str]

    def validate(self) -> None:
        check_columns(self.columns, "drop_columns.columns")
        hidden = [c for c in self.columns if c.startswith(HIDDEN_PREFIX)]
        if hidden:
            raise ValueError(
                f"drop_columns cannot drop hidden source column {hidden[0]!r}; writers omit it"
            )

    # No input_columns: dropping reads no values, so it never changes which rows later
    # fitted steps see and must not split fit passes.

    def removed_columns(self) -> list[str]:
        return list(self.columns)

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name in self.columns:
            column(batch, name)  # a clear error for a column that is not there
        return StepResult(batch.drop_columns(self.columns))


@dataclasses.dataclass(kw_only=True)
class Rename(Step):
    """Renames columns (``{old: new}``), keeping their position."""

    op: ClassVar[str] = "rename"

    columns: dict[str, str]

    def validate(self) -> None:
        check_columns(list(self.columns), "rename.columns")
        targets = list(self.columns.values())
        for old, new in self.columns.items():
            if not new:
                raise ValueError(f"rename.columns.{old} is empty; give the new name")
            if old.startswith(HIDDEN_PREFIX) or new.startswith(HIDDEN_PREFIX):
                raise ValueError(
                    f"rename {old!r} -> {new!r}: names starting with {HIDDEN_PREFIX!r} are"
                    " reserved for hidden source columns"
                )
            if targets.count(new) > 1:
                raise ValueError(f"rename.columns gives the name {new!r} to several columns")

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return list(self.columns.values())

    def removed_columns(self) -> list[str]:
        return [old for old in self.columns if old not in self.columns.values()]

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        for name in self.columns:
            column(batch, name)
        names = [self.columns.get(n, n) for n in batch.schema.names]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(
                f"rename would create duplicate column {clash[0]!r}; drop or rename the"
                " existing column first"
            )
        return StepResult(batch.rename_columns(names))


@dataclasses.dataclass(kw_only=True)
class Copy(Step):
    """Copies columns to ``{column}{suffix}``, optionally cast to ``type`` (passthroughs).

    Values that do not cast are rejected with reason ``cast_failed``.
    """

    op: ClassVar[str] = "copy"

    columns: list[str]
    suffix: str = "_xf"
    type: str | None = None

    def validate(self) -> None:
        if not self.columns:
            raise ValueError("columns must list at least one column")
        if not self.suffix:
            raise ValueError("suffix must be non-empty, or the copy would replace the column")
        if self.type is not None:
            parse_type(self.type)

    def input_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self) -> list[str]:
        return [f"{c}{self.suffix}" for c in self.columns]

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        out = batch
        rejections = []
        for source, target in zip(self.columns, self.output_columns(), strict=True):
            values = column_of(batch, source)
            if self.type is not None:
                cast, failed = checked_cast(values, parse_type(self.type))
                if failed.any():
                    shown = values.to_pylist()
                    messages = np.full(len(failed), "", dtype=object)
                    for row in np.flatnonzero(failed):
                        messages[row] = f"{source}={shown[row]!r} does not cast to {self.type}"
                    rejections.append(Rejection(failed, CAST_FAILED, messages))
                values = cast
            out = put_column(out, target, values)
        return StepResult(out, tuple(rejections))


STEPS = (Cast, NormalizeText, DropColumns, Rename, Copy)
