"""Shared fixtures. Every process started by the tests stays off Google's metadata server."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.emulators import missing

os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:1")
os.environ.setdefault("GCE_METADATA_IP", "127.0.0.1:1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parent.parent
TAXI_CSV = REPO.parent / "shared" / "data" / "chicago_taxi" / "data.csv"
TAXI_SAMPLE = REPO / "examples" / "chicago_taxi" / "data" / "sample.csv"


def beamforge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``beamforge ARGS`` in a subprocess from the repository's root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "launchers.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def taxi_csv() -> pathlib.Path:
    """The full 15,002-row taxi file from ../shared (skips where it is absent; fails in CI)."""
    if not TAXI_CSV.exists():
        missing(f"{TAXI_CSV} not found: the shared data set sits beside the repository")
    return TAXI_CSV


# The GCS and BigQuery emulator fixtures (and the ``emulator`` marker).
pytest_plugins = ["tests.emulators"]
