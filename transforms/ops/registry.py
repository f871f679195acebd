"""The step registry: every op name a spec may use, and the step class that implements it.

Built explicitly from the ``STEPS`` tuple each ops module exports (as Beam YAML's
``standard_providers()`` merges its providers), never by import side effects: a step class
is known because it is listed here, and two classes claiming one op name fail at import.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

from transforms.core.config import SpecError, from_mapping
from transforms.core.steps import Step
from transforms.ops import checks, clean, dedupe, expressions, features, fitted_clean, time_parts

__all__ = ["OPS", "build_step", "merge_steps"]


def merge_steps(groups: Iterable[Iterable[type[Step]]]) -> Mapping[str, type[Step]]:
    """Merges step classes into one read-only mapping ``op -> class``.

    Raises:
        TypeError: if a class sets no ``op``, or two classes set the same one.
    """
    merged: dict[str, type[Step]] = {}
    for group in groups:
        for cls in group:
            if not cls.op:
                raise TypeError(f"{cls.__name__} must set op")
            if cls.op in merged and merged[cls.op] is not cls:
                raise TypeError(f"op {cls.op!r} registered twice")
            merged[cls.op] = cls
    return types.MappingProxyType(merged)


OPS: Mapping[str, type[Step]] = merge_steps(
    (
        clean.STEPS,
        checks.STEPS,
        fitted_clean.STEPS,
        dedupe.STEPS,
        expressions.STEPS,
        features.STEPS,
        time_parts.STEPS,
    )
)


def build_step(item: Any, path: str) -> Step:
    """Builds a step from its spec mapping (``{op: ..., <params>}``).

    Args:
        item: The mapping as written in the spec (or recorded in an artifact).
        path: Its YAML path for messages, e.g. ``clean[2]``.

    Raises:
        SpecError: for a missing or unknown ``op`` (listing the registered ones) and for any
            invalid parameter.
    """
    if not isinstance(item, Mapping):
        raise SpecError(path, f"got {item!r}; expected a mapping with an 'op' key")
    op = item.get("op")
    if op is None:
        raise SpecError(path, f"missing 'op'; valid ops are {', '.join(sorted(OPS))}")
    if op not in OPS:
        raise SpecError(f"{path}.op", f"unknown op {op!r}; valid ops are {', '.join(sorted(OPS))}")
    params = {k: v for k, v in item.items() if k != "op"}
    step = from_mapping(OPS[op], params, path)
    if not step.name:
        step.name = step.default_name()
    return step
