"""What the fake Google REST servers of the tests share: JSON in and out, a request log,
and a server thread that lives as long as a fixture."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, TypeVar


class RecordingServer(http.server.ThreadingHTTPServer):
    """An HTTP server on a free loopback port that records every request it gets."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """Reads JSON requests into the server's log and writes JSON replies."""

    server: RecordingServer

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self) -> tuple[str, str, Any]:
        """Logs the request; returns its path, query string and JSON body (None if empty)."""
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, path, body))
        return path, query, body


S = TypeVar("S", bound=RecordingServer)


def serving(server: S) -> Iterator[S]:
    """Runs ``server`` in a thread while the generator is suspended (a fixture body)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
