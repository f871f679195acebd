"""``beamforge predict`` against Google Cloud's parts on this machine: BigQuery in and out (the
BigQuery emulator) and the Dataflow job built offline (``--dry-run``; model and output on the
GCS emulator), as the dataset job's dry run is checked.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Any

import pyarrow.parquet as pq
import pytest

from beam_pipelines.predict import run_predict
from beam_pipelines.spec import load_spec
from launchers.cli import main
from launchers.dataflow.submit import dry_run_job
from tests.conftest import TAXI_SAMPLE
from tests.test_predict import GOOD_ROWS, LABEL, TAXI_SPEC, chain, model_dir  # noqa: F401

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(300)]


def _sample_rows() -> tuple[list[str], list[dict[str, Any]]]:
    with TAXI_SAMPLE.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
        return list(reader.fieldnames or []), rows


def _file_probabilities(model: pathlib.Path, out: pathlib.Path) -> dict[int, tuple[int, float]]:
    result = run_predict(str(model), [str(TAXI_SAMPLE)], str(out))
    (entry,) = result.manifest["predictions"]["files"]
    return {
        r["line"]: (r[LABEL], r["probability"]) for r in pq.read_table(entry["path"]).to_pylist()
    }


def test_bigquery_in_and_out(
    bigquery_emulator: Any,
    model_dir: pathlib.Path,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    project = bigquery_emulator.project
    client.create_dataset("predict_in", exists_ok=True)
    client.create_dataset("predict_out", exists_ok=True)
    columns, rows = _sample_rows()
    # The raw trips as text, as a landing table holds them, and a row id to key predictions.
    schema = [bigquery.SchemaField("trip_id", "INT64")] + [
        bigquery.SchemaField(c, "STRING") for c in columns
    ]
    client.create_table(bigquery.Table(f"{project}.predict_in.trips", schema=schema))
    records = [{"trip_id": i + 2, **r} for i, r in enumerate(rows)]
    records.append({**records[0], "trip_id": 9999, "fare": "twelve"})
    for start in range(0, len(records), 500):
        assert (
            client.insert_rows_json(f"{project}.predict_in.trips", records[start : start + 500])
            == []
        )

    target = f"{project}.predict_out.scores"
    for attempt in range(2):
        result = run_predict(
            str(model_dir),
            [f"bq://{project}.predict_in.trips"],
            f"bq://{target}",
            keys=["trip_id"],
            run_folder=str(tmp_path / "run"),
        )
        assert result.manifest["counts"] == {
            "read": GOOD_ROWS + 1,
            "written": {"predictions": GOOD_ROWS},
            "rejected": {"input": {"unparseable_value": 1}},
            "dropped": {},
            "total_rejected": 1,
            "total_dropped": 0,
            "total_written": GOOD_ROWS,
        }, attempt
    assert result.manifest["predictions"]["bigquery"] == {"table": target}
    (error_file,) = result.manifest["errors"]["files"]
    (error,) = [
        __import__("json").loads(line)
        for line in pathlib.Path(error_file["path"]).read_text().splitlines()
    ]
    assert (error["step"], error["reason"], error["message"]) == (
        "input",
        "unparseable_value",
        "key 'fare': 'twelve' is not a valid float32",
    )
    # The second run replaced the first one's rows; its staging table is gone.
    table = client.query(f"SELECT trip_id, {LABEL}, probability FROM `{target}`").result()
    scored = {r["trip_id"]: (r[LABEL], r["probability"]) for r in table}
    assert len(scored) == GOOD_ROWS
    assert sorted(t.table_id for t in client.list_tables("predict_out")) == ["scores"]
    # Text read from BigQuery is parsed as the CSV reader parses it: the same predictions.
    from_files = _file_probabilities(model_dir, tmp_path / "files")
    assert sorted(scored) == sorted(from_files)
    assert [scored[k][0] for k in sorted(scored)] == [from_files[k][0] for k in sorted(scored)]
    assert [scored[k][1] for k in sorted(scored)] == pytest.approx(
        [from_files[k][1] for k in sorted(scored)], rel=1e-12, abs=0
    )


DATAFLOW_ARGS = [
    "--runner",
    "DataflowRunner",
    "--project",
    "my-proj-123",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://predict-dry-run/tmp",
]


def _upload_model(gcs: Any, model: pathlib.Path, bucket: str) -> str:
    client = gcs.client()
    target = client.bucket(bucket)
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        target.blob(f"model/{path.relative_to(model)}").upload_from_filename(str(path))
    return f"gs://{bucket}/model"


def test_dataflow_dry_run(
    gcs_emulator: Any,
    chain: pathlib.Path,  # noqa: F811
    model_dir: pathlib.Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = gcs_emulator.new_bucket("predict-dry-run")
    model = _upload_model(gcs_emulator, model_dir, bucket)
    spec = load_spec(str(TAXI_SPEC))
    result = run_predict(
        model,
        [str(TAXI_SAMPLE)],
        f"gs://{bucket}/scores",
        source=spec.source,
        beam_args=DATAFLOW_ARGS,
        dry_run=True,
    )
    assert result.manifest == {}
    job = dry_run_job(result.pipeline_result.job)
    assert job.transforms == [
        "Read",
        "CountRead",
        "CountReadErrors",
        "Predict",
        "CountWritten",
        "Write",
        "DescribeFiles",
        "AllErrors",
        "AllCounts",
        "ErrorJson",
        "WriteErrors",
        "DescribeErrors",
        "CountErrors",
        "SumCounts",
        "Trigger",
        "Commit",
    ]
    names = {t.unique_name for t in job.pipeline.components.transforms.values()}
    assert {"Predict/Preprocess/Transform", "Predict/RunInference", "Predict/Shape"} <= names
    assert job.options["project"] == "my-proj-123"
    # Nothing was written: no lock, no run folder, no manifest.
    blobs = [b.name for b in gcs_emulator.client().list_blobs(bucket)]
    assert not [b for b in blobs if not b.startswith("model/")]

    # The command: the dataset spec's Dataflow settings, setup.py staged for the workers.
    code = main(
        [
            "predict",
            str(chain),
            "--input",
            str(TAXI_SAMPLE),
            "--output",
            f"gs://{bucket}/scores",
            "--model",
            model,
            "--quiet",
            *DATAFLOW_ARGS,
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("dry run: job chicago-taxi-predict-")
    assert "  project       my-proj-123\n" in out
    assert "workflow.tar.gz" in out
    assert ", Predict, " in out


def test_dataflow_needs_gs_paths(
    model_dir: pathlib.Path,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    from beam_pipelines.predict import PredictInputError

    with pytest.raises(PredictInputError, match="is not gs://: Dataflow workers cannot read it"):
        run_predict(
            str(model_dir),
            [str(TAXI_SAMPLE)],
            str(tmp_path / "o"),
            beam_args=DATAFLOW_ARGS,
            dry_run=True,
        )
