"""Canary deployment on the local target: real model servers behind a real local endpoint.

A client thread keeps calling the endpoint while a second model is deployed as a canary; the
canary is judged on its server's own ``/metrics``. The predictor is a stand-in
(:mod:`tests.canary_predictors`) with a scripted failure share, so no model is trained.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from beam_pipelines.exit_codes import ExitCode
from launchers import chain as chains
from launchers import serving
from launchers.chain.backends import LocalBackend, StepContext
from launchers.chain.canary import NO_PREVIOUS
from launchers.chain.errors import CanaryRolledBackError
from launchers.chain.spec import CanarySetting
from launchers.serving.endpoint import DEPLOYED_MODEL_HEADER, traffic
from launchers.serving.local import _alive
from tests.canary_predictors import write_model

PREDICTOR = "tests.canary_predictors:ScriptedPredictor"


class Client:
    """Calls the endpoint in a loop until stopped; keeps (status, deployed id, version)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str, str | None]] = []
        self._stop = threading.Event()
        self._more = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[tuple[int, str, str | None]]:
        """The answers, once there are ``count`` of them."""
        with self._more:
            assert self._more.wait_for(lambda: len(self.answers) >= count, timeout)
            return list(self.answers)

    def _add(self, answer: tuple[int, str, str | None]) -> None:
        with self._more:
            self.answers.append(answer)
            self._more.notify_all()

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        body = json.dumps({"instances": [1]}).encode()
        while not self._stop.is_set():
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    version = json.loads(response.read())["predictions"][0]["version"]
                    served = response.headers[DEPLOYED_MODEL_HEADER]
                    self._add((response.status, served, version))
            except urllib.error.HTTPError as exc:
                self._add((exc.code, exc.headers[DEPLOYED_MODEL_HEADER], None))
            except OSError as exc:  # the endpoint itself did not answer
                self._add((0, "", str(exc)))


@pytest.fixture()
def deployer(tmp_path: pathlib.Path) -> Iterator[Any]:
    """Deploys model versions with the local backend; stops every process they left running."""
    deployed: list[dict[str, Any]] = []
    backend = LocalBackend()

    def deploy(
        version: str,
        previous: dict[str, Any],
        canary: dict[str, Any] | None = None,
        fail_every: int = 0,
    ) -> dict[str, Any]:
        model = write_model(str(tmp_path / version), version, fail_every)
        step = chains.DeployStep(name="deploy", model="upload", start_timeout=60.0)
        if canary is not None:
            step.canary = CanarySetting(**canary)
        spec = chains.ChainSpec(name="canary", workdir=str(tmp_path / "work"), steps=[step])
        ctx = StepContext(
            chain=spec,
            target="local",
            inputs={"upload": {"model_dir": model, "predictor": PREDICTOR}},
            previous_outputs=previous,
        )
        outputs = backend.deploy(step, ctx)
        deployed.append(outputs)
        return outputs

    yield deploy
    for outputs in deployed:
        for key in ("server", "endpoint"):
            if outputs.get(key):
                serving.stop_server(serving.LocalServer.from_json(outputs[key]))


def test_a_first_canary_deployment_is_a_plain_one_behind_an_endpoint(deployer: Any) -> None:
    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})

    assert first["canary"] == {"decision": "plain", "reason": NO_PREVIOUS}
    assert first["url"] == serving.LocalServer.from_json(first["endpoint"]).url
    server = serving.LocalServer.from_json(first["server"])
    assert traffic(serving.LocalServer.from_json(first["endpoint"])) == {
        "deployedModels": {str(server.pid): server.url},
        "trafficSplit": {str(server.pid): 100},
    }
    assert serving.predict(first["predict_url"], [7]) == [{"version": "v1", "x": 7}]


def test_a_healthy_canary_is_promoted_and_the_endpoint_answers_throughout(
    deployer: Any,
) -> None:
    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    old = serving.LocalServer.from_json(first["server"])

    with Client(first["predict_url"]) as client:
        second = deployer(
            "v2",
            first,
            canary={"share": 50, "min_requests": 30, "max_error_rate": 0.0, "timeout": 120},
        )
        new = serving.LocalServer.from_json(second["server"])
        # The answer in flight at the switch may land just after the step returns.
        served_after = len(client.answers) + 1
        answers = client.wait_for(served_after + 20)

    assert second["canary"]["decision"] == "promoted"
    assert second["canary"]["requests"] >= 30
    assert second["canary"]["errors"] == 0
    assert second["url"] == first["url"]  # clients keep their address
    assert second["replaced_pid"] == old.pid
    assert not _alive(old.pid)
    assert traffic(serving.LocalServer.from_json(second["endpoint"])) == {
        "deployedModels": {str(new.pid): new.url},
        "trafficSplit": {str(new.pid): 100},
    }
    # Not one request failed, through the canary, the switch and the old server's stop.
    assert [a for a in answers if a[0] != 200] == []
    served = [(who, version) for _, who, version in answers]
    assert {(str(old.pid), "v1"), (str(new.pid), "v2")} == set(served)
    # While watched, both served; after the switch only the new one.
    assert set(served[served_after:]) == {(str(new.pid), "v2")}


def test_a_failing_canary_is_rolled_back_with_exit_3(deployer: Any) -> None:
    first = deployer("v1", {})
    first = deployer("v1b", first, canary={"share": 50, "min_requests": 10})
    assert first["canary"] == {
        "decision": "plain",
        "reason": "the previous model was not served behind an endpoint: plain deployment",
    }
    old = serving.LocalServer.from_json(first["server"])
    endpoint = serving.LocalServer.from_json(first["endpoint"])

    with Client(first["predict_url"]) as client:
        with pytest.raises(CanaryRolledBackError) as caught:
            deployer(
                "v2",
                first,
                canary={"share": 50, "min_requests": 30, "max_error_rate": 0.01, "timeout": 120},
                fail_every=5,
            )
        after = len(client.answers) + 1
        answers = client.wait_for(after + 20)

    assert caught.value.exit_code == ExitCode.STOPPED == 3
    message = str(caught.value)
    requests = int(message.split(" of ")[1].split(" requests")[0])
    errors = requests // 5  # every 5th request the canary answered failed
    assert requests >= 30
    assert message == (
        f"step deploy: canary rolled back: error rate {errors / requests:.4g} "
        f"({errors} of {requests} requests) is over max_error_rate 0.01"
    )
    assert "\n" not in message
    # The old server takes all the traffic again; the canary is stopped.
    assert _alive(old.pid)
    assert traffic(endpoint) == {
        "deployedModels": {str(old.pid): old.url},
        "trafficSplit": {str(old.pid): 100},
    }
    canaries = {who for _, who, _ in answers} - {str(old.pid)}
    assert len(canaries) == 1
    assert not _alive(int(canaries.pop()))
    # The only failures were the canary's own 500s; after the rollback every answer is v1b.
    assert {(status, version) for status, who, version in answers if who == str(old.pid)} == {
        (200, "v1b")
    }
    assert {status for status, who, _ in answers if who != str(old.pid)} == {200, 500}
    assert {who for _, who, _ in answers[after:]} == {str(old.pid)}


def test_a_canary_without_enough_requests_is_rolled_back(deployer: Any) -> None:
    first = deployer("v1", {}, canary={"share": 10})
    old = serving.LocalServer.from_json(first["server"])

    with pytest.raises(CanaryRolledBackError) as caught:
        deployer(
            "v2",
            first,
            canary={"share": 10, "min_requests": 5, "timeout": 1, "poll_seconds": 0.2},
        )

    assert str(caught.value) == (
        "step deploy: canary rolled back: 0 of min_requests 5 requests in 1 s: "
        "not enough evidence (on_timeout: rollback)"
    )
    assert _alive(old.pid)
    assert serving.predict(first["predict_url"], [1]) == [{"version": "v1", "x": 1}]


def test_chain_predict_and_stop_go_through_the_endpoint(
    deployer: Any, tmp_path: pathlib.Path
) -> None:
    from launchers.chain.state import COMPLETED, ChainState, StepState, save_state
    from tests.conftest import TAXI_SAMPLE, beamforge

    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    server = serving.LocalServer.from_json(first["server"])
    endpoint = serving.LocalServer.from_json(first["endpoint"])
    chain_file = tmp_path / "chain.yaml"
    steps = [
        {
            "name": "dataset",
            "kind": "dataset",
            "spec": "s.yaml",
            "inputs": [str(TAXI_SAMPLE)],
            "output": str(tmp_path / "d"),
        },
        {"name": "train", "kind": "train", "dataset": "dataset", "module": "m"},
        {"name": "upload", "kind": "upload", "model": "train", "predictor": PREDICTOR},
        {"name": "deploy", "kind": "deploy", "model": "upload", "canary": {"share": 50}},
    ]
    chain_file.write_text(
        json.dumps({"name": "canary", "workdir": str(tmp_path / "work"), "steps": steps})
    )
    spec = chains.load_chain(str(chain_file))
    state = ChainState(chain="canary", target="local")
    state.steps["deploy"] = StepState(status=COMPLETED, fingerprint="f", outputs=first)
    save_state(spec.state_path("local"), state)
    instances = tmp_path / "instances.json"
    instances.write_text("[7]")

    done = beamforge("chain", "predict", str(chain_file), "--instances", str(instances))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"] == [{"version": "v1", "x": 7}]
    done = beamforge("chain", "stop", str(chain_file))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"stopped server pid {server.pid}\nstopped endpoint pid {endpoint.pid}\n"
    assert not _alive(server.pid) and not _alive(endpoint.pid)


def _kill(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


def test_a_killed_endpoint_is_replaced_on_its_port_with_a_plain_deployment(
    deployer: Any,
) -> None:
    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    gone = serving.LocalServer.from_json(first["endpoint"])
    old = serving.LocalServer.from_json(first["server"])
    _kill(gone.pid)

    second = deployer("v2", first, canary={"share": 50, "min_requests": 10, "timeout": 1})

    endpoint = serving.LocalServer.from_json(second["endpoint"])
    new = serving.LocalServer.from_json(second["server"])
    assert endpoint.pid != gone.pid
    assert (endpoint.port, second["url"]) == (gone.port, first["url"])  # clients keep it
    assert second["canary"] == {
        "decision": "plain",
        "reason": f"the previous endpoint (pid {gone.pid}, {gone.url}) is gone: a new endpoint "
        "on its port; plain deployment",
    }
    assert second["replaced_pid"] == old.pid
    assert not _alive(old.pid)
    assert traffic(endpoint) == {
        "deployedModels": {str(new.pid): new.url},
        "trafficSplit": {str(new.pid): 100},
    }
    assert serving.predict(first["predict_url"], [3]) == [{"version": "v2", "x": 3}]


def test_a_killed_endpoint_whose_port_is_taken_gets_a_new_port(deployer: Any) -> None:
    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    gone = serving.LocalServer.from_json(first["endpoint"])
    _kill(gone.pid)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((gone.host, gone.port))
        squatter.listen(1)
        second = deployer("v2", first, canary={"share": 50, "min_requests": 10})

    endpoint = serving.LocalServer.from_json(second["endpoint"])
    assert endpoint.port != gone.port
    assert second["canary"] == {
        "decision": "plain",
        "reason": f"the previous endpoint (pid {gone.pid}, {gone.url}) is gone and its port is "
        f"taken: a new endpoint at {endpoint.url}; plain deployment",
    }
    assert serving.predict(second["predict_url"], [4]) == [{"version": "v2", "x": 4}]


def test_a_failed_deployment_leaves_no_process_it_started(
    deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchers.serving import endpoint as endpoint_module

    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    gone = serving.LocalServer.from_json(first["endpoint"])
    _kill(gone.pid)
    started: list[serving.LocalServer] = []
    real_start = endpoint_module.start_endpoint

    def start_endpoint(**kwargs: Any) -> serving.LocalServer:
        started.append(real_start(**kwargs))
        return started[-1]

    def set_traffic(*args: Any, **kwargs: Any) -> None:
        raise serving.ServerError("the split was refused")

    monkeypatch.setattr(endpoint_module, "start_endpoint", start_endpoint)
    monkeypatch.setattr(endpoint_module, "set_traffic", set_traffic)
    before = set(_children())
    with pytest.raises(serving.ServerError, match="the split was refused"):
        deployer("v2", first, canary={"share": 50, "min_requests": 10})

    (endpoint,) = started
    assert not _alive(endpoint.pid)
    # The new server is stopped too: no process of this step outlives it.
    assert set(_children()) - before == set()
    assert _alive(serving.LocalServer.from_json(first["server"]).pid)


def _children() -> list[int]:
    """Live child processes of this test process."""
    me = os.getpid()
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_a_canary_server_that_dies_while_watched_is_rolled_back_with_exit_3(
    deployer: Any,
) -> None:
    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    old = serving.LocalServer.from_json(first["server"])
    endpoint = serving.LocalServer.from_json(first["endpoint"])
    killed: list[tuple[int, str]] = []

    def kill_the_canary() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            deployed = traffic(endpoint)["deployedModels"]
            if len(deployed) == 2:
                (pid,) = {int(p) for p in deployed} - {old.pid}
                _kill(pid)
                killed.append((pid, deployed[str(pid)]))
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_canary, daemon=True)
    killer.start()
    with pytest.raises(CanaryRolledBackError) as caught:
        deployer(
            "v2",
            first,
            canary={"share": 50, "min_requests": 1000, "timeout": 60, "poll_seconds": 0.1},
        )
    killer.join(timeout=5)

    ((pid, url),) = killed
    assert caught.value.exit_code == ExitCode.STOPPED == 3
    assert str(caught.value) == (
        f"step deploy: canary rolled back: its server (pid {pid}, {url}/metrics) stopped answering"
    )
    assert traffic(endpoint) == {
        "deployedModels": {str(old.pid): old.url},
        "trafficSplit": {str(old.pid): 100},
    }
    assert serving.predict(first["predict_url"], [5]) == [{"version": "v1", "x": 5}]


def test_a_body_over_the_limit_gets_the_413_through_the_endpoint(
    deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The endpoint and its servers read the limit from the same environment.
    monkeypatch.setenv("BEAMFORGE_MAX_REQUEST_BYTES", "65536")
    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    endpoint = serving.LocalServer.from_json(first["endpoint"])
    body = json.dumps({"instances": [1] * 40_000}).encode()
    assert len(body) == 120_015

    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=30)
    try:
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        status, headers, data = answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()

    assert (status, headers["Connection"]) == (413, "close")
    assert json.loads(data) == {
        "error": "the request body is 120,015 bytes; this endpoint takes at most 65,536 bytes "
        "(BEAMFORGE_MAX_REQUEST_BYTES, as its servers)"
    }
    # Within the limit, the same endpoint still serves.
    assert serving.predict(first["predict_url"], [1] * 100)[0] == {"version": "v1", "x": 1}


def test_chain_stop_stops_the_endpoint_that_replaced_a_killed_one(
    deployer: Any, tmp_path: pathlib.Path
) -> None:
    from launchers.chain.state import COMPLETED, ChainState, StepState, save_state
    from tests.conftest import beamforge

    first = deployer("v1", {}, canary={"share": 50, "min_requests": 10})
    _kill(serving.LocalServer.from_json(first["endpoint"]).pid)
    second = deployer("v2", first, canary={"share": 50, "min_requests": 10})
    server = serving.LocalServer.from_json(second["server"])
    endpoint = serving.LocalServer.from_json(second["endpoint"])
    chain_file = tmp_path / "chain.yaml"
    steps = [
        {"name": "dataset", "kind": "dataset", "spec": "s.yaml", "output": str(tmp_path / "d")},
        {"name": "train", "kind": "train", "dataset": "dataset", "module": "m"},
        {"name": "upload", "kind": "upload", "model": "train", "predictor": PREDICTOR},
        {"name": "deploy", "kind": "deploy", "model": "upload", "canary": {"share": 50}},
    ]
    chain_file.write_text(
        json.dumps({"name": "canary", "workdir": str(tmp_path / "work"), "steps": steps})
    )
    spec = chains.load_chain(str(chain_file))
    state = ChainState(chain="canary", target="local")
    state.steps["deploy"] = StepState(status=COMPLETED, fingerprint="f", outputs=second)
    save_state(spec.state_path("local"), state)

    done = beamforge("chain", "stop", str(chain_file))

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"stopped server pid {server.pid}\nstopped endpoint pid {endpoint.pid}\n"
    assert not _alive(server.pid) and not _alive(endpoint.pid)
