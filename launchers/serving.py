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
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

_LOG = logging.getLogger(__name__)

PREDICT_ROUTE = "/predict"
HEALTH_ROUTE = "/health"
# CPR's PredictionHandler, answering a request the predictor refuses with 400 (see below).
HANDLER_MODULE = "launchers.serving"
HANDLER_CLASS = "ClientErrorHandler"
MAX_REQUEST_BYTES_ENV = "BEAMFORGE_MAX_REQUEST_BYTES"
# Far above a real request (3,001 raw taxi trips are about 1.3 MB) and small enough that a
# runaway client cannot make the server buffer much.
DEFAULT_MAX_REQUEST_BYTES = 4 << 20


class ServerError(RuntimeError):
    """The local prediction server did not come up, or a request to it failed."""


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """A running local prediction server.

    Attributes:
        pid: Its process id (the leader of its own process group).
        host: The address it listens on.
        port: Its port.
        log: The file its output goes to.
        predict_route: Path of the predict route.
        health_route: Path of the health route.
    """

    pid: int
    host: str
    port: int
    log: str
    predict_route: str = PREDICT_ROUTE
    health_route: str = HEALTH_ROUTE

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def predict_url(self) -> str:
        return self.url + self.predict_route

    @property
    def health_url(self) -> str:
        return self.url + self.health_route

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalServer:
        return cls(**dict(data))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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


def is_healthy(server: LocalServer, *, timeout: float = 2.0) -> bool:
    """Whether the server answers its health route with 200."""
    try:
        with urllib.request.urlopen(server.health_url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers signal 0: ask the process table too.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    return True


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def start_server(
    model_dir: str,
    *,
    predictor: str,
    log: str,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 60.0,
    extra_env: Mapping[str, str] | None = None,
    max_request_bytes: int | None = None,
) -> LocalServer:
    """Starts the local prediction server in its own process group and waits until healthy.

    Args:
        model_dir: The model directory to serve.
        predictor: ``module:Class`` of the :class:`Predictor`.
        log: File for the server's output.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        timeout: Seconds to wait for the health route.
        extra_env: More environment for the server (e.g. ``PYTHONPATH``).
        max_request_bytes: Largest request body the server accepts (413 beyond); None: the
            environment's ``BEAMFORGE_MAX_REQUEST_BYTES``, else 4 MiB.

    Returns:
        The running server.

    Raises:
        ServerError: if the server exits or is not healthy within ``timeout`` (with its log
            tail); the process is stopped.
    """
    port = port or free_port(host)
    env = dict(os.environ)
    env.update(extra_env or {})
    env.update(server_env(model_dir, predictor, port, max_request_bytes=max_request_bytes))
    # The predictor module usually sits in the working tree, not in site-packages.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "launchers.serving", "--host", host],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = LocalServer(pid=process.pid, host=host, port=port, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(
                f"prediction server exited with code {process.returncode}; log tail:\n{_tail(log)}"
            )
        if is_healthy(server, timeout=1.0):
            _LOG.info("serving %s at %s (pid %d)", model_dir, server.url, server.pid)
            return server
        time.sleep(0.05)
    stop_server(server)
    raise ServerError(f"prediction server not healthy after {timeout:g} s; log tail:\n{_tail(log)}")


def stop_server(server: LocalServer, *, timeout: float = 10.0) -> bool:
    """Stops the server's process group (SIGTERM, then SIGKILL); False if it was not running."""
    if not _alive(server.pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(server.pid):
            _LOG.info("stopped prediction server pid %d", server.pid)
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    return True


def predict(
    url: str,
    instances: Sequence[Any],
    *,
    parameters: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> list[Any]:
    """Sends ``{"instances": ...}`` to a predict URL; returns the ``predictions``.

    Raises:
        ServerError: for a non-200 answer (with its body).
    """
    body: dict[str, Any] = {"instances": list(instances)}
    if parameters:
        body["parameters"] = dict(parameters)
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return list(json.loads(response.read())["predictions"])
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ServerError(f"{url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"{url} cannot be reached: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The server side (runs in the server process; imports CPR, FastAPI and the predictor lazily)


def request_problem(body: bytes) -> str | None:
    """What is wrong with a predict request body, or None if it is a Vertex predict request.

    A request is a JSON object ``{"instances": [...]}`` with optional ``"parameters": {...}``
    and nothing else (Vertex refuses unknown fields too). JSON's non-standard ``NaN`` and
    ``Infinity`` are refused: they are not JSON, and Vertex would not pass them on.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the request body is not UTF-8 text (byte {exc.start})"

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    try:
        data = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        return (
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        )
    except ValueError as exc:
        return f"the request body is not valid JSON: {exc}"
    except RecursionError:
        return "the request body is not valid JSON: it is nested too deeply"
    expected = 'expected {"instances": [...], "parameters": {...}}'
    if not isinstance(data, dict):
        return f"the request body is a JSON {_json_kind(data)}; {expected}"
    unknown = sorted(k for k in data if k not in ("instances", "parameters"))
    if unknown:
        return f"unknown key {unknown[0]!r} in the request body; {expected}"
    if "instances" not in data:
        return f'the request body has no "instances"; {expected}'
    if not isinstance(data["instances"], list):
        return f'"instances" is a JSON {_json_kind(data["instances"])}; expected a list'
    parameters = data.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        return f'"parameters" is a JSON {_json_kind(parameters)}; expected an object'
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class RequestGuard:
    """ASGI middleware in front of the CPR app: routes, methods, size, JSON shape.

    Everything a client can get wrong before the predictor sees the request is answered
    here with a 4xx and ``{"error": ...}``. A body is refused as soon as it is known to be
    too large: from its Content-Length, or while it streams in, never read to its end.
    Checked requests are passed on with their body replayed.

    Args:
        app: The ASGI app behind it.
        predict_route: Path of the predict route (POST).
        health_route: Path of the health route (GET).
        max_request_bytes: Largest body accepted.
    """

    def __init__(
        self, app: Any, *, predict_route: str, health_route: str, max_request_bytes: int
    ) -> None:
        self._app = app
        self._routes = {predict_route: "POST", health_route: "GET"}
        self._predict_route = predict_route
        self._limit = max_request_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path not in self._routes:
            routes = ", ".join(f"{m} {p}" for p, m in self._routes.items())
            await self._refuse(send, 404, f"no route {path}; the routes are {routes}")
            return
        allowed = self._routes[path]
        if method != allowed:
            await self._refuse(
                send,
                405,
                f"{path} takes {allowed}, not {method}",
                [(b"allow", allowed.encode())],
            )
            return
        if path != self._predict_route:
            await self._app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._refuse(send, 400, f"Content-Length {length.decode()!r} is not a number")
                return
            if declared > self._limit:
                await self._too_large(send, f"the request body is {declared:,} bytes")
                return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            shown = content_type.decode(errors="replace") or "missing"
            await self._refuse(send, 400, f"Content-Type must be application/json, got {shown}")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                await self._too_large(send, f"the request body is over {self._limit:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = request_problem(body)
        if problem is not None:
            await self._refuse(send, 400, problem)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self._app(scope, replay, send)

    async def _too_large(self, send: Any, what: str) -> None:
        # The rest of the body is never read: the connection is closed after the answer.
        await self._refuse(
            send,
            413,
            f"{what}; this server takes at most {self._limit:,} bytes "
            f"(--max-request-bytes / {MAX_REQUEST_BYTES_ENV})",
            [(b"connection", b"close")],
        )

    @staticmethod
    async def _refuse(
        send: Any, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        body = _error_body(message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _client_error_handler() -> type:
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
        __doc__ = _client_error_handler.__doc__

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


_HANDLERS: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # CPR finds its handler as getattr(import_module(HANDLER_MODULE), HANDLER_CLASS); the class
    # is built on that first lookup so that importing this module stays light for clients.
    if name == HANDLER_CLASS:
        if name not in _HANDLERS:
            _HANDLERS[name] = _client_error_handler()
        return _HANDLERS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    parser = argparse.ArgumentParser(description="Serve a model directory like Vertex AI does.")
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
        "launchers.serving:create_app",
        host=args.host,
        port=int(os.environ["AIP_HTTP_PORT"]),
        factory=True,
        workers=1,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
