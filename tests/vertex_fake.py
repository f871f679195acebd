"""A fake Vertex AI REST API on 127.0.0.1 for the real ``google-cloud-aiplatform`` SDK.

It records every request and keeps just enough state (custom jobs and pipeline jobs with
scripted states, models, endpoints with deployed models and a traffic split, pipeline
schedules) for training, upload, deployment and pipeline runs; every long-running operation
is already done when it is returned.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from tests.fake_rest import JsonHandler, RecordingServer, serving

PROJECT = "test-project"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."
# The ``error`` a pipeline job carries in each terminal state that is not success, as Vertex
# AI Pipelines reports them.
PIPELINE_ERRORS: dict[str, dict[str, Any]] = {
    "PIPELINE_STATE_FAILED": {
        "code": 9,
        "message": "The DAG failed because some tasks failed. The failed tasks are: [train].",
    },
    "PIPELINE_STATE_CANCELLED": {"code": 1, "message": "The pipeline job was cancelled."},
}


class FakeVertex(RecordingServer):
    """Records requests; answers custom and pipeline job GETs with the scripted states (the
    last repeats)."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.job_states: list[str] = ["JOB_STATE_SUCCEEDED"]
        self.jobs: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.pipeline_states: list[str] = ["PIPELINE_STATE_SUCCEEDED"]
        self.pipeline_jobs: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        # Stands in for the training container: called with each created job.
        self.trainer: Callable[[dict[str, Any]], None] | None = None
        self._ids = 0

    def new_id(self) -> str:
        self._ids += 1
        return str(1000 + self._ids)

    def next_state(self) -> str:
        return self.job_states.pop(0) if len(self.job_states) > 1 else self.job_states[0]

    def next_pipeline_state(self) -> str:
        states = self.pipeline_states
        return states.pop(0) if len(states) > 1 else states[0]

    def calls(self, method: str, suffix: str) -> list[Any]:
        """Bodies of the requests with this method whose path ends with ``suffix``."""
        return [b for m, p, b in self.requests if m == method and p.endswith(suffix)]


def _operation(name: str, response: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "name": f"{name}/operations/{abs(hash(name)) % 10_000}",
        "done": True,
        "response": {"@type": TYPE + kind, **response},
    }


class _Handler(JsonHandler):
    server: FakeVertex

    def _record(self) -> tuple[str, str, Any]:
        path, query, body = self.record()
        return path.removeprefix("/v1/"), query, body

    def do_GET(self) -> None:
        path, query, _ = self._record()
        s = self.server
        with s.lock:
            if "/operations/" in path:
                return self.reply({"name": path, "done": True})
            if path in s.jobs:
                job = dict(s.jobs[path], state=s.next_state())
                if job["state"] == "JOB_STATE_FAILED":
                    job["error"] = {"code": 3, "message": "trainer exited with code 1"}
                s.jobs[path] = job
                return self.reply(job)
            if path in s.pipeline_jobs:
                state = s.next_pipeline_state()
                job = {k: v for k, v in s.pipeline_jobs[path].items() if k != "error"}
                job["state"] = state
                if state in PIPELINE_ERRORS:
                    job["error"] = PIPELINE_ERRORS[state]
                s.pipeline_jobs[path] = job
                return self.reply(job)
            if path in s.schedules:
                return self.reply(s.schedules[path])
            if path in s.models:
                return self.reply(s.models[path])
            if path in s.endpoints:
                return self.reply(s.endpoints[path])
            if path == f"{PARENT}/endpoints":
                found = [
                    e
                    for e in s.endpoints.values()
                    if f"display_name%3D%22{e['displayName']}%22" in query
                    or f'display_name="{e["displayName"]}"' in query
                ]
                return self.reply({"endpoints": found})
        self.reply({"error": {"code": 404, "message": f"no {path}"}}, 404)

    def do_POST(self) -> None:
        path, query, body = self._record()
        s = self.server
        with s.lock:
            if path == f"{PARENT}/pipelineJobs":
                # The SDK names the job itself (pipelineJobId); Vertex makes one up otherwise.
                given = urllib.parse.parse_qs(query).get("pipelineJobId", [None])[0]
                name = f"{PARENT}/pipelineJobs/{given or s.new_id()}"
                s.pipeline_jobs[name] = {**body, "name": name, "state": "PIPELINE_STATE_PENDING"}
                return self.reply(s.pipeline_jobs[name])
            if path.endswith(":cancel") and path.removesuffix(":cancel") in s.pipeline_jobs:
                return self.reply({})
            if path == f"{PARENT}/schedules":
                name = f"{PARENT}/schedules/{s.new_id()}"
                s.schedules[name] = {**body, "name": name, "state": "ACTIVE"}
                return self.reply(s.schedules[name])
            if path == f"{PARENT}/customJobs":
                name = f"{PARENT}/customJobs/{s.new_id()}"
                s.jobs[name] = {**body, "name": name, "state": "JOB_STATE_PENDING"}
                if s.trainer is not None:
                    s.trainer(body)
                return self.reply(s.jobs[name])
            if path.endswith(":cancel") and path.removesuffix(":cancel") in s.jobs:
                return self.reply({})
            if path == f"{PARENT}/models:upload":
                name = f"{PARENT}/models/{s.new_id()}"
                s.models[name] = {
                    **body["model"],
                    "name": name,
                    "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
                }
                return self.reply(_operation(name, {"model": name}, "UploadModelResponse"))
            if path == f"{PARENT}/endpoints":
                name = f"{PARENT}/endpoints/{s.new_id()}"
                s.endpoints[name] = {**body, "name": name, "deployedModels": [], "trafficSplit": {}}
                return self.reply(_operation(name, s.endpoints[name], "Endpoint"))
            if path.endswith(":deployModel"):
                name = path.removesuffix(":deployModel")
                endpoint = s.endpoints[name]
                deployed = {**body["deployedModel"], "id": s.new_id()}
                endpoint["deployedModels"].append(deployed)
                split = {k: v for k, v in body.get("trafficSplit", {}).items() if k != "0"}
                split[deployed["id"]] = body.get("trafficSplit", {}).get("0", 100)
                endpoint["trafficSplit"] = split
                return self.reply(
                    _operation(name, {"deployedModel": deployed}, "DeployModelResponse")
                )
            if path.endswith(":undeployModel"):
                name = path.removesuffix(":undeployModel")
                endpoint = s.endpoints[name]
                gone = body["deployedModelId"]
                endpoint["deployedModels"] = [
                    m for m in endpoint["deployedModels"] if m["id"] != gone
                ]
                split = body.get("trafficSplit") or {
                    k: v for k, v in endpoint["trafficSplit"].items() if k != gone
                }
                endpoint["trafficSplit"] = split
                return self.reply(_operation(name, {}, "UndeployModelResponse"))
        self.reply({"error": {"code": 404, "message": f"no {path}"}}, 404)


def serve() -> Iterator[FakeVertex]:
    """Runs a fake in a thread for the duration of the generator (a fixture body)."""
    yield from serving(FakeVertex())
