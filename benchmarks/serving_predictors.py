"""Predictors for :mod:`benchmarks.serving_latency`: the taxi predictor timed, and the same
model without preprocessing.

- :class:`TimedTaxiPredictor` is :class:`~examples.chicago_taxi.predictor.TaxiPredictor`
  answering with ``preprocess_s``, the seconds its ``preprocess`` took for the request;
- :class:`FeaturesPredictor` serves the same model on feature rows sent as they are (the
  transform artifact's output): what a request costs the server without preprocessing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from examples.chicago_taxi.predictor import TaxiPredictor


class TimedTaxiPredictor(TaxiPredictor):
    """The taxi predictor, reporting the time spent preprocessing each request."""

    def preprocess(self, prediction_input: Any) -> dict[str, Any]:
        """Raw instances -> features (as the taxi predictor), timed."""
        started = time.perf_counter()
        prepared = super().preprocess(prediction_input)
        prepared["preprocess_s"] = time.perf_counter() - started
        return prepared

    def postprocess(self, prediction_results: dict[str, Any]) -> dict[str, Any]:
        """The taxi predictor's predictions, with ``preprocess_s``."""
        response = super().postprocess(prediction_results)
        response["preprocess_s"] = prediction_results["preprocess_s"]
        return response


class FeaturesPredictor(TimedTaxiPredictor):
    """The same model on feature rows: instances are the features the model reads."""

    def preprocess(self, prediction_input: Any) -> dict[str, Any]:
        """Checks the body's shape and passes the feature rows on."""
        started = time.perf_counter()
        if not isinstance(prediction_input, Mapping) or not isinstance(
            prediction_input.get("instances"), list
        ):
            raise ValueError('the request body must be {"instances": [...]}')
        rows = prediction_input["instances"]
        if any(not isinstance(r, Mapping) for r in rows):
            raise ValueError("every instance must be a mapping of feature to value")
        return {
            "rows": rows,
            "return_features": False,
            "preprocess_s": time.perf_counter() - started,
        }
