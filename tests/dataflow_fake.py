"""A fake Dataflow REST API on 127.0.0.1 for the real ``google-cloud-dataflow-client``.

A real HTTP server in a thread that records every request and answers with scripted job states.
"""

from __future__ import annotations

from typing import Any

from tests.fake_rest import JsonHandler, RecordingServer

PROJECT = "my-proj-123"
REGION = "us-central1"
BASE = f"/v1b3/projects/{PROJECT}/locations/{REGION}"
URL = f"https://console.cloud.google.com/dataflow/jobs/{REGION}/job-1?project={PROJECT}"


class FakeDataflow(RecordingServer):
    """Records requests; answers get_job with the scripted states (the last one repeats)."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.states: list[str] = ["JOB_STATE_RUNNING"]

    def next_state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class _Handler(JsonHandler):
    server: FakeDataflow

    def _record(self) -> tuple[str, Any]:
        path, _, body = self.record()
        return path, body

    def do_POST(self) -> None:
        path, body = self._record()
        if path == f"{BASE}/flexTemplates:launch":
            if body.get("validateOnly"):
                self.reply({})
                return
            name = body["launchParameter"]["jobName"]
            self.reply({"job": {"id": "job-1", "name": name, "projectId": PROJECT}})
        else:
            self.reply({"error": {"code": 404, "message": path}}, 404)

    def do_GET(self) -> None:
        path, _ = self._record()
        if path.startswith(f"{BASE}/jobs/"):
            job_id = path.rsplit("/", 1)[1]
            self.reply({"id": job_id, "currentState": self.server.next_state()})
        else:
            self.reply({"error": {"code": 404, "message": path}}, 404)

    def do_PUT(self) -> None:
        path, body = self._record()
        self.reply({"id": path.rsplit("/", 1)[1], "requestedState": body["requestedState"]})
