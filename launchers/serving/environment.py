"""The environment of a prediction server: what Vertex AI gives a Custom Prediction Routine.

The local server is configured exactly as a Vertex endpoint configures its container
(``AIP_HTTP_PORT``, ``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``, ``AIP_STORAGE_URI``, CPR's
``HANDLER_*`` and ``PREDICTOR_*``), plus this project's request size limit
(``BEAMFORGE_MAX_REQUEST_BYTES``).
"""

from __future__ import annotations

import os
from typing import Any

PREDICT_ROUTE = "/predict"
HEALTH_ROUTE = "/health"
# CPR's PredictionHandler, answering a request the predictor refuses with 400
# (launchers.serving.app builds it; the package hands it to CPR by this name).
HANDLER_MODULE = "launchers.serving"
HANDLER_CLASS = "ClientErrorHandler"
MAX_REQUEST_BYTES_ENV = "BEAMFORGE_MAX_REQUEST_BYTES"
# Far above a real request (3,001 raw taxi trips are about 1.3 MB) and small enough that a
# runaway client cannot make the server buffer much.
DEFAULT_MAX_REQUEST_BYTES = 4 << 20


def server_env(
    model_dir: str,
    predictor: str,
    port: int,
    *,
    predict_route: str = PREDICT_ROUTE,
    health_route: str = HEALTH_ROUTE,
    max_request_bytes: int | None = None,
) -> dict[str, str]:
    """The environment Vertex gives a CPR container, for ``model_dir`` and ``predictor``.

    Args:
        model_dir: The model directory (``AIP_STORAGE_URI``).
        predictor: ``module:Class`` of the :class:`Predictor`.
        port: ``AIP_HTTP_PORT``.
        predict_route: ``AIP_PREDICT_ROUTE``.
        health_route: ``AIP_HEALTH_ROUTE``.
        max_request_bytes: Largest request body accepted (``BEAMFORGE_MAX_REQUEST_BYTES``);
            None leaves the server's default.
    """
    module, _, cls = predictor.partition(":")
    if not module or not cls:
        raise ValueError(f"predictor must be 'module:Class', got {predictor!r}")
    env = {
        "AIP_STORAGE_URI": model_dir,
        "AIP_HTTP_PORT": str(port),
        "AIP_PREDICT_ROUTE": predict_route,
        "AIP_HEALTH_ROUTE": health_route,
        "HANDLER_MODULE": HANDLER_MODULE,
        "HANDLER_CLASS": HANDLER_CLASS,
        "PREDICTOR_MODULE": module,
        "PREDICTOR_CLASS": cls,
    }
    if max_request_bytes is not None:
        env[MAX_REQUEST_BYTES_ENV] = str(_positive(max_request_bytes, "max_request_bytes"))
    return env


def _positive(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return number


def max_request_bytes() -> int:
    """The request size limit from the environment (``BEAMFORGE_MAX_REQUEST_BYTES``).

    Raises:
        ValueError: if the variable is set to anything but a positive integer.
    """
    raw = os.environ.get(MAX_REQUEST_BYTES_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_REQUEST_BYTES
    return _positive(raw, MAX_REQUEST_BYTES_ENV)
