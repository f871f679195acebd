"""The taxi example's raw columns and types, read from its spec (the one place they live)."""

from __future__ import annotations

import pathlib

import yaml

SPEC = pathlib.Path(__file__).with_name("pipeline.yaml")

# {column: spec type name}, in the CSV's column order.
RAW_SCHEMA: dict[str, str] = dict(yaml.safe_load(SPEC.read_text())["source"]["schema"])
