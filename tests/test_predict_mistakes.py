"""``beamforge predict`` refuses what would lose data or score with the wrong model.

A folder of one kind of output (a dataset, predictions) is never replaced by the other; a
chain's model that a later gate or deploy step did not pass is not used by default; a model
bundle that cannot be read, or whose features the artifact does not output, is named in one
line before Beam runs; flags that would be ignored are refused.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
from typing import Any

import joblib
import pytest
import yaml

from beam_pipelines.predict import PredictInputError, run_predict
from launchers.chain import load_chain
from launchers.chain.state import COMPLETED, FAILED, ChainState, StepState, save_state
from launchers.chain.status import chain_status
from launchers.predict_commands import NoModelError, chain_model_dir
from tests.conftest import REPO, TAXI_SAMPLE, beamforge
from transforms.core.config import SpecError
from transforms.io import commit as commit_lib

TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
GOOD_ROWS = 3001


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A chain that ran dataset -> train (logistic) -> upload on the taxi sample."""
    folder = tmp_path_factory.mktemp("chain")
    chain_file = folder / "chain.yaml"
    chain_file.write_text(
        yaml.safe_dump(
            {
                "name": "taxi",
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
                        "name": "upload",
                        "kind": "upload",
                        "model": "train",
                        "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
                    },
                ],
            }
        )
    )
    done = beamforge("chain", str(chain_file), timeout=300)
    assert done.returncode == 0, done.stderr
    return chain_file


@pytest.fixture(scope="module")
def model_dir(chain: pathlib.Path) -> pathlib.Path:
    return chain.parent / "work" / "train" / "model"


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _predict(chain: pathlib.Path, output: pathlib.Path | str, *args: str) -> Any:
    return beamforge(
        "predict",
        str(chain),
        "--input",
        str(TAXI_SAMPLE),
        "--output",
        str(output),
        "--quiet",
        *args,
    )


# 1. A dataset folder is not a predictions folder, nor the reverse.


def test_predict_refuses_a_dataset_folder_and_leaves_it_as_it_was(chain: pathlib.Path) -> None:
    dataset = chain.parent / "dataset"
    before = _snapshot(dataset)
    assert "manifest.json" in before
    done = _predict(chain, dataset)
    assert (done.returncode, done.stderr) == (
        2,
        f"error: {dataset}: holds a dataset (manifest.json), not predictions; "
        "choose another --output\n",
    )
    assert _snapshot(dataset) == before


def test_run_refuses_a_predictions_folder_and_leaves_it_as_it_was(
    model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scores = tmp_path / "scores"
    first = run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(scores))
    assert first.manifest["kind"] == "predictions"
    before = _snapshot(scores)
    done = beamforge("run", str(TAXI_SPEC), "--input", str(TAXI_SAMPLE), "--output", str(scores))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: {scores}: holds predictions (manifest.json), not a dataset; "
        "choose another --output"
    )
    # Refused before the manifest was read as a drift baseline: no warning about it.
    assert "no drift measured" not in done.stderr
    assert _snapshot(scores) == before


def test_a_second_scoring_run_into_predictions_is_still_taken(
    model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scores = tmp_path / "scores"
    first = run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(scores))
    second = run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(scores))
    assert second.manifest["run"]["id"] != first.manifest["run"]["id"]
    assert second.counts["total_written"] == GOOD_ROWS


def test_the_api_refuses_a_dataset_folder_while_planning(
    chain: pathlib.Path, model_dir: pathlib.Path
) -> None:
    dataset = chain.parent / "dataset"
    before = _snapshot(dataset)
    with pytest.raises(commit_lib.OutputKindError) as caught:
        run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(dataset))
    assert str(caught.value) == (
        f"{dataset}: holds a dataset (manifest.json), not predictions; choose another --output"
    )
    assert _snapshot(dataset) == before


def test_acquire_checks_the_kind_before_taking_the_lock(
    chain: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    dataset = chain.parent / "dataset"
    with pytest.raises(commit_lib.OutputKindError):
        commit_lib.acquire(str(dataset), kind=commit_lib.PREDICTIONS)
    assert not (dataset / commit_lib.LOCK).exists()
    # The same kind, or no kind asked, takes it as before.
    held = commit_lib.acquire(str(dataset), kind=commit_lib.DATASET)
    held.release()
    assert not (dataset / commit_lib.LOCK).exists()


def _manifest_bytes(**extra: Any) -> bytes:
    return json.dumps({"run": {"id": "run-20261129T000000Z-0123abcd"}, **extra}).encode()


def test_manifest_kind() -> None:
    assert commit_lib.manifest_kind(None) is None
    assert commit_lib.manifest_kind(b"{}") is None  # names no run: not beamforge's
    assert commit_lib.manifest_kind(_manifest_bytes()) == "dataset"
    assert commit_lib.manifest_kind(_manifest_bytes(kind="predictions")) == "predictions"


def test_the_kind_check_on_gcs(gcs_emulator: Any) -> None:
    bucket = gcs_emulator.new_bucket("predict-kinds")
    client = gcs_emulator.client().bucket(bucket)
    client.blob("data/manifest.json").upload_from_string(_manifest_bytes())
    client.blob("scores/manifest.json").upload_from_string(_manifest_bytes(kind="predictions"))
    with pytest.raises(commit_lib.OutputKindError) as caught:
        commit_lib.check_output_kind(f"gs://{bucket}/data", commit_lib.PREDICTIONS)
    assert str(caught.value) == (
        f"gs://{bucket}/data: holds a dataset (manifest.json), not predictions; "
        "choose another --output"
    )
    with pytest.raises(commit_lib.OutputKindError) as caught:
        commit_lib.check_output_kind(f"gs://{bucket}/scores", commit_lib.DATASET)
    assert str(caught.value) == (
        f"gs://{bucket}/scores: holds predictions (manifest.json), not a dataset; "
        "choose another --output"
    )
    commit_lib.check_output_kind(f"gs://{bucket}/scores", commit_lib.PREDICTIONS)
    commit_lib.check_output_kind(f"gs://{bucket}/data", commit_lib.DATASET)
    commit_lib.check_output_kind(f"gs://{bucket}/empty", commit_lib.PREDICTIONS)
    with pytest.raises(commit_lib.OutputKindError):
        commit_lib.acquire(f"gs://{bucket}/data", kind=commit_lib.PREDICTIONS, runner="x")
    assert client.get_blob("data/_lock.json") is None


def _steps(folder: pathlib.Path, score: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": "dataset",
            "kind": "dataset",
            "spec": str(TAXI_SPEC),
            "inputs": [str(TAXI_SAMPLE)],
            "output": str(folder / "data"),
        },
        {"name": "train", "kind": "train", "dataset": "dataset", "module": "m"},
        {"name": "score", "kind": "predict", "model": "train", "inputs": ["raw.csv"], **score},
    ]


@pytest.mark.parametrize(
    ("score", "field", "folder"),
    [
        ({"output": "{data}"}, "output", "{data}"),
        ({"output": "{data}/scores"}, "output", "{data}/scores"),
        ({"output": "{top}"}, "output", "{top}"),
        (
            {"output": "bq://p.d.t", "errors": "{data}/errors"},
            "errors",
            "{data}/errors",
        ),
    ],
)
def test_a_chain_predict_step_may_not_overlap_a_dataset_folder(
    tmp_path: pathlib.Path, score: dict[str, Any], field: str, folder: str
) -> None:
    names = {"data": str(tmp_path / "data"), "top": str(tmp_path)}
    score = {k: v.format(**names) for k, v in score.items()}
    chain_file = tmp_path / "chain.yaml"
    chain_file.write_text(
        yaml.safe_dump(
            {"name": "c", "workdir": str(tmp_path / "w"), "steps": _steps(tmp_path, score)}
        )
    )
    with pytest.raises(SpecError) as caught:
        load_chain(str(chain_file))
    assert str(caught.value) == (
        f"{chain_file}: steps[2].{field}: {folder.format(**names)!r} overlaps the output "
        f"folder {names['data']!r} of dataset step 'dataset'; give the predictions a folder "
        "of their own"
    )
    done = beamforge("validate", str(chain_file))
    assert done.returncode == 2
    assert f"steps[2].{field}: " in done.stderr


def test_a_chain_predict_step_beside_the_dataset_folder_loads(tmp_path: pathlib.Path) -> None:
    chain_file = tmp_path / "chain.yaml"
    steps = _steps(tmp_path, {"output": str(tmp_path / "data-scores")})
    chain_file.write_text(yaml.safe_dump({"name": "c", "workdir": "w", "steps": steps}))
    assert [s.name for s in load_chain(str(chain_file)).steps] == ["dataset", "train", "score"]


# 2. The chain's model must have passed the steps after its train step.


def _gated_chain(folder: pathlib.Path) -> Any:
    chain_file = folder / "chain.yaml"
    chain_file.write_text(
        yaml.safe_dump(
            {
                "name": "gated",
                "workdir": str(folder / "work"),
                "steps": [
                    {
                        "name": "dataset",
                        "kind": "dataset",
                        "spec": str(TAXI_SPEC),
                        "output": str(folder / "data"),
                    },
                    {"name": "train", "kind": "train", "dataset": "dataset", "module": "m"},
                    {
                        "name": "gate",
                        "kind": "gate",
                        "metrics": "train",
                        "metric": "auc",
                        "min": 0.7,
                    },
                    {"name": "upload", "kind": "upload", "model": "train", "predictor": "p:P"},
                    {"name": "deploy", "kind": "deploy", "model": "upload"},
                    {
                        "name": "score",
                        "kind": "predict",
                        "model": "train",
                        "inputs": ["raw.csv"],
                        "output": str(folder / "scores"),
                    },
                ],
            }
        )
    )
    return load_chain(str(chain_file))


def _state(chain: Any, **steps: tuple[str, str]) -> None:
    model = f"{chain.workdir}/train/model"
    outputs = {"train": {"model_dir": model}, "upload": {"model_dir": model, "model": "local"}}
    save_state(
        chain.state_path("local"),
        ChainState(
            chain=chain.name,
            target="local",
            steps={
                name: StepState(
                    status=status,
                    fingerprint="f",
                    finished=finished,
                    outputs=outputs.get(name, {}),
                )
                for name, (status, finished) in steps.items()
            },
        ),
    )


T0, T1, T2 = "2026-11-29T10:00:00+00:00", "2026-11-29T11:00:00+00:00", "2026-11-29T12:00:00+00:00"


def test_the_chain_model_after_every_step_passed(tmp_path: pathlib.Path) -> None:
    chain = _gated_chain(tmp_path)
    _state(
        chain,
        dataset=(COMPLETED, T0),
        train=(COMPLETED, T1),
        gate=(COMPLETED, T1),
        upload=(COMPLETED, T2),
        deploy=(COMPLETED, T2),
        score=(FAILED, T2),  # a scoring step that failed says nothing about the model
    )
    assert chain_model_dir(chain) == f"{chain.workdir}/train/model"


@pytest.mark.parametrize(
    ("gate", "deploy", "step", "status"),
    [
        ((FAILED, T2), (COMPLETED, T0), "gate", "failed"),  # the gate rejected the retrained model
        ((COMPLETED, T2), (FAILED, T2), "deploy", "failed"),  # the canary was rolled back
        ((COMPLETED, T0), (COMPLETED, T0), "gate", "not rerun since the model was trained"),
    ],
)
def test_the_chain_model_a_later_step_did_not_pass_is_refused(
    tmp_path: pathlib.Path,
    gate: tuple[str, str],
    deploy: tuple[str, str],
    step: str,
    status: str,
) -> None:
    chain = _gated_chain(tmp_path)
    # The upload's record is the earlier run's: it names the folder train rewrote in place.
    _state(
        chain,
        dataset=(COMPLETED, T0),
        train=(COMPLETED, T1),
        gate=gate,
        upload=(COMPLETED, T0 if step == "gate" else T2),
        deploy=deploy,
    )
    with pytest.raises(NoModelError) as caught:
        chain_model_dir(chain)
    assert str(caught.value) == (
        f"chain gated: the model in {chain.workdir}/train/model did not pass step {step} "
        f"({status}); rerun the chain or give --model DIR"
    )


def test_the_cli_refuses_a_rejected_model_and_takes_an_explicit_one(
    tmp_path: pathlib.Path, model_dir: pathlib.Path
) -> None:
    chain = _gated_chain(tmp_path)
    _state(
        chain,
        dataset=(COMPLETED, T0),
        train=(COMPLETED, T1),
        gate=(FAILED, T1),
        upload=(COMPLETED, T0),
        deploy=(COMPLETED, T0),
    )
    out = tmp_path / "out"
    done = _predict(pathlib.Path(chain.origin), out)
    assert (done.returncode, done.stderr) == (
        2,
        f"error: chain gated: the model in {chain.workdir}/train/model did not pass step gate "
        "(failed); rerun the chain or give --model DIR\n",
    )
    assert not out.exists()


# 3. A model bundle that cannot be used is named before Beam runs.


def _copy_model(model_dir: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
    shutil.copytree(model_dir / "artifact", to / "artifact")
    return to


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (lambda data: data[:-10], "EOFError"),  # truncated
        (
            lambda data: b"garbage\n",
            "ValueError: invalid literal for int() with base 10: b'arbage'",
        ),
        (lambda data: b"", "EOFError"),
    ],
)
def test_an_unreadable_model_bundle_is_one_line(
    chain: pathlib.Path, model_dir: pathlib.Path, tmp_path: pathlib.Path, cut: Any, problem: str
) -> None:
    bad = _copy_model(model_dir, tmp_path / "bad")
    (bad / "model.joblib").write_bytes(cut((model_dir / "model.joblib").read_bytes()))
    out = tmp_path / "out"
    done = _predict(chain, out, "--model", str(bad))
    assert (done.returncode, done.stderr) == (
        2,
        f"error: {bad / 'model.joblib'}: not a readable joblib model bundle ({problem})\n",
    )
    assert not out.exists()


def test_a_feature_the_artifact_does_not_output_is_refused_while_planning(
    chain: pathlib.Path, model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    bad = _copy_model(model_dir, tmp_path / "bad")
    bundle = joblib.load(model_dir / "model.joblib")
    bundle["features"] = [*bundle["features"], "x"]
    joblib.dump(bundle, bad / "model.joblib")
    outputs = json.loads((model_dir / "artifact" / "transform.json").read_text())["output_columns"]
    out = tmp_path / "out"
    done = _predict(chain, out, "--model", str(bad))
    assert (done.returncode, done.stderr) == (
        2,
        f"error: {bad / 'model.joblib'}: feature 'x' is not an output of the transform "
        f"artifact (outputs: {', '.join(outputs)})\n",
    )
    assert not out.exists()
    with pytest.raises(PredictInputError, match="feature 'x' is not an output"):
        run_predict(str(bad), [str(TAXI_SAMPLE)], str(out))
    assert not out.exists()


# 4, 5. Flags that would be ignored or misread.


def test_errors_with_a_folder_output_is_refused(
    chain: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    done = _predict(chain, tmp_path / "out", "--errors", str(tmp_path / "errors"))
    assert (done.returncode, done.stderr) == (
        2,
        "error: --errors: only for a bq:// --output; a folder output keeps its errors in its "
        "run folder\n",
    )
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "errors").exists()


def test_a_dry_run_without_dataflow_settings_says_what_it_needs(
    chain: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    done = _predict(chain, tmp_path / "out", "--dry-run")
    assert (done.returncode, done.stderr) == (
        2,
        "error: --dry-run: builds a Dataflow job (it implies --runner DataflowRunner) and needs "
        "its settings: dataflow.project: required: the Google Cloud project id to run in (spec "
        "key dataflow.project, flag --project)\n",
    )
    assert not (tmp_path / "out").exists()


# 6. `beamforge chain status` on a predict step.


def test_chain_status_shows_a_predict_steps_counts(tmp_path: pathlib.Path) -> None:
    chain = _gated_chain(tmp_path)
    save_state(
        chain.state_path("local"),
        ChainState(
            chain=chain.name,
            target="local",
            steps={
                "score": StepState(
                    status=COMPLETED,
                    fingerprint="f",
                    finished=T2,
                    outputs={
                        "output": str(tmp_path / "scores"),
                        "manifest": str(tmp_path / "scores" / "manifest.json"),
                        "run": "run-20261129T120000Z-0123abcd",
                        "counts": {"read": 3002, "total_written": 3001, "total_rejected": 1},
                    },
                )
            },
        ),
    )
    (row,) = [r for r in chain_status(chain) if r.name == "score"]
    assert row.detail == f"3,001 predicted, 1 rejected -> {tmp_path / 'scores'}"
