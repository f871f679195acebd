"""A local endpoint: one stable address in front of model servers, splitting traffic like Vertex.

A Vertex AI endpoint has deployed models and a traffic split (deployed model id ->
percentage); clients call the endpoint, never a model. This is the same on one machine: a small
process that forwards each predict request to one of its deployed servers, chosen at random by
the split, and whose split changes while it runs::

    POST {predict}  forwarded to a deployed server; the answer names it (x-deployed-model-id)
    GET  /health    200 once a split is set, else 503
    GET  /split     {"deployedModels": {id: url}, "trafficSplit": {id: percent}}
    PUT  /split     the same body: replaces both at once (percentages sum to 100)

    python -m launchers.serving.endpoint [--host H] [--port P]

A predict body over the servers' size limit (``BEAMFORGE_MAX_REQUEST_BYTES``, which the
endpoint reads from the same environment) is answered 413 here, unread, as a server would.
A server that refuses the connection (stopped a moment after the split left it) is skipped
and the request goes to another pick: nothing reached it, so the retry is safe for a POST. A
connection a retired server drops is retried the same way (predictions are pure functions of
the request); a server in the split that fails answers 502.
:func:`start_endpoint` runs the process, :func:`set_traffic` and :func:`traffic` talk to it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from launchers.serving.environment import (
    HEALTH_ROUTE,
    MAX_REQUEST_BYTES_ENV,
    PREDICT_ROUTE,
    ServerSetupError,
    max_request_bytes,
)
from launchers.serving.local import LocalServer, ServerError, free_port, is_healthy, stop_server

SPLIT_ROUTE = "/split"
DEPLOYED_MODEL_HEADER = "x-deployed-model-id"
# A refused connection is retried on a fresh pick at most this many times.
_ATTEMPTS = 5
_UPSTREAM_TIMEOUT = 60.0
# How long the rest of a refused body is read and discarded before the connection closes.
_LINGER_SECONDS = 2.0


def split_problem(deployed: Mapping[str, str], split: Mapping[str, int]) -> str | None:
    """What is wrong with a traffic split, or None (Vertex's rules: ids deployed, sum 100)."""
    unknown = sorted(set(split) - set(deployed))
    if unknown:
        return f"traffic split names {unknown[0]!r}, which is not deployed"
    for key, value in split.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            return f"traffic share of {key!r} must be an integer percentage, got {value!r}"
    if sum(split.values()) != 100:
        return f"traffic split must sum to 100, got {sum(split.values())}"
    for key, url in deployed.items():
        if not isinstance(url, str) or not url.startswith("http://"):
            return f"deployed model {key!r} needs an http:// URL, got {url!r}"
    return None


class Router:
    """The deployed servers and the split; a pick is one random draw weighted by the split."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.deployed: dict[str, str] = {}
        self.split: dict[str, int] = {}

    def update(self, deployed: Mapping[str, str], split: Mapping[str, int]) -> None:
        """Replaces the deployed servers and the split together.

        Raises:
            ValueError: for a split :func:`split_problem` refuses.
        """
        problem = split_problem(deployed, split)
        if problem is not None:
            raise ValueError(problem)
        with self._lock:
            self.deployed = dict(deployed)
            self.split = {k: v for k, v in split.items() if v > 0}

    def pick(self) -> tuple[str, str] | None:
        """A deployed (id, url) drawn by the split; None when nothing takes traffic."""
        with self._lock:
            if not self.split:
                return None
            ids = list(self.split)
            chosen = random.choices(ids, weights=[self.split[i] for i in ids])[0]
            return chosen, self.deployed[chosen]

    def retired(self, deployed_id: str) -> bool:
        """Whether a deployed server no longer takes traffic."""
        with self._lock:
            return deployed_id not in self.split

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"deployedModels": dict(self.deployed), "trafficSplit": dict(self.split)}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], predict_route: str, max_request_bytes: int
    ) -> None:
        super().__init__(address, _Handler)
        self.router = Router()
        self.predict_route = predict_route
        self.max_request_bytes = max_request_bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass  # one line per request would swamp the log

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._reply(status, json.dumps(data).encode())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _too_large(self) -> bool:
        """Answers 413 for a body over the servers' limit, unread (as the servers would).

        Forwarding it would end in a broken pipe: the server answers 413 and closes the
        connection before the body is sent.
        """
        limit = self.server.max_request_bytes
        length = self.headers.get("Content-Length")
        try:
            declared = int(length or 0)
        except ValueError:
            self.close_connection = True
            self._json(400, {"error": f"Content-Length {length!r} is not a number"})
            return True
        if declared <= limit:
            return False
        self.close_connection = True
        message = (
            f"the request body is {declared:,} bytes; this endpoint takes at most {limit:,} "
            f"bytes ({MAX_REQUEST_BYTES_ENV}, as its servers)"
        )
        self._reply(413, json.dumps({"error": message}).encode(), headers=[("Connection", "close")])
        self._linger(declared)
        return True

    def _linger(self, declared: int) -> None:
        # Closing with the body unread resets the connection, and a client still sending it
        # may lose the answer: the answer is finished, then what arrives is discarded for a
        # moment (at most the declared body) before the close.
        sock = self.connection
        deadline = time.monotonic() + _LINGER_SECONDS
        with contextlib.suppress(OSError):
            self.wfile.flush()
            sock.shutdown(socket.SHUT_WR)
            while declared > 0 and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = self.rfile.read1(min(declared, 1 << 16))
                if not chunk:
                    break
                declared -= len(chunk)

    def do_GET(self) -> None:
        if self.path == HEALTH_ROUTE:
            ready = self.server.router.pick() is not None
            self._json(200 if ready else 503, {"ready": ready})
        elif self.path == SPLIT_ROUTE:
            self._json(200, self.server.router.state())
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def do_PUT(self) -> None:
        body = self._body()
        if self.path != SPLIT_ROUTE:
            self._json(404, {"error": f"no route {self.path}"})
            return
        try:
            data = json.loads(body)
            self.server.router.update(data["deployedModels"], data["trafficSplit"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._json(400, {"error": f"bad split: {exc}"})
            return
        self._json(200, self.server.router.state())

    def do_POST(self) -> None:
        if self.path == self.server.predict_route and self._too_large():
            return
        body = self._body()
        if self.path != self.server.predict_route:
            self._json(404, {"error": f"no route {self.path}"})
            return
        forwarded = {
            k: v for k in ("Content-Type", "Accept") if (v := self.headers.get(k)) is not None
        }
        for _ in range(_ATTEMPTS):
            picked = self.server.router.pick()
            if picked is None:
                self._json(503, {"error": "no model is deployed to this endpoint"})
                return
            deployed_id, base = picked
            url = urllib.parse.urlsplit(base)
            connection = http.client.HTTPConnection(
                url.hostname or "127.0.0.1", url.port, timeout=_UPSTREAM_TIMEOUT
            )
            try:
                try:
                    connection.connect()
                except ConnectionRefusedError:
                    continue  # nothing was sent: another pick is safe
                connection.request("POST", self.server.predict_route, body, forwarded)
                answer = connection.getresponse()
                data = answer.read()
            except OSError as exc:
                if not self.server.router.retired(deployed_id):
                    self._json(502, {"error": f"deployed model {deployed_id} failed: {exc}"})
                    return
                # Its server was stopped under this request once the split left it (a
                # connection still in its listen queue is reset): another pick serves it.
                continue
            finally:
                connection.close()
            self._reply(
                answer.status,
                data,
                answer.getheader("Content-Type", "application/json"),
                [(DEPLOYED_MODEL_HEADER, deployed_id)],
            )
            return
        self._json(503, {"error": "no deployed model accepted the connection"})


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the endpoint in this process until it is terminated."""
    parser = argparse.ArgumentParser(
        prog="python -m launchers.serving.endpoint",
        description="A local endpoint splitting predict traffic between model servers.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--predict-route", default=PREDICT_ROUTE)
    args = parser.parse_args(argv)
    try:
        # The servers' limit, from the same environment they inherit.
        limit = max_request_bytes()
    except ServerSetupError as exc:
        parser.error(str(exc))
    server = _Server((args.host, args.port), args.predict_route, limit)
    print(f"endpoint at http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    return 0


def start_endpoint(
    *, log: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> LocalServer:
    """Starts an endpoint process (its own process group) and waits until it listens.

    Its health route answers 503 until :func:`set_traffic` gives it a split.

    Raises:
        ServerError: if it exits or does not listen within ``timeout``; it is stopped.
    """
    import os

    port = port or free_port(host)
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "launchers.serving.endpoint", "--host", host]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    endpoint = LocalServer(pid=process.pid, host=host, port=port, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"endpoint exited with code {process.returncode}; see {log}")
        try:
            traffic(endpoint, timeout=1.0)
            return endpoint
        except ServerError:
            time.sleep(0.05)
    stop_server(endpoint)
    raise ServerError(f"endpoint not listening after {timeout:g} s; see {log}")


def _call(endpoint: LocalServer, method: str, data: Any, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        endpoint.url + SPLIT_ROUTE,
        data=None if data is None else json.dumps(data).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ServerError(f"{endpoint.url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"{endpoint.url} cannot be reached: {exc}") from None


def traffic(endpoint: LocalServer, *, timeout: float = 5.0) -> dict[str, Any]:
    """The endpoint's deployed servers and split (``deployedModels``, ``trafficSplit``)."""
    return _call(endpoint, "GET", None, timeout)


def set_traffic(
    endpoint: LocalServer,
    deployed: Mapping[str, str],
    split: Mapping[str, int],
    *,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Replaces the endpoint's deployed servers (id -> base URL) and split (id -> percent).

    Raises:
        ServerError: if the endpoint refuses the split (400, why) or cannot be reached.
    """
    return _call(
        endpoint, "PUT", {"deployedModels": dict(deployed), "trafficSplit": split}, timeout
    )


def endpoint_healthy(endpoint: LocalServer) -> bool:
    """Whether the endpoint runs and routes traffic somewhere."""
    return is_healthy(endpoint)


__all__ = [
    "DEPLOYED_MODEL_HEADER",
    "SPLIT_ROUTE",
    "Router",
    "endpoint_healthy",
    "main",
    "set_traffic",
    "split_problem",
    "start_endpoint",
    "traffic",
]


if __name__ == "__main__":
    sys.exit(main())
