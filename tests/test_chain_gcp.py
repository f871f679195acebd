"""The chain on the gcp target: GCS emulator for the data, the real Vertex SDK against a fake.

The dataset job runs on this machine writing to gs:// (the GCS emulator); training, upload
and deployment go through ``google-cloud-aiplatform`` to :mod:`tests.vertex_fake`, whose
stand-in trainer writes ``metrics.json`` where Vertex would set ``AIP_MODEL_DIR``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from apache_beam.io.filesystems import FileSystems

from launchers import chain as chains
from tests import vertex_fake
from tests.conftest import REPO, TAXI_SAMPLE
from tests.vertex_fake import PARENT, PROJECT, REGION, FakeVertex

pytestmark = pytest.mark.emulator


@pytest.fixture()
def fake() -> Iterator[FakeVertex]:
    yield from vertex_fake.serve()


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def _chain(tmp_path: pathlib.Path, fake: FakeVertex, bucket: str) -> chains.ChainSpec:
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    (tmp_path / "trips.csv").write_text("".join(lines[:201]))
    data = {
        "name": "taxi",
        "workdir": str(tmp_path / "work"),
        "gcp": {
            "project": PROJECT,
            "region": REGION,
            "staging_bucket": f"gs://{bucket}/stage",
            "api_endpoint": fake.endpoint,
        },
        "steps": [
            {
                "name": "dataset",
                "kind": "dataset",
                "spec": str(REPO / "examples/chicago_taxi/pipeline.yaml"),
                "inputs": [str(tmp_path / "trips.csv")],
                "output": str(tmp_path / "ds"),
                "gcp": {"output": f"gs://{bucket}/ds", "launch": "local"},
            },
            {
                "name": "train",
                "kind": "train",
                "dataset": "dataset",
                "module": "examples.chicago_taxi.trainer.task",
                "args": ["--model", "logistic"],
                "gcp": {"image_uri": "trainer:1", "poll_seconds": 0.001},
            },
            {"name": "gate", "kind": "gate", "metrics": "train", "metric": "auc", "min": 0.75},
            {
                "name": "upload",
                "kind": "upload",
                "model": "train",
                "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
                "gcp": {"image_uri": "predictor:1"},
            },
            {
                "name": "deploy",
                "kind": "deploy",
                "model": "upload",
                "gcp": {"endpoint": "taxi", "traffic_percentage": 100},
            },
        ],
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(data))
    return chains.load_chain(str(path))


def _trainer(auc: float) -> Any:
    def train(body: dict[str, Any]) -> None:
        base = body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
        _write(f"{base}/model/model.joblib", b"")
        _write(f"{base}/model/metrics.json", json.dumps({"auc": auc}).encode())

    return train


def test_gate_stops_the_chain_before_upload_and_deployment(
    gcs_emulator: Any, fake: FakeVertex, tmp_path: pathlib.Path
) -> None:
    bucket = gcs_emulator.new_bucket("chain-gate-fails")
    fake.trainer = _trainer(0.6)
    spec = _chain(tmp_path, fake, bucket)
    with pytest.raises(chains.GateFailedError, match=r"^step gate: auc = 0\.6 is below min 0\.75$"):
        chains.run_chain(spec, target="gcp")
    (job,) = fake.calls("POST", f"{PARENT}/customJobs")
    env = {
        e["name"]: e["value"] for e in job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]
    }
    manifest = json.loads(
        gcs_emulator.client().bucket(bucket).blob("ds/manifest.json").download_as_bytes()
    )
    run = f"gs://{bucket}/ds/{manifest['run']['id']}"
    assert env == {
        "AIP_DATA_FORMAT": "parquet",
        "AIP_TRAINING_DATA_URI": f"{run}/train/part-*.parquet",
        "AIP_VALIDATION_DATA_URI": f"{run}/eval/part-*.parquet",
    }
    assert fake.calls("POST", "models:upload") == []
    assert fake.calls("POST", ":deployModel") == []
    assert [(s.name, s.status) for s in chains.chain_status(spec, "gcp")] == [
        ("dataset", "completed"),
        ("train", "completed"),
        ("gate", "failed"),
        ("upload", "pending"),
        ("deploy", "pending"),
    ]


def test_chain_uploads_and_deploys_once_the_gate_passes(
    gcs_emulator: Any, fake: FakeVertex, tmp_path: pathlib.Path
) -> None:
    bucket = gcs_emulator.new_bucket("chain-gate-passes")
    fake.trainer = _trainer(0.9)
    spec = _chain(tmp_path, fake, bucket)
    report = chains.run_chain(spec, target="gcp")
    assert report.ran == ["dataset", "train", "gate", "upload", "deploy"]
    model_dir = report.outputs["train"]["model_dir"]
    assert model_dir.startswith(f"gs://{bucket}/stage/taxi/train/")
    # The transform artifact is copied beside the model for serving.
    assert FileSystems.exists(f"{model_dir}/artifact/transform.json")
    (upload,) = fake.calls("POST", "models:upload")
    assert upload["model"]["artifactUri"] == model_dir
    assert upload["model"]["containerSpec"]["imageUri"] == "predictor:1"
    assert {e["name"]: e["value"] for e in upload["model"]["containerSpec"]["env"]} == {
        "PREDICTOR_MODULE": "examples.chicago_taxi.predictor",
        "PREDICTOR_CLASS": "TaxiPredictor",
    }
    (deploy,) = fake.calls("POST", ":deployModel")
    assert deploy["trafficSplit"] == {"0": 100}
    assert deploy["deployedModel"]["model"] == report.outputs["upload"]["model"]
    assert report.outputs["deploy"]["traffic_split"] == {
        report.outputs["deploy"]["deployed_model_id"]: 100
    }
    # Nothing is repeated on a re-run.
    count = len(fake.requests)
    again = chains.run_chain(spec, target="gcp")
    assert (again.ran, again.skipped) == ([], ["dataset", "train", "gate", "upload", "deploy"])
    assert len(fake.requests) == count
