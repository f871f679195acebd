"""A fake Cloud Monitoring ``MetricService`` on 127.0.0.1, for the real client library.

The library speaks gRPC only; the fake is a plaintext gRPC server answering
``ListTimeSeries`` with scripted Vertex AI figures of deployed models (``response_count`` by
``response_code``, ``prediction_latencies`` distributions) and recording every request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.cloud import monitoring_v3

RESPONSE_COUNT = "aiplatform.googleapis.com/prediction/online/response_count"
PREDICTION_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"
_TERM = re.compile(r'([\w.]+) = "([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Reading:
    """A deployed model's figures as Monitoring holds them at one moment.

    Attributes:
        codes: Answers by response code (one DELTA point per code).
        bounds: Explicit latency bucket bounds, milliseconds.
        counts: Latency bucket counts (underflow, one per bound interval, overflow).
    """

    codes: Mapping[str, int]
    bounds: Sequence[float] = (100.0, 200.0, 400.0, 800.0, 1600.0)
    counts: Sequence[int] = ()


class FakeMonitoring:
    """Answers ``ListTimeSeries`` from ``readings[deployed_model_id]``.

    Each ``response_count`` request moves that model on to its next reading (the last one
    repeats); a ``prediction_latencies`` request answers from the current one.
    """

    def __init__(self) -> None:
        self.readings: dict[str, list[Reading]] = {}
        self.requests: list[monitoring_v3.ListTimeSeriesRequest] = []
        self._current: dict[str, Reading] = {}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                    self._list,
                    request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                    response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def filters(self) -> list[str]:
        return [r.filter for r in self.requests]

    def _list(self, request: Any, context: Any) -> monitoring_v3.ListTimeSeriesResponse:
        self.requests.append(request)
        terms = dict(_TERM.findall(request.filter))
        model = terms.get("metric.labels.deployed_model_id", "")
        metric = terms.get("metric.type")
        endpoint_id = terms.get("resource.labels.endpoint_id", "")
        if metric == RESPONSE_COUNT:
            queue = self.readings.get(model, [])
            if queue:
                self._current[model] = queue.pop(0) if len(queue) > 1 else queue[0]
        reading = self._current.get(model)
        series: list[monitoring_v3.TimeSeries] = []
        if reading is not None:
            resource = {
                "type": "aiplatform.googleapis.com/Endpoint",
                "labels": {"endpoint_id": endpoint_id},
            }
            if metric == RESPONSE_COUNT:
                for code, count in reading.codes.items():
                    series.append(
                        monitoring_v3.TimeSeries(
                            metric={
                                "type": metric,
                                "labels": {"deployed_model_id": model, "response_code": code},
                            },
                            resource=resource,
                            points=[{"value": {"int64_value": count}}],
                        )
                    )
            elif metric == PREDICTION_LATENCIES and reading.counts:
                distribution = {
                    "count": sum(reading.counts),
                    "bucket_options": {"explicit_buckets": {"bounds": list(reading.bounds)}},
                    "bucket_counts": list(reading.counts),
                }
                series.append(
                    monitoring_v3.TimeSeries(
                        metric={"type": metric, "labels": {"deployed_model_id": model}},
                        resource=resource,
                        points=[{"value": {"distribution_value": distribution}}],
                    )
                )
        return monitoring_v3.ListTimeSeriesResponse(time_series=series)


def serve() -> Iterator[FakeMonitoring]:
    """Runs a fake for the duration of the generator (a fixture body)."""
    fake = FakeMonitoring()
    fake._server.start()
    try:
        yield fake
    finally:
        fake._server.stop(grace=None)
