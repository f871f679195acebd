"""The local chain for real: raw CSV -> dataset -> training subprocess -> gate -> local server.

A first run, ``beamforge chain`` in a subprocess, is killed from outside (SIGKILL to its process
group, the trainer included, as a machine failure would) once its state file records the
dataset step as finished; the second run resumes without redoing the dataset, trains again
from an empty model folder, deploys the model to a real HTTP server on a free port, and the
features it serves for the raw rows are exactly the features the batch pipeline wrote for them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from tests.conftest import REPO, TAXI_SAMPLE
from tests.datasets import dataset_files

pytestmark = pytest.mark.slow


def _raw_rows() -> list[dict[str, Any]]:
    with TAXI_SAMPLE.open(newline="") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def _key(row: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    return tuple(row[c] for c in columns)


def _wait_for_completed(
    state_file: pathlib.Path, step: str, proc: subprocess.Popen[bytes], log: pathlib.Path
) -> None:
    """Returns once the state file records ``step`` as completed (bounded: 180 s)."""
    deadline = time.monotonic() + 180
    while True:
        # The state file is replaced whole (a rename), so every read sees a complete one.
        if state_file.exists():
            steps = json.loads(state_file.read_text())["steps"]
            if steps.get(step, {}).get("status") == "completed":
                return
        assert proc.poll() is None, f"the chain exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{state_file} never recorded {step} as completed"
        time.sleep(0.02)


def test_local_chain_end_to_end_killed_after_its_first_step(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain_file = tmp_path / "chain.yaml"
    chain_file.write_text(
        yaml.safe_dump(
            {
                "name": "taxi",
                "workdir": str(tmp_path / "work"),
                "steps": [
                    {
                        "name": "dataset",
                        "kind": "dataset",
                        "spec": str(REPO / "examples/chicago_taxi/pipeline.yaml"),
                        "inputs": [str(TAXI_SAMPLE)],
                        "output": str(tmp_path / "dataset"),
                    },
                    {
                        "name": "train",
                        "kind": "train",
                        "dataset": "dataset",
                        "module": "examples.chicago_taxi.trainer.task",
                        "args": ["--model", "logistic"],
                    },
                    {
                        "name": "gate",
                        "kind": "gate",
                        "metrics": "train",
                        "metric": "auc",
                        "min": 0.7,
                    },
                    {
                        "name": "upload",
                        "kind": "upload",
                        "model": "train",
                        "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
                    },
                    {"name": "deploy", "kind": "deploy", "model": "upload"},
                ],
            }
        )
    )
    spec = chains.load_chain(str(chain_file))
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "launchers.cli", "chain", str(chain_file)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_completed(pathlib.Path(spec.state_path("local")), "dataset", first, log)
    finally:
        # The whole group, the trainer included; it is gone already if the chain exited early.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL, log.read_text()
    assert [(s.name, s.status, s.runs) for s in chains.chain_status(spec)] == [
        ("dataset", "completed", 1),
        ("train", "pending", 0),
        ("gate", "pending", 0),
        ("upload", "pending", 0),
        ("deploy", "pending", 0),
    ]
    manifest_file = tmp_path / "dataset/manifest.json"
    committed = manifest_file.read_bytes()
    committed_at = manifest_file.stat().st_mtime_ns

    monkeypatch.chdir(REPO)
    report = chains.run_chain(spec)
    server = serving.LocalServer.from_json(report.outputs["deploy"]["server"])
    try:
        assert (report.ran, report.skipped) == (["train", "gate", "upload", "deploy"], ["dataset"])
        assert manifest_file.read_bytes() == committed
        assert manifest_file.stat().st_mtime_ns == committed_at
        # The killed attempt left no record: training ran once, from an empty model folder.
        assert [(s.name, s.status, s.runs) for s in chains.chain_status(spec)] == [
            ("dataset", "completed", 1),
            ("train", "completed", 1),
            ("gate", "completed", 1),
            ("upload", "completed", 1),
            ("deploy", "completed", 1),
        ]
        model_file = tmp_path / "work/train/model/model.joblib"
        assert report.outputs["gate"]["value"] >= 0.7
        assert serving.is_healthy(server)

        rows = _raw_rows()
        predictions = serving.predict(
            server.predict_url, rows, parameters={"return_features": True}, timeout=60
        )
        assert len(predictions) == len(rows) == 3001
        served = [p["features"] for p in predictions]
        columns = list(served[0])
        batch = pa.concat_tables(
            pq.read_table(p) for p in dataset_files(tmp_path / "dataset")
        ).to_pylist()
        assert sorted(batch[0]) == sorted(columns)
        # Same rows, same features (float32 z-scores included), compared exactly.
        assert sorted(_key(r, columns) for r in served) == sorted(_key(r, columns) for r in batch)
        # And the model's own answer on those features.
        bundle = joblib.load(model_file)
        x = np.array([[f[c] for c in bundle["features"]] for f in served[:50]], dtype=np.float64)
        expected = bundle["model"].predict_proba(x)[:, 1]
        assert [p["probability"] for p in predictions[:50]] == pytest.approx(
            expected.tolist(), rel=1e-12
        )
        assert [p["tips_xf"] for p in predictions[:50]] == (expected >= 0.5).astype(int).tolist()

        # A raw trip with a bad value gets an error in its place; the others are answered.
        mixed = serving.predict(server.predict_url, [rows[0], dict(rows[1], fare="twelve")])
        assert mixed[0]["tips_xf"] == predictions[0]["tips_xf"]
        assert mixed[0]["probability"] == pytest.approx(predictions[0]["probability"], rel=1e-12)
        assert mixed[1] == {
            "error": {
                "reason": "unparseable_value",
                "message": "key 'fare': 'twelve' is not a valid float32",
            }
        }

        # The CLI finds the deployed server through the state.
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "launchers.cli",
                "chain",
                "predict",
                str(chain_file),
                "--instances",
                str(TAXI_SAMPLE),
                "--limit",
                "2",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        answered = json.loads(out.stdout)["predictions"]
        assert [a["tips_xf"] for a in answered] == [p["tips_xf"] for p in predictions[:2]]
        assert [a["probability"] for a in answered] == pytest.approx(
            [p["probability"] for p in predictions[:2]], rel=1e-12
        )
    finally:
        assert serving.stop_server(server)
    assert not serving.is_healthy(server)
    # A stopped server is no longer a deployment: status says what the next run would do.
    assert [(s.name, s.status) for s in chains.chain_status(spec)] == [
        ("dataset", "completed"),
        ("train", "completed"),
        ("gate", "completed"),
        ("upload", "completed"),
        ("deploy", "stale"),
    ]
