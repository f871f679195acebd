"""The prediction server's own metrics, counted in its ASGI layer and served as Prometheus text.

    GET /metrics  ->  text/plain; version=0.0.4

    beamforge_predict_requests_total{code="200"} 97
    beamforge_predict_requests_total{code="500"} 3
    beamforge_predict_latency_seconds_bucket{le="0.005"} 12
    ...
    beamforge_predict_latency_seconds_bucket{le="+Inf"} 100
    beamforge_predict_latency_seconds_sum 1.84
    beamforge_predict_latency_seconds_count 100

Every answer of the predict route is counted, the guard's 4xx included; the latency is from
the request's arrival to the end of its answer. Counting costs two clock reads, a dict update
and a bisection per request, all on the server's one event loop (no lock).

:func:`parse_metrics` reads the text back, and :class:`CanaryFigures` compares two readings
(the error rate: 5xx answers among all answers; the p99 latency as Prometheus'
``histogram_quantile`` computes it), which is how a canary is judged.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from launchers.serving.protocol import refuse

METRICS_ROUTE = "/metrics"
REQUESTS = "beamforge_predict_requests_total"
LATENCY = "beamforge_predict_latency_seconds"
# Prometheus' default buckets, with finer steps where a model server's answers fall.
BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServerMetrics:
    """ASGI middleware: counts the predict route's answers by status and their latency.

    It sits outermost, so it also answers ``GET /metrics`` before any other check (another
    method there gets 405, as on the guard's routes).

    Args:
        app: The ASGI app behind it (the request guard).
        predict_route: Path of the predict route.
    """

    def __init__(self, app: Any, *, predict_route: str) -> None:
        self._app = app
        self._predict_route = predict_route
        self.codes: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = scope["path"]
        if path == METRICS_ROUTE:
            if scope["method"] == "GET":
                await self._answer(send)
            else:
                await refuse(
                    send,
                    405,
                    f"{METRICS_ROUTE} takes GET, not {scope['method']}",
                    [(b"allow", b"GET")],
                )
            return
        if path != self._predict_route:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an app that raises before answering has failed the request

        async def counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, counted)
        finally:
            self.observe(status, time.perf_counter() - started)

    def observe(self, status: int, seconds: float) -> None:
        """Counts one answer."""
        self.codes[status] = self.codes.get(status, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def text(self) -> str:
        """The metrics in the Prometheus text format (0.0.4)."""
        lines = [
            f"# HELP {REQUESTS} Predict requests answered, by HTTP status code.",
            f"# TYPE {REQUESTS} counter",
        ]
        lines += [f'{REQUESTS}{{code="{c}"}} {n}' for c, n in sorted(self.codes.items())]
        lines += [
            f"# HELP {LATENCY} Predict request latency, arrival to the end of the answer.",
            f"# TYPE {LATENCY} histogram",
        ]
        total = 0
        for bound, count in zip((*BUCKETS, math.inf), self.buckets, strict=True):
            total += count
            lines.append(f'{LATENCY}_bucket{{le="{_bound(bound)}"}} {total}')
        lines.append(f"{LATENCY}_sum {self.latency_sum:.6f}")
        lines.append(f"{LATENCY}_count {total}")
        return "\n".join(lines) + "\n"

    async def _answer(self, send: Any) -> None:
        body = self.text().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


@dataclasses.dataclass(frozen=True)
class MetricsReading:
    """One reading of a server's metrics.

    Attributes:
        codes: Predict answers by HTTP status code.
        buckets: Cumulative latency histogram: (upper bound in seconds, answers at most that).
        latency_sum: Total latency, seconds.
    """

    codes: Mapping[int, int]
    buckets: Sequence[tuple[float, int]]
    latency_sum: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    @property
    def errors(self) -> int:
        """Answers that are the server's failures (5xx); a client's mistakes (4xx) are not."""
        return sum(n for c, n in self.codes.items() if c >= 500)


def parse_metrics(text: str) -> MetricsReading:
    """Reads the predict counters and latency histogram out of Prometheus text.

    Raises:
        ValueError: for a sample line that is not ``name{labels} value``.
    """
    codes: dict[int, int] = {}
    buckets: list[tuple[float, int]] = []
    latency_sum = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"not a Prometheus sample: {line!r}") from None
        label = dict(_labels(labels.rstrip("}")))
        if name == REQUESTS:
            codes[int(label["code"])] = int(number)
        elif name == f"{LATENCY}_bucket":
            bound = label["le"]
            buckets.append((math.inf if bound == "+Inf" else float(bound), int(number)))
        elif name == f"{LATENCY}_sum":
            latency_sum = number
    buckets.sort()
    return MetricsReading(codes=codes, buckets=buckets, latency_sum=latency_sum)


def _labels(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        pairs.append((key.strip(), value.strip().strip('"')))
    return pairs


def read_metrics(url: str, *, timeout: float = 5.0) -> MetricsReading:
    """GETs a server's ``/metrics`` (``url`` is the server's base URL) and parses it.

    Raises:
        OSError: if the server cannot be reached (urllib's URLError is one).
    """
    with urllib.request.urlopen(url.rstrip("/") + METRICS_ROUTE, timeout=timeout) as response:
        return parse_metrics(response.read().decode("utf-8"))


def quantile(q: float, buckets: Sequence[tuple[float, int]]) -> float:
    """The ``q`` quantile of a cumulative histogram, as Prometheus' ``histogram_quantile``.

    Linear within the bucket it falls in; in the ``+Inf`` bucket, the largest finite bound.
    NaN for an empty histogram.
    """
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower  # pragma: no cover - the last bucket holds every answer


@dataclasses.dataclass(frozen=True)
class CanaryFigures:
    """A canary's answers between two readings of its metrics.

    Attributes:
        requests: Predict answers.
        errors: 5xx answers among them.
        p99_ms: 99th percentile latency, milliseconds (NaN without requests).
    """

    requests: int
    errors: int
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def between(cls, before: MetricsReading, after: MetricsReading) -> CanaryFigures:
        """What the server answered after ``before`` up to ``after``."""
        earlier = dict(before.buckets)
        delta = [(bound, count - earlier.get(bound, 0)) for bound, count in after.buckets]
        return cls(
            requests=after.requests - before.requests,
            errors=after.errors - before.errors,
            p99_ms=quantile(0.99, delta) * 1000.0,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p99_ms": None if math.isnan(self.p99_ms) else round(self.p99_ms, 3),
        }


__all__ = [
    "BUCKETS",
    "METRICS_ROUTE",
    "CanaryFigures",
    "MetricsReading",
    "ServerMetrics",
    "parse_metrics",
    "quantile",
    "read_metrics",
]
