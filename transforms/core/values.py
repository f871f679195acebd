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

Plain pyarrow and NumPy: no Beam, so serving can use it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core import errors
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

_INT_PATTERN = r"^\s*[+-]?[0-9]+\s*$"
_FLOAT_PATTERN = r"(?i)^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan)\s*$"
_ZONE_PATTERN = r"([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_SHOWN = 60


@dataclasses.dataclass(frozen=True)
class Rejection:
    """Why one value was rejected.

    Attributes:
        reason: ``unparseable_value`` or ``non_finite``.
        detail: What is wrong, naming the value (callers prefix the column).
    """

    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Converted:
    """A converted column.

    Attributes:
        array: The values with the column's type; null where rejected.
        rejected: Rejected rows (index in the input) and why; empty when all converted.
    """

    array: pa.Array
    rejected: dict[int, Rejection]

    def mask(self) -> np.ndarray:
        """A boolean mask of the rejected rows."""
        bad = np.zeros(len(self.array), dtype=bool)
        if self.rejected:
            bad[list(self.rejected)] = True
        return bad


def non_finite_detail(shown: str, tp: pa.DataType) -> str:
    """The description of a rejected non-finite value."""
    name = type_name(tp)
    return (
        f"{shown} is not a finite {name} (NaN, an infinity, or beyond {name}'s range); list"
        " the column in source.allow_non_finite to accept such values"
    )


def is_float_type(tp: pa.DataType) -> bool:
    """Whether the non-finite rule applies to the type (floats and lists of floats)."""
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        return is_float_type(tp.value_type)
    return pa.types.is_floating(tp)


def non_finite_rows(values: pa.Array) -> np.ndarray:
    """Indexes of the rows holding a non-finite float (in a list too), ascending."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        flat = values.flatten()
        bad = non_finite_rows(flat)
        if len(bad) == 0:
            return bad
        parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
        return np.unique(parents[bad])
    if not pa.types.is_floating(values.type):
        return np.zeros(0, dtype=np.int64)
    finite = pc.is_finite(values)
    if finite.null_count == 0 and pc.all(finite).as_py():
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(~pc.fill_null(finite, True).to_numpy(zero_copy_only=False))


def _reject_non_finite(
    array: pa.Array,
    tp: pa.DataType,
    rejected: dict[int, Rejection],
    show: Callable[[int], str],
    allow_non_finite: bool,
) -> pa.Array:
    """Adds the non-finite rows of a converted column to ``rejected``; nulls them."""
    if allow_non_finite or not is_float_type(tp):
        return array
    rows = [int(i) for i in non_finite_rows(array) if int(i) not in rejected]
    if not rows:
        return array
    for i in rows:
        rejected[i] = Rejection(errors.NON_FINITE, non_finite_detail(show(i), tp))
    return _null_rows(array, rows)


def _null_rows(array: pa.Array, rows: Iterable[int]) -> pa.Array:
    keep = np.ones(len(array), dtype=bool)
    keep[list(rows)] = False
    return pc.if_else(pa.array(keep), array, pa.nulls(len(array), array.type))


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# ---------------------------------------------------------------------------------------
# Text.


def _elementwise(
    values: pa.Array, parse: Callable[[pa.Array], pa.Array], tp: pa.DataType
) -> tuple[pa.Array, np.ndarray]:
    """Slow path: parses value by value, returning the array and a mask of failures."""
    out: list[Any] = []
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(parse(pa.array([value], pa.string()))[0].as_py())
        except (pa.ArrowException, ValueError, OverflowError):
            out.append(None)
            bad[i] = True
    return pa.array(out, tp), bad


def _with_pattern(
    values: pa.Array, pattern: str, parse: Callable[[pa.Array], pa.Array], tp: pa.DataType
) -> tuple[pa.Array, np.ndarray]:
    ok = pc.fill_null(pc.match_substring_regex(values, pattern), True)
    bad = ~ok.to_numpy(zero_copy_only=False)
    kept = pc.if_else(ok, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
    try:
        return parse(kept), bad
    except (pa.ArrowException, ValueError):
        # Well-formed but unconvertible (out of range): find those one by one.
        converted, overflow = _elementwise(kept, parse, tp)
        return converted, bad | overflow


def _parse_int(values: pa.Array, tp: pa.DataType) -> pa.Array:
    try:
        return pc.cast(values, tp)
    except pa.ArrowInvalid:
        # Only a column holding an explicit sign pays for the regex.
        return pc.cast(pc.replace_substring_regex(values, r"^\+", ""), tp)


def _parse_timestamp(values: pa.Array, tp: pa.DataType) -> pa.Array:
    # Integer unix seconds, ISO-8601 with a zone, or ISO-8601 without one (taken as UTC).
    null = pa.scalar(None, pa.string())
    is_int = pc.fill_null(pc.match_substring_regex(values, r"^[+-]?[0-9]+$"), False)
    has_zone = pc.fill_null(pc.match_substring_regex(values, _ZONE_PATTERN), False)
    naive_mask = pc.and_(pc.invert(is_int), pc.invert(has_zone))
    seconds = pc.cast(pc.if_else(is_int, values, null), pa.int64())
    from_int = pc.cast(pc.multiply_checked(seconds, 1_000_000), pa.timestamp("us"))
    zoned = pc.cast(pc.cast(pc.if_else(has_zone, values, null), tp), pa.timestamp("us"))
    naive = pc.cast(pc.if_else(naive_mask, values, null), pa.timestamp("us"))
    merged = pc.coalesce(from_int, zoned, naive)
    return pc.cast(merged, tp)


def _parser(tp: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    if pa.types.is_integer(tp):
        return lambda v: _parse_int(v, tp)
    if pa.types.is_timestamp(tp):
        return lambda v: _parse_timestamp(v, tp)
    return lambda v: pc.cast(v, tp)


def _grammar(values: pa.Array, tp: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Parses text by the type's grammar: the array and a mask of failures (None: none)."""
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return values.cast(tp), None
    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        return values.cast(tp), None
    parse = _parser(tp)
    try:
        return parse(values), None
    except (pa.ArrowException, ValueError):
        pass
    if pa.types.is_integer(tp):
        return _with_pattern(values, _INT_PATTERN, parse, tp)
    if pa.types.is_floating(tp):
        return _with_pattern(values, _FLOAT_PATTERN, parse, tp)
    return _elementwise(values, parse, tp)


def parse_strings(
    values: pa.Array, tp: pa.DataType, *, allow_non_finite: bool = False
) -> Converted:
    """Converts text to ``tp`` by the type's grammar (see the module docstring).

    Floats are parsed straight from the decimal text to the target width (float32 values
    equal ``numpy.float32(text)``), so ``1e39`` overflows float32 to infinity and is
    rejected as non-finite unless ``allow_non_finite``.

    Args:
        values: Strings; nulls stay null.
        tp: Target Arrow type.
        allow_non_finite: Accept NaN, infinities and out-of-range floats.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    array, bad = _grammar(values, tp)
    rejected: dict[int, Rejection] = {}
    if bad is not None and bad.any():
        name = type_name(tp)
        for i in np.flatnonzero(bad):
            shown = repr(_shorten(values[int(i)].as_py()))
            rejected[int(i)] = Rejection(errors.UNPARSEABLE_VALUE, f"{shown} is not a valid {name}")
    array = _reject_non_finite(
        array,
        tp,
        rejected,
        lambda i: repr(_shorten(values[i].as_py())),
        allow_non_finite,
    )
    return Converted(array, rejected)


def convert_strings(
    values: pa.Array, tp: pa.DataType, *, allow_non_finite: bool = False
) -> tuple[pa.Array, np.ndarray | None]:
    """:func:`parse_strings` as ``(array, mask of rejected values or None)``."""
    converted = parse_strings(values, tp, allow_non_finite=allow_non_finite)
    return converted.array, (converted.mask() if converted.rejected else None)


# ---------------------------------------------------------------------------------------
# Typed Arrow arrays.


def _is_text(tp: pa.DataType) -> bool:
    return pa.types.is_string(tp) or pa.types.is_large_string(tp)


def _cast_typed(values: pa.Array, tp: pa.DataType) -> pa.Array:
    """Casts a whole typed array, raising when any value does not survive."""
    source = values.type
    if pa.types.is_boolean(tp) and (pa.types.is_integer(source) or pa.types.is_floating(source)):
        present = values.drop_null()
        if len(present) and not pc.all(pc.is_in(present, pa.array([0, 1], source))).as_py():
            raise pa.ArrowInvalid("only 0 and 1 are bools")
        return pc.cast(values, tp)
    if pa.types.is_floating(tp) and pa.types.is_integer(source):
        # To the nearest float, as parsing the integer's text would.
        return pc.cast(values, tp, safe=False)
    if pa.types.is_timestamp(tp) and pa.types.is_integer(source):
        micros = pc.multiply_checked(pc.cast(values, pa.int64()), 1_000_000)
        return pc.cast(pc.cast(micros, pa.timestamp("us", tz="UTC")), tp)
    if (pa.types.is_floating(tp) or pa.types.is_integer(tp)) and (
        pa.types.is_timestamp(source) or pa.types.is_boolean(source)
    ):
        raise pa.ArrowInvalid(f"{source} is not a number")
    return pc.cast(values, tp)


def convert_array(
    values: pa.Array | pa.ChunkedArray, tp: pa.DataType, *, allow_non_finite: bool = False
) -> Converted:
    """Converts a typed Arrow array to ``tp`` (see the module docstring).

    Text arrays are parsed with :func:`parse_strings`; other types are cast when every
    value survives the cast, else value by value. Only batches holding a bad value pay for
    the slow path.

    Args:
        values: Any Arrow array (dictionary-encoded and chunked arrays included).
        tp: Target Arrow type.
        allow_non_finite: Accept NaN, infinities and out-of-range floats.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if _is_text(values.type) and not _is_text(tp):
        return parse_strings(values, tp, allow_non_finite=allow_non_finite)
    rejected: dict[int, Rejection] = {}
    if values.type == tp:
        array = values
    else:
        try:
            array = _cast_typed(values, tp)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            array = _cast_each(values, tp, rejected)
    return Converted(
        _reject_non_finite(
            array, tp, rejected, lambda i: _show(values[i].as_py()), allow_non_finite
        ),
        rejected,
    )


def _cast_each(values: pa.Array, tp: pa.DataType, rejected: dict[int, Rejection]) -> pa.Array:
    """Slow path: casts each distinct value on its own; records the ones that fail."""
    encoded = pc.dictionary_encode(values)
    dictionary = encoded.dictionary
    good: list[Any] = []
    ok = np.ones(len(dictionary), dtype=bool)
    for i in range(len(dictionary)):
        try:
            good.append(_cast_typed(dictionary.slice(i, 1), tp)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
            good.append(None)
            ok[i] = False
    indices = encoded.indices
    array = pc.take(pa.array(good, tp), indices)
    index = indices.fill_null(0).to_numpy(zero_copy_only=False)
    present = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    name = type_name(tp)
    for row in np.flatnonzero(~ok[index] & present):
        shown = _show(values[int(row)].as_py())
        rejected[int(row)] = Rejection(errors.UNPARSEABLE_VALUE, f"{shown} is not a valid {name}")
    return array


# ---------------------------------------------------------------------------------------
# JSON-like Python values.


class Decimal(str):
    """A JSON number's text (``json.loads(..., parse_float=Decimal)``), parsed once, exactly."""


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str, allow_nan=True)
        except (TypeError, ValueError):
            text = repr(value)
    return _shorten(text)


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
    array = _reject_non_finite(
        array,
        tp,
        rejected,
        lambda i: repr(texts[i]) if i in texts else _show(values[i]),
        allow_non_finite,
    )
    if rejected:
        array = _null_rows(array, rejected)
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
