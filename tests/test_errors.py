"""Tests for transforms.core.errors: strict payloads, and user errors that keep their type."""

from __future__ import annotations

import json
import pickle

import pytest

from transforms.core.errors import InputError, row_payload
from transforms.core.manifest import CountsMismatchError


def _strict_loads(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_payload_is_strict_json_and_spells_non_finite_floats_as_the_readers_parse_them():
    row = {"fare": float("nan"), "tips": [float("inf"), 1.0], "miles": float("-inf"), "id": 3}
    payload = row_payload(row)
    assert _strict_loads(payload) == {
        "fare": "NaN",
        "id": 3,
        "miles": "-Infinity",
        "tips": ["Infinity", 1.0],
    }
    assert row_payload({"fare": 1.5, "day": None}) == '{"day": null, "fare": 1.5}'


def test_an_input_error_survives_pickling_and_beams_one_argument_copy():
    error = InputError("data/trips.csv:12", "expected 4 fields, got 5")
    assert str(error) == "data/trips.csv:12: expected 4 fields, got 5"
    copied = pickle.loads(pickle.dumps(error))
    assert (type(copied), copied.location, copied.problem) == (
        InputError,
        "data/trips.csv:12",
        "expected 4 fields, got 5",
    )
    # What Beam does with an exception raised in a worker: the same type, one argument.
    rebuilt = type(error)(f"{error} [while running 'Read']")
    assert isinstance(rebuilt, InputError)
    assert rebuilt.location == "data/trips.csv:12"
    assert rebuilt.problem == "expected 4 fields, got 5 [while running 'Read']"


@pytest.mark.parametrize("message", ["no separator at all", ""])
def test_a_one_argument_input_error_without_a_location_keeps_its_text(message: str):
    assert str(InputError(message)) == message


def test_a_counts_mismatch_survives_pickling_and_beams_one_argument_copy():
    error = CountsMismatchError("row counts do not balance: read 3 but 2")
    copied = pickle.loads(pickle.dumps(error))
    assert (type(copied), copied.message, str(copied)) == (
        CountsMismatchError,
        "row counts do not balance: read 3 but 2",
        "row counts do not balance: read 3 but 2",
    )
    # What Beam does with an exception raised in a DoFn: the same type, one argument.
    rebuilt = type(error)(f"{error} [while running 'Check']")
    assert type(rebuilt) is CountsMismatchError
    assert rebuilt.message == "row counts do not balance: read 3 but 2 [while running 'Check']"
