"""The taxi trainer and predictor in-process, and the local server's failure paths."""

from __future__ import annotations

import http.client
import json
import pathlib
import socket
import sys
from collections.abc import Iterator
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
from tests.datasets import run_root


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
    run = run_root(root / "ds")  # the committed run, as its manifest names it
    metrics = task.train(
        training_uri=str(run / "train/part-*.parquet"),
        validation_uri=str(run / "eval/part-*.parquet"),
        test_uri=None,
        model_dir=str(root / "model"),
        kind="logistic",
    )
    assert metrics["rows"] == {"training": 276, "validation": 124}
    copy_artifact(str(run / "artifact"), str(root / "model"))
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
        # CPR's PredictionHandler, answering a request the predictor refuses with 400.
        "HANDLER_MODULE": "launchers.serving",
        "HANDLER_CLASS": "ClientErrorHandler",
        "PREDICTOR_MODULE": "pkg.mod",
        "PREDICTOR_CLASS": "Cls",
    }
    with pytest.raises(ValueError, match=r"predictor must be 'module:Class', got 'pkg\.mod'"):
        serving.server_env("/m", "pkg.mod", 8123)
    limited = serving.server_env("/m", "pkg.mod:Cls", 8123, max_request_bytes=1000)
    assert limited["BEAMFORGE_MAX_REQUEST_BYTES"] == "1000"
    with pytest.raises(ValueError, match="max_request_bytes must be a positive integer, got 0"):
        serving.server_env("/m", "pkg.mod:Cls", 8123, max_request_bytes=0)


def test_the_size_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEAMFORGE_MAX_REQUEST_BYTES", raising=False)
    assert serving.max_request_bytes() == 4 << 20
    monkeypatch.setenv("BEAMFORGE_MAX_REQUEST_BYTES", "65536")
    assert serving.max_request_bytes() == 65536
    monkeypatch.setenv("BEAMFORGE_MAX_REQUEST_BYTES", "lots")
    with pytest.raises(ValueError, match="BEAMFORGE_MAX_REQUEST_BYTES must be a positive integer"):
        serving.max_request_bytes()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"instances": [{"a": 1}], "parameters": {"x": true}}', None),
        (b'{"instances": []}', None),
        (b'{"foo": 1}', "unknown key 'foo' in the request body; expected {\"instances\""),
        (b'{"parameters": {}}', 'the request body has no "instances"'),
        (b"[1, 2]", "the request body is a JSON list; expected"),
        (b'{"instances": {"a": 1}}', '"instances" is a JSON object; expected a list'),
        (b'{"instances": [], "parameters": 3}', '"parameters" is a JSON number'),
        (b'{"instances": ', "the request body is not valid JSON: Expecting value (line 1"),
        (b'{"instances": [NaN]}', "the request body is not valid JSON: NaN is not a JSON value"),
        (b"\xff\xfe{}", "the request body is not UTF-8 text (byte 0)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_request_problems_are_named(body: bytes, problem: str | None) -> None:
    found = serving.request_problem(body)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# --- the server over HTTP ----------------------------------------------------------------------

LIMIT = 64 << 10
TRIP = {
    "fare": 20.0,
    "trip_miles": 5.5,
    "trip_seconds": 900,
    "payment_type": "Credit Card",
    "company": "Flash Cab",
    "trip_start_hour": 18,
}


@pytest.fixture(scope="module")
def server(
    model_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[serving.LocalServer]:
    running = serving.start_server(
        str(model_dir),
        predictor="examples.chicago_taxi.predictor:TaxiPredictor",
        log=str(tmp_path_factory.mktemp("server") / "server.log"),
        timeout=120,
        max_request_bytes=LIMIT,
    )
    try:
        yield running
    finally:
        serving.stop_server(running)


def _request(
    server: serving.LocalServer,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw)
    finally:
        connection.close()


def test_a_valid_request_is_answered(server: serving.LocalServer) -> None:
    status, headers, body = _request(
        server, "POST", "/predict", json.dumps({"instances": [TRIP]}).encode()
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    (prediction,) = body["predictions"]
    assert sorted(prediction) == ["probability", "tips_xf"]


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b'{"foo": 1}', "application/json", "unknown key 'foo' in the request body"),
        (
            b'{"instances": [1]}',
            "application/json",
            "the predictor refused the request: every instance must be a mapping of column to "
            "value",
        ),
        (b'{"instances": [', "application/json", "the request body is not valid JSON"),
        (b'"instances"', "application/json", "the request body is a JSON string"),
        (
            b'{"instances": [{}]}',
            "text/plain",
            "Content-Type must be application/json, got text/plain",
        ),
        (b'{"instances": [{}]}', None, "Content-Type must be application/json, got missing"),
        (b"\x00\x01binary", "application/octet-stream", "Content-Type must be application/json"),
    ],
)
def test_client_errors_get_400_naming_the_reason(
    server: serving.LocalServer, body: bytes, content_type: str | None, error: str
) -> None:
    status, headers, answer = _request(server, "POST", "/predict", body, content_type)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert list(answer) == ["error"]
    assert answer["error"].startswith(error), answer


def test_a_bad_value_in_one_instance_is_answered_in_its_place(server: serving.LocalServer) -> None:
    instances = [TRIP, dict(TRIP, trip_seconds="a while"), TRIP]
    status, _, body = _request(
        server, "POST", "/predict", json.dumps({"instances": instances}).encode()
    )
    assert status == 200
    first, bad, third = body["predictions"]
    assert first == third and "tips_xf" in first
    assert bad == {
        "error": {
            "reason": "unparseable_value",
            "message": "key 'trip_seconds': 'a while' is not a valid int64",
        }
    }


def test_unknown_routes_get_404_and_wrong_methods_405(server: serving.LocalServer) -> None:
    status, _, body = _request(server, "GET", "/v1/models")
    assert (status, body) == (
        404,
        {"error": "no route /v1/models; the routes are POST /predict, GET /health, GET /metrics"},
    )
    status, headers, body = _request(server, "GET", "/predict", content_type=None)
    assert (status, headers["allow"], body) == (
        405,
        "POST",
        {"error": "/predict takes POST, not GET"},
    )
    status, headers, body = _request(server, "POST", "/health", b"{}")
    assert (status, headers["allow"]) == (405, "GET")
    status, _, body = _request(server, "GET", "/health", content_type=None)
    assert (status, body) == (200, {})
    status, headers, body = _request(server, "POST", "/metrics", b"{}")
    assert (status, headers["allow"], headers["content-type"], body) == (
        405,
        "GET",
        "application/json",
        {"error": "/metrics takes GET, not POST"},
    )
    status, headers, body = _request(server, "DELETE", "/metrics", content_type=None)
    assert (status, headers["allow"], body) == (
        405,
        "GET",
        {"error": "/metrics takes GET, not DELETE"},
    )


def test_get_metrics_answers_prometheus_text(server: serving.LocalServer) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200
    assert response.getheader("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE beamforge_predict_requests_total counter\n" in text


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        (
            {"return_features": "false"},
            'the predictor refused the request: parameter "return_features" must be true or '
            "false, got 'false'",
        ),
        (
            {"return_features": 1},
            'the predictor refused the request: parameter "return_features" must be true or '
            "false, got 1",
        ),
        (
            {"retrun_features": True},
            "the predictor refused the request: unknown parameter 'retrun_features'; the "
            "parameters are: return_features",
        ),
    ],
)
def test_bad_parameters_get_400(
    server: serving.LocalServer, parameters: dict[str, Any], error: str
) -> None:
    body = json.dumps({"instances": [TRIP], "parameters": parameters}).encode()
    status, headers, answer = _request(server, "POST", "/predict", body)
    assert (status, headers["content-type"], answer) == (400, "application/json", {"error": error})


@pytest.mark.parametrize(
    ("parameters", "keys"),
    [
        ({"return_features": True}, ["features", "probability", "tips_xf"]),
        ({"return_features": False}, ["probability", "tips_xf"]),
        ({}, ["probability", "tips_xf"]),
        (None, ["probability", "tips_xf"]),
    ],
)
def test_return_features_is_a_boolean_parameter(
    server: serving.LocalServer, parameters: dict[str, Any] | None, keys: list[str]
) -> None:
    request: dict[str, Any] = {"instances": [TRIP]}
    if parameters is not None:
        request["parameters"] = parameters
    status, _, answer = _request(server, "POST", "/predict", json.dumps(request).encode())
    assert status == 200
    (prediction,) = answer["predictions"]
    assert sorted(prediction) == keys


def _raw_exchange(server: serving.LocalServer, head: bytes, body_parts: list[bytes]) -> bytes:
    # Sends the head and the body parts, never finishing the body, and reads the answer: a
    # server that waited for the whole body would time out here.
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed without reading the rest
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_declared_body_over_the_limit_gets_413_unread(server: serving.LocalServer) -> None:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10737418240\r\n\r\n"
    )
    answer = _raw_exchange(server, head, [b'{"instances": ['])
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "error": "the request body is 10,737,418,240 bytes; this server takes at most 65,536 "
        "bytes (--max-request-bytes / BEAMFORGE_MAX_REQUEST_BYTES)"
    }


def test_a_streamed_body_over_the_limit_gets_413_unread(server: serving.LocalServer) -> None:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # 80 KiB sent, the body never ended (no final 0-length chunk).
    answer = _raw_exchange(server, head, [chunk] * 5)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"the request body is over 65,536 bytes" in answer


def test_a_body_within_the_limit_is_read_whole(server: serving.LocalServer) -> None:
    instances = [TRIP] * 200  # about 30 KB
    body = json.dumps({"instances": instances}).encode()
    assert 16384 < len(body) < LIMIT
    status, _, answer = _request(server, "POST", "/predict", body)
    assert status == 200 and len(answer["predictions"]) == 200


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
