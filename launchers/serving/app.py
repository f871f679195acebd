"""The prediction server process: CPR's model server behind a :class:`RequestGuard`.

Runs as ``python -m launchers.serving``; imports CPR, FastAPI, uvicorn and the predictor only
when it starts (they take seconds to import, and only the server process needs them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from launchers.exit_codes import ExitCode
from launchers.serving.environment import (
    DEFAULT_MAX_REQUEST_BYTES,
    HANDLER_CLASS,
    HANDLER_MODULE,
    MAX_REQUEST_BYTES_ENV,
    max_request_bytes,
    server_env,
)
from launchers.serving.protocol import RequestGuard, request_problem

_LOG = logging.getLogger(__name__)


def client_error_handler() -> type:
    """CPR's PredictionHandler, telling a refused request from a failed prediction.

    The CPR handler answers 500 whatever the predictor raises. Here a ValueError from
    ``preprocess`` (the predictor's check of the request) is the client's: 400 with its
    message. Anything raised by ``predict`` or ``postprocess`` stays the server's: 500. Both
    answer ``{"error": ...}``. Built on first use: CPR imports take seconds, and only the
    server process needs them.
    """
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse, Response
    from google.cloud.aiplatform.prediction import handler_utils
    from google.cloud.aiplatform.prediction.handler import PredictionHandler
    from google.cloud.aiplatform.prediction.serializer import DefaultSerializer

    def error(status: int, message: Any) -> Response:
        return JSONResponse({"error": str(message)}, status_code=status)

    class ClientErrorHandler(PredictionHandler):  # type: ignore[misc]
        __doc__ = client_error_handler.__doc__

        async def handle(self, request: Any) -> Response:  # type: ignore[override]
            body = await request.body()
            problem = request_problem(body)
            if problem is not None:  # RequestGuard answers these first
                return error(400, problem)
            prediction_input = json.loads(body)
            predictor = self._predictor
            try:
                prepared = predictor.preprocess(prediction_input)
            except HTTPException as exc:
                return error(exc.status_code, exc.detail)
            except ValueError as exc:
                return error(400, f"the predictor refused the request: {exc}")
            try:
                results = predictor.postprocess(predictor.predict(prepared))
                accept = handler_utils.get_accept_from_headers(request.headers)
                data = DefaultSerializer.serialize(results, accept)
            except HTTPException as exc:
                return error(exc.status_code, exc.detail)
            except Exception as exc:
                _LOG.exception("prediction failed")
                return error(500, f"prediction failed: {type(exc).__name__}: {exc}")
            return Response(content=data, media_type=accept)

    return ClientErrorHandler


def create_app() -> RequestGuard:
    """The server app (a uvicorn factory): the CPR model server behind a :class:`RequestGuard`.

    Configured by the ``AIP_*``, ``HANDLER_*``, ``PREDICTOR_*`` and
    ``BEAMFORGE_MAX_REQUEST_BYTES`` environment; loads the model.
    """
    from google.cloud.aiplatform.prediction.model_server import CprModelServer

    limit = max_request_bytes()
    server = CprModelServer()
    return RequestGuard(
        server,
        predict_route=str(server.predict_route),
        health_route=str(server.health_route),
        max_request_bytes=limit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the model server in this process from the ``AIP_*`` environment."""
    parser = argparse.ArgumentParser(
        # The name its usage line has always shown: the server was launchers/serving.py.
        prog="serving.py",
        description="Serve a model directory like Vertex AI does.",
    )
    parser.add_argument("--model-dir", help="AIP_STORAGE_URI (default: from the environment)")
    parser.add_argument("--predictor", help="module:Class (default: from the environment)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="AIP_HTTP_PORT (default: from the environment)")
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        help=f"largest request body accepted, else 413 (default: {MAX_REQUEST_BYTES_ENV} or "
        f"{DEFAULT_MAX_REQUEST_BYTES:,})",
    )
    args = parser.parse_args(argv)
    if args.model_dir or args.predictor or args.port:
        env = server_env(
            args.model_dir or os.environ["AIP_STORAGE_URI"],
            args.predictor or f"{os.environ['PREDICTOR_MODULE']}:{os.environ['PREDICTOR_CLASS']}",
            args.port or int(os.environ["AIP_HTTP_PORT"]),
        )
        os.environ.update(env)
    if args.max_request_bytes is not None:
        if args.max_request_bytes < 1:
            parser.error(f"--max-request-bytes must be positive, got {args.max_request_bytes}")
        os.environ[MAX_REQUEST_BYTES_ENV] = str(args.max_request_bytes)
    max_request_bytes()  # a bad value in the environment fails here, before the model loads
    os.environ.setdefault("HANDLER_MODULE", HANDLER_MODULE)
    os.environ.setdefault("HANDLER_CLASS", HANDLER_CLASS)
    import uvicorn

    # One worker: the CPR default (one per core) is for a container with the machine to itself.
    uvicorn.run(
        "launchers.serving.app:create_app",
        host=args.host,
        port=int(os.environ["AIP_HTTP_PORT"]),
        factory=True,
        workers=1,
        log_level="warning",
    )
    return ExitCode.OK
