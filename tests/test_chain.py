"""Chain specs, the gate, state and resumption, on the local target with real subprocesses.

The dataset steps run the real pipeline on a 200-row slice of the taxi sample; the trainers
here are tiny scripts that write what a trainer writes, so the chain logic is tested
without the cost of the real one (tests/test_chain_e2e.py runs that).
"""

from __future__ import annotations

import json
import pathlib
import textwrap
from typing import Any

import pytest
import yaml

from launchers import chain as chains
from launchers.chain import GateStep, SpecError, evaluate_gate, parse_chain
from tests.conftest import REPO, TAXI_SAMPLE

PIPELINE = str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")


def _steps() -> list[dict[str, Any]]:
    return [
        {"name": "dataset", "kind": "dataset", "spec": PIPELINE, "output": "out/ds"},
        {"name": "train", "kind": "train", "dataset": "dataset", "script": "train.py"},
        {"name": "gate", "kind": "gate", "metrics": "train", "metric": "auc", "min": 0.7},
        {"name": "upload", "kind": "upload", "model": "train", "predictor": "m:P"},
        {"name": "deploy", "kind": "deploy", "model": "upload"},
    ]


def _chain(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "taxi", "workdir": "out", "steps": steps}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s[1].update(kind="training"),
            "x.yaml: steps[1].kind: unknown step kind 'training'; "
            "valid kinds are dataset, train, gate, upload, deploy, predict",
        ),
        (
            lambda s: s[2].update(metrics="trian"),
            "x.yaml: steps[2].metrics: 'trian' is not an earlier train or dataset step; "
            "earlier train or dataset steps: ['dataset', 'train']",
        ),
        (
            lambda s: s[1].update(dataset="deploy"),
            "x.yaml: steps[1].dataset: 'deploy' is not an earlier dataset step; "
            "earlier dataset steps: ['dataset']",
        ),
        (
            lambda s: s[4].update(model="train"),
            "x.yaml: steps[4].model: 'train' is not an earlier upload step; "
            "earlier upload steps: ['upload']",
        ),
        (
            lambda s: s[0].update(outptu="x"),
            "x.yaml: steps[0].outptu: unknown key 'outptu'; "
            "valid keys are name, spec, output, inputs, beam_args, gcp",
        ),
        (
            lambda s: s[2].pop("min"),
            "x.yaml: steps[2]: a gate needs min, max or both",
        ),
        (
            lambda s: s[1].update(module="trainer.task"),
            "x.yaml: steps[1]: give exactly one of module (python -m) or script (a .py file)",
        ),
        (
            lambda s: s[3].update(name="train"),
            "x.yaml: steps[3].name: step name 'train' is used twice",
        ),
        (
            lambda s: s[0].update(gcp={"output": "/local/path"}),
            "x.yaml: steps[0].gcp: output must be a gs:// path, got '/local/path'",
        ),
    ],
)
def test_bad_chain_fails_at_load_with_the_yaml_path(edit: Any, message: str) -> None:
    steps = _steps()
    edit(steps)
    with pytest.raises(SpecError) as info:
        parse_chain(_chain(steps), origin="x.yaml")
    assert str(info.value) == message


def test_load_chain_reads_the_example(tmp_path: pathlib.Path) -> None:
    spec = chains.load_chain(str(REPO / "examples" / "chicago_taxi" / "chain.yaml"))
    assert [(s.name, s.KIND) for s in spec.steps] == [
        ("dataset", "dataset"),
        ("data_gate", "gate"),
        ("train", "train"),
        ("gate", "gate"),
        ("upload", "upload"),
        ("deploy", "deploy"),
    ]
    assert spec.state_path("local") == "demo-chain/state-local.json"
    chains.check_target(spec, "gcp")


def test_gcp_target_needs_every_gcp_section() -> None:
    spec = parse_chain(_chain(_steps()), origin="x.yaml")
    with pytest.raises(SpecError, match=r"^x\.yaml: gcp: the gcp target needs a gcp section"):
        chains.check_target(spec, "gcp")
    data = _chain(_steps()) | {"gcp": {"project": "p", "region": "r", "staging_bucket": "gs://b"}}
    with pytest.raises(SpecError) as info:
        chains.check_target(parse_chain(data, origin="x.yaml"), "gcp")
    assert str(info.value) == "x.yaml: steps[0].gcp: the gcp target needs dataset's gcp section"


@pytest.mark.parametrize(
    ("bounds", "metrics", "problem"),
    [
        ({"min": 0.7}, {"auc": 0.69}, "step gate: auc = 0.69 is below min 0.7"),
        ({"max": 0.3}, {"auc": 0.31}, "step gate: auc = 0.31 is above max 0.3"),
        (
            {"min": 0.7},
            {"accuracy": 0.9, "model": "x"},
            "step gate: metric 'auc' not reported; the trainer reported ['accuracy']",
        ),
        ({"min": 0.7}, {"auc": "high"}, "step gate: metric 'auc' is 'high', not a number"),
    ],
)
def test_gate_stops(bounds: dict[str, float], metrics: dict[str, Any], problem: str) -> None:
    gate = GateStep(name="gate", metrics="train", metric="auc", **bounds)
    with pytest.raises(chains.GateFailedError) as info:
        evaluate_gate(gate, metrics)
    assert str(info.value) == problem
    assert info.value.exit_code == 3


def test_gate_passes_on_the_bounds() -> None:
    gate = GateStep(name="gate", metrics="train", metric="auc", min=0.7, max=0.9)
    assert evaluate_gate(gate, {"auc": 0.7}) == {
        "metric": "auc",
        "value": 0.7,
        "min": 0.7,
        "max": 0.9,
    }
    assert evaluate_gate(gate, {"auc": 0.9})["value"] == 0.9


# A stand-in trainer: checks the Vertex environment, counts its runs, writes what a trainer writes.
TRAINER = textwrap.dedent(
    """
    import json, os, sys
    env = {k: v for k, v in os.environ.items() if k.startswith("AIP_")}
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(json.dumps(env, sort_keys=True) + "\\n")
    print("reading", env["AIP_TRAINING_DATA_URI"])
    if os.environ.get("FAIL"):
        print("Traceback (most recent call last):")
        print("ValueError: label 'tips_xf' has one class", flush=True)
        sys.exit(3)
    os.makedirs(env["AIP_MODEL_DIR"], exist_ok=True)
    open(os.path.join(env["AIP_MODEL_DIR"], "model.joblib"), "wb").close()
    with open(os.path.join(env["AIP_MODEL_DIR"], "metrics.json"), "w") as f:
        json.dump({"auc": float(os.environ.get("AUC", "0.8"))}, f)
    """
)


@pytest.fixture()
def workdir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (tmp_path / "trips.csv").write_text("".join(lines[:201]))
    (tmp_path / "train.py").write_text(TRAINER)
    monkeypatch.setenv("RUNS_FILE", str(tmp_path / "runs.jsonl"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _local_chain(workdir: pathlib.Path, min_auc: float = 0.7) -> chains.ChainSpec:
    steps: list[dict[str, Any]] = [
        {
            "name": "dataset",
            "kind": "dataset",
            "spec": PIPELINE,
            "inputs": ["trips.csv"],
            "output": "out/ds",
        },
        {"name": "train", "kind": "train", "dataset": "dataset", "script": "train.py"},
        {"name": "gate", "kind": "gate", "metrics": "train", "metric": "auc", "min": min_auc},
    ]
    path = workdir / "chain.yaml"
    path.write_text(yaml.safe_dump(_chain(steps)))
    return chains.load_chain(str(path))


def _runs(workdir: pathlib.Path) -> list[dict[str, str]]:
    path = workdir / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _statuses(spec: chains.ChainSpec) -> list[tuple[str, str, int]]:
    return [(s.name, s.status, s.runs) for s in chains.chain_status(spec)]


def test_chain_passes_outputs_resumes_and_invalidates_downstream(workdir: pathlib.Path) -> None:
    spec = _local_chain(workdir)
    assert _statuses(spec) == [
        ("dataset", "pending", 0),
        ("train", "pending", 0),
        ("gate", "pending", 0),
    ]
    report = chains.run_chain(spec)
    assert (report.ran, report.skipped) == (["dataset", "train", "gate"], [])
    # Training saw the dataset's splits the way Vertex passes them: patterns of the
    # committed run's folder, which hold exactly the files its manifest lists.
    manifest = json.loads((workdir / "out/ds/manifest.json").read_text())
    run = manifest["run"]["root"]  # absolute, as every path a manifest records
    assert _runs(workdir) == [
        {
            "AIP_CHECKPOINT_DIR": "out/train/checkpoints",
            "AIP_DATA_FORMAT": "parquet",
            "AIP_MODEL_DIR": "out/train/model",
            "AIP_TRAINING_DATA_URI": f"{run}/train/part-*.parquet",
            "AIP_VALIDATION_DATA_URI": f"{run}/eval/part-*.parquet",
        }
    ]
    assert report.outputs["dataset"]["rows"] == {"train": 136, "eval": 64}
    assert manifest["counts"]["read"] == 200
    assert report.outputs["train"]["metrics"] == {"auc": 0.8}
    assert report.outputs["gate"] == {"metric": "auc", "value": 0.8, "min": 0.7, "max": None}
    # The transform artifact travels with the model.
    assert (workdir / "out/train/model/artifact/transform.json").exists()

    again = chains.run_chain(spec)
    assert (again.ran, again.skipped) == ([], ["dataset", "train", "gate"])
    assert again.outputs == report.outputs
    assert len(_runs(workdir)) == 1

    # A stricter gate reruns only the gate.
    stricter = _local_chain(workdir, min_auc=0.75)
    assert _statuses(stricter) == [
        ("dataset", "completed", 1),
        ("train", "completed", 1),
        ("gate", "stale", 1),
    ]
    assert chains.run_chain(stricter).ran == ["gate"]

    # Changed input data: the dataset and everything after it are stale and run again.
    with (workdir / "trips.csv").open("a") as f:
        f.write(TAXI_SAMPLE.read_text().splitlines(keepends=True)[300])
    assert _statuses(stricter) == [
        ("dataset", "stale", 1),
        ("train", "stale", 1),
        ("gate", "stale", 2),
    ]
    rerun = chains.run_chain(stricter)
    assert (rerun.ran, rerun.skipped) == (["dataset", "train", "gate"], [])
    assert sum(rerun.outputs["dataset"]["rows"].values()) == 201
    assert len(_runs(workdir)) == 2
    assert _statuses(stricter) == [
        ("dataset", "completed", 2),
        ("train", "completed", 2),
        ("gate", "completed", 3),
    ]


def test_deleted_output_is_rebuilt(workdir: pathlib.Path) -> None:
    spec = _local_chain(workdir)
    chains.run_chain(spec)
    (workdir / "out/train/model/model.joblib").unlink()
    report = chains.run_chain(spec)
    assert (report.ran, report.skipped) == (["train", "gate"], ["dataset"])


def test_failed_gate_stops_the_chain_and_is_recorded(workdir: pathlib.Path) -> None:
    spec = _local_chain(workdir, min_auc=0.9)
    with pytest.raises(chains.GateFailedError, match=r"^step gate: auc = 0\.8 is below min 0\.9$"):
        chains.run_chain(spec)
    state = chains.load_state(spec.state_path("local"), spec.name, "local")
    assert {k: v.status for k, v in state.steps.items()} == {
        "dataset": "completed",
        "train": "completed",
        "gate": "failed",
    }
    assert state.steps["gate"].error == "step gate: auc = 0.8 is below min 0.9"


def test_trainer_exiting_non_zero_stops_the_chain_with_its_log_tail(
    workdir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL", "1")
    spec = _local_chain(workdir)
    with pytest.raises(chains.ChainError) as info:
        chains.run_chain(spec)
    run = json.loads((workdir / "out/ds/manifest.json").read_text())["run"]["root"]
    assert str(info.value) == (
        "step train: trainer exited with code 3\n"
        "--- last lines of the trainer's log ---\n"
        f"reading {run}/train/part-*.parquet\n"
        "Traceback (most recent call last):\n"
        "ValueError: label 'tips_xf' has one class"
    )
    assert _statuses(spec) == [
        ("dataset", "completed", 1),
        ("train", "failed", 1),
        ("gate", "pending", 0),
    ]
    # Fixed: the re-run resumes at training.
    monkeypatch.delenv("FAIL")
    report = chains.run_chain(spec)
    assert (report.ran, report.skipped) == (["train", "gate"], ["dataset"])


def test_cli_status_and_invalid_chain(workdir: pathlib.Path, capsys: Any) -> None:
    from launchers.cli import main

    _local_chain(workdir)
    assert main(["chain", "status", "chain.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "chain taxi (local): state out/state-local.json"
    assert [line.split()[:3] for line in out[1:]] == [
        ["dataset", "dataset", "pending"],
        ["train", "train", "pending"],
        ["gate", "gate", "pending"],
    ]
    bad = _chain(_steps())
    bad["steps"][2]["metrics"] = "nothing"
    (workdir / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["chain", "bad.yaml"]) == 2
    assert capsys.readouterr().err == (
        "error: bad.yaml: steps[2].metrics: 'nothing' is not an earlier train or dataset "
        "step; earlier train or dataset steps: ['dataset', 'train']\n"
    )
