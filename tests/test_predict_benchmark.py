"""The batch scoring benchmark's NumPy loop computes the transform artifact's own features."""

from __future__ import annotations

import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import predict_vs_numpy
from benchmarks.competitors.numpy_taxi import read_taxi
from tests.conftest import TAXI_SAMPLE
from tests.test_predict import GOOD_ROWS, chain, model_dir  # noqa: F401
from transforms.core.artifact import read_artifact
from transforms.ops.registry import build_step
from transforms.serving.preprocessor import Preprocessor


def test_numpy_features_equal_the_preprocessors(model_dir: pathlib.Path) -> None:  # noqa: F811
    artifact = read_artifact(str(model_dir / "artifact"), build_step)
    table = read_taxi(str(TAXI_SAMPLE))
    ours = predict_vs_numpy.numpy_features(table, artifact)
    expected, errors = Preprocessor(artifact).transform_batch(table)
    assert errors == []
    features = [c for c in artifact.output_columns if c != "tips_xf"]
    for column in features:
        np.testing.assert_array_equal(
            np.asarray(ours[column]), expected.column(column).to_numpy(), err_msg=column
        )


def test_numpy_side_scores_like_beamforge_predict(
    model_dir: pathlib.Path,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    from beam_pipelines.predict import run_predict

    out = tmp_path / "numpy" / "predictions.parquet"
    assert predict_vs_numpy.numpy_side(model_dir, TAXI_SAMPLE, out) == GOOD_ROWS
    reference = pq.read_table(out).sort_by("line")
    result = run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(tmp_path / "beamforge"))
    (entry,) = result.manifest["predictions"]["files"]
    ours = pq.read_table(entry["path"]).drop_columns(["file"]).sort_by("line")
    agreement = predict_vs_numpy.agreement(ours, reference, "tips_xf")
    assert agreement == {
        "same_rows": True,
        "max_probability_difference": pytest.approx(0.0, abs=1e-12),
        "label_disagreements": 0,
        "ok": True,
    }
    assert reference.schema == pa.schema(
        [("line", pa.int64()), ("tips_xf", pa.int64()), ("probability", pa.float64())]
    )
