"""Native steps against tf.Transform on the full Chicago taxi data set.

The reference is TFX 1.21's ``taxi_utils_native_keras.preprocessing_fn``
(``examples/chicago_taxi/taxi_preprocessing.py``: ``_fill_in_missing`` on sparse inputs,
``scale_to_z_score``, ``compute_and_apply_vocabulary`` with ``top_k=1000, num_oov_buckets=10``,
``bucketize`` with 10 buckets, passthroughs and the float32 big-tipper label), run with
``tensorflow_transform.beam.AnalyzeAndTransformDataset`` directly on the DirectRunner. The native side is the taxi example itself
(``examples/chicago_taxi/pipeline.yaml``) run through the dataset pipeline, with a row id
passed through so the two outputs can be joined row by row.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import parse_spec
from examples.chicago_taxi import taxi_preprocessing as taxi
from examples.chicago_taxi.schema import RAW_SCHEMA
from transforms.core.schema import arrow_schema

pytestmark = [pytest.mark.tft, pytest.mark.slow]

PIPELINE_YAML = (
    pathlib.Path(__file__).resolve().parent.parent / "examples/chicago_taxi/pipeline.yaml"
)

SCHEMA = RAW_SCHEMA
DENSE_FLOAT = taxi.DENSE_FLOAT_FEATURE_KEYS
VOCAB = taxi.VOCAB_FEATURE_KEYS
BUCKET = taxi.BUCKET_FEATURE_KEYS
CATEGORICAL = taxi.CATEGORICAL_FEATURE_KEYS
ROW_ID = "row_id"


def read_taxi(path: pathlib.Path) -> pa.Table:
    schema = arrow_schema(SCHEMA)
    options = pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema}, strings_can_be_null=True
    )
    table = pacsv.read_csv(path, convert_options=options)
    return table.append_column(ROW_ID, pa.array(np.arange(table.num_rows), pa.int64()))


def preprocessing_fn(inputs):
    """TFX's taxi preprocessing_fn, plus a row id to join on."""
    outputs = taxi.preprocessing_fn(inputs)
    outputs[ROW_ID] = inputs[ROW_ID]
    return outputs


def _plain(value):
    return value.item() if isinstance(value, np.generic | np.ndarray) else value


def run_tf_transform(table: pa.Table, work: pathlib.Path) -> dict[str, np.ndarray]:
    """Runs preprocessing_fn with tf.Transform on the DirectRunner; returns columns by row id."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    tf_types = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}
    feature_spec = {k: tf.io.VarLenFeature(tf_types[v]) for k, v in SCHEMA.items()}
    feature_spec[ROW_ID] = tf.io.FixedLenFeature([], tf.int64)
    schema = schema_utils.schema_from_feature_spec(feature_spec)
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)

    # tf.Transform's Arrow input: one list per cell, empty where the CSV field is empty.
    columns, fields = [], []
    for name in [*SCHEMA, ROW_ID]:
        values = table.column(name).combine_chunks()
        value_type = pa.binary() if pa.types.is_string(values.type) else values.type
        offsets = np.concatenate([[0], np.cumsum(values.is_valid().to_numpy(zero_copy_only=False))])
        flat = values.drop_null().cast(value_type)
        columns.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat))
        fields.append(pa.field(name, pa.list_(value_type)))
    arrow = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    batches = arrow.to_batches(max_chunksize=4000)
    config = tensor_adapter.TensorAdapterConfig(arrow.schema, representations)

    out_path = work / "tft_out"
    options = PipelineOptions(["--direct_num_workers=1"])
    with (
        beam.Pipeline(runner="DirectRunner", options=options) as p,
        tft_beam.Context(temp_dir=str(work / "tft_tmp")),
    ):
        raw = p | "Batches" >> beam.Create(batches)
        (transformed, _), _ = (raw, config) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = (
            transformed
            | "ToJson" >> beam.Map(lambda row: json.dumps({k: _plain(v) for k, v in row.items()}))
            | "Write" >> beam.io.WriteToText(str(out_path), shard_name_template="")
        )
    rows = [json.loads(line) for line in out_path.read_text().splitlines()]
    rows.sort(key=lambda r: r[ROW_ID])
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def run_native(
    table: pa.Table, work: pathlib.Path
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Runs the taxi example's spec through the real pipeline, with a row id passed through."""
    spec_data = yaml.safe_load(PIPELINE_YAML.read_text())
    spec_data["source"]["schema"][ROW_ID] = "int64"
    spec_data["features"].append({"op": "copy", "columns": [ROW_ID], "suffix": "_xf"})
    data = work / "taxi_with_ids.csv"
    pacsv.write_csv(table, data)
    out = work / "native"
    spec = parse_spec(spec_data, origin=str(PIPELINE_YAML))
    manifest = run_job(spec, inputs=[str(data)], output=str(out)).manifest
    assert manifest["counts"]["total_written"] == table.num_rows
    files = [f["path"] for split in manifest["splits"].values() for f in split["files"]["parquet"]]
    rows = pa.concat_tables([pq.read_table(f) for f in files]).sort_by(f"{ROW_ID}_xf")
    rows = rows.rename_columns([ROW_ID if n == f"{ROW_ID}_xf" else n for n in rows.schema.names])
    columns = {name: rows.column(name).to_numpy() for name in rows.schema.names}
    artifact = pathlib.Path(manifest["artifact"]["path"]) / "transform.json"
    fitted = json.loads(artifact.read_text())["fitted"]
    return columns, fitted


@pytest.fixture(scope="module")
def both(taxi_csv, tmp_path_factory):
    table = read_taxi(taxi_csv)
    reference = run_tf_transform(table, tmp_path_factory.mktemp("tft"))
    native, fitted = run_native(table, tmp_path_factory.mktemp("native"))
    return table, reference, native, fitted


def test_every_row_and_column_is_there(both):
    table, reference, native, _ = both
    assert table.num_rows == 15002
    assert len(reference[ROW_ID]) == table.num_rows
    np.testing.assert_array_equal(reference[ROW_ID], native[ROW_ID])
    expected = {f"{k}_xf" for k in DENSE_FLOAT + VOCAB + BUCKET + CATEGORICAL + ["tips"]}
    assert set(reference) - {ROW_ID} == expected
    assert expected <= set(native)


@pytest.mark.parametrize("key", VOCAB)
def test_vocabulary_ids_identical(both, key):
    _, reference, native, _ = both
    assert native[f"{key}_xf"].dtype == np.int64
    np.testing.assert_array_equal(native[f"{key}_xf"], reference[f"{key}_xf"])


@pytest.mark.parametrize("key", CATEGORICAL)
def test_passthroughs_identical(both, key):
    _, reference, native, _ = both
    np.testing.assert_array_equal(native[f"{key}_xf"], reference[f"{key}_xf"])


def test_labels_identical(both):
    _, reference, native, _ = both
    np.testing.assert_array_equal(native["tips_xf"], reference["tips_xf"])
    # The float32 comparison matters: in float64 some rows get the other label.
    table = both[0]
    fare = np.nan_to_num(table.column("fare").to_numpy(zero_copy_only=False).astype(np.float64))
    tips = np.nan_to_num(table.column("tips").to_numpy(zero_copy_only=False).astype(np.float64))
    assert ((tips > fare * 0.2).astype(np.int64) != reference["tips_xf"]).any()


@pytest.mark.parametrize("key", DENSE_FLOAT)
def test_z_scores_within_1_5e_5_or_two_float32_ulps(both, key):
    _, reference, native, _ = both
    ours, theirs = native[f"{key}_xf"], reference[f"{key}_xf"].astype(np.float32)
    assert ours.dtype == np.float32
    # beamforge's mean and variance are exact, rounded once; tf.Transform's are float32
    # reductions per batch (trip_miles' variance is 3 float32 ulps below the exact one),
    # which moves the largest z-scores (|z| ~ 112) by up to 2 ulps: 1.53e-5.
    allowed = np.maximum(1.5e-5, 2 * np.spacing(np.abs(theirs)))
    assert (np.abs(ours - theirs) <= allowed).all(), np.abs(ours - theirs).max()
    assert np.abs(ours - theirs).max() <= 1.53e-5


@pytest.mark.parametrize("key", BUCKET)
def test_bucket_numbers_identical(both, key):
    _, reference, native, _ = both
    # tf.Transform's quantiles are exact at this size (a few hundred distinct values), and so
    # are beamforge's, read with the same rule: every row gets the same bucket.
    np.testing.assert_array_equal(native[f"{key}_xf"], reference[f"{key}_xf"])
    assert len(np.unique(native[f"{key}_xf"])) == 10
