"""A stand-in predictor for canary tests: no model to train, a scripted failure share.

The model directory holds ``behaviour.json``: ``{"version": NAME, "fail_every": N}``. Each
prediction answers ``{"version": NAME, "x": x}`` per instance; every Nth predict request
(counted in the server) raises, which the server answers with 500.
"""

from __future__ import annotations

import json
import os
from typing import Any

from google.cloud.aiplatform.prediction.predictor import Predictor


class ScriptedPredictor(Predictor):  # type: ignore[misc]
    """Answers with its version; fails every ``fail_every``-th request (0: never)."""

    def __init__(self) -> None:
        self._version = ""
        self._fail_every = 0
        self._requests = 0

    def load(self, artifacts_uri: str, **kwargs: Any) -> None:
        with open(os.path.join(artifacts_uri, "behaviour.json"), encoding="utf-8") as f:
            behaviour = json.load(f)
        self._version = str(behaviour["version"])
        self._fail_every = int(behaviour.get("fail_every", 0))

    def preprocess(self, prediction_input: Any) -> Any:
        return prediction_input["instances"]

    def predict(self, instances: Any) -> Any:
        self._requests += 1
        if self._fail_every and self._requests % self._fail_every == 0:
            raise RuntimeError(f"scripted failure of request {self._requests}")
        return [{"version": self._version, "x": x} for x in instances]

    def postprocess(self, prediction_results: Any) -> Any:
        return {"predictions": prediction_results}


def write_model(directory: str, version: str, fail_every: int = 0) -> str:
    """A model directory the predictor loads."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "behaviour.json"), "w", encoding="utf-8") as f:
        json.dump({"version": version, "fail_every": fail_every}, f)
    return directory
