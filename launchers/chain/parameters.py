"""The chain's parameter table: one set of names and defaults for every orchestrator.

A chain spec declares its parameters once::

    parameters:
      input: {default: examples/chicago_taxi/data/sample.csv, description: raw trips}
      model_name: chicago-taxi-tips          # shorthand: the default alone

and its steps refer to them in text fields as ``${input}`` (``$${`` is a literal ``${``;
any other ``$`` is itself).
``beamforge chain`` substitutes the values (defaults, or ``--param NAME=VALUE``) before it
validates the steps; a compiled pipeline keeps the references as its own parameters (KFP
pipeline parameters, Airflow ``params``) with the same names and defaults, so the three
run the same chain with the same knobs.
"""

from __future__ import annotations

import copy
import dataclasses
import keyword
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from transforms.core.config import SpecError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")
# ``$${`` escapes a reference; ``${`` with no closing brace is an error of its own.
_REFERENCE = re.compile(r"\$\$(?=\{)|\$\{([^}]*)\}")
_UNCLOSED = re.compile(r"(?<!\$)\$\{[^}]*\Z")
# Characters a parameter's value cannot hold: compiled files carry values in one-line forms.
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
# Step fields that shape the chain itself, fixed when it is compiled.
FIXED_FIELDS = frozenset({"name", "kind", "dataset", "metrics", "model", "predictor", "metric"})
# Names the compiled pipelines use for themselves.
RESERVED = frozenset({"chain_file", "parameters", "params"})


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter of a chain.

    Attributes:
        name: Lower-case identifier (a KFP pipeline argument and an Airflow param alike).
        default: Its value when none is given; None when one must be given.
        description: What it is, shown by the orchestrators' UIs.
    """

    name: str
    default: str | None = None
    description: str = ""


def parse_parameters(data: Any) -> dict[str, Parameter]:
    """Reads a chain's ``parameters`` mapping.

    Raises:
        SpecError: at ``parameters.NAME`` for a bad name, an unknown key or a default that
            is not text.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SpecError("parameters", f"got {data!r}; expected a mapping of name to default")
    out: dict[str, Parameter] = {}
    for name, value in data.items():
        path = f"parameters.{name}"
        if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
            raise SpecError(
                path,
                "a parameter name is lower-case letters, digits and _, starting with a letter, "
                "up to 63 characters, and not a Python keyword",
            )
        if name in RESERVED:
            raise SpecError(path, f"{name!r} is reserved; choose another name")
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in ("default", "description")]
            if unknown:
                raise SpecError(
                    f"{path}.{unknown[0]}",
                    f"unknown key {unknown[0]!r}; valid keys are default, description",
                )
            default, description = value.get("default"), value.get("description", "")
            where = f"{path}.default"
        else:
            default, description, where = value, "", path
        if default is not None and not isinstance(default, str):
            # YAML reads 010 as 8, 1.10 as 1.1 and 12:30 as 750: only quoted text is kept as is.
            raise SpecError(where, f"got {default!r}; write the default as quoted text")
        if default is not None:
            check_value(default, where)
        if not isinstance(description, str) or _LINE_BREAKS.search(description):
            raise SpecError(
                f"{path}.description", f"got {description!r}; expected one line of text"
            )
        out[name] = Parameter(name=name, default=default, description=description)
    return out


def check_value(value: str, path: str) -> None:
    """A parameter value is one line: compiled pipelines and DAGs carry it in one-line forms.

    Raises:
        SpecError: at ``path`` for a line break or another control character.
    """
    if _LINE_BREAKS.search(value):
        raise SpecError(
            path, f"got {value!r}; a parameter value is one line without control characters"
        )


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` (``--param`` values) as ``{"a": "1", "b": "x=y"}``.

    Raises:
        SpecError: for an item without ``=``.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SpecError("--param", f"got {item!r}; expected NAME=VALUE")
        if name in out:
            raise SpecError(f"--param {name}", "is given twice")
        check_value(value, f"--param {name}")
        out[name] = value
    return out


def resolve_values(
    parameters: Mapping[str, Parameter], given: Mapping[str, str] | None, *, origin: str
) -> dict[str, str]:
    """Every parameter's value: the given one, else its default.

    Raises:
        SpecError: for a given name that is not a parameter, or a parameter with no default
            and no value.
    """
    given = dict(given or {})
    for name in given:
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            raise SpecError(
                "parameters",
                f"--param {name}: no such parameter; the chain's parameters: {known}",
                source=origin,
            )
    values: dict[str, str] = {}
    for name, parameter in parameters.items():
        value = given.get(name, parameter.default)
        if value is None:
            raise SpecError(
                f"parameters.{name}",
                f"has no default and no value; give --param {name}=VALUE or a default",
                source=origin,
            )
        values[name] = value
    return values


def references(text: str) -> list[str]:
    """The parameter names ``text`` refers to, in order (escapes skipped)."""
    return [m.group(1) for m in _REFERENCE.finditer(text) if m.group(1) is not None]


def render(text: str, value_of: Callable[[str], str]) -> str:
    """``text`` with each ``${name}`` replaced by ``value_of(name)`` and ``$${`` by ``${``."""
    return _REFERENCE.sub(lambda m: "$" if m.group(1) is None else value_of(m.group(1)), text)


def templated_leaves(data: Any, path: str = "") -> Iterator[tuple[str, list[str | int], str]]:
    """Each text value of ``data`` that holds a reference or an escape, with its path.

    Yields:
        The YAML path (``steps[0].inputs[1]``), the same path as keys and indexes, and the
        text.
    """
    yield from _leaves(data, path, [])


def _leaves(
    data: Any, path: str, keys: list[str | int]
) -> Iterator[tuple[str, list[str | int], str]]:
    if isinstance(data, str):
        if "$" in data and _REFERENCE.search(data):
            yield path, keys, data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key), [*keys, str(key)])
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _leaves(value, f"{path}[{i}]", [*keys, i])


def check_references(steps: Any, parameters: Mapping[str, Parameter], *, origin: str) -> None:
    """Every ``${name}`` in the steps names a declared parameter, in a field that may vary.

    Raises:
        SpecError: at the value's YAML path, for a reference to no parameter (listing the
            parameters there are), an unclosed ``${``, or a reference in a field that shapes
            the chain (a step's name, kind, the steps it refers to, its predictor or metric).
    """
    for path, keys, text in _all_text(steps, "steps"):
        if _UNCLOSED.search(text):
            raise SpecError(
                path, f"{text!r} has a ${{ with no closing }}; write $${{ for a literal ${{"
            )
        names = references(text)
        if not names:
            continue
        if len(keys) == 2 and keys[1] in FIXED_FIELDS:
            raise SpecError(
                path,
                f"refers to ${{{names[0]}}}, but a step's {keys[1]} is fixed when the chain is "
                "read and compiled; parameters stand in the other text fields",
            )
        for name in names:
            if name not in parameters:
                known = ", ".join(parameters) or "none (add a parameters: section)"
                raise SpecError(
                    path,
                    f"${{{name}}} is not a parameter of this chain; parameters: {known}",
                    source=origin,
                )


def check_no_references(data: Any, path: str) -> None:
    """Parameters stand only in steps: a ``${`` anywhere else is an error.

    Raises:
        SpecError: at the value's YAML path.
    """
    for where, _, text in _all_text(data, path):
        if "${" in text.replace("$${", ""):
            raise SpecError(
                where, f"{text!r}: parameters (${{name}}) can be used only in the steps"
            )


def _all_text(data: Any, path: str) -> Iterator[tuple[str, list[str | int], str]]:
    """Every text value of ``data`` (mapping keys included) that holds a ``$``, with its path."""
    yield from _texts(data, path, [])


def _texts(
    data: Any, path: str, keys: list[str | int]
) -> Iterator[tuple[str, list[str | int], str]]:
    if isinstance(data, str):
        if "$" in data:
            yield path, keys, data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "${" in key:
                raise SpecError(where, "a key cannot refer to a parameter")
            yield from _texts(value, where, [*keys, str(key)])
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _texts(value, f"{path}[{i}]", [*keys, i])


def substitute(data: Any, values: Mapping[str, str]) -> Any:
    """A copy of ``data`` with every reference in its text values replaced by its value."""
    if isinstance(data, str):
        return render(data, values.__getitem__) if "$" in data else data
    if isinstance(data, Mapping):
        return {key: substitute(value, values) for key, value in data.items()}
    if isinstance(data, list):
        return [substitute(value, values) for value in data]
    return data


def overlay(steps: list[Any], raw_steps: Any, value_of: Callable[[str], str]) -> list[Any]:
    """The validated steps with each templated field rendered by ``value_of`` instead.

    A compiler calls this with the orchestrator's own placeholder for each parameter (a KFP
    pipeline channel, an Airflow ``{{ params.name }}``): the steps keep the types and checks
    of the resolved spec while the fields that depend on parameters carry placeholders.

    Raises:
        SpecError: for a reference in a value that is not text once parsed (a number).
    """
    out = copy.deepcopy(steps)
    for path, keys, text in templated_leaves(raw_steps, "steps"):
        target: Any = out
        for key in keys[:-1]:
            target = (
                target[key]
                if isinstance(key, int) or isinstance(target, dict)
                else getattr(target, key)
            )
        last = keys[-1]
        current = (
            target[last]
            if isinstance(last, int) or isinstance(target, dict)
            else getattr(target, last)
        )
        if not isinstance(current, str):
            raise SpecError(path, "a parameter can stand only in a text value")
        rendered = render(text, value_of)
        if isinstance(last, int) or isinstance(target, dict):
            target[last] = rendered
        else:
            setattr(target, last, rendered)
    return out
