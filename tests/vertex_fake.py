"""A fake Vertex AI REST API on 127.0.0.1 for the real ``google-cloud-aiplatform`` SDK.

It records every request and keeps just enough state (custom jobs and pipeline jobs with
scripted states, models, endpoints with deployed models and a traffic split, pipeline
schedules) for training, upload, deployment and pipeline runs; every long-running operation
is already done when it is returned.
"""

from __future__ import annotations

import re
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
        self.metadata = FakeMetadata()

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
            if "/metadataStores" in path:
                return self.reply(*s.metadata.handle("GET", path, query, None))
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
            if "/metadataStores" in path:
                return self.reply(*s.metadata.handle("POST", path, query, body))
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

    def do_PATCH(self) -> None:
        path, query, body = self._record()
        s = self.server
        with s.lock:
            if path in s.endpoints:
                # Endpoint.update: only the fields its updateMask names change.
                mask = urllib.parse.parse_qs(query).get("updateMask", [""])[0].split(",")
                endpoint = s.endpoints[path]
                if "trafficSplit" in mask or "traffic_split" in mask:
                    endpoint["trafficSplit"] = dict(body.get("trafficSplit", {}))
                return self.reply(endpoint)
        self.reply({"error": {"code": 404, "message": f"no {path}"}}, 404)


# Vertex ML Metadata (metadataStores/default): artifacts, executions, events and contexts,
# as much of them as the SDK's lineage calls use.
STORE = f"{PARENT}/metadataStores/default"
# The SDK sends enums as numbers; Vertex answers with their names.
_STATES = {
    "artifacts": {1: "PENDING", 2: "LIVE"},
    "executions": {1: "NEW", 2: "RUNNING", 3: "COMPLETE", 4: "FAILED", 5: "CACHED", 6: "CANCELLED"},
    "contexts": {},
}
_EVENT_TYPES = {1: "INPUT", 2: "OUTPUT"}
_FILTER_TERM = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


class FakeMetadata:
    """The default metadata store: resources by name, events, context membership."""

    def __init__(self) -> None:
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.members: dict[str, set[str]] = {}
        self._ids = 0
        self._clock = 0

    def _stamp(self) -> str:
        # Distinct, increasing create times: the SDK orders artifacts by them.
        self._clock += 1
        return f"2026-01-01T00:{self._clock // 60:02d}:{self._clock % 60:02d}Z"

    def handle(self, method: str, path: str, query: str, body: Any) -> tuple[dict[str, Any], int]:
        """The reply (body, status) to a metadataStores request."""
        params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        if method == "GET" and path == STORE:
            return {"name": STORE, "createTime": "2026-01-01T00:00:00Z"}, 200
        name, _, verb = path.partition(":")
        kinds = {"artifacts": self.artifacts, "executions": self.executions}
        kinds["contexts"] = self.contexts
        for noun, table in kinds.items():
            collection = f"{STORE}/{noun}"
            if method == "POST" and path == collection:
                given = params.get(noun[:-1] + "Id")
                self._ids += 1
                new = f"{collection}/{given or 2000 + self._ids}"
                if new in table:
                    return {"error": {"code": 409, "message": f"{new} exists"}}, 409
                stamp = self._stamp()
                table[new] = {**body, "name": new, "createTime": stamp, "updateTime": stamp}
                if "state" in table[new]:
                    state = table[new]["state"]
                    table[new]["state"] = _STATES[noun].get(state, state)
                return table[new], 200
            if method == "GET" and path == collection:
                try:
                    found = [r for r in table.values() if _matches(r, params.get("filter", ""))]
                except ValueError as exc:
                    return {"error": {"code": 400, "message": str(exc)}}, 400
                return {noun: found}, 200
            if method == "GET" and path in table:
                return table[path], 200
        if method == "POST" and verb == "addExecutionEvents" and name in self.executions:
            for event in body.get("events", []):
                kind = _EVENT_TYPES.get(event["type"], event["type"])
                stamp = self._stamp()
                self.events.append({**event, "type": kind, "execution": name, "eventTime": stamp})
            return {}, 200
        if method == "POST" and verb == "addContextArtifactsAndExecutions":
            added = body.get("artifacts", []) + body.get("executions", [])
            self.members.setdefault(name, set()).update(added)
            return {}, 200
        if method == "GET" and verb == "queryArtifactLineageSubgraph" and name in self.artifacts:
            return self._closure({name}, set()), 200
        if method == "GET" and verb == "queryExecutionInputsAndOutputs":
            events = [e for e in self.events if e["execution"] == name]
            return {
                "artifacts": [self.artifacts[a] for a in {e["artifact"] for e in events}],
                "executions": [self.executions[name]],
                "events": events,
            }, 200
        return {"error": {"code": 404, "message": f"no {path}"}}, 404

    def _closure(self, artifacts: set[str], executions: set[str]) -> dict[str, Any]:
        # Vertex's transitive closure: every node reachable through events, either way.
        while True:
            more_x = {e["execution"] for e in self.events if e["artifact"] in artifacts}
            more_a = {e["artifact"] for e in self.events if e["execution"] in more_x}
            if more_x <= executions and more_a <= artifacts:
                break
            executions |= more_x
            artifacts |= more_a
        return {
            "artifacts": [self.artifacts[a] for a in sorted(artifacts)],
            "executions": [self.executions[x] for x in sorted(executions)],
            "events": [e for e in self.events if e["execution"] in executions],
        }


def _matches(resource: dict[str, Any], text: str) -> bool:
    """Whether a resource passes a list filter of ``field="value"`` terms joined by AND."""
    fields = {"uri": "uri", "schema_title": "schemaTitle", "display_name": "displayName"}
    for field, value in _FILTER_TERM.findall(text):
        if field not in fields:
            raise ValueError(f"the fake does not filter on {field}")
        expected = re.sub(r"\\(.)", r"\1", value)
        if resource.get(fields[field]) != expected:
            return False
    return True


def serve() -> Iterator[FakeVertex]:
    """Runs a fake in a thread for the duration of the generator (a fixture body)."""
    yield from serving(FakeVertex())
