"""The local prediction server's process, and a client for it.

:func:`start_server` runs the server (:mod:`launchers.serving.app`) in a subprocess of its
own process group and waits until its health route answers; :func:`stop_server` stops the
group; :func:`predict` sends it instances. No docker is involved.
"""

from __future__ import annotations

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

from launchers.serving.environment import HEALTH_ROUTE, PREDICT_ROUTE, server_env

_LOG = logging.getLogger(__name__)


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
