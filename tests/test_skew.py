"""beamforge skew: a run's input statistics against the requests its served model logged."""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
from typing import Any

import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from examples.chicago_taxi.trainer import task
from launchers import serving, skew_commands
from launchers.chain import copy_artifact
from launchers.serving.request_log import request_log_env
from tests.conftest import REPO, TAXI_SAMPLE
from tests.datasets import run_root
from transforms.validation.distances import column_distance

SPEC = str(REPO / "examples/chicago_taxi/pipeline.yaml")
PREDICTOR = "examples.chicago_taxi.predictor:TaxiPredictor"
# fare and payment_type watched closely; every other column takes the default 0.3.
SCHEMA = """\
columns:
  fare:
    type: float32
    skew: {jensen_shannon: 0.1}
  payment_type:
    type: string
    skew: {l_infinity: 0.1}
"""
COLUMNS = TAXI_SAMPLE.read_text().splitlines()[0].split(",")


def _trips(path: pathlib.Path) -> list[dict[str, Any]]:
    # As a client sends CSV rows (beamforge chain predict): an empty field is a missing value.
    with path.open(newline="") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def _shift(source: pathlib.Path, output: pathlib.Path) -> None:
    """Fares x1.5 and every 5th trip paid by "Mobile Wallet", a type training never saw."""
    with source.open(newline="") as f, output.open("w", newline="") as out:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [], lineterminator="\n")
        writer.writeheader()
        for n, row in enumerate(reader, start=1):
            if row["fare"]:
                row["fare"] = f"{float(row['fare']) * 1.5:.2f}"
            if n % 5 == 0:
                row["payment_type"] = "Mobile Wallet"
            writer.writerow(row)


def _input_stats(dataset: pathlib.Path) -> dict[str, Any]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return dict(json.loads(pathlib.Path(manifest["stats"]).read_text())["input"])


@pytest.fixture(scope="module")
def taxi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The taxi sample's dataset and model, the shifted sample's dataset, and both request
    logs: every trip of each sent through the served model."""
    root = tmp_path_factory.mktemp("skew")
    shifted_csv = root / "shifted.csv"
    _shift(TAXI_SAMPLE, shifted_csv)
    for name, source in (("ds", TAXI_SAMPLE), ("shifted", shifted_csv)):
        run_job(load_spec(SPEC), output=str(root / name), inputs=[str(source)])
    run = run_root(root / "ds")
    task.train(
        training_uri=str(run / "train/part-*.parquet"),
        validation_uri=str(run / "eval/part-*.parquet"),
        test_uri=None,
        model_dir=str(root / "model"),
        kind="logistic",
    )
    copy_artifact(str(run / "artifact"), str(root / "model"))
    for log, source in (("requests", TAXI_SAMPLE), ("shifted-requests", shifted_csv)):
        server = serving.start_server(
            str(root / "model"),
            predictor=PREDICTOR,
            log=str(root / f"{log}.log"),
            timeout=120,
            extra_env=request_log_env(str(root / log)),
        )
        try:
            trips = _trips(source)
            for start in range(0, len(trips), 250):
                serving.predict(server.predict_url, trips[start : start + 250])
        finally:
            serving.stop_server(server)
        assert "sampled 13, logged 13, records 3001, dropped 0, failed 0" in (
            (root / f"{log}.log").read_text()
        )
    (root / "schema.yaml").write_text(SCHEMA)
    return {
        "root": root,
        "ds": root / "ds",
        "shifted": root / "shifted",
        "requests": root / "requests",
        "shifted_requests": root / "shifted-requests",
        "schema": root / "schema.yaml",
    }


def _skew(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="beamforge")
    skew_commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    code = skew_commands.command(parser.parse_args(["skew", *args]))
    out, err = capsys.readouterr()
    return code, out, err


def test_requests_like_the_training_data_are_not_skewed(
    taxi: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    output = taxi["root"] / "skew.json"
    code, out, err = _skew(
        capsys,
        str(taxi["ds"]),
        "--requests",
        str(taxi["requests"]),
        "--split",
        "all",
        "--schema",
        str(taxi["schema"]),
        "-o",
        str(output),
    )
    assert (code, out) == (0, "")
    result = json.loads(output.read_text())
    measured = result["skew"]["training_vs_serving"]
    # The logged instances are the run's rows, parsed as the server parses them: the same
    # statistics, so every distance is 0 (pickup_census_tract is never set: no histogram).
    assert list(measured) == COLUMNS
    assert {name: m["value"] for name, m in measured.items()} == {
        name: (None if name == "pickup_census_tract" else 0.0) for name in COLUMNS
    }
    assert [name for name, m in measured.items() if m["over"]] == []
    assert measured["fare"]["threshold"] == 0.1
    assert measured["trip_miles"] == {
        "measure": "jensen_shannon",
        "value": 0.0,
        "threshold": 0.3,
        "over": False,
        "max_difference_value": None,
    }
    assert result["anomalies"] == []
    assert result["summary"] == {
        "anomalies": 0,
        "drifted_columns": [],
        "skewed_columns": [],
        "ok": True,
    }
    assert result["serving"] == {
        "requests": str(taxi["requests"]),
        "instances": 3001,
        "used": 3001,
        "refused": 0,
        "refused_values": {},
        "unknown_keys": {},
        "unreadable_records": 0,
        "columns_without_values": ["pickup_census_tract"],
    }
    assert result["split"] == "all"
    assert result["run"] == json.loads((taxi["ds"] / "manifest.json").read_text())["run"]["id"]
    assert err.splitlines()[-2:] == ["no column over its threshold", f"written to {output}"]


def test_shifted_requests_are_skewed_in_fare_and_payment_type(
    taxi: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _skew(
        capsys,
        str(taxi["ds"]),
        "--requests",
        str(taxi["shifted_requests"]),
        "--split",
        "all",
        "--schema",
        str(taxi["schema"]),
    )
    assert code == 3
    result = json.loads(out)
    measured = result["skew"]["training_vs_serving"]
    assert result["summary"]["skewed_columns"] == ["fare", "payment_type"]
    assert [name for name, m in measured.items() if m["value"]] == ["fare", "payment_type"]
    # The logged requests measure what the pipeline's own statistics of the shifted file do.
    training, shifted = _input_stats(taxi["ds"])["all"], _input_stats(taxi["shifted"])["all"]
    assert measured["fare"] == column_distance(training["fare"], shifted["fare"], None, 0.1)
    assert measured["fare"]["over"] and measured["fare"]["value"] == pytest.approx(0.1905, abs=1e-4)
    # 600 of 3,001 trips pay by "Mobile Wallet", which no training trip does.
    assert measured["payment_type"] == {
        "measure": "l_infinity",
        "value": 600 / 3001,
        "threshold": 0.1,
        "over": True,
        "max_difference_value": "Mobile Wallet",
    }
    assert [
        (a["column"], a["kind"], a["observed"], a["expected"]) for a in result["anomalies"]
    ] == [
        ("fare", "skew", measured["fare"]["value"], 0.1),
        ("payment_type", "skew", 600 / 3001, 0.1),
    ]
    assert result["anomalies"][1]["message"] == (
        "payment_type: L-infinity distance 0.199933 between training and serving, above the "
        "threshold 0.1; the value whose share changed most is 'Mobile Wallet'"
    )
    assert result["summary"]["ok"] is False
    lines = err.splitlines()
    assert lines[-1] == "skewed columns: fare, payment_type"
    assert [line.split()[0] for line in lines if line.endswith("SKEW")] == ["fare", "payment_type"]


def test_the_default_thresholds_and_the_train_split(
    taxi: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _skew(capsys, str(taxi["ds"]), "--requests", str(taxi["shifted_requests"]))
    result = json.loads(out)
    assert result["split"] == "train"
    measured = result["skew"]["training_vs_serving"]
    assert {m["threshold"] for m in measured.values()} == {0.3}
    train = _input_stats(taxi["ds"])["splits"]["train"]
    shifted = _input_stats(taxi["shifted"])["all"]
    assert {name: m["value"] for name, m in measured.items()} == {
        name: column_distance(train[name], shifted[name])["value"] for name in COLUMNS
    }
    # Under 0.3 a fare increase of half and a new payment type in a fifth of the trips
    # pass: thresholds are the schema's business.
    assert (code, result["summary"]["skewed_columns"]) == (0, [])


def test_values_the_input_schema_refuses_are_counted_not_used(
    taxi: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        {"instance": {"fare": "12.5", "payment_type": "Cash", "trip_seconds": "a while"}},
        {"instance": {"fare": 8.0, "payment_type": "Cash", "shoe_size": 42}},
        {"instance": {"fare": "cheap", "trip_seconds": 1.5}},
        {"instance": "not an object"},
    ]
    (tmp_path / "requests-1.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines) + '{"instance": {"fa'
    )
    code, out, _ = _skew(capsys, str(taxi["ds"]), "--requests", str(tmp_path))
    result = json.loads(out)
    assert result["serving"] == {
        "requests": str(tmp_path),
        "instances": 3,
        "used": 1,
        "refused": 2,
        "refused_values": {
            "fare": {"unparseable_value": 1},
            "trip_seconds": {"unparseable_value": 2},
        },
        "unknown_keys": {"shoe_size": 1},
        "unreadable_records": 2,
        "columns_without_values": [c for c in COLUMNS if c not in ("fare", "payment_type")],
    }
    # The one instance used: fare 8.0 and payment_type Cash, nothing else set, so nothing
    # else measured (company, a string column, included: no L-infinity of an empty side).
    measured = result["skew"]["training_vs_serving"]
    assert [name for name, m in measured.items() if m["value"] is not None] == [
        "fare",
        "payment_type",
    ]
    assert measured["company"] == {
        "measure": "l_infinity",
        "value": None,
        "threshold": 0.3,
        "over": False,
        "max_difference_value": None,
    }
    cash = next(
        v["count"]
        for v in _input_stats(taxi["ds"])["splits"]["train"]["payment_type"]["rank_histogram"]
        if v["value"] == "Cash"
    )
    assert cash == 1297
    assert measured["payment_type"]["value"] == 1.0 - cash / 2026
    assert measured["payment_type"]["max_difference_value"] == "Cash"
    assert (code, result["summary"]["skewed_columns"]) == (3, ["fare", "payment_type"])
    assert [a["column"] for a in result["anomalies"]] == ["fare", "payment_type"]


def _one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


def test_bad_inputs_are_one_line_errors(
    taxi: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, requests = str(taxi["ds"]), str(taxi["requests"])
    manifest = json.loads((taxi["ds"] / "manifest.json").read_text())

    # A run whose statistics hold no input section (made before they were recorded).
    old = tmp_path / "old"
    old.mkdir()
    stats = json.loads(pathlib.Path(manifest["stats"]).read_text())
    del stats["input"]
    (old / "stats.json").write_text(json.dumps(stats))
    (old / "manifest.json").write_text(json.dumps({**manifest, "stats": str(old / "stats.json")}))
    empty = tmp_path / "empty-log"
    empty.mkdir()
    (empty / "requests-1.jsonl").write_text("")
    (tmp_path / "unknown.yaml").write_text("columns:\n  tip_share: {type: float32}\n")
    (tmp_path / "retyped.yaml").write_text("columns:\n  fare: {type: string}\n")
    (tmp_path / "bad.yaml").write_text("columns:\n  fare: {type: float32, skew: {l_inf: 1}}\n")
    cases = [
        (
            [str(old), "--requests", requests],
            f"error: {old / 'stats.json'}: holds no input statistics (key input): the run was "
            "made by a beamforge that did not record them; run it again",
        ),
        (
            [str(tmp_path / "nowhere"), "--requests", requests],
            f"error: {tmp_path / 'nowhere'}: does not exist",
        ),
        (
            [ds, "--requests", str(empty)],
            f"error: {empty}: the request log holds no instances",
        ),
        (
            [ds, "--requests", str(tmp_path / "no-log")],
            f"error: {tmp_path / 'no-log'}: no such folder (a request log folder)",
        ),
        (
            [ds, "--requests", str(tmp_path)],
            f"error: {tmp_path}: no request log files (requests-*.jsonl)",
        ),
        (
            [ds, "--requests", "gs://bucket/log"],
            "error: request log sink 'gs://bucket/log': expected a local folder or "
            "bq://project.dataset.table",
        ),
        (
            [ds, "--requests", requests, "--split", "test"],
            "error: --split test: the run has no such split; its splits are train, eval (or "
            "all: every row)",
        ),
        (
            [ds, "--requests", requests, "--schema", str(tmp_path / "unknown.yaml")],
            f"error: {tmp_path / 'unknown.yaml'}: columns.tip_share: no such input column in "
            f"the run; its input columns are {', '.join(COLUMNS)}",
        ),
        (
            [ds, "--requests", requests, "--schema", str(tmp_path / "retyped.yaml")],
            f"error: {tmp_path / 'retyped.yaml'}: columns.fare.type: string, but the run's "
            "column is float32",
        ),
        (
            [ds, "--requests", requests, "--schema", str(tmp_path / "bad.yaml")],
            f"error: {tmp_path / 'bad.yaml'}: columns.fare.skew.l_inf: unknown measure; valid "
            "measures are l_infinity, jensen_shannon",
        ),
        (
            [ds, "--requests", requests, "-o", str(tmp_path)],
            f"error: {tmp_path}: is a directory; give the file to write",
        ),
    ]
    for args, message in cases:
        code, out, err = _skew(capsys, *args)
        assert (code, out, _one_line(err)) == (2, "", message), args


@pytest.mark.emulator
def test_skew_reads_a_bigquery_request_log(
    bigquery_emulator: Any, taxi: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    client = bigquery_emulator.client()
    client.create_dataset("skew_logs", exists_ok=True)
    table = f"{bigquery_emulator.project}.skew_logs.requests"
    from google.cloud import bigquery

    from launchers.serving.request_log import BIGQUERY_COLUMNS

    client.create_table(
        bigquery.Table(
            table, schema=[bigquery.SchemaField(n, t, m) for n, t, m in BIGQUERY_COLUMNS]
        )
    )
    rows = [
        json.loads(line)
        for path in sorted(taxi["shifted_requests"].glob("requests-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    for start in range(0, len(rows), 500):
        batch = [
            dict(r, instance=json.dumps(r["instance"]), prediction=json.dumps(r["prediction"]))
            for r in rows[start : start + 500]
        ]
        assert client.insert_rows_json(table, batch) == []
    code, out, _ = _skew(
        capsys,
        str(taxi["ds"]),
        "--requests",
        f"bq://{table}",
        "--split",
        "all",
        "--schema",
        str(taxi["schema"]),
    )
    from_table = json.loads(out)
    code_files, out_files, _ = _skew(
        capsys,
        str(taxi["ds"]),
        "--requests",
        str(taxi["shifted_requests"]),
        "--split",
        "all",
        "--schema",
        str(taxi["schema"]),
    )
    from_files = json.loads(out_files)
    assert code == code_files == 3
    # Row order in a table is not the files' order: the statistics do not depend on it.
    assert from_table["skew"] == from_files["skew"]
    assert from_table["serving"] == dict(from_files["serving"], requests=f"bq://{table}")


def test_beamforge_skew_on_the_command_line(taxi: dict[str, pathlib.Path]) -> None:
    from tests.conftest import beamforge

    args = ["--split", "all", "--schema", str(taxi["schema"])]
    done = beamforge("skew", str(taxi["ds"]), "--requests", str(taxi["shifted_requests"]), *args)
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["summary"]["skewed_columns"] == ["fare", "payment_type"]
    assert done.stderr.splitlines()[-1] == "skewed columns: fare, payment_type"
    done = beamforge("skew", str(taxi["ds"]), "--requests", str(taxi["requests"]), *args)
    assert (done.returncode, done.stderr.splitlines()[-1]) == (0, "no column over its threshold")
    done = beamforge("skew", str(taxi["ds"]), "--requests", str(taxi["root"] / "nowhere"))
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"error: {taxi['root'] / 'nowhere'}: no such folder (a request log folder)\n",
    )
