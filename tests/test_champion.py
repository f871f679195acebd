"""Champion / challenger gates on the local target, with a real training and a real server.

A first run trains gradient boosting and deploys it (no champion yet: the gate passes and
says so). A second run trains a logistic regression, worse on the eval split: the gate
recomputes both models' AUC on the dataset run's raw eval rows (the champion through its
server, the challenger through its own artifact) and stops the chain with exit code 3; the
first server keeps answering. A third run, gradient boosting again with a negative margin,
ties with the champion, passes and deploys.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from launchers import chain as chains
from launchers import serving
from launchers.chain import champion as champions
from launchers.chain.compile import compile_chain
from launchers.chain.spec import Champion
from tests.conftest import REPO, TAXI_SAMPLE, beamforge
from transforms.core.config import SpecError

pytestmark = pytest.mark.slow


def _steps(margin: float, **gate: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "dataset",
            "kind": "dataset",
            "spec": str(REPO / "examples/chicago_taxi/pipeline.yaml"),
            "inputs": [str(TAXI_SAMPLE)],
            "output": "${root}/dataset",
        },
        {
            "name": "train",
            "kind": "train",
            "dataset": "dataset",
            "module": "examples.chicago_taxi.trainer.task",
            "args": ["--model", "${model}"],
        },
        {
            "name": "gate",
            "kind": "gate",
            "metrics": "train",
            "metric": "auc",
            "min": 0.75,
            "champion": {"deploy": "deploy", "margin": margin},
            **gate,
        },
        {
            "name": "upload",
            "kind": "upload",
            "model": "train",
            "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
        },
        {"name": "deploy", "kind": "deploy", "model": "upload"},
    ]


def _write_chain(tmp_path: pathlib.Path, margin: float) -> pathlib.Path:
    path = tmp_path / "chain.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "taxi",
                "workdir": str(tmp_path / "work"),
                "parameters": {
                    "model": {"default": "gradient_boosting"},
                    "root": {"default": str(tmp_path)},
                },
                "steps": _steps(margin),
            }
        )
    )
    return path


@pytest.fixture()
def servers() -> Iterator[list[serving.LocalServer]]:
    """Servers the test started; stopped at the end whatever happens."""
    started: list[serving.LocalServer] = []
    yield started
    for server in started:
        serving.stop_server(server)


def _predict(server: serving.LocalServer, row: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.predict_url,
        data=json.dumps({"instances": [row]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read())["predictions"][0])


_ROW = {"fare": 12.5, "trip_miles": 2.1, "payment_type": "Cash", "company": "Flash Cab"}


def test_a_worse_challenger_stops_the_chain_and_the_champion_keeps_serving(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, servers: list[serving.LocalServer]
) -> None:
    monkeypatch.chdir(REPO)
    chain_file = _write_chain(tmp_path, margin=0.0)
    spec = chains.load_chain(str(chain_file))

    # First deployment: nothing to compare with.
    first = chains.run_chain(spec)
    server = serving.LocalServer.from_json(first.outputs["deploy"]["server"])
    servers.append(server)
    gate = first.outputs["gate"]
    champion_auc = first.outputs["train"]["metrics"]["auc"]
    assert gate == {
        "metric": "auc",
        "value": champion_auc,
        "min": 0.75,
        "max": None,
        "champion": None,
        "margin": 0.0,
        "comparison": "no champion deployed: the challenger is the first",
    }
    before = _predict(server, _ROW)

    # A worse model: the gate recomputes both on the eval split and stops the chain.
    worse = beamforge("chain", str(chain_file), "--param", "model=logistic")
    assert worse.returncode == 3, worse.stderr
    state = json.loads((tmp_path / "work/state-local.json").read_text())
    challenger_auc = state["steps"]["train"]["outputs"]["metrics"]["auc"]
    manifest = json.loads((tmp_path / "dataset/manifest.json").read_text())
    eval_rows = manifest["splits"]["eval"]["rows"]
    assert eval_rows == 975
    line = (
        f"step gate: challenger auc = {challenger_auc:.6g} does not beat champion auc = "
        f"{champion_auc:.6g} by more than margin 0 (higher is better; {eval_rows} eval rows)"
    )
    assert worse.stderr.splitlines()[-1] == f"error: {line}"
    assert state["steps"]["gate"]["status"] == "failed"
    assert state["steps"]["gate"]["error"] == line
    # The deploy step did not run again; the first server still answers, with the same model.
    assert state["steps"]["deploy"]["runs"] == 1
    assert state["steps"]["deploy"]["outputs"]["server"]["pid"] == server.pid
    assert serving.is_healthy(server)
    assert _predict(server, _ROW) == before
    assert [(s.name, s.status) for s in chains.chain_status(spec)][2:] == [
        ("gate", "failed"),
        ("upload", "stale"),
        ("deploy", "stale"),
    ]

    # The same model as the champion ties; a negative margin lets a tie through.
    chain_file = _write_chain(tmp_path, margin=-1e-9)
    spec = chains.load_chain(str(chain_file))
    third = chains.run_chain(spec)
    new_server = serving.LocalServer.from_json(third.outputs["deploy"]["server"])
    servers.append(new_server)
    assert third.ran == ["train", "gate", "upload", "deploy"]
    gate = third.outputs["gate"]
    assert gate["champion"] == {"model": server.predict_url, "value": champion_auc}
    assert gate["challenger"] == {
        "model": str(tmp_path / "work/train/model"),
        "value": champion_auc,
    }
    assert (gate["margin"], gate["eval_rows"], gate["eval_split"]) == (-1e-9, eval_rows, "eval")
    assert gate["comparison"] == (
        f"challenger auc = {champion_auc:.6g} beats champion auc = {champion_auc:.6g} by more "
        f"than margin -1e-09 (higher is better; {eval_rows} eval rows)"
    )
    assert third.outputs["deploy"]["replaced_pid"] == server.pid
    assert not serving.is_healthy(server)
    assert _predict(new_server, _ROW) == before
    rows = {r.name: r.detail for r in chains.chain_status(spec)}
    assert rows["gate"] == f"auc = {champion_auc:.4g}, champion {champion_auc:.4g}"


def test_recomputed_values_ignore_a_tampered_metrics_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    spec = chains.parse_chain(
        {
            "name": "taxi",
            "workdir": str(tmp_path / "work"),
            "parameters": {"model": {"default": "logistic"}, "root": {"default": str(tmp_path)}},
            "steps": _steps(0.0)[:2],
        }
    )
    report = chains.run_chain(spec)
    model_dir = report.outputs["train"]["model_dir"]
    auc = report.outputs["train"]["metrics"]["auc"]
    champion = tmp_path / "champion"
    shutil.copytree(model_dir, champion)
    (champion / "metrics.json").write_text(json.dumps({"auc": 0.5, "accuracy": 0.1}))
    manifest = chains.read_manifest(str(tmp_path / "dataset"))
    rows = champions.read_eval_rows(
        manifest, str(REPO / "examples/chicago_taxi/pipeline.yaml"), "eval"
    )
    assert rows.batch.num_rows == manifest["splits"]["eval"]["rows"]
    for metric in ("auc", "accuracy", "log_loss"):
        result = champions.compare(metric, rows, model_dir, str(champion), margin=0.0)
        expected = report.outputs["train"]["metrics"][metric]
        assert (result.challenger, result.champion, result.rows) == (expected, expected, 975)
        assert not result.passed
    assert champions.compare("auc", rows, model_dir, str(champion), margin=0.0).champion == auc
    # A row the artifacts reject (a non-finite fare) is left out of both.
    bad = rows.batch.slice(0, 1).to_pylist()[0] | {"fare": float("inf")}
    with_bad = pa.Table.from_batches(
        [rows.batch, pa.RecordBatch.from_pylist([bad], schema=rows.batch.schema)]
    ).combine_chunks()
    assert champions.ModelDir(model_dir).accepts(with_bad.to_batches()[0]).tolist() == (
        [True] * 975 + [False]
    )
    both = champions.compare(
        "auc",
        champions.EvalRows(with_bad.to_batches()[0], "eval", rows.run),
        model_dir,
        str(champion),
        margin=0.0,
    )
    assert (both.challenger, both.champion, both.rows) == (auc, auc, 975)


def test_direction_and_margin() -> None:
    better = champions.Comparison("auc", challenger=0.81, champion=0.8, margin=0.005, rows=10)
    assert better.passed
    assert not champions.Comparison("auc", 0.81, 0.8, margin=0.02, rows=10).passed
    assert not champions.Comparison("auc", 0.8, 0.8, margin=0.0, rows=10).passed
    assert champions.Comparison("auc", 0.8, 0.8, margin=-1e-9, rows=10).passed
    # Lower log loss is better.
    assert champions.Comparison("log_loss", 0.30, 0.35, margin=0.0, rows=10).passed
    worse = champions.Comparison("log_loss", 0.40, 0.35, margin=0.0, rows=10)
    assert not worse.passed
    assert worse.describe() == (
        "challenger log_loss = 0.4 does not beat champion log_loss = 0.35 by more than "
        "margin 0 (lower is better; 10 eval rows)"
    )


def test_metric_values() -> None:
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.1, 0.6, 0.4, 0.9])
    assert champions.metric_value("auc", labels, probabilities) == 0.75
    assert champions.metric_value("accuracy", labels, probabilities) == 0.5
    expected = -np.mean(np.log([0.9, 0.4, 0.4, 0.9]))
    assert champions.metric_value("log_loss", labels, probabilities) == pytest.approx(
        expected, rel=1e-12
    )
    with pytest.raises(ValueError, match=r"^auc needs both classes in the eval rows$"):
        champions.metric_value("auc", np.array([1, 1]), np.array([0.2, 0.3]))


def _spec(steps: list[dict[str, Any]]) -> chains.ChainSpec:
    return chains.parse_chain(
        {
            "name": "taxi",
            "workdir": "w",
            "parameters": {"model": {"default": "logistic"}, "root": {"default": "r"}},
            "steps": steps,
        },
        origin="chain.yaml",
    )


def test_spec_champion_names_a_deploy_step_later_in_the_chain() -> None:
    spec = _spec(_steps(0.01))
    assert spec.step("gate").champion == Champion(deploy="deploy", margin=0.01)
    steps = _steps(0.0)
    steps[2]["champion"] = {"deploy": "upload"}
    with pytest.raises(SpecError) as err:
        _spec(steps)
    assert str(err.value) == (
        "chain.yaml: steps[2].champion.deploy: 'upload' is not a deploy step of this chain; "
        "deploy steps: ['deploy']"
    )
    with pytest.raises(SpecError) as err:
        _spec(_steps(0.0, metric="rmse"))
    assert str(err.value) == (
        "chain.yaml: steps[2].metric: a champion comparison recomputes auc, accuracy, "
        "log_loss; metric 'rmse' is none of them"
    )
    steps = _steps(0.0)
    steps.insert(
        1,
        {
            "name": "data_gate",
            "kind": "gate",
            "metrics": "dataset",
            "metric": "auc",
            "max": 0,
            "champion": {"deploy": "deploy"},
        },
    )
    with pytest.raises(SpecError) as err:
        _spec(steps)
    assert str(err.value) == (
        "chain.yaml: steps[1].champion: a champion is compared with a train step's model; "
        "'dataset' is a dataset step"
    )
    # A champion alone is a gate.
    steps = _steps(0.0)
    del steps[2]["min"]
    assert _spec(steps).step("gate").min is None


def test_compile_refuses_a_champion_gate_but_on_vertex_ai_pipelines(
    tmp_path: pathlib.Path,
) -> None:
    spec = _spec(_steps(0.0))
    for to, target in (("kfp", "local"), ("airflow", "local"), ("airflow", "gcp")):
        with pytest.raises(SpecError) as err:
            compile_chain(spec, to=to, target=target, output=str(tmp_path / "out"))
        assert str(err.value) == (
            "chain.yaml: steps[2].champion: a champion gate (gate) compiles for --to kfp "
            f"--target gcp only, not --to {to} --target {target}; run it with beamforge chain "
            "or drop champion"
        )
    assert not (tmp_path / "out").exists()


def test_eval_rows_are_the_rows_the_run_assigned_to_the_split(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    spec = chains.parse_chain(
        {
            "name": "taxi",
            "workdir": str(tmp_path / "work"),
            "parameters": {"model": {"default": "logistic"}, "root": {"default": str(tmp_path)}},
            "steps": _steps(0.0)[:1],
        }
    )
    chains.run_chain(spec)
    manifest = chains.read_manifest(str(tmp_path / "dataset"))
    rows = champions.read_eval_rows(
        manifest, str(REPO / "examples/chicago_taxi/pipeline.yaml"), "eval"
    )
    # The raw rows through the run's own artifact are exactly the eval split it wrote.
    from transforms.serving.preprocessor import Preprocessor

    features, errors = Preprocessor.load(manifest["artifact"]["path"]).transform_batch(rows.batch)
    written = pa.concat_tables(
        [pq.read_table(e["path"]) for e in manifest["splits"]["eval"]["files"]["parquet"]]
    )
    assert errors == []
    key = sorted(features.schema.names)
    assert sorted(pa.Table.from_batches([features]).select(key).to_pylist(), key=json.dumps) == (
        sorted(written.select(key).to_pylist(), key=json.dumps)
    )
