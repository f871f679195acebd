"""A Vertex AI Custom Prediction Routine predictor for the taxi model.

It serves raw taxi trips: each instance is a row as it appears in the source CSV (a mapping
of column to value; missing or null keys are missing values). The dataset run's transform
artifact turns instances into exactly the features the model was trained on, then the model
predicts. The model directory (``AIP_STORAGE_URI``) holds::

    model.joblib     {"model": fitted classifier, "features": [...], "label": "tips_xf"}
    metrics.json     the trainer's metrics
    artifact/        the dataset run's transform artifact (transform.json, vocabularies/)

The same class runs in the local prediction server (``launchers.serving``) and, built into a
CPR container, on a Vertex AI endpoint.

Request:  ``{"instances": [{...raw trip...}], "parameters": {"return_features": true}}``
Response: ``{"predictions": [{"tips_xf": 1, "probability": 0.83}, ...]}``; an instance the
artifact rejects gets ``{"error": {"reason": ..., "message": ...}}`` in its place. With
``return_features`` (a JSON boolean) each prediction also carries the ``features`` the model
saw. Another parameter, or a ``return_features`` that is not a boolean, is refused (400).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import joblib
import numpy as np
from google.cloud.aiplatform.prediction.predictor import Predictor

from transforms.serving.preprocessor import Preprocessor

MODEL_FILE = "model.joblib"
ARTIFACT_DIR = "artifact"


class TaxiPredictor(Predictor):
    """Raw instances -> transform artifact -> scikit-learn model -> predictions."""

    def __init__(self) -> None:
        self._model: Any = None
        self._features: list[str] = []
        self._label = ""
        self._preprocessor: Preprocessor | None = None

    def load(self, artifacts_uri: str, **kwargs: Any) -> None:
        """Loads the model and the transform artifact from ``AIP_STORAGE_URI``."""
        directory = artifacts_uri
        if artifacts_uri.startswith("gs://"):
            from google.cloud.aiplatform.utils import prediction_utils

            # The CPR helper downloads into the working directory.
            directory = tempfile.mkdtemp(prefix="model-")
            previous = os.getcwd()
            os.chdir(directory)
            try:
                prediction_utils.download_model_artifacts(artifacts_uri)
            finally:
                os.chdir(previous)
        with open(os.path.join(directory, MODEL_FILE), "rb") as f:
            bundle = joblib.load(io.BytesIO(f.read()))
        self._model = bundle["model"]
        self._features = list(bundle["features"])
        self._label = str(bundle["label"])
        self._preprocessor = Preprocessor.load(os.path.join(directory, ARTIFACT_DIR))

    def preprocess(self, prediction_input: Any) -> dict[str, Any]:
        """Applies the transform artifact to the request's raw instances."""
        assert self._preprocessor is not None, "load() first"
        if not isinstance(prediction_input, Mapping) or not isinstance(
            prediction_input.get("instances"), list
        ):
            raise ValueError('the request body must be {"instances": [...]}')
        instances = prediction_input["instances"]
        return_features = request_parameters(prediction_input.get("parameters"))
        return {
            "rows": transform_instances(self._preprocessor, instances),
            "return_features": return_features,
        }

    def predict(self, instances: dict[str, Any]) -> dict[str, Any]:
        """Predicts the positive-class probability for every instance that transformed."""
        rows = instances["rows"]
        good = [r for r in rows if "error" not in r]
        probabilities: list[float] = []
        if good:
            x = np.array([[row[c] for c in self._features] for row in good], dtype=np.float64)
            probabilities = self._model.predict_proba(x)[:, 1].tolist()
        return {**instances, "probabilities": probabilities}

    def postprocess(self, prediction_results: dict[str, Any]) -> dict[str, Any]:
        """One prediction per instance, in request order."""
        probabilities = iter(prediction_results["probabilities"])
        predictions: list[dict[str, Any]] = []
        for row in prediction_results["rows"]:
            if "error" in row:
                predictions.append(row)
                continue
            p = next(probabilities)
            prediction: dict[str, Any] = {self._label: int(p >= 0.5), "probability": p}
            if prediction_results["return_features"]:
                prediction["features"] = row
            predictions.append(prediction)
        return {"predictions": predictions}


PARAMETERS = ("return_features",)


def request_parameters(parameters: Any) -> bool:
    """``return_features`` from a request's ``parameters`` (absent or null: none given).

    Raises:
        ValueError: for parameters that are not an object, a key this predictor does not
            know (a typo would otherwise pass unnoticed), or a ``return_features`` that is
            not a JSON boolean (the string ``"false"`` must not turn features on).
    """
    if parameters is None:
        return False
    if not isinstance(parameters, Mapping):
        raise ValueError('"parameters" must be an object')
    unknown = sorted(str(key) for key in parameters if key not in PARAMETERS)
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r}; the parameters are: {', '.join(PARAMETERS)}"
        )
    value = parameters.get("return_features", False)
    if not isinstance(value, bool):
        raise ValueError(f'parameter "return_features" must be true or false, got {value!r}')
    return value


def transform_instances(
    preprocessor: Preprocessor, instances: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Features for each instance, or ``{"error": {...}}`` where the artifact rejects it.

    The whole request is transformed at once; the preprocessor says which instance each
    output row and error is, so a rejected instance costs nothing extra.
    """
    if any(not isinstance(i, Mapping) for i in instances):
        raise ValueError("every instance must be a mapping of column to value")
    served = preprocessor.transform_instances(instances)
    if not served.errors and len(served.rows) == len(instances):
        return served.rows
    out: list[dict[str, Any] | None] = [None] * len(instances)
    for index, row in zip(served.row_index, served.rows, strict=True):
        out[index] = row
    for index, error in zip(served.error_index, served.errors, strict=True):
        out[index] = {"error": {"reason": error.reason, "message": error.message}}
    # Neither a row nor an error: a filter step dropped it on purpose.
    return [
        o
        if o is not None
        else {"error": {"reason": "dropped", "message": "dropped by a filter step"}}
        for o in out
    ]
