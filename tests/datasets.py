"""Test helpers for reading a dataset folder the way a consumer does: through its manifest."""

from __future__ import annotations

import json
import pathlib
from typing import Any


def manifest_of(output: pathlib.Path) -> dict[str, Any]:
    """The committed manifest of a dataset folder."""
    return dict(json.loads((output / "manifest.json").read_text()))


def run_root(output: pathlib.Path) -> pathlib.Path:
    """The folder of the run the manifest of ``output`` names."""
    return pathlib.Path(manifest_of(output)["run"]["root"])


def split_paths(manifest: dict[str, Any], split: str, fmt: str = "parquet") -> list[str]:
    """The paths of one split's files in one format, as the manifest lists them."""
    return [e["path"] for e in manifest["splits"][split]["files"][fmt]]


def dataset_files(output: pathlib.Path, fmt: str = "parquet") -> list[str]:
    """Every split's files in one format, in split order, as the manifest lists them."""
    manifest = manifest_of(output)
    return [path for split in manifest["splits"] for path in split_paths(manifest, split, fmt)]
