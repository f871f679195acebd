"""Typed configuration from YAML mappings, validated with errors that say how to fix them.

Spec sections and step parameters are plain dataclasses. :func:`from_mapping` builds one from
the mapping that YAML produced and fails on the first unknown key, missing key or wrong type
with the YAML path (``features[3].top_k``), the offending value and what is valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


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


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, typing.List):  # noqa: UP006
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, typing.Dict, Mapping):  # noqa: UP006
        return f"mapping of {_type_name(get_args(tp)[1])}"
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

    Raises:
        SpecError: naming ``path``, the value and the expected type.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
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
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"got {value!r}; expected an integer")
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
        ``ValueError`` is re-raised as a :class:`SpecError` at ``path``.

    Raises:
        SpecError: on an unknown key (listing the valid keys), a missing required key or a
            value of the wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"got {data!r}; expected a mapping with keys {_keys(cls)}")
    assert dataclasses.is_dataclass(cls)
    hints = get_type_hints(cls)
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
        except ValueError as exc:
            raise SpecError(path, str(exc)) from exc
    return instance


def _keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)
