"""The taxi example both ways: tf.Transform and native steps compared column by column.

The tests run ``examples/chicago_taxi/pipeline_tft.yaml`` (TFX's taxi ``preprocessing_fn``
through tf.Transform) and ``pipeline.yaml`` (native steps) through ``run_job`` on the committed
sample, with a row id column added to a copy of it so the two datasets can be joined row by
row, and compare them column by column.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import parse_spec
from examples.chicago_taxi import taxi_preprocessing as taxi
from tests.datasets import run_root
from tests.tft_example import EXAMPLE, FN_WITH_ROW_ID, ROW_ID, _tft_spec, _yaml
from transforms.core.artifact import read_artifact
from transforms.ops.registry import build_step
from transforms.tft import backend as tft_backend

pytestmark = [pytest.mark.tft, pytest.mark.slow]


def _rows_by_id(manifest: dict[str, Any], id_column: str) -> tuple[pa.Table, dict[str, set]]:
    tables, ids = [], {}
    for split, info in manifest["splits"].items():
        table = pa.concat_tables([pq.read_table(f["path"]) for f in info["files"]["parquet"]])
        ids[split] = set(table.column(id_column).to_pylist())
        tables.append(table)
    return pa.concat_tables(tables).sort_by(id_column), ids


@pytest.fixture(scope="module")
def sample_with_ids(tmp_path_factory) -> pathlib.Path:
    table = pacsv.read_csv(EXAMPLE / "data" / "sample.csv")
    table = table.append_column(ROW_ID, pa.array(np.arange(table.num_rows), pa.int64()))
    path = tmp_path_factory.mktemp("data") / "sample_with_ids.csv"
    pacsv.write_csv(table, path)
    return path


@pytest.fixture(scope="module")
def runs(sample_with_ids, tmp_path_factory) -> dict[str, Any]:
    tft_spec = _yaml("pipeline_tft.yaml")
    tft_spec["source"]["schema"][ROW_ID] = "int64"
    tft_spec["transform"]["preprocessing_fn"] = FN_WITH_ROW_ID
    native_spec = _yaml("pipeline.yaml")
    native_spec["source"]["schema"][ROW_ID] = "int64"
    native_spec["features"].append({"op": "copy", "columns": [ROW_ID], "suffix": "_xf"})
    tft_out = tmp_path_factory.mktemp("tft")
    native_out = tmp_path_factory.mktemp("native")
    inputs = [str(sample_with_ids)]
    tft_manifest = run_job(parse_spec(tft_spec), inputs=inputs, output=str(tft_out)).manifest
    native_manifest = run_job(
        parse_spec(native_spec, origin=str(EXAMPLE / "pipeline.yaml")),
        inputs=inputs,
        output=str(native_out),
    ).manifest
    tft_rows, tft_ids = _rows_by_id(tft_manifest, ROW_ID)
    native_rows, native_ids = _rows_by_id(native_manifest, f"{ROW_ID}_xf")
    return {
        "out": tft_out,
        "native_out": native_out,
        "manifest": tft_manifest,
        "native_manifest": native_manifest,
        "tft": {n: tft_rows.column(n).to_numpy() for n in tft_rows.schema.names},
        "native": {n: native_rows.column(n).to_numpy() for n in native_rows.schema.names},
        "tft_schema": tft_rows.schema,
        "native_schema": native_rows.schema,
        "ids": (tft_ids, native_ids),
    }


def test_same_rows_splits_and_schema(runs):
    tft_ids, native_ids = runs["ids"]
    assert tft_ids == native_ids
    assert sum(len(v) for v in tft_ids.values()) == 3001
    np.testing.assert_array_equal(runs["tft"][ROW_ID], np.arange(3001))
    native_schema = runs["native_schema"]
    expected = pa.schema(
        [native_schema.field(n) for n in native_schema.names if n != f"{ROW_ID}_xf"]
    )
    tft_schema = runs["tft_schema"]
    assert pa.schema([tft_schema.field(n) for n in expected.names]) == expected
    assert set(tft_schema.names) == {*expected.names, ROW_ID}
    assert runs["manifest"]["schema"] == {
        **{f.name: {pa.float32(): "float32", pa.int64(): "int64"}[f.type] for f in expected},
        ROW_ID: "int64",
    }


@pytest.mark.parametrize("key", taxi.VOCAB_FEATURE_KEYS)
def test_vocabulary_ids_identical(runs, key):
    np.testing.assert_array_equal(runs["tft"][f"{key}_xf"], runs["native"][f"{key}_xf"])


@pytest.mark.parametrize("key", taxi.CATEGORICAL_FEATURE_KEYS)
def test_passthroughs_identical(runs, key):
    np.testing.assert_array_equal(runs["tft"][f"{key}_xf"], runs["native"][f"{key}_xf"])


def test_labels_identical(runs):
    labels = runs["tft"]["tips_xf"]
    np.testing.assert_array_equal(labels, runs["native"]["tips_xf"])
    assert 0 < labels.sum() < len(labels)


@pytest.mark.parametrize("key", taxi.DENSE_FLOAT_FEATURE_KEYS)
def test_z_scores_within_1e_4(runs, key):
    ours = runs["tft"][f"{key}_xf"]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, runs["native"][f"{key}_xf"], rtol=0, atol=1e-4)
    assert abs(float(ours.mean())) < 1e-4


@pytest.mark.parametrize("key", taxi.BUCKET_FEATURE_KEYS)
def test_bucket_counts_within_2_percent(runs, key):
    ours = np.bincount(runs["tft"][f"{key}_xf"], minlength=10)
    theirs = np.bincount(runs["native"][f"{key}_xf"], minlength=10)
    assert len(ours) == len(theirs) == 10
    assert np.abs(ours - theirs).max() <= 0.02 * 3001, (ours, theirs)


def test_manifest_counts_balance(runs):
    counts = runs["manifest"]["counts"]
    assert counts["read"] == 3001
    assert counts["total_rejected"] == counts["total_dropped"] == 0
    assert counts["total_written"] == 3001
    assert counts["written"] == runs["native_manifest"]["counts"]["written"]
    assert runs["manifest"]["errors"]["count"] == 0


def test_artifact_records_the_backend_and_the_transform_fn_loads(runs):
    import tensorflow as tf
    import tensorflow_transform as tft

    artifact = run_root(runs["out"]) / "artifact"
    document = json.loads((artifact / "transform.json").read_text())
    assert document["fitted"][tft_backend.FITTED_KEY] == {
        "backend": "tensorflow_transform",
        "preprocessing_fn": FN_WITH_ROW_ID,
        "transform_fn": "transform_fn_dir",
    }
    assert [s["name"] for s in document["steps"]] == ["fill_numbers", "fill_strings"]
    assert not (artifact / tft_backend.TEMP_DIR).exists()
    output = tft.TFTransformOutput(str(artifact / "transform_fn_dir"))
    spec = output.transformed_feature_spec()
    assert set(spec) == set(runs["tft"])
    assert spec["fare_xf"] == tf.io.FixedLenFeature([], tf.float32)
    native = read_artifact(str(runs["native_out"]), build_step).fitted
    for i, key in enumerate(taxi.VOCAB_FEATURE_KEYS):
        suffix = f"_{i}" if i else ""
        theirs = output.vocabulary_by_name(f"vocab_compute_and_apply_vocabulary{suffix}_vocabulary")
        assert [v.decode() for v in theirs] == native[f"vocabulary:{key}"]["vocabulary"]


def test_transform_fn_replays_the_dataset(runs, sample_with_ids):
    """The exported SavedModel maps raw rows to the rows the pipeline wrote."""
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(run_root(runs["out"]) / "artifact" / "transform_fn_dir"))
    table = pacsv.read_csv(sample_with_ids).slice(0, 50)
    raw = {}
    for name, tp in _yaml("pipeline_tft.yaml")["source"]["schema"].items():
        values = table.column(name).to_pylist()
        dtype = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}[tp]
        fill = "" if tp == "string" else 0
        dense = tf.constant([[fill if v is None else v] for v in values], dtype=dtype)
        # As the clean steps feed it: nulls filled with 0 and ''.
        raw[name] = _all_sparse(dense)
    ids = [[v] for v in table.column(ROW_ID).to_pylist()]
    raw[ROW_ID] = _all_sparse(tf.constant(ids, dtype=tf.int64))
    replayed = output.transform_raw_features(raw)
    for name in ("fare_xf", "company_xf", "pickup_latitude_xf", "tips_xf", ROW_ID):
        np.testing.assert_allclose(replayed[name].numpy(), runs["tft"][name][:50], atol=1e-6)


def _all_sparse(dense):
    # Every cell present, zeros included (tf.sparse.from_dense would drop zeros).
    import tensorflow as tf

    n = dense.shape[0]
    indices = tf.stack([tf.range(n, dtype=tf.int64), tf.zeros(n, tf.int64)], axis=1)
    return tf.SparseTensor(indices, tf.reshape(dense, [-1]), [n, 1])


def test_fit_on_one_split_analyzes_only_its_rows(sample_with_ids, tmp_path):
    data = _tft_spec(fit_on="train")
    data["output"]["columns"] = ["fare_xf", "tips_xf"]
    manifest = run_job(
        parse_spec(data), inputs=[str(sample_with_ids)], output=str(tmp_path)
    ).manifest
    assert manifest["counts"]["total_written"] == 3001
    assert manifest["schema"] == {"fare_xf": "float32", "tips_xf": "int64"}
    train = pq.read_table(
        [f["path"] for f in manifest["splits"]["train"]["files"]["parquet"]]
    ).column("fare_xf")
    evaluation = pq.read_table(
        [f["path"] for f in manifest["splits"]["eval"]["files"]["parquet"]]
    ).column("fare_xf")
    # Standardized with the train rows' mean and variance: those rows have mean 0, std 1.
    assert abs(float(np.mean(train))) < 1e-4
    assert abs(float(np.std(train)) - 1) < 1e-3
    assert abs(float(np.mean(evaluation))) > 1e-3
