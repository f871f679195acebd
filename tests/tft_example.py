"""The taxi example's tf.Transform spec for the tft tests, and its preprocessing_fn with a row id."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from examples.chicago_taxi import taxi_preprocessing as taxi

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "chicago_taxi"
ROW_ID = "row_id"
FN_WITH_ROW_ID = "tests.tft_example:taxi_with_row_id"


def taxi_with_row_id(inputs: dict[str, Any]) -> dict[str, Any]:
    """TFX's taxi preprocessing_fn, plus the row id passed through to join on."""
    outputs = taxi.preprocessing_fn(inputs)
    outputs[ROW_ID] = taxi.fill_in_missing(inputs[ROW_ID])
    return outputs


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE / name).read_text())


def _tft_spec(**transform: Any) -> dict[str, Any]:
    data = _yaml("pipeline_tft.yaml")
    data["transform"].update(transform)
    return data
