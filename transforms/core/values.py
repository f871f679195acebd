"""Which values a column accepts, and what they become: one rule for every reader and serving.

Values reach a column in three shapes, each with one conversion:

* **text** (CSV fields, Parquet/Arrow string columns, strings sent to serving): parsed by the
  column type's grammar, vectorised (:func:`parse_strings`). Integers must be spelled as
  integers (``"3"``, ``" +3 "``; never ``"3.7"``), floats as decimals (or ``nan``/``inf``),
  bools as ``true``/``false``/``1``/``0``, timestamps as ISO-8601 (no zone: UTC) or integer
  unix seconds, dates as ISO-8601.
* **typed Arrow arrays** (Parquet, Avro/BigQuery results, tf.Example, serving batches):
  cast when the value survives (:func:`convert_array`): ``3.0`` fits an int64 column, ``3.7``
  and ``2**40`` for int32 do not; ints become floats rounded to the nearest; int timestamps
  are unix seconds.
* **JSON-like Python values** (JSONL, Avro records, serving rows): checked value by value
  (:func:`convert_values`) with the typed rule: numbers for numeric columns (``True`` is not a
  number), strings for string columns, integral numbers only for integer columns.

Whatever the shape, a float column rejects a non-finite value (NaN, an infinity, or a number
beyond the column type's range, such as ``1e39`` for float32) with reason ``non_finite``,
unless the column is allowed non-finite values (``source.allow_non_finite``; the artifact
records the list so serving applies the same rule). Every other value the column cannot take
is rejected with reason ``unparseable_value``. Rejections are per row, never per file: each
conversion returns the converted array (null where rejected) and the rejected rows with
their reason and a description naming the value.

Text and typed Arrow arrays are converted in :mod:`transforms.core.arrow_values`; this module
holds JSON-like values and whole batches, and re-exports the names of both.

Plain pyarrow and NumPy: no Beam, so serving can use it.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core import errors
from transforms.core.arrow_values import (
    Converted,
    Rejection,
    convert_array,
    convert_strings,
    is_float_type,
    non_finite_detail,
    non_finite_rows,
    null_rows,
    parse_strings,
    reject_non_finite,
    show_value,
)
from transforms.core.schema import type_name

__all__ = [
    "Converted",
    "Decimal",
    "Problems",
    "Rejection",
    "convert_array",
    "convert_batch",
    "convert_strings",
    "convert_values",
    "describe",
    "is_float_type",
    "non_finite_detail",
    "non_finite_rows",
    "parse_strings",
    "python_value",
    "rejected_mask",
]

# ---------------------------------------------------------------------------------------
# JSON-like Python values.


class Decimal(str):
    """A JSON number's text (``json.loads(..., parse_float=Decimal)``), parsed once, exactly."""


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    return show_value(value)


def _integral(value: Any) -> int | None:
    """The integer a number stands for exactly, or None (3.0 -> 3; 3.7, NaN, inf -> None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        try:
            exact = decimal.Decimal(value)
        except decimal.InvalidOperation:
            return None
        if not exact.is_finite() or exact != exact.to_integral_value():
            return None
        return int(exact)
    if isinstance(value, float) and value.is_integer():
        # Through its shortest text, as JSON writes it: the same integer a JSONL reader
        # gets (4.239130163210418e16 is 42391301632104180, not its binary 42391301632104176).
        return _integral(Decimal(repr(value)))
    return None


def python_value(value: Any, tp: pa.DataType, *, binary_base64: bool = False) -> Any:
    """Checks one JSON-like value against ``tp``; returns it ready for ``pa.array``.

    Float values come back as their decimal text (:class:`Decimal`), converted by
    :func:`convert_values` straight to the column's width.

    Raises:
        ValueError: ``"got <value>"`` when the column cannot take the value.
    """
    if value is None:
        return None
    if pa.types.is_boolean(tp):
        if isinstance(value, bool):
            return value
    elif pa.types.is_integer(tp):
        number = _integral(value)
        if number is not None:
            bits = tp.bit_width - 1 if pa.types.is_signed_integer(tp) else tp.bit_width
            low = -(1 << bits) if pa.types.is_signed_integer(tp) else 0
            if low <= number < (1 << bits):
                return number
    elif pa.types.is_floating(tp):
        if isinstance(value, Decimal):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(str(value))
        if isinstance(value, float):
            return Decimal(repr(value))
    elif pa.types.is_string(tp) or pa.types.is_large_string(tp):
        if isinstance(value, str) and not isinstance(value, Decimal):
            return str(value)
    elif pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        if isinstance(value, bytes):
            return value
        if isinstance(value, str) and not isinstance(value, Decimal):
            if not binary_base64:
                return value.encode()
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                pass
    elif pa.types.is_timestamp(tp):
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return dt.datetime.fromtimestamp(value, dt.UTC)
            except (OverflowError, OSError, ValueError):
                pass
        elif isinstance(value, str) and not isinstance(value, Decimal):
            try:
                parsed = dt.datetime.fromisoformat(value)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            except ValueError:
                pass
    elif pa.types.is_date(tp):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str) and not isinstance(value, Decimal):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
    elif (pa.types.is_list(tp) or pa.types.is_large_list(tp)) and isinstance(value, list | tuple):
        return [python_value(v, tp.value_type, binary_base64=binary_base64) for v in value]
    raise ValueError(f"got {_show(value)}")


def _column(values: list[Any], tp: pa.DataType) -> pa.Array:
    """Builds a column from :func:`python_value` results (floats from their text)."""
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        offsets = [0]
        flat: list[Any] = []
        for v in values:
            if v is not None:
                flat.extend(v)
            offsets.append(len(flat))
        mask = pa.array([v is None for v in values])
        inner = _column(flat, tp.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner, mask=mask).cast(tp)
    if pa.types.is_floating(tp):
        return pc.cast(pa.array(values, pa.string()), tp)
    return pa.array(values, tp)


def convert_values(
    values: Sequence[Any],
    tp: pa.DataType,
    *,
    allow_non_finite: bool = False,
    strings_as_text: bool = False,
    binary_base64: bool = False,
) -> Converted:
    """Converts JSON-like Python values to a column of ``tp``, value by value.

    Args:
        values: One value per row; None is null.
        tp: Target Arrow type.
        allow_non_finite: Accept NaN, infinities and out-of-range floats.
        strings_as_text: Parse strings given for a non-text column (neither string nor
            binary) with the text grammar (:func:`parse_strings`), an empty one as null, as
            the CSV reader reads its fields: serving does, for clients that send CSV-born
            values; readers of typed formats (JSONL, Avro) reject them instead.
        binary_base64: Strings for a binary column are base64 (JSON), else UTF-8 text.
    """
    texts: dict[int, str] = {}
    checked: list[Any] = []
    rejected: dict[int, Rejection] = {}
    name = type_name(tp)
    parse_text = strings_as_text and not (
        pa.types.is_string(tp)
        or pa.types.is_large_string(tp)
        or pa.types.is_binary(tp)
        or pa.types.is_large_binary(tp)
    )
    for i, value in enumerate(values):
        if parse_text and isinstance(value, str) and not isinstance(value, Decimal):
            # An empty text is null, as an empty CSV field is (csv.null_values' default).
            if value:
                texts[i] = value
            checked.append(None)
            continue
        try:
            checked.append(python_value(value, tp, binary_base64=binary_base64))
        except (ValueError, TypeError, OverflowError) as exc:
            rejected[i] = Rejection(errors.UNPARSEABLE_VALUE, f"expected {name}, {exc}")
            checked.append(None)
    try:
        array = _column(checked, tp)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        # A value python_value let through that Arrow refuses: find it.
        array = _column_each(checked, tp, rejected, values)
    if texts:
        rows = list(texts)
        parsed = parse_strings(
            pa.array([texts[i] for i in rows], pa.string()), tp, allow_non_finite=allow_non_finite
        )
        for k, problem in parsed.rejected.items():
            rejected[rows[k]] = problem
        positions = np.zeros(len(values), dtype=np.int64)
        from_text = np.zeros(len(values), dtype=bool)
        positions[rows] = np.arange(len(rows))
        from_text[rows] = True
        array = pc.if_else(pa.array(from_text), pc.take(parsed.array, pa.array(positions)), array)
    array = reject_non_finite(
        array,
        tp,
        rejected,
        lambda i: repr(texts[i]) if i in texts else _show(values[i]),
        allow_non_finite,
    )
    if rejected:
        array = null_rows(array, rejected)
    return Converted(array, rejected)


def _column_each(
    checked: list[Any], tp: pa.DataType, rejected: dict[int, Rejection], values: Sequence[Any]
) -> pa.Array:
    out: list[Any] = []
    for i, value in enumerate(checked):
        try:
            _column([value], tp)
            out.append(value)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            rejected[i] = Rejection(
                errors.UNPARSEABLE_VALUE, f"expected {type_name(tp)}, got {_show(values[i])}"
            )
            out.append(None)
    return _column(out, tp)


# ---------------------------------------------------------------------------------------
# Rows and batches.


def describe(rejected: Sequence[tuple[str, Rejection]], prefix: str = "column") -> tuple[str, str]:
    """One row's reason and message from its rejected ``(column, rejection)`` pairs.

    The reason is ``unparseable_value`` if any value is unparseable, else ``non_finite``.
    """
    reasons = {r.reason for _, r in rejected}
    reason = errors.UNPARSEABLE_VALUE if errors.UNPARSEABLE_VALUE in reasons else errors.NON_FINITE
    message = "; ".join(f"{prefix} {name!r}: {r.detail}" for name, r in rejected)
    return reason, message


Problems = dict[int, list[tuple[str, Rejection]]]


def convert_batch(
    batch: pa.RecordBatch | pa.Table,
    target: pa.Schema,
    *,
    allow_non_finite: Collection[str] = (),
) -> tuple[pa.Table, Problems]:
    """Converts a typed batch's columns to ``target`` with :func:`convert_array`.

    Args:
        batch: Typed columns; a ``target`` column it lacks is all null.
        target: Columns and types wanted (in order).
        allow_non_finite: Columns that accept non-finite floats.

    Returns:
        The converted columns (null where rejected; every row kept), and the rejected rows:
        row index -> ``(column, rejection)`` pairs, in ``target`` order.
    """
    names = batch.schema.names
    arrays: list[pa.Array] = []
    problems: Problems = {}
    for field in target:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        converted = convert_array(
            batch.column(names.index(field.name)),
            field.type,
            allow_non_finite=field.name in allow_non_finite,
        )
        arrays.append(converted.array)
        for row, rejection in converted.rejected.items():
            problems.setdefault(row, []).append((field.name, rejection))
    return pa.Table.from_arrays(arrays, schema=target), problems


def rejected_mask(size: int, problems: Problems) -> np.ndarray:
    """A boolean mask of the rows in ``problems``."""
    bad = np.zeros(size, dtype=bool)
    if problems:
        bad[list(problems)] = True
    return bad
