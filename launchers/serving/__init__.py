"""The local prediction server: Vertex AI's Custom Prediction Routine server, on this machine.

A model directory (``model.joblib``, ``artifact/``, ...) is served by the CPR model server
app from ``google.cloud.aiplatform.prediction`` with a given :class:`Predictor` class, in a
subprocess, speaking Vertex's protocol::

    POST {predict_route}  {"instances": [...], "parameters": {...}} -> {"predictions": [...]}
    GET  {health_route}   200 when the model is loaded

configured by the same environment a Vertex endpoint sets (``AIP_HTTP_PORT``,
``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``, ``AIP_STORAGE_URI``), so the predictor that
serves here ships unchanged to a Vertex endpoint. No docker is involved.

    python -m launchers.serving --model-dir DIR --predictor module:Class [--port P]
                                [--max-request-bytes N]

A client's mistake is answered with a 4xx status and ``{"error": "<reason>"}``, never a 500:

- 400: the body is not JSON, not ``{"instances": [...], "parameters": {...}}``, or the
  predictor's ``preprocess`` refuses it with a ValueError (``{"instances": [1]}``); the
  Content-Type is not ``application/json``;
- 413: the body is larger than ``--max-request-bytes`` (``BEAMFORGE_MAX_REQUEST_BYTES``;
  default 4 MiB); it is refused from its Content-Length, or once that many bytes arrived,
  without reading the rest;
- 404: an unknown route; 405: a route with the wrong method.

A bad value in one instance is not a request error: the predictor answers that instance with
an ``{"error": ...}`` entry and the others normally. An exception in ``predict`` or
``postprocess`` is the server's fault: 500, ``{"error": ...}``, logged with its traceback.

Modules: :mod:`~launchers.serving.environment` (the ``AIP_*`` environment),
:mod:`~launchers.serving.local` (the server's process and a client),
:mod:`~launchers.serving.protocol` (the request checks and :class:`RequestGuard`),
:mod:`~launchers.serving.metrics` (the server's own ``GET /metrics``, and reading them back),
:mod:`~launchers.serving.endpoint` (a local endpoint splitting traffic between servers),
:mod:`~launchers.serving.app` (the server process itself).
"""

from __future__ import annotations

from typing import Any

from launchers.serving.app import create_app, main
from launchers.serving.environment import (
    DEFAULT_MAX_REQUEST_BYTES,
    HANDLER_CLASS,
    HANDLER_MODULE,
    HEALTH_ROUTE,
    MAX_REQUEST_BYTES_ENV,
    PREDICT_ROUTE,
    max_request_bytes,
    server_env,
)
from launchers.serving.local import (
    LocalServer,
    ServerError,
    free_port,
    is_healthy,
    predict,
    start_server,
    stop_server,
)
from launchers.serving.protocol import RequestGuard, request_problem

_HANDLERS: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # CPR finds its handler as getattr(import_module(HANDLER_MODULE), HANDLER_CLASS); the class
    # is built on that first lookup so that importing this package stays light for clients.
    if name == HANDLER_CLASS:
        if name not in _HANDLERS:
            from launchers.serving.app import client_error_handler

            _HANDLERS[name] = client_error_handler()
        return _HANDLERS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "HANDLER_CLASS",
    "HANDLER_MODULE",
    "HEALTH_ROUTE",
    "MAX_REQUEST_BYTES_ENV",
    "PREDICT_ROUTE",
    "LocalServer",
    "RequestGuard",
    "ServerError",
    "create_app",
    "free_port",
    "is_healthy",
    "main",
    "max_request_bytes",
    "predict",
    "request_problem",
    "server_env",
    "start_server",
    "stop_server",
]
