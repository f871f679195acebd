"""The canary's pieces without processes: server metrics, their reading, the verdict, the split."""

from __future__ import annotations

import asyncio
import math
import pathlib
import time
from typing import Any

import pytest
import yaml

from launchers import chain as chains
from launchers.chain.canary import judge, watch
from launchers.chain.spec import CanarySetting
from launchers.serving.endpoint import Router, split_problem
from launchers.serving.metrics import (
    BUCKETS,
    CanaryFigures,
    MetricsReading,
    ServerMetrics,
    parse_metrics,
    quantile,
)
from tests.conftest import REPO
from tests.fake_clock import FakeClock


def _call(app: Any, path: str, method: str = "POST") -> tuple[int, bytes]:
    """One request through an ASGI app; its status and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method, "headers": []}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def _answering(status: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if status == 0:
            raise RuntimeError("the app failed before answering")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def test_server_metrics_count_predict_answers_by_status_and_serve_prometheus_text() -> None:
    ok = ServerMetrics(_answering(200), predict_route="/predict")
    for _ in range(3):
        assert _call(ok, "/predict") == (200, b"{}")
    assert _call(ok, "/health", "GET") == (200, b"{}")  # not a predict answer: not counted
    failing = ServerMetrics(_answering(0), predict_route="/predict")
    with pytest.raises(RuntimeError):
        _call(failing, "/predict")

    status, text = _call(ok, "/metrics", "GET")
    reading = parse_metrics(text.decode())
    assert status == 200
    assert reading.codes == {200: 3}
    assert reading.buckets[-1] == (math.inf, 3)
    assert [b for b, _ in reading.buckets] == [*BUCKETS, math.inf]
    # An app that raised before answering failed the request: a 500.
    assert parse_metrics(failing.text()).codes == {500: 1}


def test_metrics_text_is_read_back_exactly() -> None:
    metrics = ServerMetrics(_answering(200), predict_route="/predict")
    for status, seconds in [(200, 0.0004), (200, 0.003), (500, 0.2), (400, 20.0)]:
        metrics.observe(status, seconds)

    reading = parse_metrics(metrics.text())

    assert reading.codes == {200: 2, 400: 1, 500: 1}
    assert reading.requests == 4
    assert reading.errors == 1  # a 400 is the client's mistake
    cumulative = dict(reading.buckets)
    assert (cumulative[0.001], cumulative[0.005], cumulative[0.25], cumulative[10.0]) == (
        1,
        2,
        3,
        3,
    )
    assert cumulative[math.inf] == 4
    assert reading.latency_sum == pytest.approx(20.2034)


def test_counting_an_answer_costs_microseconds() -> None:
    metrics = ServerMetrics(_answering(200), predict_route="/predict")
    started = time.perf_counter()
    for i in range(100_000):
        metrics.observe(200, i * 1e-6)
    per_answer = (time.perf_counter() - started) / 100_000
    # A model server answers in milliseconds; the count must stay far below that.
    assert per_answer < 20e-6
    assert metrics.codes == {200: 100_000}


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ([(0.1, 0), (0.2, 50), (0.4, 90), (0.8, 99), (1.6, 100), (math.inf, 100)], 0.8),
        ([(0.2, 100), (0.4, 127), (math.inf, 127)], 0.2 + 0.2 * (0.99 * 127 - 100) / 27),
        ([(1.0, 0), (math.inf, 10)], 1.0),  # all beyond the last bound: that bound
        ([(1.0, 0), (math.inf, 0)], math.nan),
    ],
)
def test_quantile_reads_a_histogram_as_prometheus_does(
    buckets: list[tuple[float, int]], expected: float
) -> None:
    got = quantile(0.99, buckets)
    assert got == pytest.approx(expected, nan_ok=True)


def test_figures_between_two_readings_count_only_what_came_after() -> None:
    before = MetricsReading(codes={200: 10, 500: 1}, buckets=[(0.1, 11), (math.inf, 11)])
    after = MetricsReading(codes={200: 108, 500: 3, 400: 2}, buckets=[(0.1, 111), (math.inf, 124)])

    figures = CanaryFigures.between(before, after)

    assert (figures.requests, figures.errors) == (102, 2)
    assert figures.error_rate == pytest.approx(2 / 102)
    # 100 of the 113 new answers within 0.1 s: the p99 is beyond it, at that bound.
    assert figures.p99_ms == pytest.approx(100.0)


SETTING = CanarySetting(share=10, min_requests=100, max_error_rate=0.01, max_latency_ms=500)


@pytest.mark.parametrize(
    ("figures", "promote", "reason"),
    [
        (
            CanaryFigures(100, 1, 120.0),
            True,
            "error rate 0.01 (1 of 100 requests), p99 latency 120 ms: within "
            "max_error_rate 0.01, max_latency_ms 500",
        ),
        (
            CanaryFigures(100, 2, 120.0),
            False,
            "error rate 0.02 (2 of 100 requests) is over max_error_rate 0.01",
        ),
        (
            CanaryFigures(200, 4, 612.5),
            False,
            "error rate 0.02 (4 of 200 requests) is over max_error_rate 0.01; "
            "p99 latency 612.5 ms is over max_latency_ms 500",
        ),
    ],
)
def test_judge_names_the_measured_figures_and_the_limits(
    figures: CanaryFigures, promote: bool, reason: str
) -> None:
    verdict = judge(figures, SETTING)
    assert (verdict.promote, verdict.reason) == (promote, reason)


def test_watch_reads_until_min_requests_then_judges() -> None:
    clock = FakeClock()
    readings = iter(
        [
            CanaryFigures(0, 0, math.nan),
            CanaryFigures(60, 0, 30.0),
            CanaryFigures(150, 0, 30.0),
        ]
    )

    verdict = watch(lambda: next(readings), SETTING, poll_seconds=5, clock=clock, sleep=clock.sleep)

    assert verdict.promote
    assert verdict.figures.requests == 150
    assert clock.now == 10


@pytest.mark.parametrize(
    ("on_timeout", "promote", "reason"),
    [
        (
            "rollback",
            False,
            "40 of min_requests 100 requests in 30 s: not enough evidence (on_timeout: rollback)",
        ),
        (
            "promote",
            True,
            "40 of min_requests 100 requests in 30 s; error rate 0 (0 of 40 requests), p99 "
            "latency 30 ms: within max_error_rate 0.01, max_latency_ms 500",
        ),
    ],
)
def test_watch_at_the_timeout_follows_on_timeout(
    on_timeout: str, promote: bool, reason: str
) -> None:
    clock = FakeClock()
    setting = CanarySetting(min_requests=100, timeout=30, on_timeout=on_timeout)  # type: ignore[arg-type]

    verdict = watch(
        lambda: CanaryFigures(40, 0, 30.0), setting, poll_seconds=7, clock=clock, sleep=clock.sleep
    )

    assert (verdict.promote, verdict.reason) == (promote, reason)
    assert clock.now == 30  # the last wait is cut to the deadline


@pytest.mark.parametrize(
    ("deployed", "split", "problem"),
    [
        ({"a": "http://h:1"}, {"a": 100}, None),
        ({"a": "http://h:1"}, {"b": 100}, "traffic split names 'b', which is not deployed"),
        (
            {"a": "http://h:1", "b": "http://h:2"},
            {"a": 90},
            "traffic split must sum to 100, got 90",
        ),
        (
            {"a": "http://h:1"},
            {"a": 100.0},
            "traffic share of 'a' must be an integer percentage, got 100.0",
        ),
        ({"a": "h:1"}, {"a": 100}, "deployed model 'a' needs an http:// URL, got 'h:1'"),
    ],
)
def test_split_problems_are_named(
    deployed: dict[str, str], split: dict[str, Any], problem: str | None
) -> None:
    assert split_problem(deployed, split) == problem


def test_router_picks_by_the_split_and_never_a_zero_share() -> None:
    router = Router()
    assert router.pick() is None
    router.update({"a": "http://h:1", "b": "http://h:2"}, {"a": 100, "b": 0})
    assert {router.pick() for _ in range(200)} == {("a", "http://h:1")}
    assert router.retired("b") and not router.retired("a")
    with pytest.raises(ValueError, match="must sum to 100"):
        router.update({"a": "http://h:1"}, {"a": 50})
    assert router.state() == {
        "deployedModels": {"a": "http://h:1", "b": "http://h:2"},
        "trafficSplit": {"a": 100},
    }


def _chain_with(deploy: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The taxi chain with its deploy step replaced; and that step's index."""
    data = yaml.safe_load((REPO / "examples/chicago_taxi/chain.yaml").read_text())
    (i,) = [i for i, s in enumerate(data["steps"]) if s["name"] == "deploy"]
    data["steps"][i] = {"name": "deploy", "kind": "deploy", "model": "upload", **deploy}
    return data, i


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        (
            {"canary": {"share": 100}},
            "canary.share: got 100; expected an integer from 1 to 99 (percent of the traffic)",
        ),
        (
            {"canary": {"on_timeout": "wait"}},
            "canary.on_timeout: got 'wait'; expected one of 'rollback', 'promote'",
        ),
        (
            {"canary": {}, "gcp": {"endpoint": "e", "traffic_percentage": 20}},
            "gcp.traffic_percentage: a canary's share is canary.share; leave "
            "traffic_percentage at 100",
        ),
        (
            {"gcp": {"endpoint": "e", "traffic_percentage": 20, "canary": {}}},
            "gcp.traffic_percentage: a canary's share is canary.share; leave "
            "traffic_percentage at 100",
        ),
    ],
)
def test_a_bad_canary_fails_at_load_with_its_yaml_path(
    deploy: dict[str, Any], message: str
) -> None:
    data, i = _chain_with(deploy)
    with pytest.raises(chains.SpecError) as info:
        chains.parse_chain(data, origin="x.yaml")
    assert str(info.value) == f"x.yaml: steps[{i}].{message}"


def test_the_taxi_chains_canary_line_is_a_valid_gcp_canary() -> None:
    text = (REPO / "examples/chicago_taxi/chain.yaml").read_text()
    (line,) = [x for x in text.splitlines() if x.strip().startswith("#   canary:")]
    uncommented = text.replace(line, line.replace("#   canary:", "canary:", 1))

    spec = chains.parse_chain(yaml.safe_load(uncommented), origin="chain.yaml")

    deploy = spec.step("deploy")
    assert deploy.canary is None  # the demo's local deployment stays a plain one
    assert deploy.gcp.canary == CanarySetting(
        share=10, min_requests=500, max_error_rate=0.01, max_latency_ms=500.0, timeout=3600.0
    )


@pytest.mark.parametrize(("to", "target"), [("kfp", "gcp"), ("kfp", "local"), ("airflow", "gcp")])
@pytest.mark.parametrize("where", ["step", "gcp"])
def test_compiled_pipelines_refuse_a_canary(
    to: str, target: str, where: str, tmp_path: pathlib.Path
) -> None:
    from launchers.chain.compile import compile_chain

    gcp: dict[str, Any] = {"endpoint": "e"} | ({"canary": {}} if where == "gcp" else {})
    data, i = _chain_with({"gcp": gcp} | ({"canary": {}} if where == "step" else {}))
    spec = chains.parse_chain(data, origin="chain.yaml")

    with pytest.raises(chains.SpecError) as info:
        compile_chain(spec, to=to, target=target, output=str(tmp_path / "out"))

    path = "canary" if where == "step" else "gcp.canary"
    assert str(info.value) == (
        f"chain.yaml: steps[{i}].{path}: a canary deployment (deploy) is run by beamforge "
        f"chain only, not compiled (--to {to} --target {target}); run the chain with "
        "beamforge chain or drop canary"
    )
    assert not (tmp_path / "out").exists()
