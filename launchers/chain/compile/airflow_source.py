"""Python source text for the DAG files the Airflow compiler writes.

A DAG file is meant to be read (in a Composer bucket, in a review), so values are written as
literals laid out one item a line when they are long, and each operator call puts one argument on a line.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Iterable
from typing import Any

_INDENT = "    "
_WIDTH = 100


class Code(str):
    """Source text written as is (an expression), not as a string literal."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def literal(value: Any, indent: int = 0, used: int = 0) -> str:
    """``value`` as a Python literal, one item a line when it does not fit on one.

    Continuation lines are indented by ``indent`` levels; ``used`` characters of the line
    are taken by what comes before and after it; strings are double-quoted.
    """
    flat = _flat(value)
    if len(flat) + len(_INDENT) * indent + used <= _WIDTH or not isinstance(
        value, dict | list | tuple
    ):
        return flat
    pad = _INDENT * (indent + 1)
    if isinstance(value, dict):
        items = [
            f"{pad}{_flat(k)}: {literal(v, indent + 1, len(_flat(k)) + 3)},\n"
            for k, v in value.items()
        ]
        return "{\n" + "".join(items) + _INDENT * indent + "}"
    items = [f"{pad}{literal(v, indent + 1, 1)},\n" for v in value]
    return "[\n" + "".join(items) + _INDENT * indent + "]"


def _flat(value: Any) -> str:
    if isinstance(value, Code):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a Python string literal too.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flat(k)}: {_flat(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    return repr(value)


def call(target: str, function: str, arguments: Iterable[tuple[str, Any]], indent: int) -> str:
    """``target = function(\\n  name=value,\\n ...)`` at ``indent`` levels (lines end with \\n)."""
    pad = _INDENT * indent
    lines = [f"{pad}{target} = {function}(\n"]
    for name, value in arguments:
        lines.append(f"{pad}{_INDENT}{name}={literal(value, indent + 1, len(name) + 2)},\n")
    lines.append(f"{pad})\n")
    return "".join(lines)


def identifier(name: str, taken: set[str]) -> str:
    """A Python variable name for a step's task, unique among ``taken`` (which it joins)."""
    base = re.sub(r"\W+", "_", name).strip("_") or "step"
    if base[0].isdigit() or keyword.iskeyword(base):
        base = f"step_{base}"
    candidate, n = f"{base}_task", 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}_task"
    taken.add(candidate)
    return candidate


def xcom(task_id: str, *path: str, key: str | None = None) -> str:
    """A Jinja expression pulling a task's XCom (or one of its fields), for templated fields."""
    pulled = f"ti.xcom_pull(task_ids={task_id!r}" + (f", key={key!r})" if key else ")")
    return "{{ " + pulled + "".join(f"[{p!r}]" for p in path) + " }}"


def timedelta(seconds: float) -> Code:
    """``datetime.timedelta(seconds=...)`` as source (the DAG imports ``datetime``)."""
    return Code(f"datetime.timedelta(seconds={seconds!r})")
