"""Batch scoring: raw rows -> transform artifact -> model (Beam RunInference) -> predictions.

``run_predict(model_dir, inputs, output, ...)`` is what ``beamforge predict`` and a chain's
``predict`` step call. The model directory is the chain's train step output
(``model.joblib`` and ``artifact/``); inputs are read by the dataset job's readers, so bad rows
go to the error output the same way, and the run commits its output as dataset runs do.
"""

from beam_pipelines.predict.build import Predict, Preprocess, build
from beam_pipelines.predict.model import ModelBundle, ModelDirHandler, load_bundle
from beam_pipelines.predict.plan import (
    FORMATS,
    PredictInputError,
    PredictPlan,
    parse_bigquery,
    plan_predict,
)
from beam_pipelines.predict.run import PredictResult, run_predict

__all__ = [
    "FORMATS",
    "ModelBundle",
    "ModelDirHandler",
    "Predict",
    "PredictInputError",
    "PredictPlan",
    "PredictResult",
    "Preprocess",
    "build",
    "load_bundle",
    "parse_bigquery",
    "plan_predict",
    "run_predict",
]
