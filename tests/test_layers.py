"""The serving layer stays light: no Beam and no cloud client in a process that serves.

import-linter checks the import graph (``make lint``); these tests check what a real process
loads, which also catches imports the graph cannot see (plugins, ``importlib`` calls).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.test_preprocessor import ROWS, artifact_dir  # noqa: F401 (the fixture)
from transforms.serving import Preprocessor

# `google.cloud` itself is an empty namespace package that the cloud libraries' .pth files
# create at interpreter start-up; a client is any module under it.
_CHECK = """
import json, sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "apache_beam"
               or m.startswith("google.cloud.") or m.split(".")[0] == "tensorflow")
print(json.dumps({{"heavy": heavy, "out": out}}))
"""


def _fresh(body: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK.format(body=body)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_serving_loads_no_beam_and_no_cloud_client():
    result = _fresh("import transforms.serving\nout = transforms.serving.__all__")
    assert result["heavy"] == []
    assert result["out"] == ["Preprocessor"]


@pytest.mark.parametrize("through_manifest", [False, True], ids=["artifact", "dataset"])
def test_serving_rows_from_a_local_artifact_loads_no_beam(artifact_dir, through_manifest, tmp_path):  # noqa: F811
    directory = artifact_dir
    if through_manifest:
        # A dataset folder: its manifest names the artifact, as a committed run's does.
        dataset = tmp_path / "dataset"
        dataset.mkdir()
        (dataset / "manifest.json").write_text(json.dumps({"artifact": {"path": artifact_dir}}))
        directory = str(dataset)
    body = (
        "from transforms.serving import Preprocessor\n"
        f"rows, errors = Preprocessor.load({directory!r}).transform_rows({ROWS!r})\n"
        "out = [rows, [[e.step, e.reason, e.message] for e in errors]]"
    )
    result = _fresh(body)
    assert result["heavy"] == []
    # The same rows and errors as in this process (whose exact values test_preprocessor checks).
    rows, errors = Preprocessor.load(artifact_dir).transform_rows(ROWS)
    assert result["out"] == [rows, [[e.step, e.reason, e.message] for e in errors]]
    assert len(rows) == 3 and len(errors) == 2
