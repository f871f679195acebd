"""Strict typed configuration: unknown keys, wrong types and missing keys fail with a path."""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Annotated, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.core.config import FieldError, SpecError, Within, check_within, from_mapping


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


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_numbers_round_trip(size: int, ratio: float) -> None:
    assert from_mapping(_Inner, {"size": size, "ratio": ratio}) == _Inner(size=size, ratio=ratio)


# --- what no section may hold: NaN, infinities, integers beyond 64 bits, sizes out of bounds


@dataclasses.dataclass
class _Sized:
    buckets: Annotated[int, Within(1, 10_000, "memory")] = 1
    optional_buckets: Annotated[int, Within(0, 5)] | None = None
    bound: float | None = None
    ratio: float = 0.5
    values: list[float] = dataclasses.field(default_factory=list)
    count: int = 0

    def validate(self) -> None:
        if self.count == 13:
            raise FieldError("count", "13 is unlucky; give another count")


@pytest.mark.parametrize(
    ("data", "path", "problem"),
    [
        ({"ratio": math.nan}, "s.ratio", "got nan; expected a finite number"),
        ({"ratio": math.inf}, "s.ratio", "got inf; expected a finite number"),
        ({"bound": -math.inf}, "s.bound", "got -inf; expected a finite number, or null for none"),
        ({"values": [1.0, math.nan]}, "s.values[1]", "got nan; expected a finite number"),
        (
            {"count": 2**63},
            "s.count",
            "got 9223372036854775808; expected an integer from -9,223,372,036,854,775,808 to "
            "9,223,372,036,854,775,807 (64 bits)",
        ),
        ({"ratio": 10**400}, "s.ratio", f"got {10**400}; expected a number within 64 bits"),
        (
            {"buckets": 10**12},
            "s.buckets",
            "got 1,000,000,000,000; expected an integer from 1 to 10,000 (memory)",
        ),
        ({"buckets": 0}, "s.buckets", "got 0; expected an integer from 1 to 10,000 (memory)"),
        ({"buckets": "many"}, "s.buckets", "got 'many'; expected an integer"),
        ({"optional_buckets": 6}, "s.optional_buckets", "got 6; expected an integer from 0 to 5"),
        ({"count": 13}, "s.count", "13 is unlucky; give another count"),
    ],
)
def test_non_finite_and_out_of_bounds_numbers_are_refused(
    data: dict, path: str, problem: str
) -> None:
    with pytest.raises(SpecError) as info:
        from_mapping(_Sized, data, "s")
    assert (info.value.path, info.value.problem) == (path, problem)


def test_bounded_values_within_their_bounds_load() -> None:
    sized = from_mapping(_Sized, {"buckets": 10_000, "optional_buckets": None, "bound": -1e300})
    assert (sized.buckets, sized.optional_buckets, sized.bound) == (10_000, None, -1e300)


def test_within_describes_its_bounds() -> None:
    assert Within(1, 10).describe() == "an integer from 1 to 10"
    assert Within(0).describe() == "an integer of at least 0"
    assert Within(high=0.5).describe() == "a number of at most 0.5"
    with pytest.raises(SpecError, match=r"^a\.b: got 11; expected an integer from 1 to 10$"):
        check_within(11, Within(1, 10), "a.b")


def test_spec_errors_survive_pickling_between_processes() -> None:
    # Beam moves exceptions raised in workers back to the launcher by pickling them.
    error = pickle.loads(pickle.dumps(SpecError("a.b", "wrong", source="job.yaml")))
    assert (error.path, error.problem, error.source, str(error)) == (
        "a.b",
        "wrong",
        "job.yaml",
        "job.yaml: a.b: wrong",
    )
