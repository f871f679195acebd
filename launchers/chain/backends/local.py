"""The ``local`` target: a local dataset run, a training subprocess, a local server."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any

from launchers.chain.backends.interface import StepContext
from launchers.chain.handoff import (
    copy_artifact,
    dataset_outputs,
    dataset_unchanged,
    read_manifest,
    training_uris,
)
from launchers.chain.spec import DatasetStep, DeployStep, TrainStep, UploadStep


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
        server = start_server(
            upload["model_dir"],
            predictor=upload["predictor"],
            log=posixpath.join(ctx.step_dir(step), "server.log"),
            host=step.host,
            port=step.port,
            timeout=step.start_timeout,
            extra_env=(
                request_log_env(request_log.sink, request_log.sample)
                if request_log is not None
                else None
            ),
        )
        # The server this one replaces goes only once the new one is healthy.
        replaced = ctx.previous_outputs.get("server")
        stopped = None
        if replaced and replaced.get("pid") != server.pid:
            old = LocalServer.from_json(replaced)
            if stop_server(old):
                stopped = old.pid
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

            return is_healthy(LocalServer.from_json(outputs["server"]))
        return True


def _recorded(ctx: StepContext, step: Any, outputs: dict[str, Any]) -> dict[str, Any]:
    """The step's outputs, once its lineage is recorded (a failure to record only warns)."""
    from launchers.lineage import record_step

    record_step(ctx, step, outputs)
    return outputs
