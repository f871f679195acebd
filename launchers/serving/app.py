"""The prediction server process: CPR's model server behind a :class:`RequestGuard`.

Runs as ``python -m launchers.serving``; imports CPR, FastAPI, uvicorn and the predictor only
when it starts (they take seconds to import, and only the server process needs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error
from launchers.serving.environment import (
    DEFAULT_MAX_REQUEST_BYTES,
    HEALTH_ROUTE,
    MAX_REQUEST_BYTES_ENV,
    PREDICT_ROUTE,
    ServerSetupError,
    max_request_bytes,
    port_setting,
    predictor_class,
    predictor_setting,
    server_env,
    setting,
)
from launchers.serving.metrics import METRICS_ROUTE, ServerMetrics
from launchers.serving.protocol import RequestGuard, request_problem
from launchers.serving.request_log import (
    REQUEST_LOG_ENV,
    REQUEST_LOG_SAMPLE_ENV,
    RequestLog,
    RequestLogging,
    RequestLogSettings,
    open_request_log,
)

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


def create_app(request_log: RequestLog | None = None) -> ServerMetrics:
    """The server app (a uvicorn factory): the CPR model server behind a :class:`RequestGuard`.

    Outermost, :class:`~launchers.serving.metrics.ServerMetrics` counts the predict answers
    and serves them at ``GET /metrics``. Configured by the ``AIP_*``, ``HANDLER_*``, ``PREDICTOR_*`` and
    ``BEAMFORGE_MAX_REQUEST_BYTES`` environment; loads the model. With ``request_log``,
    predict requests get an id and the sampled ones are logged
    (:class:`~launchers.serving.request_log.RequestLogging`).
    """
    from google.cloud.aiplatform.prediction.model_server import CprModelServer

    limit = max_request_bytes()
    server = CprModelServer()
    app: Any = server
    if request_log is not None:
        app = RequestLogging(server, log=request_log, predict_route=str(server.predict_route))
    guard = RequestGuard(
        app,
        predict_route=str(server.predict_route),
        health_route=str(server.health_route),
        max_request_bytes=limit,
        other_routes={METRICS_ROUTE: "GET"},
    )
    return ServerMetrics(guard, predict_route=str(server.predict_route))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launchers.serving",
        description="Serve a model directory like Vertex AI does. Each flag overrides the "
        "environment variable a Vertex endpoint sets for its container.",
    )
    parser.add_argument(
        "--model-dir",
        metavar="DIR",
        help="the model directory to serve (model.joblib, artifact/, ...); overrides "
        "AIP_STORAGE_URI",
    )
    parser.add_argument(
        "--predictor",
        metavar="MODULE:CLASS",
        help="the Predictor class that loads the model and answers requests, e.g. "
        "examples.chicago_taxi.predictor:TaxiPredictor; overrides PREDICTOR_MODULE and "
        "PREDICTOR_CLASS",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        help="the port to listen on, 0 for any free one (printed at start); overrides "
        "AIP_HTTP_PORT",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        metavar="N",
        help=f"the largest request body accepted, else 413; overrides {MAX_REQUEST_BYTES_ENV} "
        f"(default: {DEFAULT_MAX_REQUEST_BYTES:,})",
    )
    parser.add_argument(
        "--request-log",
        metavar="DIR|bq://PROJECT.DATASET.TABLE",
        help=f"log sampled predict requests to JSONL files in DIR or to a BigQuery table; "
        f"overrides {REQUEST_LOG_ENV} (default: no log)",
    )
    parser.add_argument(
        "--request-log-sample",
        type=float,
        metavar="RATE",
        help=f"the fraction of requests logged, 0 to 1, decided by request id; overrides "
        f"{REQUEST_LOG_SAMPLE_ENV} (default: 1)",
    )
    return parser


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), as uvicorn would bind it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening from here: a client that connects once the address is printed waits in
        # the backlog until the server's loop accepts, instead of being refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServerSetupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the model server in this process, configured by flags over the ``AIP_*`` environment.

    A setting that is missing or unusable (the model directory, the predictor, the port) is
    printed as one line, ``error: <message>``, and returns :attr:`ExitCode.USER_ERROR`.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.max_request_bytes is not None and args.max_request_bytes < 1:
        parser.error(f"--max-request-bytes must be positive, got {args.max_request_bytes}")
    sock = None
    request_log = None
    try:
        model_dir = setting(args.model_dir, "--model-dir", "AIP_STORAGE_URI")
        predictor, source = predictor_setting(args.predictor)
        port = port_setting(args.port)
        if args.max_request_bytes is not None:
            os.environ[MAX_REQUEST_BYTES_ENV] = str(args.max_request_bytes)
        max_request_bytes()  # a bad value in the environment fails here, before the model loads
        logging_settings = RequestLogSettings.from_environment(
            os.environ, sink=args.request_log, sample=args.request_log_sample
        )
        predictor_class(predictor, source)
        # Bound before the model loads: a busy port fails at once, and port 0 becomes a real
        # one, which the environment then holds as Vertex's would.
        sock = _listen(args.host, port)
        port = sock.getsockname()[1]
        _set_environment(model_dir, predictor, port)
        if logging_settings is not None:
            request_log = open_request_log(logging_settings, model_dir, os.environ)
        app = _load(predictor, model_dir, request_log)
    except ServerSetupError as exc:
        if sock is not None:
            sock.close()
        if request_log is not None:
            request_log.close()
        return error(exc)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {model_dir} at http://{host}:{port}", file=sys.stderr, flush=True)
    import uvicorn

    # One worker: the CPR default (one per core) is for a container with the machine to itself.
    config = uvicorn.Config(app, host=args.host, port=port, workers=1, log_level="warning")
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if request_log is not None and not request_log.closed:  # else closed with the lifespan
        request_log.close()
        print(request_log.summary(), file=sys.stderr, flush=True)
    return ExitCode.OK if server.started else ExitCode.FAILED


def _set_environment(model_dir: str, predictor: str, port: int) -> None:
    """Puts the settings into the environment CPR reads, as a Vertex endpoint does."""
    env = server_env(
        model_dir,
        predictor,
        port,
        # A Vertex endpoint sets its routes; locally they are the defaults.
        predict_route=os.environ.get("AIP_PREDICT_ROUTE", PREDICT_ROUTE),
        health_route=os.environ.get("AIP_HEALTH_ROUTE", HEALTH_ROUTE),
    )
    # A container may name its own handler: a set HANDLER_* stays.
    for key in ("HANDLER_MODULE", "HANDLER_CLASS"):
        if os.environ.get(key):
            del env[key]
    os.environ.update(env)


def _load(predictor: str, model_dir: str, request_log: RequestLog | None) -> ServerMetrics:
    """The app with its model loaded; a model the predictor cannot load is a setup error."""
    from transforms.core.artifact import ArtifactError
    from transforms.core.errors import InputError

    try:
        return create_app(request_log)
    except (OSError, ArtifactError, InputError) as exc:
        # Raised by the predictor's load(); its type says what went wrong (FileNotFoundError).
        raise ServerSetupError(
            f"{predictor} cannot load the model in {model_dir}: {type(exc).__name__}: {exc}"
        ) from None
