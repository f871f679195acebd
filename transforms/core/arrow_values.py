"""Arrow arrays to a column's type: text by the type's grammar, typed arrays by a safe cast.

The array half of the one value rule (:mod:`transforms.core.values` states the rule and holds
the JSON-like half): :func:`parse_strings` for text, :func:`convert_array` for typed arrays,
and what both shapes share, the :class:`Rejection` of a value, the :class:`Converted` column
and the non-finite rule for float columns.

Plain pyarrow and NumPy: no Beam, so serving can use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core import errors
from transforms.core.schema import type_name

__all__ = [
    "Converted",
    "Rejection",
    "convert_array",
    "convert_strings",
    "is_float_type",
    "non_finite_detail",
    "non_finite_rows",
    "null_rows",
    "parse_strings",
    "reject_non_finite",
    "show_value",
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


def reject_non_finite(
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
    return null_rows(array, rows)


def null_rows(array: pa.Array, rows: Iterable[int]) -> pa.Array:
    """The array with the given rows set to null."""
    keep = np.ones(len(array), dtype=bool)
    keep[list(rows)] = False
    return pc.if_else(pa.array(keep), array, pa.nulls(len(array), array.type))


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def show_value(value: Any) -> str:
    """A value as error messages show it: JSON text (floats and bytes as Python writes them),
    cut short past 60 characters."""
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
    """Converts text to ``tp`` by the type's grammar (the rule: :mod:`transforms.core.values`).

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
    array = reject_non_finite(
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
    """Converts a typed Arrow array to ``tp`` (the rule: :mod:`transforms.core.values`).

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
        reject_non_finite(
            array, tp, rejected, lambda i: show_value(values[i].as_py()), allow_non_finite
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
        shown = show_value(values[int(row)].as_py())
        rejected[int(row)] = Rejection(errors.UNPARSEABLE_VALUE, f"{shown} is not a valid {name}")
    return array
