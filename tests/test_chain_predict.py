"""A chain's ``predict`` step: the trained model scores raw rows in bulk (Beam RunInference).

The chain runs dataset -> train -> predict on the taxi sample (plus a broken line), then the
step's predictions are checked against ``beamforge predict`` with the same model, its manifest
against the rows read, and its caching against the chain's fingerprints; on the gcp target
the step writes to the GCS emulator.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from beam_pipelines.predict import run_predict
from beam_pipelines.spec import load_spec
from launchers.chain import StepContext, load_chain
from launchers.chain.predict_step import run_predict_step
from launchers.chain.state import load_state
from tests.airflow_runs import AirflowHome
from tests.conftest import REPO, TAXI_SAMPLE, beamforge
from tests.test_chain_airflow import migrated_airflow  # noqa: F401

TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
GOOD_ROWS = 3001


def _chain_file(folder: pathlib.Path, raw: pathlib.Path, **predict: Any) -> pathlib.Path:
    chain_file = folder / "chain.yaml"
    chain_file.write_text(
        yaml.safe_dump(
            {
                "name": "taxi_scoring",
                "workdir": str(folder / "work"),
                "steps": [
                    {
                        "name": "dataset",
                        "kind": "dataset",
                        "spec": str(TAXI_SPEC),
                        "inputs": [str(TAXI_SAMPLE)],
                        "output": str(folder / "dataset"),
                    },
                    {
                        "name": "train",
                        "kind": "train",
                        "dataset": "dataset",
                        "module": "examples.chicago_taxi.trainer.task",
                        "args": ["--model", "logistic"],
                    },
                    {
                        "name": "score",
                        "kind": "predict",
                        "model": "train",
                        "inputs": [str(raw)],
                        "output": str(folder / "scores"),
                        **predict,
                    },
                ],
            }
        )
    )
    return chain_file


def _predictions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in manifest["predictions"]["files"]:
        rows += pq.read_table(entry["path"]).to_pylist()
    return sorted(rows, key=lambda r: (r["file"], r["line"]))


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The chain run once: the sample with one unparseable fare appended."""
    folder = tmp_path_factory.mktemp("scoring")
    raw = folder / "raw.csv"
    lines = TAXI_SAMPLE.read_text().splitlines()
    bad = lines[1].split(",")
    bad[1] = "twelve"
    raw.write_text("\n".join([*lines, ",".join(bad)]) + "\n")
    chain_file = _chain_file(folder, raw)
    done = beamforge("chain", str(chain_file), timeout=600)
    assert done.returncode == 0, done.stderr
    return chain_file


def test_the_predict_step_scores_every_row_and_its_manifest_balances(
    scored: pathlib.Path,
) -> None:
    spec = load_chain(str(scored))
    outputs = load_state(spec.state_path("local"), spec.name, "local").steps["score"].outputs
    manifest = json.loads(pathlib.Path(outputs["manifest"]).read_text())
    assert outputs["output"] == str(scored.parent / "scores")
    assert outputs["run"] == manifest["run"]["id"]
    counts = manifest["counts"]
    assert (counts["read"], counts["total_written"], counts["total_rejected"]) == (
        GOOD_ROWS + 1,
        GOOD_ROWS,
        1,
    )
    assert counts["total_dropped"] == 0
    assert outputs["counts"] == counts
    predictions = _predictions(manifest)
    assert [r["line"] for r in predictions] == list(range(2, GOOD_ROWS + 2))
    assert {r["tips_xf"] for r in predictions} <= {0, 1}
    assert all(0.0 <= r["probability"] <= 1.0 for r in predictions)
    assert all((r["probability"] >= 0.5) == (r["tips_xf"] == 1) for r in predictions)


def test_the_step_predicts_what_beamforge_predict_predicts(
    scored: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    spec = load_chain(str(scored))
    outputs = load_state(spec.state_path("local"), spec.name, "local").steps["score"].outputs
    step_rows = _predictions(json.loads(pathlib.Path(outputs["manifest"]).read_text()))
    raw = scored.parent / "raw.csv"
    done = beamforge(
        "predict", str(scored), "--input", str(raw), "--output", str(tmp_path / "p"), "--quiet"
    )
    assert done.returncode == 0, done.stderr
    cli_rows = _predictions(json.loads((tmp_path / "p" / "manifest.json").read_text()))
    assert cli_rows == step_rows


def test_a_second_chain_run_reuses_the_predictions_until_the_raw_file_changes(
    scored: pathlib.Path,
) -> None:
    done = beamforge("chain", str(scored), timeout=600)
    assert done.returncode == 0, done.stderr
    spec = load_chain(str(scored))
    state = load_state(spec.state_path("local"), spec.name, "local")
    assert state.steps["score"].runs == 1
    raw = scored.parent / "raw.csv"
    raw.write_text(raw.read_text() + TAXI_SAMPLE.read_text().splitlines()[5] + "\n")
    done = beamforge("chain", str(scored), timeout=600)
    assert done.returncode == 0, done.stderr
    state = load_state(spec.state_path("local"), spec.name, "local")
    assert (state.steps["dataset"].runs, state.steps["score"].runs) == (1, 2)
    assert state.steps["score"].outputs["counts"]["read"] == GOOD_ROWS + 2


def test_a_predict_step_with_a_bad_key_stops_the_chain_in_one_line(tmp_path: pathlib.Path) -> None:
    chain_file = _chain_file(tmp_path, TAXI_SAMPLE, keys=["no_such_column"])
    done = beamforge("chain", str(chain_file), timeout=600)
    # A step that fails is the chain's exit 1, its reason on one line.
    assert done.returncode == 1, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(
        "error: step score: --key no_such_column: no such input column; the input has "
        "pickup_community_area, fare,"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"inputs": []}, "steps[2].inputs: needs raw files, globs or one bq:// table"),
        ({"model": "dataset"}, "steps[2].model: 'dataset' is not an earlier train step"),
        ({"format": "csv"}, "steps[2].format"),
    ],
)
def test_predict_step_mistakes_are_found_at_load(
    tmp_path: pathlib.Path, step: dict[str, Any], message: str
) -> None:
    chain_file = _chain_file(tmp_path, TAXI_SAMPLE, **step)
    done = beamforge("chain", "status", str(chain_file))
    assert done.returncode == 2
    assert message in done.stderr.strip()
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.emulator
def test_the_gcp_target_scores_into_gcs(
    scored: pathlib.Path, gcs_emulator: Any, tmp_path: pathlib.Path
) -> None:
    from apache_beam.io.filesystems import FileSystems

    bucket = gcs_emulator.new_bucket("chain-predict")
    model = scored.parent / "work" / "train" / "model"
    remote_model = f"gs://{bucket}/model"
    for path in sorted(model.rglob("*")):
        if path.is_file():
            with FileSystems.create(f"{remote_model}/{path.relative_to(model)}") as f:
                f.write(path.read_bytes())
    # Its own raw file: the scoring run above may have grown the shared one.
    raw = tmp_path / "raw.csv"
    lines = TAXI_SAMPLE.read_text().splitlines()
    raw.write_text("\n".join([*lines, lines[1].replace(",", ",x", 1)]) + "\n")
    copy = tmp_path / "chain.yaml"
    data = yaml.safe_load(scored.read_text())
    data["gcp"] = {"project": "p", "region": "us-central1", "staging_bucket": f"gs://{bucket}"}
    data["steps"][2]["inputs"] = [str(raw)]
    data["steps"][2]["gcp"] = {"output": f"gs://{bucket}/scores", "launch": "local"}
    copy.write_text(yaml.safe_dump(data))
    spec = load_chain(str(copy))
    ctx = StepContext(
        chain=spec, target="gcp", inputs={"train": {"model_dir": remote_model}}, previous_outputs={}
    )
    outputs = run_predict_step(spec.step("score"), ctx)
    assert outputs["manifest"] == f"gs://{bucket}/scores/manifest.json"
    assert outputs["counts"]["total_written"] == GOOD_ROWS
    assert outputs["counts"]["total_rejected"] == 1
    with FileSystems.open(outputs["manifest"]) as f:
        manifest = json.loads(f.read())
    remote_rows = []
    for entry in manifest["predictions"]["files"]:
        with FileSystems.open(entry["path"]) as f:
            remote_rows += pq.read_table(f).to_pylist()
    local = run_predict(
        str(model), [str(raw)], str(tmp_path / "local"), source=load_spec(str(TAXI_SPEC)).source
    )
    assert sorted(remote_rows, key=lambda r: r["line"]) == _predictions(local.manifest)


@pytest.mark.parametrize(("to", "target"), [("kfp", "local"), ("kfp", "gcp"), ("airflow", "gcp")])
def test_pipelines_without_a_scoring_task_refuse_a_predict_step(
    tmp_path: pathlib.Path, to: str, target: str
) -> None:
    chain_file = _chain_file(tmp_path, TAXI_SAMPLE)
    data = yaml.safe_load(chain_file.read_text())
    data["gcp"] = {"project": "p", "region": "us-central1", "staging_bucket": "gs://b"}
    chain_file.write_text(yaml.safe_dump(data))
    done = beamforge(
        "chain",
        "compile",
        str(chain_file),
        "--to",
        to,
        "--target",
        target,
        "-o",
        str(tmp_path / ("x.py" if to == "airflow" else "x.yaml")),
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {chain_file}: steps[2].kind: a predict step (score) compiles for --to airflow "
        f"--target local only, not --to {to} --target {target}; run it with beamforge chain "
        "(local or gcp) or beamforge predict\n"
    )


def test_a_local_airflow_dag_runs_the_predict_step(
    migrated_airflow: AirflowHome,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    airflow = migrated_airflow.copy(tmp_path / "airflow-home")
    raw = tmp_path / "raw.csv"
    raw.write_text(TAXI_SAMPLE.read_text())
    (tmp_path / "chain").mkdir()
    chain_file = _chain_file(tmp_path / "chain", raw)
    dags = tmp_path / "dags"
    dag_file = dags / "taxi_scoring.py"
    done = beamforge(
        "chain",
        "compile",
        str(chain_file),
        "--to",
        "airflow",
        "--target",
        "local",
        "-o",
        str(dag_file),
    )
    assert done.returncode == 0, done.stderr
    run = airflow.run("test", str(dag_file), dags=dags)
    assert run["state"] == "success", run
    assert run["tasks"] == {"dataset": "success", "train": "success", "score": "success"}
    outputs = json.loads(run["xcom"]["score"]["return_value"])
    manifest = json.loads(pathlib.Path(outputs["manifest"]).read_text())
    assert outputs["counts"] == manifest["counts"]
    assert (manifest["counts"]["read"], manifest["counts"]["total_written"]) == (
        GOOD_ROWS,
        GOOD_ROWS,
    )
