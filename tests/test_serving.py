"""The taxi trainer and predictor in-process, and the local server's failure paths."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from examples.chicago_taxi.predictor import TaxiPredictor
from examples.chicago_taxi.trainer import task
from launchers import serving
from launchers.chain import copy_artifact
from launchers.local_train import TrainingError, run_training
from tests.conftest import REPO, TAXI_SAMPLE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("serving")
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (root / "trips.csv").write_text("".join(lines[:401]))
    run_job(
        load_spec(str(REPO / "examples/chicago_taxi/pipeline.yaml")),
        output=str(root / "ds"),
        inputs=[str(root / "trips.csv")],
    )
    metrics = task.train(
        training_uri=str(root / "ds/train/part-*.parquet"),
        validation_uri=str(root / "ds/eval/part-*.parquet"),
        test_uri=None,
        model_dir=str(root / "model"),
        kind="logistic",
    )
    assert metrics["rows"] == {"training": 276, "validation": 124}
    copy_artifact(str(root / "ds/artifact"), str(root / "model"))
    return root / "model"


def test_trainer_writes_model_and_metrics(model_dir: pathlib.Path) -> None:
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert sorted(metrics) == [
        "accuracy",
        "auc",
        "features",
        "label",
        "log_loss",
        "model",
        "rows",
        "training",
        "validation",
    ]
    assert metrics["auc"] == metrics["validation"]["auc"]
    assert 0.5 < metrics["auc"] <= 1.0
    assert len(metrics["features"]) == 16
    assert "tips_xf" not in metrics["features"]


def test_predictor_answers_each_instance_in_order(model_dir: pathlib.Path) -> None:
    predictor = TaxiPredictor()
    predictor.load(str(model_dir))
    trip = {
        "fare": 20.0,
        "trip_miles": 5.5,
        "trip_seconds": 900,
        "payment_type": "Credit Card",
        "company": "Flash Cab",
        "trip_start_hour": 18,
    }
    body: dict[str, Any] = {
        "instances": [trip, {"trip_seconds": "a while"}, trip],
        "parameters": {"return_features": True},
    }
    out = predictor.postprocess(predictor.predict(predictor.preprocess(body)))
    first, bad, third = out["predictions"]
    assert first == third
    assert bad == {
        "error": {
            "reason": "unparseable_value",
            "message": "key 'trip_seconds': 'a while' is not a valid int64",
        }
    }
    assert first["tips_xf"] == int(first["probability"] >= 0.5)
    assert first["features"]["trip_start_hour_xf"] == 18
    plain = predictor.postprocess(predictor.predict(predictor.preprocess({"instances": [trip]})))
    # Alone or in a batch of three: the same answer (to BLAS rounding).
    (alone,) = plain["predictions"]
    assert alone["tips_xf"] == first["tips_xf"]
    assert alone["probability"] == pytest.approx(first["probability"], rel=1e-12)
    assert sorted(alone) == ["probability", "tips_xf"]


def test_predictor_refuses_a_body_without_instances(model_dir: pathlib.Path) -> None:
    predictor = TaxiPredictor()
    predictor.load(str(model_dir))
    with pytest.raises(ValueError, match=r'the request body must be \{"instances": \[\.\.\.\]\}'):
        predictor.preprocess({"rows": []})


def test_server_that_cannot_load_reports_its_log_tail(tmp_path: pathlib.Path) -> None:
    with pytest.raises(serving.ServerError) as info:
        serving.start_server(
            str(tmp_path / "no-model"),
            predictor="examples.chicago_taxi.predictor:TaxiPredictor",
            log=str(tmp_path / "server.log"),
            timeout=60,
        )
    assert str(info.value).startswith("prediction server exited with code ")
    assert "FileNotFoundError" in str(info.value)


def test_server_env_is_vertex_cpr_env() -> None:
    assert serving.server_env("/m", "pkg.mod:Cls", 8123) == {
        "AIP_STORAGE_URI": "/m",
        "AIP_HTTP_PORT": "8123",
        "AIP_PREDICT_ROUTE": "/predict",
        "AIP_HEALTH_ROUTE": "/health",
        "HANDLER_MODULE": "google.cloud.aiplatform.prediction.handler",
        "HANDLER_CLASS": "PredictionHandler",
        "PREDICTOR_MODULE": "pkg.mod",
        "PREDICTOR_CLASS": "Cls",
    }
    with pytest.raises(ValueError, match=r"predictor must be 'module:Class', got 'pkg\.mod'"):
        serving.server_env("/m", "pkg.mod", 8123)


def test_training_timeout_kills_the_trainer(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\nprint('epoch 1', flush=True)\ntime.sleep(30)\n")
    with pytest.raises(TrainingError) as info:
        run_training(
            [sys.executable, str(script)],
            env={"AIP_MODEL_DIR": str(tmp_path / "m")},
            log=str(tmp_path / "t.log"),
            timeout=1.0,
        )
    assert str(info.value) == (
        "trainer still running after 1 s; killed\n--- last lines of the trainer's log ---\nepoch 1"
    )
