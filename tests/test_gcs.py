"""The dataset pipeline on gs://, against the GCS emulator: same rows as a local run."""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import load_spec
from tests.conftest import REPO, TAXI_SAMPLE
from tests.datasets import manifest_of, run_root, split_paths
from transforms.io.gcs import split_gcs_path

SPEC = str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("gs://", "no bucket"),
        ("gs:///data.csv", "no bucket"),
        ("gs://Bad_Bucket/x", "not a valid bucket name"),
        ("gs://ab/x", "not a valid bucket name"),
        ("gs://-bucket/x", "not a valid bucket name"),
    ],
)
def test_malformed_gcs_paths_are_named(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_gcs_path(path)


def test_split_gcs_path() -> None:
    assert split_gcs_path("gs://my-bucket.example/a/b.csv") == ("my-bucket.example", "a/b.csv")


def _read_parquet_split(client: Any, bucket: str, prefix: str) -> pa.Table:
    blobs = sorted(client.list_blobs(bucket, prefix=prefix), key=lambda b: b.name)
    parts = [pq.read_table(io.BytesIO(b.download_as_bytes())) for b in blobs]
    assert parts, f"no file under gs://{bucket}/{prefix}"
    return pa.concat_tables(parts)


def _local_split(root: pathlib.Path, split: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in split_paths(manifest_of(root), split)])


def rows(table: pa.Table) -> list[tuple]:
    """Rows in a canonical order; floats to 5 decimals (a fit merges partial sums in
    whatever order the runner's bundles finish, which moves the last bits of a z-score)."""
    return sorted(
        tuple(round(v, 5) if isinstance(v, float) else v for v in row.values())
        for row in table.to_pylist()
    )


@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_taxi_from_a_bucket_to_a_bucket_equals_the_local_run(
    gcs_emulator: Any, tmp_path: pathlib.Path
) -> None:
    client = gcs_emulator.client()
    bucket = gcs_emulator.new_bucket("taxi-in-out")
    client.bucket(bucket).blob("raw/sample.csv").upload_from_filename(str(TAXI_SAMPLE))
    spec = load_spec(SPEC)

    local = run_job(spec, inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "local"))
    # Quantile sketches depend on how the runner cuts bundles, so the bucket run applies the
    # local run's artifact: any difference in the rows is then the file system's doing.
    remote = run_job(
        spec,
        inputs=[f"gs://{bucket}/raw/*.csv"],
        output=f"gs://{bucket}/out",
        artifact_dir=str(tmp_path / "local"),
    )
    fitted = run_job(spec, inputs=[f"gs://{bucket}/raw/*.csv"], output=f"gs://{bucket}/fitted")

    assert remote.manifest["counts"] == local.manifest["counts"]
    assert fitted.manifest["counts"] == local.manifest["counts"]
    assert remote.manifest["source"]["files"] == [f"gs://{bucket}/raw/sample.csv"]
    run = fitted.manifest["run"]["id"]
    assert {b.name for b in client.list_blobs(bucket, prefix="fitted/")} == {
        "fitted/manifest.json",
        f"fitted/{run}/stats.json",
        f"fitted/{run}/validation.json",
        f"fitted/{run}/artifact/transform.json",
        f"fitted/{run}/artifact/vocabularies/vocabulary_payment_type.txt",
        f"fitted/{run}/artifact/vocabularies/vocabulary_company.txt",
        f"fitted/{run}/errors/errors-00000-of-00001.jsonl",
        f"fitted/{run}/train/part-00000-of-00001.parquet",
        f"fitted/{run}/eval/part-00000-of-00001.parquet",
    }
    for split in ("train", "eval"):
        got = _read_parquet_split(client, bucket, f"out/{remote.manifest['run']['id']}/{split}/")
        want = _local_split(tmp_path / "local", split)
        assert got.num_rows == local.manifest["counts"]["written"][split]
        assert rows(got) == rows(want)
    remote_artifact = client.bucket(bucket).blob(f"fitted/{run}/artifact/transform.json")
    local_artifact = (run_root(tmp_path / "local") / "artifact" / "transform.json").read_text()
    assert (
        json.loads(remote_artifact.download_as_bytes())["steps"]
        == json.loads(local_artifact)["steps"]
    )


@pytest.mark.emulator
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("input", "GCS bucket 'no-such-bucket' does not exist"),
        ("output", "GCS bucket 'no-such-bucket' does not exist"),
        ("bad", "not a valid bucket name"),
    ],
)
def test_a_missing_bucket_or_malformed_path_fails_before_the_run(
    gcs_emulator: Any, tmp_path: pathlib.Path, where: str, message: str
) -> None:
    spec = load_spec(SPEC)
    inputs = [str(TAXI_SAMPLE)]
    output = str(tmp_path / "out")
    if where == "input":
        inputs = ["gs://no-such-bucket/raw/*.csv"]
    elif where == "output":
        output = "gs://no-such-bucket/out"
    else:
        output = "gs://UPPER_case/out"
    with pytest.raises(ValueError, match=message):
        run_job(spec, inputs=inputs, output=output)
    assert not (tmp_path / "out").exists()
