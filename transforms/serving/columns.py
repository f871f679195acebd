"""NumPy columns for the serving plan, and request values converted to them column-wise.

A :class:`Column` is a NumPy array of values (0 or None where null) with its null mask and
its Arrow type. :func:`convert_column` turns one key's JSON-like values from every row of a
request into a column by the one value rule (:mod:`transforms.core.values`), without a
pyarrow call per value: the common shapes (numbers for a numeric column, strings for a
string column, decimal text for a numeric one) are converted in bulk, and any column
holding anything else (a bool, a ``Decimal``, text outside the plain grammar, a non-finite
float, a float32 value whose rounding could depend on its decimal text) is handed whole to
:func:`~transforms.core.values.convert_values`, the path the readers use, so the values it
takes, its rejections and their messages are exactly the readers'.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import struct
from collections.abc import Sequence, Set
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.values import Rejection, convert_values, parse_strings

# Up to this many values, text is parsed in Python (no Arrow call); above, one Arrow cast.
SMALL = 32

# Text both Arrow's cast and the readers' grammar read the same way (ASCII, no spaces).
_PLAIN_INT = re.compile(r"-?[0-9]{1,18}")
_PLAIN_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?")

# Integers above this are not all exact as float64.
_EXACT_FLOAT64 = 2**53
_FLOAT32_MIN_NORMAL = 2.0**-126
# A float64 exactly halfway between two float32 values has these low mantissa bits.
_HALF_MASK = np.uint64((1 << 29) - 1)
_HALF = np.uint64(1 << 28)
_HALF_BITS = (1 << 29) - 1
_HALF_VALUE = 1 << 28
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_DOUBLE = struct.Struct("<d")
_BITS = struct.Struct("<Q")

_NONE = type(None)
_INTS = frozenset({int})
_NUMBERS = frozenset({int, float})
_TEXT = frozenset({str})


class UnsupportedError(Exception):
    """A value or column the serving plan does not handle; the call takes the general path."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the serving plan.

    Attributes:
        values: The values; numeric columns hold 0 and string columns None where null.
        nulls: True where the value is null.
        type: The column's Arrow type.
        has_nulls: Whether any value is null (kept so small calls skip the scan).
    """

    values: np.ndarray
    nulls: np.ndarray
    type: pa.DataType
    has_nulls: bool

    def to_arrow(self) -> pa.Array:
        """The column as an Arrow array."""
        mask = self.nulls if self.has_nulls else None
        return pa.array(self.values, self.type, mask=mask)

    def to_list(self) -> list[Any]:
        """The values as Python objects (None where null), as ``to_pylist`` gives them."""
        out = self.values.tolist()
        if self.has_nulls:
            for i in np.flatnonzero(self.nulls).tolist():
                out[i] = None
        return out

    def to_list_at(self, row: int) -> Any:
        """One value as a Python object (None where null)."""
        return (
            None
            if self.nulls[row]
            else self.values[row].item()
            if not is_text(self.type)
            else self.values[row]
        )

    def take(self, rows: np.ndarray) -> Column:
        """The column at ``rows`` (indexes or a boolean mask)."""
        nulls = self.nulls[rows]
        return Column(self.values[rows], nulls, self.type, self.has_nulls and bool(nulls.any()))


def is_text(tp: pa.DataType) -> bool:
    """Whether ``tp`` is a string type."""
    return pa.types.is_string(tp) or pa.types.is_large_string(tp)


def is_number(tp: pa.DataType) -> bool:
    """Whether ``tp`` is an integer or floating type (not bool)."""
    return pa.types.is_integer(tp) or pa.types.is_floating(tp)


def from_arrow(array: pa.Array | pa.ChunkedArray) -> Column:
    """An Arrow array as a :class:`Column` (string, numeric and bool arrays)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not supported(array.type):
        raise UnsupportedError(f"a {array.type} column")
    has_nulls = array.null_count > 0
    if has_nulls:
        nulls = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    else:
        nulls = np.zeros(len(array), dtype=bool)
    if is_text(array.type):
        values = np.empty(len(array), dtype=object)
        values[:] = array.to_pylist()
        return Column(values, nulls, array.type, has_nulls)
    filled = (
        array.fill_null(False if pa.types.is_boolean(array.type) else 0) if has_nulls else array
    )
    return Column(filled.to_numpy(zero_copy_only=False), nulls, array.type, has_nulls)


def supported(tp: pa.DataType) -> bool:
    """Whether :func:`convert_column` and the plan's columns take the type."""
    return is_text(tp) or is_number(tp) or pa.types.is_boolean(tp)


def convert_column(
    values: Sequence[Any], tp: pa.DataType, *, allow_non_finite: bool
) -> tuple[Column, dict[int, Rejection]]:
    """Converts one key's values from every row of a request, as the readers would.

    Same result as :func:`~transforms.core.values.convert_values` with ``strings_as_text``
    and ``binary_base64`` (what serving rows take): the values, and the rejected rows
    (index -> why) with the null value in their place.
    """
    kinds = set(map(type, values))
    has_null = _NONE in kinds
    kinds.discard(_NONE)
    column: Column | None = None
    if not kinds:
        column = _nulls(len(values), tp)
    elif is_text(tp):
        if kinds <= _TEXT:
            column = _strings(values, tp, has_null)
    elif kinds <= _TEXT and is_number(tp):
        return _from_text(values, tp, allow_non_finite)
    elif pa.types.is_integer(tp) and kinds <= _INTS:
        column = _ints(values, tp, has_null)
    elif pa.types.is_floating(tp) and kinds <= _NUMBERS:
        column = _floats(values, tp, has_null, allow_non_finite, kinds)
    if column is not None:
        return column, {}
    return _general(values, tp, allow_non_finite)


def convert_columns(
    columns: Sequence[Sequence[Any]], fields: Sequence[pa.Field], allow_non_finite: Set[str]
) -> list[tuple[Column, dict[int, Rejection]]]:
    """:func:`convert_column` for every column of a request.

    Above a few rows, numeric columns of one type holding values of one shape (decimal
    text, integers, or numbers) are converted by one Arrow conversion of all of them when it
    takes every value (elementwise, so each column gets what its own conversion gives);
    otherwise, and for every other column, column by column.
    """
    out: list[tuple[Column, dict[int, Rejection]] | None] = [None] * len(fields)
    size = len(columns[0]) if columns else 0
    if size > SMALL:
        groups: dict[tuple[str, pa.DataType], list[int]] = {}
        for k, (values, field) in enumerate(zip(columns, fields, strict=True)):
            if field.name not in allow_non_finite:
                shape = _shape(values, field.type)
                if shape is not None:
                    groups.setdefault((shape, field.type), []).append(k)
        for (shape, tp), members in groups.items():
            if len(members) > 1:
                parsed = _convert_together(shape, [columns[k] for k in members], tp)
                for k, column in zip(members, parsed or [], strict=False):
                    out[k] = (column, {})
    return [
        done
        if done is not None
        else convert_column(values, field.type, allow_non_finite=field.name in allow_non_finite)
        for done, values, field in zip(out, columns, fields, strict=True)
    ]


def _shape(values: Sequence[Any], tp: pa.DataType) -> str | None:
    """How a column's values can be converted with others: text, integers or numbers."""
    if not (pa.types.is_int64(tp) or pa.types.is_floating(tp)):
        return None
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    if not kinds:
        return None
    if kinds == _TEXT:
        return "text"
    if pa.types.is_int64(tp):
        return "integers" if kinds == _INTS else None
    if kinds <= _NUMBERS:
        if int in kinds and any(type(v) is int and abs(v) > _EXACT_FLOAT64 for v in values):
            return None
        return "numbers"
    return None


def _convert_together(
    shape: str, columns: Sequence[Sequence[Any]], tp: pa.DataType
) -> list[Column] | None:
    """Columns of one shape converted to ``tp`` at once; None unless every value converts."""
    joined = list(itertools.chain.from_iterable(columns))
    try:
        if shape == "text":
            texts = pa.array(joined, pa.string())
            if any("" in values for values in columns):
                texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)
            whole = from_arrow(pc.cast(texts, tp))
        elif shape == "integers":
            whole = from_arrow(pa.array(joined, pa.int64()))
        else:
            whole = from_arrow(pa.array(joined, pa.float64()))
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None
    values = whole.values
    if shape == "numbers":
        # float64 values to the column's width: None where that is not certain, or where a
        # value is not finite (the column's own conversion words the error).
        narrowed = _narrow(values, tp, False, exact=False)
        if narrowed is None:
            return None
        values = narrowed
    elif (
        shape == "text" and pa.types.is_floating(tp) and not np.isfinite(values[~whole.nulls]).all()
    ):
        # Arrow parsed the text to the column's width; a non-finite value needs the error.
        return None
    size = len(columns[0])
    out = []
    for k in range(len(columns)):
        part = slice(k * size, (k + 1) * size)
        nulls = whole.nulls[part]
        out.append(Column(values[part], nulls, tp, whole.has_nulls and bool(nulls.any())))
    return out


def _general(
    values: Sequence[Any], tp: pa.DataType, allow_non_finite: bool
) -> tuple[Column, dict[int, Rejection]]:
    converted = convert_values(
        values, tp, allow_non_finite=allow_non_finite, strings_as_text=True, binary_base64=True
    )
    return from_arrow(converted.array), converted.rejected


def _nulls(size: int, tp: pa.DataType) -> Column:
    nulls = np.ones(size, dtype=bool)
    if is_text(tp):
        return Column(np.full(size, None, dtype=object), nulls, tp, size > 0)
    return Column(np.zeros(size, dtype=tp.to_pandas_dtype()), nulls, tp, size > 0)


def _null_mask(values: Sequence[Any], has_null: bool) -> np.ndarray:
    if not has_null:
        return np.zeros(len(values), dtype=bool)
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


def _strings(values: Sequence[Any], tp: pa.DataType, has_null: bool) -> Column:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return Column(array, _null_mask(values, has_null), tp, has_null)


def _ints(values: Sequence[Any], tp: pa.DataType, has_null: bool) -> Column | None:
    if has_null and len(values) > SMALL:
        try:
            array = pa.array(values, tp)
        except (pa.ArrowInvalid, OverflowError):
            return None
        return from_arrow(array)
    nulls = _null_mask(values, has_null)
    filled = [0 if v is None else v for v in values] if has_null else values
    try:
        array = np.array(filled, dtype=np.int64)
    except OverflowError:
        return None
    dtype = tp.to_pandas_dtype()
    if dtype != np.int64:
        info = np.iinfo(dtype)
        if len(array) and (array.min() < info.min or array.max() > info.max):
            return None
        array = array.astype(dtype)
    return Column(array, nulls, tp, has_null)


def _floats(
    values: Sequence[Any],
    tp: pa.DataType,
    has_null: bool,
    allow_non_finite: bool,
    kinds: set[type],
) -> Column | None:
    if int in kinds and any(type(v) is int and abs(v) > _EXACT_FLOAT64 for v in values):
        return None
    # Integers are exact in float64, so one rounding to float32 is the text's rounding.
    exact = float not in kinds
    if len(values) > SMALL:
        if has_null:
            wide = from_arrow(pa.array(values, pa.float64()))
            nulls = wide.nulls
            array = _narrow(wide.values, tp, allow_non_finite, exact=exact)
        else:
            nulls = np.zeros(len(values), dtype=bool)
            array = _narrow(np.array(values, dtype=np.float64), tp, allow_non_finite, exact=exact)
    else:
        nulls = _null_mask(values, has_null)
        filled = [0.0 if v is None else v for v in values] if has_null else values
        array = _narrow_small(filled, tp, allow_non_finite, exact=exact)
    if array is None:
        return None
    return Column(array, nulls, tp, has_null)


def _narrow(
    wide: np.ndarray, tp: pa.DataType, allow_non_finite: bool, *, exact: bool
) -> np.ndarray | None:
    """float64 values to the column's width, as parsing their shortest text would give them.

    Returns None where that is not certain (a float64 exactly halfway between two float32
    values: its decimal text may lie on either side; or below float32's normal range), and
    for a non-finite value outside ``allow_non_finite`` (the general path words the error).
    """
    if pa.types.is_float64(tp):
        array = wide
    elif not pa.types.is_float32(tp):
        return None
    else:
        if not exact:
            with np.errstate(invalid="ignore"):
                finite = np.isfinite(wide)
                tiny = (np.abs(wide) < _FLOAT32_MIN_NORMAL) & (wide != 0)
            halfway = (wide.view(np.uint64) & _HALF_MASK) == _HALF
            if ((halfway & finite) | tiny).any():
                return None
        with np.errstate(over="ignore"):
            array = wide.astype(np.float32)
    if not allow_non_finite and not np.isfinite(array).all():
        return None
    return array


def _narrow_small(
    values: Sequence[float], tp: pa.DataType, allow_non_finite: bool, *, exact: bool
) -> np.ndarray | None:
    """:func:`_narrow` for a few values, checked in Python (no NumPy call per check)."""
    if pa.types.is_float64(tp):
        dtype: Any = np.float64
        limit = math.inf
    elif pa.types.is_float32(tp):
        dtype = np.float32
        limit = _FLOAT32_MAX
    else:
        return None
    for value in values:
        size = abs(value)
        if size != size or size == math.inf:
            if not allow_non_finite:
                return None
        elif size > limit:
            # Rounds to float32's largest value or overflows: the general path decides.
            return None
        elif dtype is np.float32 and not exact and value != 0:
            if size < _FLOAT32_MIN_NORMAL:
                return None
            if (_BITS.unpack(_DOUBLE.pack(value))[0] & _HALF_BITS) == _HALF_VALUE:
                return None
    return np.array(values, dtype=dtype)


def _from_text(
    values: Sequence[Any], tp: pa.DataType, allow_non_finite: bool
) -> tuple[Column, dict[int, Rejection]]:
    """Decimal text for a numeric column; an empty text is null, as an empty CSV field."""
    if len(values) <= SMALL:
        column = _small_text(values, tp, allow_non_finite)
        if column is not None:
            return column, {}
        return _general(values, tp, allow_non_finite)
    texts = pa.array(values, pa.string())
    if "" in values:
        texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)
    parsed = parse_strings(texts, tp, allow_non_finite=allow_non_finite)
    return from_arrow(parsed.array), parsed.rejected


def _small_text(values: Sequence[Any], tp: pa.DataType, allow_non_finite: bool) -> Column | None:
    has_null = not all(values)
    if pa.types.is_integer(tp):
        if not all(not v or _PLAIN_INT.fullmatch(v) for v in values):
            return None
        return _ints([int(v) if v else None for v in values], tp, has_null)
    if not pa.types.is_floating(tp):
        return None
    if not all(not v or _PLAIN_FLOAT.fullmatch(v) for v in values):
        return None
    array = _narrow_small(
        [float(v) if v else 0.0 for v in values], tp, allow_non_finite, exact=False
    )
    if array is None:
        return None
    nulls = (
        np.fromiter((not v for v in values), dtype=bool, count=len(values))
        if has_null
        else np.zeros(len(values), dtype=bool)
    )
    return Column(array, nulls, tp, has_null)
