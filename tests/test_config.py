"""Strict typed configuration: unknown keys, wrong types and missing keys fail with a path."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.config import SpecError, from_mapping


@dataclasses.dataclass
class _Inner:
    size: int
    ratio: float = 0.5


@dataclasses.dataclass
class _Outer:
    name: str
    mode: Literal["a", "b"] = "a"
    inner: _Inner = dataclasses.field(default_factory=lambda: _Inner(size=1))
    tags: list[str] = dataclasses.field(default_factory=list)
    limits: dict[str, float] = dataclasses.field(default_factory=dict)
    optional: int | None = None

    def validate(self) -> None:
        if self.name == "bad":
            raise ValueError("name must not be 'bad'")


def test_valid_mapping_builds_with_conversions() -> None:
    out = from_mapping(_Outer, {"name": "x", "inner": {"size": 3, "ratio": 1}, "limits": {"a": 2}})
    assert out == _Outer(name="x", inner=_Inner(size=3, ratio=1.0), limits={"a": 2.0})
    assert isinstance(out.inner.ratio, float)


@pytest.mark.parametrize(
    ("data", "path", "problem"),
    [
        (
            {"name": "x", "nmae": 1},
            "spec.nmae",
            "unknown key 'nmae'; valid keys are name, mode, inner, tags, limits, optional",
        ),
        ({}, "spec.name", "required key 'name' is missing"),
        ({"name": 3}, "spec.name", "got 3; expected a string"),
        ({"name": "x", "mode": "c"}, "spec.mode", "got 'c'; expected one of 'a', 'b'"),
        (
            {"name": "x", "inner": {"size": "big"}},
            "spec.inner.size",
            "got 'big'; expected an integer",
        ),
        (
            {"name": "x", "inner": {"size": True}},
            "spec.inner.size",
            "got True; expected an integer",
        ),
        ({"name": "x", "tags": ["a", 2]}, "spec.tags[1]", "got 2; expected a string"),
        ({"name": "x", "limits": {"a": "z"}}, "spec.limits.a", "got 'z'; expected a number"),
        ({"name": "x", "optional": "1"}, "spec.optional", "got '1'; expected an integer"),
        ({"name": "bad"}, "spec", "name must not be 'bad'"),
        (
            "text",
            "spec",
            "got 'text'; expected a mapping with keys name, mode, inner, tags, limits, optional",
        ),
    ],
)
def test_invalid_mappings_name_path_value_and_choices(
    data: object, path: str, problem: str
) -> None:
    with pytest.raises(SpecError) as info:
        from_mapping(_Outer, data, "spec")
    assert info.value.path == path
    assert info.value.problem == problem
    assert str(info.value) == f"{path}: {problem}"


def test_source_is_prefixed_to_the_message() -> None:
    assert str(SpecError("a.b", "wrong", source="job.yaml")) == "job.yaml: a.b: wrong"


@given(st.integers(), st.floats(allow_nan=False))
def test_numbers_round_trip(size: int, ratio: float) -> None:
    assert from_mapping(_Inner, {"size": size, "ratio": ratio}) == _Inner(size=size, ratio=ratio)
