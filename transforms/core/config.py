"""Typed configuration from YAML mappings, validated with errors that say how to fix them.

Spec sections and step parameters are plain dataclasses. :func:`from_mapping` builds one from
the mapping that YAML produced and fails on the first unknown key, missing key or wrong type
with the YAML path (``features[3].top_k``), the offending value and what is valid.

Rules every section gets without asking:
- a float is finite: YAML's ``.nan`` and ``.inf`` are refused (where a bound is optional, null
  or leaving the key out says "no bound");
- an integer fits in 64 bits (Arrow and NumPy hold it as int64);
- a field annotated ``Annotated[int, Within(low, high)]`` is within its bounds. Sizes that
  decide how much memory a job takes are bounded this way, each limit documented where the
  field is declared.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import (
    Annotated,
    Any,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

T = TypeVar("T")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class SpecError(ValueError):
    """A job spec (or a piece of one) is invalid.

    Attributes:
        path: YAML path of the offending value, e.g. ``clean[2].columns``.
        problem: What is wrong and what would be valid.
    """

    def __init__(self, path: str, problem: str, *, source: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path or '<root>'}: {problem}")

    def located(self, source: str) -> SpecError:
        """The same error, naming the file it was found in."""
        return SpecError(self.path, self.problem, source=source)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions are pickled between processes (Beam workers); the default would call
        # SpecError(message) and fail.
        return (functools.partial(type(self), source=self.source), (self.path, self.problem))


class FieldError(ValueError):
    """Raised by a section's ``validate()`` about one of its keys.

    :func:`from_mapping` reports it at that key's YAML path (``split.fractions.train``)
    instead of the section's.

    Attributes:
        key: The key, relative to the section; dotted or indexed for nested values
            (``fractions.train``, ``boundaries[2]``).
        problem: What is wrong and what would be valid.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.key, self.problem))


@dataclasses.dataclass(frozen=True)
class Within:
    """Bounds of a number in a spec, as metadata: ``Annotated[int, Within(1, 10_000)]``.

    Attributes:
        low: Smallest valid value (None: no lower bound).
        high: Largest valid value (None: no upper bound).
        note: Why the bound is there, shown with the error (e.g. what the limit protects).
    """

    low: int | float | None = None
    high: int | float | None = None
    note: str = ""

    def check(self, value: int | float, path: str) -> None:
        """Raises SpecError at ``path`` unless ``low <= value <= high``."""
        if (self.low is None or value >= self.low) and (self.high is None or value <= self.high):
            return
        raise SpecError(path, f"got {_number(value)}; expected {self.describe()}")

    def describe(self) -> str:
        """The valid values in words, e.g. ``an integer from 1 to 10,000``."""
        bounds = [b for b in (self.low, self.high) if b is not None]
        noun = "an integer" if all(isinstance(b, int) for b in bounds) else "a number"
        if self.low is not None and self.high is not None:
            text = f"{noun} from {_number(self.low)} to {_number(self.high)}"
        elif self.low is not None:
            text = f"{noun} of at least {_number(self.low)}"
        elif self.high is not None:
            text = f"{noun} of at most {_number(self.high)}"
        else:
            text = noun
        return f"{text} ({self.note})" if self.note else text


def _number(value: int | float) -> str:
    # Thousands separators make limits readable; floats keep their shortest form.
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return repr(value)


def check_within(value: int | float, bounds: Within, path: str) -> None:
    """Checks a number that is not declared with ``Annotated`` (see :class:`Within`).

    Raises:
        SpecError: at ``path``, naming the value and the valid range.
    """
    bounds.check(value, path)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _type_name(get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, typing.List):  # noqa: UP006
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, typing.Dict, Mapping):  # noqa: UP006
        values = get_args(tp)[1]
        # "mapping of Any" reads as a Python type; any value is what a plain mapping says.
        return "mapping" if values is Any else f"mapping of {_type_name(values)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def convert(value: Any, tp: Any, path: str) -> Any:
    """Checks ``value`` against the type ``tp`` and returns it converted.

    Ints are accepted where floats are expected; nested dataclasses are built from mappings.
    Floats must be finite, integers must fit in 64 bits, and ``Annotated[..., Within(...)]``
    values must be within their bounds.

    Raises:
        SpecError: naming ``path``, the value and the expected type.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *metadata = get_args(tp)
        bounds = [meta for meta in metadata if isinstance(meta, Within)]
        if isinstance(value, int) and not isinstance(value, bool):
            for within in bounds:  # the declared range says more than "64 bits"
                within.check(value, path)
        converted = convert(value, base, path)
        for within in bounds:
            within.check(converted, path)
        return converted
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise SpecError(path, f"got {value!r}; expected one of {', '.join(map(repr, choices))}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise SpecError(path, f"got null; expected {_type_name(tp)}")
        if type(None) in args and isinstance(value, float) and not math.isfinite(value):
            # An optional number: null (or no key) already says "none", so say that.
            raise SpecError(path, f"got {value!r}; expected a finite number, or null for none")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, path)
            except SpecError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise SpecError(path, f"got {value!r}; expected {_type_name(tp)}")
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise SpecError(path, f"got {value!r}; expected {_type_name(tp)}")
        (item,) = get_args(tp)
        return [convert(v, item, _join(path, i)) for i, v in enumerate(value)]
    if origin in (dict, typing.Dict, Mapping):  # noqa: UP006
        if not isinstance(value, Mapping):
            raise SpecError(path, f"got {value!r}; expected {_type_name(tp)}")
        key_tp, val_tp = get_args(tp)
        return {
            convert(k, key_tp, path): convert(v, val_tp, _join(path, str(k)))
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_mapping(tp, value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(path, f"got {value!r}; expected a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(path, f"got {value!r}; expected a finite number")
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise SpecError(path, f"got {value!r}; expected a number within 64 bits")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"got {value!r}; expected an integer")
        if not INT64_MIN <= value <= INT64_MAX:
            raise SpecError(
                path,
                f"got {value!r}; expected an integer from {INT64_MIN:,} to {INT64_MAX:,} (64 bits)",
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"got {value!r}; expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, f"got {value!r}; expected a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SpecError(path, f"got {value!r}; expected {_type_name(tp)}")
    return value


def from_mapping(cls: type[T], data: Any, path: str = "") -> T:
    """Builds the dataclass ``cls`` from a YAML mapping, strictly.

    Args:
        cls: A dataclass type. Fields without defaults are required.
        data: The mapping from YAML (``None`` is taken as an empty mapping).
        path: YAML path of ``data``, used in error messages.

    Returns:
        The validated instance. If the class defines ``validate()``, it is called and its
        ``ValueError`` is re-raised as a :class:`SpecError` at ``path`` (at ``path.key`` for
        a :class:`FieldError`).

    Raises:
        SpecError: on an unknown key (listing the valid keys), a missing required key or a
            value of the wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"got {data!r}; expected a mapping with keys {_keys(cls)}")
    assert dataclasses.is_dataclass(cls)
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise SpecError(
            _join(path, str(unknown[0])),
            f"unknown key {unknown[0]!r}; valid keys are {_keys(cls)}",
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], _join(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SpecError(_join(path, name), f"required key {name!r} is missing")
    instance = cls(**kwargs)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except SpecError:
            raise
        except FieldError as exc:
            raise SpecError(_join(path, exc.key), exc.problem) from None
        except ValueError as exc:
            raise SpecError(path, str(exc)) from exc
    return instance


def _keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)
