"""Request logging of the prediction server: sampling, JSONL files, BigQuery, counters, config."""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from examples.chicago_taxi.trainer import task
from launchers import serving
from launchers.chain import copy_artifact
from launchers.serving import request_log as rl
from launchers.serving.environment import ServerSetupError
from tests.conftest import REPO, TAXI_SAMPLE
from tests.datasets import run_root
from tests.fake_clock import FakeClock

PREDICTOR = "examples.chicago_taxi.predictor:TaxiPredictor"
TRIP = {
    "fare": 20.0,
    "trip_miles": 5.5,
    "trip_seconds": 900,
    "payment_type": "Credit Card",
    "company": "Flash Cab",
    "trip_start_hour": 18,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("request-log")
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (root / "trips.csv").write_text("".join(lines[:401]))
    run_job(
        load_spec(str(REPO / "examples/chicago_taxi/pipeline.yaml")),
        output=str(root / "ds"),
        inputs=[str(root / "trips.csv")],
    )
    run = run_root(root / "ds")
    task.train(
        training_uri=str(run / "train/part-*.parquet"),
        validation_uri=str(run / "eval/part-*.parquet"),
        test_uri=None,
        model_dir=str(root / "model"),
        kind="logistic",
    )
    copy_artifact(str(run / "artifact"), str(root / "model"))
    return root / "model"


def _post(
    server: serving.LocalServer,
    body: Any,
    request_id: str | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **(extra or {})}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        connection.request("POST", "/predict", body=json.dumps(body).encode(), headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def _records(folder: pathlib.Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(folder.glob("requests-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _model_version(model_dir: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"sha256:{digest.hexdigest()}"


def _artifact_sha(model_dir: pathlib.Path) -> str:
    return str(json.loads((model_dir / "artifact" / "transform.json").read_text())["sha256"])


# --- sampling ---------------------------------------------------------------------------------


def test_sampling_is_the_documented_hash_of_the_request_id() -> None:
    ids = [f"req-{i:02d}" for i in range(20)]
    # The first 8 bytes of SHA-256(id), big-endian, below rate * 2**64.
    assert [i for i in ids if rl.sampled(i, 0.5)] == [
        "req-03",
        "req-04",
        "req-05",
        "req-08",
        "req-10",
        "req-11",
        "req-12",
        "req-14",
        "req-16",
        "req-19",
    ]
    for i in ids:
        head = int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big")
        assert rl.sampled(i, 0.25) == (head < 2**62)
    assert all(rl.sampled(i, 1.0) for i in ids)
    assert not any(rl.sampled(i, 0.0) for i in ids)
    assert sum(rl.sampled(f"id-{i}", 0.1) for i in range(10_000)) == 1002


def test_request_ids_are_the_clients_plain_tokens_or_new_ones() -> None:
    assert rl.request_id_of(b"req-7:a.b_c") == "req-7:a.b_c"
    assert rl.request_id_of(b"  spaced  ") == "spaced"
    for bad in (None, b"", b"has space", b"x" * 129, b"semi;colon", "é".encode()):
        made = rl.request_id_of(bad)
        assert len(made) == 32 and int(made, 16) >= 0


# --- settings ---------------------------------------------------------------------------------


def test_settings_come_from_the_environment_flags_first() -> None:
    assert rl.RequestLogSettings.from_environment({}) is None
    env = {
        "BEAMFORGE_REQUEST_LOG": "/logs",
        "BEAMFORGE_REQUEST_LOG_SAMPLE": " 0.1 ",
        "BEAMFORGE_REQUEST_LOG_FILE_BYTES": "1000",
        "BEAMFORGE_REQUEST_LOG_FILE_SECONDS": "60",
        "BEAMFORGE_REQUEST_LOG_QUEUE": "5",
    }
    assert rl.RequestLogSettings.from_environment(env) == rl.RequestLogSettings(
        sink="/logs", sample=0.1, file_bytes=1000, file_seconds=60.0, queue=5
    )
    flagged = rl.RequestLogSettings.from_environment(
        env, sink="bq://my-project.logs.requests", sample=1.0
    )
    assert flagged is not None
    assert (flagged.sink, flagged.sample) == ("bq://my-project.logs.requests", 1.0)
    assert rl.RequestLogSettings.from_environment({"BEAMFORGE_REQUEST_LOG": "d"}) == (
        rl.RequestLogSettings(sink="d", sample=1.0)
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"BEAMFORGE_REQUEST_LOG": "d", "BEAMFORGE_REQUEST_LOG_SAMPLE": "often"},
            "BEAMFORGE_REQUEST_LOG_SAMPLE must be a number, got 'often'",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG": "d", "BEAMFORGE_REQUEST_LOG_SAMPLE": "1.5"},
            "the request log sample rate (BEAMFORGE_REQUEST_LOG_SAMPLE or --request-log-sample) "
            "must be a number from 0 to 1, got 1.5",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG": "d", "BEAMFORGE_REQUEST_LOG_SAMPLE": "nan"},
            "BEAMFORGE_REQUEST_LOG_SAMPLE must be a finite number, got 'nan'",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG_SAMPLE": "0.5"},
            "BEAMFORGE_REQUEST_LOG_SAMPLE (or --request-log-sample) is set but "
            "BEAMFORGE_REQUEST_LOG (or --request-log) is not: name the log's folder or bq:// "
            "table",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG": "gs://bucket/logs"},
            "BEAMFORGE_REQUEST_LOG (or --request-log): request log sink 'gs://bucket/logs': "
            "expected a local folder or bq://project.dataset.table",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG": "bq://logs.requests"},
            "BEAMFORGE_REQUEST_LOG (or --request-log): malformed BigQuery sink "
            "'bq://logs.requests': expected bq://project.dataset.table (project: 6-30 "
            "lowercase letters, digits or hyphens; dataset: letters, digits, underscores)",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG": "d", "BEAMFORGE_REQUEST_LOG_QUEUE": "0"},
            "BEAMFORGE_REQUEST_LOG_QUEUE must be positive, got 0",
        ),
        (
            {"BEAMFORGE_REQUEST_LOG": "d", "BEAMFORGE_REQUEST_LOG_FILE_BYTES": "1e6"},
            "BEAMFORGE_REQUEST_LOG_FILE_BYTES must be an integer, got '1e6'",
        ),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ServerSetupError) as info:
        rl.RequestLogSettings.from_environment(env)
    assert str(info.value) == message


def test_the_environment_for_a_sink_holds_an_absolute_folder(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert rl.request_log_env("logs", 0.25) == {
        "BEAMFORGE_REQUEST_LOG": str(tmp_path / "logs"),
        "BEAMFORGE_REQUEST_LOG_SAMPLE": "0.25",
    }
    assert rl.request_log_env("bq://my-project.d.t") == {
        "BEAMFORGE_REQUEST_LOG": "bq://my-project.d.t",
        "BEAMFORGE_REQUEST_LOG_SAMPLE": "1.0",
    }


# --- JSONL files --------------------------------------------------------------------------------


def _record(n: int) -> dict[str, Any]:
    return {"request_id": f"r{n}", "instance": {"fare": n}}


def test_jsonl_files_rotate_before_passing_their_size(tmp_path: pathlib.Path) -> None:
    line = len(json.dumps(_record(1), separators=(",", ":"))) + 1  # 43 bytes, one digit ids
    files = rl.JsonlFiles(str(tmp_path / "log"), max_bytes=2 * line, max_seconds=3600)
    files.write([_record(1)])
    files.write([_record(2), _record(3), _record(4), _record(5)])
    files.write([_record(6)])
    files.close()
    contents = [pathlib.Path(p).read_text().splitlines() for p in files.paths]
    assert [[json.loads(x)["request_id"] for x in c] for c in contents] == [
        ["r1", "r2"],
        ["r3", "r4"],
        ["r5", "r6"],
    ]
    assert sorted(files.paths) == files.paths  # names sort in writing order
    assert all(os.path.getsize(p) == 2 * line for p in files.paths)
    # A line longer than the limit gets a file of its own.
    big = rl.JsonlFiles(str(tmp_path / "big"), max_bytes=10, max_seconds=3600)
    big.write([_record(1), _record(2)])
    big.close()
    assert [len(pathlib.Path(p).read_text().splitlines()) for p in big.paths] == [1, 1]


def test_jsonl_files_rotate_when_old(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    files = rl.JsonlFiles(str(tmp_path), max_bytes=1 << 20, max_seconds=60, clock=clock)
    files.write([_record(1)])
    clock.now = 59.0
    files.tick()
    files.write([_record(2)])
    clock.now = 60.0
    files.tick()  # the idle writer closes the old file
    assert len(files.paths) == 1
    clock.now = 61.0
    files.write([_record(3)])
    clock.now = 125.0
    files.write([_record(4)])  # a write finds the file too old and starts another
    files.close()
    contents = [pathlib.Path(p).read_text().splitlines() for p in files.paths]
    assert [[json.loads(x)["request_id"] for x in c] for c in contents] == [
        ["r1", "r2"],
        ["r3"],
        ["r4"],
    ]


def test_an_unwritable_folder_is_a_setup_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ServerSetupError) as info:
        rl.JsonlFiles(str(tmp_path / "file"))
    assert str(info.value) == (
        f"BEAMFORGE_REQUEST_LOG {tmp_path / 'file'}: cannot create the folder: File exists"
    )


# --- the writer: queue, drops, failures -------------------------------------------------------


class _HeldSink:
    """A sink that holds its first write until released, and can refuse writes."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list[list[dict[str, Any]]] = []
        self.refuse = False

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        assert self.release.wait(30)
        if self.refuse:
            raise OSError(28, "No space left on device")
        self.written.append(list(records))

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def _request(n: int, instances: int = 1) -> rl.LoggedRequest:
    body = json.dumps({"instances": [{"fare": n}] * instances}).encode()
    answer = json.dumps({"predictions": [{"p": n}] * instances}).encode()
    return rl.LoggedRequest(f"r{n}", 1_700_000_000.0 + n, 1.5, body, answer)


MODEL = rl.ModelInfo(uri="/m", version="v1", artifact_sha256="abc")


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    sink = _HeldSink()
    log = rl.RequestLog(sink, model=MODEL, queue_size=2, description="held")
    assert log.submit(_request(1, instances=2))
    assert sink.entered.wait(30)  # the writer holds r1; the queue is empty again
    assert [log.submit(_request(n)) for n in (2, 3, 4, 5)] == [True, True, False, False]
    assert log.counters() == {"sampled": 5, "logged": 0, "records": 0, "dropped": 2, "failed": 0}
    sink.release.set()
    assert log.close() == {"sampled": 5, "logged": 3, "records": 4, "dropped": 2, "failed": 0}
    assert [[r["request_id"] for r in batch] for batch in sink.written] == [
        ["r1", "r1"],
        ["r2", "r3"],
    ]
    assert log.summary() == (
        "request log held: sampled 5, logged 3, records 4, dropped 2, failed 0"
    )


def test_the_queue_is_bounded_in_bytes_too() -> None:
    sink = _HeldSink()
    size = len(_request(1).body) + len(_request(1).answer)  # the same for one-digit ids
    log = rl.RequestLog(sink, model=MODEL, queue_size=100, max_queued_bytes=2 * size)
    assert log.submit(_request(1))
    assert sink.entered.wait(30)  # taken by the writer: its bytes are no longer queued
    assert [log.submit(_request(n)) for n in (2, 3, 4)] == [True, True, False]
    sink.release.set()
    assert log.close() == {"sampled": 4, "logged": 3, "records": 3, "dropped": 1, "failed": 0}


def test_a_refused_write_is_counted_and_the_writer_goes_on() -> None:
    sink = _HeldSink()
    sink.refuse = True
    log = rl.RequestLog(sink, model=MODEL, queue_size=10)
    log.submit(_request(1))
    assert sink.entered.wait(30)
    sink.release.set()
    # The writer drains r1 (refused) before it takes r2: they are never in one batch.
    deadline = time.monotonic() + 30
    while log.counters()["failed"] == 0:
        assert time.monotonic() < deadline, "the refused write was never counted"
        threading.Event().wait(0.01)
    sink.refuse = False
    log.submit(_request(2))
    assert log.close() == {"sampled": 2, "logged": 1, "records": 1, "dropped": 0, "failed": 1}


def test_records_hold_each_instance_with_its_prediction() -> None:
    (first, second) = rl.request_records(_request(7, instances=2), MODEL)
    assert first == {
        "timestamp": "2023-11-14T22:13:27+00:00",
        "request_id": "r7",
        "instance_index": 0,
        "model_uri": "/m",
        "model_version": "v1",
        "artifact_sha256": "abc",
        "instance": {"fare": 7},
        "prediction": {"p": 7},
        "latency_ms": 1.5,
    }
    assert second["instance_index"] == 1
    # An answer that is not one prediction per instance leaves the predictions unknown;
    # a non-finite number (not JSON) is logged as null.
    odd = rl.LoggedRequest("x", 0.0, 1.0, b'{"instances": [{"a": 1}]}', b'{"predictions": []}')
    assert [r["prediction"] for r in rl.request_records(odd, MODEL)] == [None]
    nan = rl.LoggedRequest("x", 0.0, 1.0, b'{"instances": [{"a": 1}]}', b'{"predictions": [NaN]}')
    assert [r["prediction"] for r in rl.request_records(nan, MODEL)] == [None]


def test_reading_a_log_back_counts_what_is_not_a_record(tmp_path: pathlib.Path) -> None:
    (tmp_path / "requests-1.jsonl").write_text(
        '{"instance": {"fare": 1}}\n\n{"instance": "{\\"fare\\": 2}"}\n{"instance": 3}\n'
    )
    (tmp_path / "requests-2.jsonl").write_text('{"instance": {"fare": 4}}\n{"instance": {"fa')
    (tmp_path / "other.jsonl").write_text('{"instance": {"fare": 5}}\n')
    reader = rl.LogReader(str(tmp_path))
    assert list(reader.instances()) == [{"fare": 1}, {"fare": 2}, {"fare": 4}]
    assert (reader.records, reader.unreadable) == (3, 2)
    with pytest.raises(rl.RequestLogError, match=r"^.*empty: no request log files"):
        (tmp_path / "empty").mkdir()
        rl.LogReader(str(tmp_path / "empty"))
    with pytest.raises(rl.RequestLogError, match=r"missing: no such folder"):
        rl.LogReader(str(tmp_path / "missing"))


# --- the server -------------------------------------------------------------------------------


def test_the_server_logs_the_sampled_requests_exactly(
    model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    folder = tmp_path / "log"
    server = serving.start_server(
        str(model_dir),
        predictor=PREDICTOR,
        log=str(tmp_path / "server.log"),
        timeout=120,
        extra_env=rl.request_log_env(str(folder), 0.5),
    )
    answered: dict[str, tuple[list[Any], list[Any]]] = {}
    try:
        for i in range(20):
            rid = f"req-{i:02d}"
            instances = [dict(TRIP, fare=float(i))] * (1 + i % 2)
            if i == 3:
                instances = [TRIP, dict(TRIP, trip_seconds="a while")]
            status, headers, body = _post(server, {"instances": instances}, rid)
            assert (status, headers["x-request-id"]) == (200, rid)
            answered[rid] = (instances, body["predictions"])
        # A refused request (400) is not logged, whatever its id.
        status, _, _ = _post(server, {"instances": [1]}, "req-04")
        assert status == 400
        # Nor is beamforge's own evaluation (a champion gate), sampled id or not.
        for rid in ("req-02", "req-05"):
            status, _, _ = _post(
                server, {"instances": [TRIP]}, rid, {rl.EVALUATION_HEADER: "champion-gate"}
            )
            assert status == 200
    finally:
        serving.stop_server(server)
    records = _records(folder)
    sampled = [rid for rid in answered if rl.sampled(rid, 0.5)]
    assert len(sampled) == 10
    expected = [
        {
            "request_id": rid,
            "instance_index": k,
            "model_uri": str(model_dir),
            "model_version": _model_version(model_dir),
            "artifact_sha256": _artifact_sha(model_dir),
            "instance": instance,
            "prediction": prediction,
        }
        for rid in sampled
        for k, (instance, prediction) in enumerate(zip(*answered[rid], strict=True))
    ]
    assert [
        {k: v for k, v in r.items() if k not in ("timestamp", "latency_ms")} for r in records
    ] == expected
    assert records[1]["prediction"] == {
        "error": {
            "reason": "unparseable_value",
            "message": "key 'trip_seconds': 'a while' is not a valid int64",
        }
    }
    stamps = [datetime.datetime.fromisoformat(r["timestamp"]) for r in records]
    assert stamps == sorted(stamps) and all(s.tzinfo == datetime.UTC for s in stamps)
    assert all(0 < r["latency_ms"] < 30_000 for r in records)
    log = (tmp_path / "server.log").read_text()
    assert f"request log {folder}: sampled 10, logged 10, records 14, dropped 0, failed 0\n" in log


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launchers.serving", *args],
        cwd=REPO,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_request_log_setting_stops_the_server_with_one_line(
    model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    base = ["--model-dir", str(model_dir), "--predictor", PREDICTOR, "--port", "0"]
    done = _serve([*base, "--request-log", str(tmp_path), "--request-log-sample", "2"])
    assert done.returncode == 2
    assert done.stderr == (
        "error: the request log sample rate (BEAMFORGE_REQUEST_LOG_SAMPLE or "
        "--request-log-sample) must be a number from 0 to 1, got 2.0\n"
    )
    (tmp_path / "taken").write_text("")
    done = _serve(base, {"BEAMFORGE_REQUEST_LOG": str(tmp_path / "taken")})
    assert (done.returncode, done.stderr) == (
        2,
        f"error: BEAMFORGE_REQUEST_LOG {tmp_path / 'taken'}: cannot create the folder: "
        "File exists\n",
    )
    done = _serve(base, {"BEAMFORGE_REQUEST_LOG_SAMPLE": "0.5", "BEAMFORGE_REQUEST_LOG": ""})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: BEAMFORGE_REQUEST_LOG_SAMPLE (or --request-log-sample)")


# --- BigQuery ---------------------------------------------------------------------------------


@pytest.mark.emulator
def test_the_server_streams_records_into_bigquery(
    bigquery_emulator: Any, model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    client = bigquery_emulator.client()
    client.create_dataset("serving_logs", exists_ok=True)
    sink = f"bq://{bigquery_emulator.project}.serving_logs.requests"
    server = serving.start_server(
        str(model_dir),
        predictor=PREDICTOR,
        log=str(tmp_path / "server.log"),
        timeout=120,
        extra_env=rl.request_log_env(sink),
    )
    sent = [[TRIP], [dict(TRIP, fare=7.5), dict(TRIP, payment_type="Cash")]]
    answers = []
    try:
        status, headers, body = _post(server, {"instances": sent[0]}, "bq-1")
        answers.append(("bq-1", body["predictions"]))
        status, headers, body = _post(server, {"instances": sent[1]})
        assert status == 200
        made = headers["x-request-id"]
        assert len(made) == 32
        answers.append((made, body["predictions"]))
    finally:
        serving.stop_server(server)
    table = client.get_table(f"{bigquery_emulator.project}.serving_logs.requests")
    legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64"}  # BigQuery answers either spelling
    assert [(f.name, legacy.get(f.field_type, f.field_type), f.mode) for f in table.schema] == list(
        rl.BIGQUERY_COLUMNS
    )
    rows = sorted(
        (dict(r.items()) for r in client.list_rows(table)),
        key=lambda r: (r["timestamp"], r["instance_index"]),
    )
    assert [
        (
            r["request_id"],
            r["instance_index"],
            json.loads(r["instance"]),
            json.loads(r["prediction"]),
            r["model_uri"],
            r["artifact_sha256"],
        )
        for r in rows
    ] == [
        (rid, k, instance, prediction, str(model_dir), _artifact_sha(model_dir))
        for (rid, predictions), instances in zip(answers, sent, strict=True)
        for k, (instance, prediction) in enumerate(zip(instances, predictions, strict=True))
    ]
    assert all(r["latency_ms"] > 0 for r in rows)
    reader = rl.LogReader(sink)
    assert sorted(map(json.dumps, reader.instances())) == sorted(
        json.dumps(i) for batch in sent for i in batch
    )
    assert (reader.records, reader.unreadable) == (3, 0)
    log = (tmp_path / "server.log").read_text()
    assert f"request log {sink}: sampled 2, logged 2, records 3, dropped 0, failed 0\n" in log


@pytest.mark.emulator
def test_a_bigquery_sink_without_its_dataset_stops_the_server(
    bigquery_emulator: Any, model_dir: pathlib.Path
) -> None:
    sink = f"bq://{bigquery_emulator.project}.no_such_dataset.requests"
    done = _serve(
        ["--model-dir", str(model_dir), "--predictor", PREDICTOR, "--port", "0"],
        {"BEAMFORGE_REQUEST_LOG": sink},
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: BEAMFORGE_REQUEST_LOG {sink}: ")


# --- the chain's deploy step ------------------------------------------------------------------


def _chain(deploy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "taxi",
        "workdir": "w",
        "steps": [
            {"name": "ds", "kind": "dataset", "spec": "s.yaml", "output": "w/ds"},
            {"name": "train", "kind": "train", "dataset": "ds", "module": "m"},
            {"name": "upload", "kind": "upload", "model": "train", "predictor": PREDICTOR},
            {"name": "deploy", "kind": "deploy", "model": "upload", **deploy},
        ],
    }


def test_a_deploy_step_names_its_request_log() -> None:
    from launchers.chain.spec import RequestLogSetting, parse_chain

    spec = parse_chain(_chain({"request_log": {"sink": "w/requests", "sample": 0.1}}))
    setting = spec.step("deploy").request_log
    assert setting == RequestLogSetting(sink="w/requests", sample=0.1)
    assert rl.request_log_env(setting.sink, setting.sample) == {
        "BEAMFORGE_REQUEST_LOG": os.path.abspath("w/requests"),
        "BEAMFORGE_REQUEST_LOG_SAMPLE": "0.1",
    }
    spec = parse_chain(_chain({"request_log": {"sink": "bq://my-project.logs.requests"}}))
    assert spec.step("deploy").request_log == RequestLogSetting("bq://my-project.logs.requests")
    assert parse_chain(_chain({})).step("deploy").request_log is None


@pytest.mark.parametrize(
    ("request_log", "message"),
    [
        (
            {"sink": "w/requests", "sample": 2},
            "<chain>: steps[3].request_log.sample: got 2; expected a number from 0.0 to 1.0 "
            "(the fraction of requests logged)",
        ),
        (
            {"sink": "w/requests", "sample": "half"},
            "<chain>: steps[3].request_log.sample: got 'half'; expected a number",
        ),
        ({"sample": 0.5}, "<chain>: steps[3].request_log.sink: required key 'sink' is missing"),
        (
            {"sink": "gs://bucket/logs"},
            "<chain>: steps[3].request_log.sink: request log sink 'gs://bucket/logs': expected a "
            "local folder or bq://project.dataset.table",
        ),
        (
            {"sink": "w", "rate": 0.5},
            "<chain>: steps[3].request_log.rate: unknown key 'rate'; valid keys are sink, sample",
        ),
        (
            "w/requests",
            "<chain>: steps[3].request_log: got 'w/requests'; expected a mapping with keys sink, "
            "sample",
        ),
    ],
)
def test_a_bad_request_log_setting_is_named_by_its_yaml_path(
    request_log: Any, message: str
) -> None:
    from launchers.chain.spec import parse_chain
    from transforms.core.config import SpecError

    with pytest.raises(SpecError) as info:
        parse_chain(_chain({"request_log": request_log}))
    assert str(info.value) == message


def test_the_local_deploy_step_starts_its_server_with_the_request_log(
    model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from launchers.chain.backends.interface import StepContext
    from launchers.chain.backends.local import LocalBackend
    from launchers.chain.spec import parse_chain

    chain = parse_chain(
        dict(
            _chain({"request_log": {"sink": str(tmp_path / "requests"), "sample": 1}}),
            workdir=str(tmp_path / "w"),
        )
    )
    upload = {
        "model": f"local:{model_dir}",
        "model_dir": str(model_dir),
        "predictor": PREDICTOR,
        "display_name": "taxi",
    }
    ctx = StepContext(chain=chain, target="local", inputs={"upload": upload}, previous_outputs={})
    outputs = LocalBackend().deploy(chain.step("deploy"), ctx)
    server = serving.LocalServer.from_json(outputs["server"])
    try:
        (prediction,) = serving.predict(server.predict_url, [TRIP])
    finally:
        serving.stop_server(server)
    (record,) = _records(tmp_path / "requests")
    assert (record["instance"], record["prediction"]) == (TRIP, prediction)
