"""Vertex's prediction protocol, and the guard that answers a client's mistakes with a 4xx.

    POST {predict_route}  {"instances": [...], "parameters": {...}} -> {"predictions": [...]}
    GET  {health_route}   200 when the model is loaded

A refused request is answered ``{"error": "<reason>"}`` with 400 (not JSON, not that shape,
not ``application/json``), 413 (too large), 404 (unknown route) or 405 (wrong method).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from launchers.serving.environment import MAX_REQUEST_BYTES_ENV


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


def error_body(message: str) -> bytes:
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
        other_routes: Routes answered in front of the guard (path -> method), named in its
            404 answers only.
    """

    def __init__(
        self,
        app: Any,
        *,
        predict_route: str,
        health_route: str,
        max_request_bytes: int,
        other_routes: Mapping[str, str] | None = None,
    ) -> None:
        self._app = app
        self._routes = {predict_route: "POST", health_route: "GET"}
        self._listed = {**self._routes, **(other_routes or {})}
        self._predict_route = predict_route
        self._limit = max_request_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path not in self._routes:
            routes = ", ".join(f"{m} {p}" for p, m in self._listed.items())
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
        await refuse(send, status, message, headers)


async def refuse(
    send: Any, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answers an ASGI request with ``status`` and ``{"error": message}``."""
    body = error_body(message)
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
