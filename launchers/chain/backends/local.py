"""The ``local`` target: a local dataset run, a training subprocess, a local server."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from launchers.chain.backends.interface import StepContext
from launchers.chain.handoff import (
    copy_artifact,
    dataset_outputs,
    dataset_unchanged,
    read_manifest,
    training_uris,
)
from launchers.chain.spec import DatasetStep, DeployStep, TrainStep, UploadStep

if TYPE_CHECKING:
    from launchers.serving.metrics import MetricsReading

_LOG = logging.getLogger(__name__)


class LocalBackend:
    """The embedded default: everything on this machine."""

    def dataset(self, step: DatasetStep, ctx: StepContext) -> dict[str, Any]:
        from beam_pipelines.dataset import run_job
        from beam_pipelines.spec import load_spec

        result = run_job(
            load_spec(step.spec),
            output=step.output,
            inputs=step.inputs or None,
            beam_args=step.beam_args,
        )
        # The manifest is the commit marker: read it back rather than trusting the result.
        outputs = dataset_outputs(step.output, read_manifest(step.output)) | {
            "seconds": round(result.seconds, 3)
        }
        return _recorded(ctx, step, outputs)

    def train(self, step: TrainStep, ctx: StepContext) -> dict[str, Any]:
        import shutil

        from launchers.local_train import python_command, run_training

        dataset = ctx.inputs[step.dataset]
        folder = ctx.step_dir(step)
        model_dir = posixpath.join(folder, "model")
        # A re-run starts from an empty model directory: nothing stale is served.
        shutil.rmtree(model_dir, ignore_errors=True)
        env = training_uris(step, dataset) | {
            "AIP_MODEL_DIR": model_dir,
            "AIP_CHECKPOINT_DIR": posixpath.join(folder, "checkpoints"),
            "CLOUD_ML_PROJECT_ID": "local",
        }
        result = run_training(
            python_command(step.module, step.script, step.args),
            env=env,
            log=posixpath.join(folder, "train.log"),
            timeout=step.timeout,
        )
        copy_artifact(dataset["artifact"], model_dir)
        outputs = {"model_dir": model_dir, "metrics": result.metrics, "log": result.log, "env": env}
        return _recorded(ctx, step, outputs)

    def upload(self, step: UploadStep, ctx: StepContext) -> dict[str, Any]:
        model_dir = ctx.inputs[step.model]["model_dir"]
        outputs = {
            "model": f"local:{os.path.abspath(model_dir)}",
            "model_dir": model_dir,
            "predictor": step.predictor,
            "display_name": step.display_name or ctx.chain.name,
        }
        return _recorded(ctx, step, outputs)

    def deploy(self, step: DeployStep, ctx: StepContext) -> dict[str, Any]:
        from launchers.serving import LocalServer, start_server, stop_server
        from launchers.serving.request_log import request_log_env

        upload = ctx.inputs[step.model]
        request_log = step.request_log
        previous = ctx.previous_outputs
        endpoint = _live_endpoint(previous)
        behind_endpoint = step.canary is not None or bool(previous.get("endpoint"))
        server = start_server(
            upload["model_dir"],
            predictor=upload["predictor"],
            log=posixpath.join(ctx.step_dir(step), "server.log"),
            host=step.host,
            # Behind an endpoint, the endpoint holds the step's port: the address clients keep.
            port=0 if behind_endpoint else step.port,
            timeout=step.start_timeout,
            extra_env=(
                request_log_env(request_log.sink, request_log.sample)
                if request_log is not None
                else None
            ),
        )
        replaced = LocalServer.from_json(previous["server"]) if previous.get("server") else None
        if replaced is not None and replaced.pid == server.pid:
            replaced = None
        if behind_endpoint:
            outputs = _deploy_behind_endpoint(step, ctx, server, replaced, endpoint)
            return _recorded(ctx, step, outputs)
        # The server this one replaces goes only once the new one is healthy.
        stopped = replaced.pid if replaced is not None and stop_server(replaced) else None
        outputs = {
            "server": server.to_json(),
            "url": server.url,
            "predict_url": server.predict_url,
            "health_url": server.health_url,
            "replaced_pid": stopped,
        }
        return _recorded(ctx, step, outputs)

    def still_valid(self, step: Any, outputs: Mapping[str, Any]) -> bool:
        from apache_beam.io.filesystems import FileSystems

        if isinstance(step, DatasetStep):
            return dataset_unchanged(outputs)
        if isinstance(step, TrainStep):
            return bool(FileSystems.exists(FileSystems.join(outputs["model_dir"], "model.joblib")))
        if isinstance(step, DeployStep):
            from launchers.serving import LocalServer, is_healthy

            healthy = is_healthy(LocalServer.from_json(outputs["server"]))
            if outputs.get("endpoint"):
                healthy = healthy and is_healthy(LocalServer.from_json(outputs["endpoint"]))
            return healthy
        return True


def _recorded(ctx: StepContext, step: Any, outputs: dict[str, Any]) -> dict[str, Any]:
    """The step's outputs, once its lineage is recorded (a failure to record only warns)."""
    from launchers.lineage import record_step

    record_step(ctx, step, outputs)
    return outputs


def _live_endpoint(previous: Mapping[str, Any]) -> Any:
    """The previous deployment's local endpoint, if it still runs."""
    from launchers.serving import LocalServer, ServerError
    from launchers.serving.endpoint import traffic

    if not previous.get("endpoint"):
        return None
    endpoint = LocalServer.from_json(previous["endpoint"])
    try:
        traffic(endpoint, timeout=2.0)
    except ServerError:  # gone, or not an endpoint any more: a new one is started
        return None
    return endpoint


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (so a new endpoint can take it)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As the endpoint binds: the gone one's connections waiting out TIME_WAIT do not
        # hold the port, a listening process does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _replacement_endpoint(step: DeployStep, ctx: StepContext) -> tuple[Any, str | None]:
    """Starts an endpoint: on the recorded one's port when that one is gone and it is free.

    Returns:
        The endpoint, and why the deployment is plain because the recorded endpoint is gone
        (None when there was none).
    """
    from launchers.serving import LocalServer
    from launchers.serving.endpoint import start_endpoint

    log = posixpath.join(ctx.step_dir(step), "endpoint.log")
    recorded = ctx.previous_outputs.get("endpoint")
    if not recorded:
        return start_endpoint(log=log, host=step.host, port=step.port), None
    gone = LocalServer.from_json(recorded)
    gone_text = f"the previous endpoint (pid {gone.pid}, {gone.url}) is gone"
    # Its clients know its address: the new endpoint takes it when it can.
    if gone.host == step.host and _port_free(gone.host, gone.port):
        endpoint = start_endpoint(log=log, host=step.host, port=gone.port)
        return endpoint, f"{gone_text}: a new endpoint on its port; plain deployment"
    endpoint = start_endpoint(log=log, host=step.host, port=step.port)
    return endpoint, (
        f"{gone_text} and its port is taken: a new endpoint at {endpoint.url}; plain deployment"
    )


def _deploy_behind_endpoint(
    step: DeployStep, ctx: StepContext, server: Any, replaced: Any, endpoint: Any
) -> dict[str, Any]:
    """Puts a healthy new server behind the local endpoint: as a canary, or at once.

    The canary takes ``canary.share`` of the endpoint's traffic beside the server it would
    replace, and is judged on its own ``/metrics``: promoted (it takes 100 %, then the old
    server is stopped) or rolled back (the old server back to 100 %, the canary stopped,
    :class:`CanaryRolledBackError`). Anything going wrong while it is watched rolls back too;
    a canary server that stops answering is a rollback naming it.

    With no running endpoint (none yet, or the recorded one is gone) a new one is started and
    the deployment is plain: no client reaches a new endpoint before it is recorded. Whatever
    fails, the processes this step started are stopped, so none outlives the step unrecorded.
    """
    from launchers.serving import stop_server

    started = None
    gone_reason = None
    try:
        if endpoint is None:
            started, gone_reason = _replacement_endpoint(step, ctx)
        return _route(step, ctx, server, replaced, endpoint or started, gone_reason)
    except BaseException:
        stop_server(server)
        if started is not None:
            stop_server(started)
        raise


def _route(
    step: DeployStep,
    ctx: StepContext,
    server: Any,
    replaced: Any,
    endpoint: Any,
    gone_reason: str | None,
) -> dict[str, Any]:
    """Judges the canary (with a live previous endpoint) and gives the new server 100 %."""
    from launchers.chain.canary import NO_PREVIOUS, watch
    from launchers.chain.errors import CanaryRolledBackError
    from launchers.serving import is_healthy, stop_server
    from launchers.serving.endpoint import set_traffic
    from launchers.serving.metrics import CanaryFigures, read_metrics

    new_id = str(server.pid)
    previous_routed = replaced is not None and ctx.previous_outputs.get("endpoint")
    canary: dict[str, Any]
    if step.canary is not None and gone_reason is None and previous_routed and is_healthy(replaced):
        old_id = str(replaced.pid)
        setting = step.canary
        metrics_url = f"{server.url}/metrics"

        def read() -> MetricsReading:
            try:
                return read_metrics(server.url)
            except OSError as exc:
                _LOG.warning("canary %s: %s: %s", new_id, metrics_url, exc)
                raise _CanaryGoneError(
                    f"its server (pid {server.pid}, {metrics_url}) stopped answering"
                ) from None

        try:
            before = read()
            set_traffic(
                endpoint,
                {old_id: replaced.url, new_id: server.url},
                {old_id: 100 - setting.share, new_id: setting.share},
            )
            _LOG.info("canary %s takes %d%% of %s", new_id, setting.share, endpoint.url)
            verdict = watch(
                lambda: CanaryFigures.between(before, read()),
                setting,
                poll_seconds=setting.poll_seconds or 0.5,
            )
        except _CanaryGoneError as gone:
            set_traffic(endpoint, {old_id: replaced.url}, {old_id: 100})
            stop_server(server)
            raise CanaryRolledBackError(step.name, f"canary rolled back: {gone}") from None
        except BaseException:
            set_traffic(endpoint, {old_id: replaced.url}, {old_id: 100})
            stop_server(server)
            raise
        if not verdict.promote:
            set_traffic(endpoint, {old_id: replaced.url}, {old_id: 100})
            stop_server(server)
            raise CanaryRolledBackError(step.name, f"canary rolled back: {verdict.reason}")
        _LOG.info("canary %s promoted: %s", new_id, verdict.reason)
        canary = verdict.to_json()
    else:
        reason = NO_PREVIOUS
        if gone_reason is not None:
            reason = gone_reason
        elif replaced is not None and step.canary is not None:
            reason = "the previous model was not served behind an endpoint: plain deployment"
        elif step.canary is None:
            reason = "no canary: plain deployment"
        _LOG.info("%s", reason)
        canary = {"decision": "plain", "reason": reason}
    set_traffic(endpoint, {new_id: server.url}, {new_id: 100})
    # The server this one replaces goes only once the new one takes all the traffic.
    stopped = replaced.pid if replaced is not None and stop_server(replaced) else None
    return {
        "server": server.to_json(),
        "endpoint": endpoint.to_json(),
        "url": endpoint.url,
        "predict_url": endpoint.predict_url,
        "health_url": endpoint.health_url,
        "replaced_pid": stopped,
        "canary": canary,
    }


class _CanaryGoneError(Exception):
    """The canary's server stopped answering its ``/metrics`` while it was watched."""
