"""The tf.Transform backend: conversions, the transform, and the taxi example both ways.

The end-to-end tests run ``examples/chicago_taxi/pipeline_tft.yaml`` (TFX's taxi
``preprocessing_fn`` through tf.Transform) and ``pipeline.yaml`` (native steps) through
``run_job`` on the committed sample, with a row id column added to a copy of it so the two
datasets can be joined row by row, and compare them column by column.
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
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.dataset import plan, run_job
from beam_pipelines.spec import parse_spec
from examples.chicago_taxi import taxi_preprocessing as taxi
from tests.datasets import run_root
from transforms.core.artifact import read_artifact
from transforms.core.config import SpecError
from transforms.ops.registry import build_step
from transforms.tft import backend as tft_backend

pytestmark = [pytest.mark.tft, pytest.mark.slow]

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "chicago_taxi"
ROW_ID = "row_id"
FN_WITH_ROW_ID = "tests.test_tft_backend:taxi_with_row_id"


def taxi_with_row_id(inputs: dict[str, Any]) -> dict[str, Any]:
    """TFX's taxi preprocessing_fn, plus the row id passed through to join on."""
    outputs = taxi.preprocessing_fn(inputs)
    outputs[ROW_ID] = taxi.fill_in_missing(inputs[ROW_ID])
    return outputs


def small_fn(inputs: dict[str, Any]) -> dict[str, Any]:
    """A z-score, a vocabulary, a list output and a passthrough."""
    import tensorflow as tf
    import tensorflow_transform as tft

    x = taxi.fill_in_missing(inputs["x"])
    return {
        "x_z": tft.scale_to_z_score(x),
        "s_id": tft.compute_and_apply_vocabulary(taxi.fill_in_missing(inputs["s"])),
        "s_list": tf.RaggedTensor.from_sparse(inputs["s"]),
        "n": taxi.fill_in_missing(inputs["n"]),
    }


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE / name).read_text())


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
        parse_spec(native_spec), inputs=inputs, output=str(native_out)
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


# Spec and plan validation.


def _tft_spec(**transform: Any) -> dict[str, Any]:
    data = _yaml("pipeline_tft.yaml")
    data["transform"].update(transform)
    return data


@pytest.mark.parametrize(
    "reference", ["taxi_preprocessing", "a.b:", ":fn", "a b:fn", "a:b:c", "a.:fn", "1a:fn"]
)
def test_malformed_reference_is_a_spec_error(reference):
    with pytest.raises(SpecError) as info:
        parse_spec(_tft_spec(preprocessing_fn=reference))
    assert info.value.path.startswith("transform")
    assert "package.module:function" in info.value.problem


def test_features_and_preprocessing_fn_is_a_spec_error():
    data = _tft_spec()
    data["features"] = [{"op": "z_score", "column": "fare", "output": "fare_xf"}]
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.path == "transform.preprocessing_fn"
    assert "remove 'features'" in info.value.problem


def test_label_expression_with_preprocessing_fn_is_a_spec_error():
    data = _tft_spec()
    data["label"] = {"column": "big", "expr": "tips > 1", "type": "int64"}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.path == "label"


def test_valid_tft_spec_parses_with_no_feature_steps():
    spec = parse_spec(_tft_spec())
    assert spec.transform.preprocessing_fn == (
        "examples.chicago_taxi.taxi_preprocessing:preprocessing_fn"
    )
    assert spec.features == []
    assert [s.name for s in spec.steps] == ["fill_numbers", "fill_strings"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("examples.chicago_taxi.no_such_module:fn", "does not import"),
        ("examples.chicago_taxi.taxi_preprocessing:no_such_fn", "has no function"),
        ("examples.chicago_taxi.taxi_preprocessing:VOCAB_SIZE", "has no function"),
    ],
)
def test_unloadable_function_fails_the_plan(reference, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        plan(parse_spec(_tft_spec(preprocessing_fn=reference)), output=str(tmp_path))


def test_plan_traces_the_output_schema(tmp_path):
    the_plan = plan(parse_spec(_tft_spec()), output=str(tmp_path))
    expected = (
        [f"{k}_xf" for k in taxi.DENSE_FLOAT_FEATURE_KEYS]
        + [f"{k}_xf" for k in taxi.VOCAB_FEATURE_KEYS]
        + [f"{k}_xf" for k in taxi.BUCKET_FEATURE_KEYS]
        + [f"{k}_xf" for k in taxi.CATEGORICAL_FEATURE_KEYS]
        + ["tips_xf"]
    )
    assert the_plan.output_columns == expected
    types = {n: the_plan.output_schema.field(n).type for n in expected}
    assert types == {n: pa.float32() if i < 3 else pa.int64() for i, n in enumerate(expected)}


def test_label_not_an_output_fails_the_plan(tmp_path):
    data = _tft_spec()
    data["label"] = {"column": "tips"}
    with pytest.raises(ValueError, match="label column 'tips' is not an output"):
        plan(parse_spec(data), output=str(tmp_path))


def test_unknown_output_column_fails_the_plan(tmp_path):
    data = _tft_spec()
    data["output"]["columns"] = ["fare_xf", "fare"]
    with pytest.raises(ValueError, match=r"output.columns \['fare'\] are not outputs"):
        plan(parse_spec(data), output=str(tmp_path))


def test_artifact_with_preprocessing_fn_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"not supported with transform\.preprocessing_fn"):
        plan(parse_spec(_tft_spec()), output=str(tmp_path), artifact_dir=str(tmp_path))


# Pure functions, no pipeline.

SMALL = pa.schema(
    [
        pa.field("x", pa.float64()),
        pa.field("s", pa.string()),
        pa.field("n", pa.int32()),
        pa.field("__line", pa.int64()),
        pa.field("__split", pa.int32()),
    ]
)


def test_input_value_types_and_tft_schema():
    assert tft_backend.input_value_types(SMALL) == {
        "x": pa.float32(),
        "s": pa.binary(),
        "n": pa.int64(),
    }
    assert tft_backend.tft_arrow_schema(SMALL) == pa.schema(
        [
            pa.field("x", pa.list_(pa.float32())),
            pa.field("s", pa.list_(pa.binary())),
            pa.field("n", pa.list_(pa.int64())),
            pa.field("__line", pa.list_(pa.int64())),
            pa.field("__split", pa.list_(pa.int32())),
        ]
    )


def test_unsupported_input_type_names_the_column():
    schema = pa.schema([pa.field("when", pa.timestamp("s"))])
    with pytest.raises(ValueError, match="column 'when' has type timestamp"):
        tft_backend.input_value_types(schema)


def test_to_tft_batch_nulls_become_empty_lists():
    batch = pa.RecordBatch.from_pydict(
        {
            "x": [1.5, None, 3.0],
            "s": ["a", "b", None],
            "n": pa.array([None, 2, 3], pa.int32()),
            "__line": [2, 3, 4],
            "__split": pa.array([0, 1, 0], pa.int32()),
        },
        schema=SMALL,
    )
    out = tft_backend.to_tft_batch(batch, tft_backend.tft_arrow_schema(SMALL))
    assert out.to_pydict() == {
        "x": [[1.5], [], [3.0]],
        "s": [[b"a"], [b"b"], []],
        "n": [[], [2], [3]],
        "__line": [[2], [3], [4]],
        "__split": [[0], [1], [0]],
    }


def test_from_tft_batch_flattens_scalars_and_restores_hidden_columns():
    batch = pa.RecordBatch.from_pydict(
        {
            "z": pa.array([[0.5], [-0.5]], pa.large_list(pa.float32())),
            "v": pa.array([[1, 2], []], pa.large_list(pa.int64())),
            "__split": pa.array([[1], [0]], pa.list_(pa.int32())),
        }
    )
    outputs = pa.schema([pa.field("z", pa.float32()), pa.field("v", pa.list_(pa.int64()))])
    hidden = pa.schema([pa.field("__split", pa.int32())])
    out = tft_backend.from_tft_batch(batch, outputs, hidden)
    expected = pa.RecordBatch.from_pydict(
        {"z": [0.5, -0.5], "v": [[1, 2], []], "__split": [1, 0]},
        schema=pa.schema([*outputs, *hidden]),
    )
    assert out.equals(expected)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), max_size=30),
    st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=30),
)
def test_to_tft_batch_keeps_every_value_in_its_row(ints, texts):
    n = min(len(ints), len(texts))
    schema = pa.schema([pa.field("i", pa.int64()), pa.field("t", pa.string())])
    batch = pa.RecordBatch.from_pydict({"i": ints[:n], "t": texts[:n]}, schema=schema)
    out = tft_backend.to_tft_batch(batch, tft_backend.tft_arrow_schema(schema)).to_pydict()
    assert out["i"] == [[] if v is None else [v] for v in ints[:n]]
    assert out["t"] == [[] if v is None else [v.encode()] for v in texts[:n]]


def test_output_schema_scalars_lists_and_order():
    outputs = tft_backend.output_schema(small_fn, SMALL)
    assert outputs == pa.schema(
        [
            pa.field("x_z", pa.float32()),
            pa.field("s_id", pa.int64()),
            pa.field("s_list", pa.list_(pa.string())),
            pa.field("n", pa.int64()),
        ]
    )


def test_output_named_like_a_hidden_column_is_refused():
    def fn(inputs):
        return {"__split": taxi.fill_in_missing(inputs["n"])}

    with pytest.raises(ValueError, match="'__split' starts with '__'"):
        tft_backend.output_schema(fn, SMALL)


def test_load_preprocessing_fn():
    assert tft_backend.load_preprocessing_fn(FN_WITH_ROW_ID) is taxi_with_row_id
    with pytest.raises(ValueError, match=r"must be 'package\.module:function'"):
        tft_backend.load_preprocessing_fn("no_colon")


# The transform on a pipeline.


def test_analyze_and_transform_whole_output(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    rows = {
        "x": [1.0, 2.0, None, 3.0],
        "s": ["a", "b", "a", None],
        "n": pa.array([7, None, 9, 10], pa.int32()),
        "__line": [2, 3, 4, 5],
        "__split": pa.array([0, 1, 0, 0], pa.int32()),
    }
    batch = pa.RecordBatch.from_pydict(rows, schema=SMALL)
    outputs = tft_backend.output_schema(small_fn, SMALL)

    def plain(out: pa.RecordBatch) -> list[tuple]:
        return [
            (round(r["x_z"], 4), r["s_id"], tuple(r["s_list"]), r["n"], r["__line"], r["__split"])
            for r in out.to_pylist()
        ]

    with TestPipeline(runner="DirectRunner") as p:
        run = tft_backend.AnalyzeAndTransform(
            preprocessing_fn=small_fn,
            schema=SMALL,
            outputs=outputs,
            transform_fn_dir=str(tmp_path / "transform_fn_dir"),
            temp_dir=str(tmp_path / "tmp"),
            fit_column="__split",
            fit_value=0,
        )
        out = p | beam.Create([batch.slice(0, 2), batch.slice(2)]) | run
        assert_that(out | beam.FlatMap(plain), equal_to(_expected_small()), label="rows")
        assert_that(
            out | beam.Map(lambda b: b.schema),
            equal_to([outputs.append(SMALL.field("__line")).append(SMALL.field("__split"))] * 2),
            label="schemas",
        )
        assert_that(run.written, equal_to([str(tmp_path / "transform_fn_dir")]), label="written")
    assert not (tmp_path / "tmp").exists()
    assert (tmp_path / "transform_fn_dir" / "transform_fn" / "saved_model.pb").exists()


def _expected_small() -> list[tuple]:
    # Fitted on split 0 only: x in {1, 0 (filled), 3}, s in {a, a, ''}.
    x = np.array([1.0, 0.0, 3.0], np.float32)
    z = lambda v: round(float((np.float32(v) - x.mean()) / x.std()), 4)  # noqa: E731
    # tf.Transform leaves the empty string out of vocabularies: a=0; b and '' get -1.
    return [
        (z(1.0), 0, ("a",), 7, 2, 0),
        (z(2.0), -1, ("b",), 0, 3, 1),
        (z(0.0), 0, ("a",), 9, 4, 0),
        (z(3.0), -1, (), 10, 5, 0),
    ]


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
