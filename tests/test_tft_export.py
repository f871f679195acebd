"""The tf.Transform example as the README runs it, and its export as a TFX trainer reads it.

``beamforge run examples/chicago_taxi/pipeline_tft.yaml`` runs from the repository root with
the installed ``beamforge`` script (whose path does not hold the current directory), and its
``transform_fn_dir`` is a complete ``TFTransformOutput`` directory: a trainer's serving
signature parses ``tf.Example`` requests with ``raw_feature_spec()`` (label removed, as TFX's
taxi trainer does) and applies ``transform_features_layer()``, which must give the rows the
pipeline wrote.
"""

from __future__ import annotations

import collections
import pathlib
import subprocess
import sys
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from tests.datasets import dataset_files, manifest_of, run_root

pytestmark = [pytest.mark.tft, pytest.mark.slow]

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "chicago_taxi"
SAMPLE = EXAMPLE / "data" / "sample.csv"
LABEL = "tips"


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("tft") / "dataset"
    script = pathlib.Path(sys.executable).parent / "beamforge"
    proc = subprocess.run(
        [
            str(script),
            "run",
            "examples/chicago_taxi/pipeline_tft.yaml",
            "--input",
            "examples/chicago_taxi/data/sample.csv",
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _examples(table: pa.Table, schema: dict[str, str]) -> list[bytes]:
    """One serialized tf.Example per row, a null cell left out (as a request would)."""
    import tensorflow as tf

    out = []
    for row in table.to_pylist():
        feature = {}
        for name, tp in schema.items():
            value = row[name]
            if value is None or name == LABEL:
                continue
            if tp == "string":
                feature[name] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[value.encode()])
                )
            elif tp == "int64":
                feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            else:
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        out.append(example.SerializeToString())
    return out


def _rows(columns: dict[str, Any], names: list[str]) -> collections.Counter:
    # Rounded so that float32 values computed by two graphs compare as equal; the data is
    # fixed, so a value on a rounding boundary would show on every run, not now and then.
    return collections.Counter(
        zip(*(tuple(round(float(v), 4) for v in columns[n]) for n in names), strict=True)
    )


def test_the_readme_command_runs_from_the_repository_root(output):
    manifest = manifest_of(output)
    assert manifest["counts"]["read"] == manifest["counts"]["total_written"] == 3001
    assert (run_root(output) / "artifact" / "transform_fn_dir" / "metadata").is_dir()


def test_raw_feature_spec_is_the_spec_the_transform_fn_takes(output):
    import tensorflow as tf
    import tensorflow_transform as tft

    schema = yaml.safe_load((EXAMPLE / "pipeline_tft.yaml").read_text())["source"]["schema"]
    transform_output = tft.TFTransformOutput(
        str(run_root(output) / "artifact" / "transform_fn_dir")
    )
    dtypes = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
    assert transform_output.raw_feature_spec() == {
        name: tf.io.VarLenFeature(dtypes[tp]) for name, tp in schema.items()
    }


def test_serving_signature_gives_the_rows_the_pipeline_wrote(output):
    import tensorflow as tf
    import tensorflow_transform as tft

    schema = yaml.safe_load((EXAMPLE / "pipeline_tft.yaml").read_text())["source"]["schema"]
    transform_output = tft.TFTransformOutput(
        str(run_root(output) / "artifact" / "transform_fn_dir")
    )
    # TFX's taxi trainer: parse requests with the raw spec minus the label, then the layer.
    raw_spec = transform_output.raw_feature_spec()
    raw_spec.pop(LABEL)
    layer = transform_output.transform_features_layer()
    table = pacsv.read_csv(SAMPLE)
    parsed = tf.io.parse_example(_examples(table, schema), raw_spec)
    served = {name: tensor.numpy() for name, tensor in layer(parsed).items()}

    written = pa.concat_tables(pq.read_table(p) for p in dataset_files(output))
    features = sorted(n for n in served if n != f"{LABEL}_xf")
    assert set(written.schema.names) == {*features, f"{LABEL}_xf"}
    assert f"{LABEL}_xf" not in served
    assert _rows(served, features) == _rows(
        {n: written.column(n).to_numpy() for n in features}, features
    )


def test_the_preprocessor_refuses_it_at_load_and_names_the_layer(output):
    from transforms.core.artifact import ArtifactError
    from transforms.serving import Preprocessor

    artifact = run_root(output) / "artifact"
    with pytest.raises(ArtifactError) as caught:
        Preprocessor.load(str(output))
    assert str(caught.value) == (
        f"{artifact}: fitted by preprocessing_fn "
        "'examples.chicago_taxi.taxi_preprocessing:preprocessing_fn' through tf.Transform; "
        "the Preprocessor replays native steps only: serve it with "
        f"tft.TFTransformOutput('{artifact}/transform_fn_dir').transform_features_layer()"
    )
