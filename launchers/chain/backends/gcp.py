"""The ``gcp`` target: Dataflow for the dataset, Vertex AI for training, upload, deployment."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
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
from launchers.chain.spec import (
    CanarySetting,
    DatasetStep,
    DeployStep,
    GcpSettings,
    TrainStep,
    UploadStep,
)

_LOG = logging.getLogger(__name__)


class GcpBackend:
    """Dataflow for the dataset, Vertex AI for training, upload and deployment."""

    def __init__(self, settings: GcpSettings, *, credentials: Any = None) -> None:
        from launchers import vertex

        self.settings = settings
        self._credentials = credentials
        vertex.init(
            vertex.VertexSettings(
                project=settings.project,
                region=settings.region,
                staging_bucket=settings.staging_bucket,
                service_account=settings.service_account,
                api_endpoint=settings.api_endpoint,
            ),
            credentials=credentials,
        )

    def dataset(self, step: DatasetStep, ctx: StepContext) -> dict[str, Any]:
        from beam_pipelines.spec import load_spec

        assert step.gcp is not None
        gcp = step.gcp
        spec = load_spec(step.spec)
        if gcp.launch == "local":
            from beam_pipelines.dataset import run_job

            run_job(spec, output=gcp.output, inputs=step.inputs or None, beam_args=gcp.beam_args)
        else:
            from launchers.dataflow import jobs

            client = jobs.jobs_client(api_endpoint=self.settings.dataflow_api_endpoint)
            if gcp.launch == "dataflow":
                from launchers.dataflow.settings import DataflowSettings, resolve_settings
                from launchers.dataflow.submit import SubmittedJob, submit

                settings: DataflowSettings
                settings, rest = resolve_settings(spec.dataflow, gcp.beam_args)
                submitted = submit(
                    spec, settings, output=gcp.output, inputs=step.inputs or None, beam_args=rest
                )
                assert isinstance(submitted, SubmittedJob)
                job_id = submitted.job_id
            else:
                assert gcp.template is not None
                job = jobs.launch_flex_template(
                    jobs.templates_client(api_endpoint=self.settings.dataflow_api_endpoint),
                    project=self.settings.project,
                    region=self.settings.region,
                    job_name=f"{ctx.chain.name}-{step.name}-{_stamp()}".lower().replace("_", "-"),
                    template_path=gcp.template,
                    parameters=flex_template_parameters(step),
                )
                job_id = job.id
            # Training never starts on a job that has merely been submitted.
            jobs.wait_for_job(
                client,
                jobs.JobRef(self.settings.project, self.settings.region, job_id),
                timeout=gcp.timeout,
            )
        return _recorded(ctx, step, dataset_outputs(gcp.output, read_manifest(gcp.output)))

    def train(self, step: TrainStep, ctx: StepContext) -> dict[str, Any]:
        from launchers import vertex
        from launchers.local_train import read_metrics
        from launchers.polling import Backoff

        assert step.gcp is not None
        gcp = step.gcp
        dataset = ctx.inputs[step.dataset]
        base = posixpath.join(self.settings.staging_bucket, ctx.chain.name, step.name, _stamp())
        specs = vertex.worker_pool_specs(
            image_uri=gcp.image_uri,
            command=gcp.command,
            args=step.args if gcp.args is None else gcp.args,
            env=training_uris(step, dataset),
            machine_type=gcp.machine_type,
            replica_count=gcp.replica_count,
        )
        job = vertex.submit_custom_job(
            display_name=f"{ctx.chain.name}-{step.name}",
            specs=specs,
            base_output_dir=base,
            service_account=self.settings.service_account,
            labels={"beamforge-chain": _label(ctx.chain.name)},
        )
        vertex.wait_for_custom_job(
            job.resource_name,
            timeout=gcp.timeout,
            backoff=Backoff(initial=gcp.poll_seconds, factor=1.5, maximum=120.0),
        )
        # Vertex sets AIP_MODEL_DIR to {base_output_directory}/model.
        model_dir = posixpath.join(base, "model")
        metrics = read_metrics(model_dir)
        copy_artifact(dataset["artifact"], model_dir)
        outputs = {"model_dir": model_dir, "metrics": metrics, "job": job.resource_name}
        return _recorded(ctx, step, outputs)

    def upload(self, step: UploadStep, ctx: StepContext) -> dict[str, Any]:
        from launchers import vertex

        assert step.gcp is not None
        gcp = step.gcp
        model_dir = ctx.inputs[step.model]["model_dir"]
        module, _, cls = step.predictor.partition(":")
        name = vertex.upload_model(
            display_name=step.display_name or ctx.chain.name,
            artifact_uri=model_dir,
            container=vertex.ServingContainer(
                image_uri=gcp.image_uri,
                predict_route=gcp.predict_route,
                health_route=gcp.health_route,
                port=gcp.port,
                env={**gcp.env, "PREDICTOR_MODULE": module, "PREDICTOR_CLASS": cls},
            ),
            labels={"beamforge-chain": _label(ctx.chain.name)},
        )
        outputs = {"model": name, "model_dir": model_dir, "predictor": step.predictor}
        return _recorded(ctx, step, outputs)

    def deploy(self, step: DeployStep, ctx: StepContext) -> dict[str, Any]:
        from launchers import vertex

        assert step.gcp is not None
        gcp = step.gcp
        setting = gcp.canary or step.canary
        if setting is not None:
            return _recorded(ctx, step, self._deploy_canary(step, setting, ctx))
        deployment = vertex.deploy_model(
            model_name=ctx.inputs[step.model]["model"],
            endpoint_display_name=gcp.endpoint,
            machine_type=gcp.machine_type,
            min_replica_count=gcp.min_replica_count,
            max_replica_count=gcp.max_replica_count,
            traffic_percentage=gcp.traffic_percentage,
            undeploy_replaced=gcp.undeploy_replaced,
            service_account=self.settings.service_account,
        )
        return _recorded(ctx, step, dataclasses.asdict(deployment))

    def _deploy_canary(
        self, step: DeployStep, setting: CanarySetting, ctx: StepContext
    ) -> dict[str, Any]:
        """Deploys as a canary beside the endpoint's models, then promotes or rolls back.

        The canary takes ``canary.share`` of the endpoint (the models there share the rest
        as before); its answers are read from Cloud Monitoring until it has served
        ``min_requests``. Promoted: it takes 100 %, then the models it replaces are
        undeployed. Rolled back: the split before it is restored, it is undeployed, and
        :class:`CanaryRolledBackError` stops the chain; so does a Cloud Monitoring read that
        fails (one line naming it). An endpoint with no model yet gets a plain deployment.
        """
        from google.api_core.exceptions import GoogleAPIError

        from launchers import vertex
        from launchers.chain.canary import NO_PREVIOUS, watch
        from launchers.chain.errors import CanaryRolledBackError

        assert step.gcp is not None
        gcp = step.gcp
        found = vertex.endpoint_traffic(gcp.endpoint)
        before = found[1] if found is not None else {}
        share = setting.share if before else 100
        started = dt.datetime.now(dt.UTC)
        deployment = vertex.deploy_model(
            model_name=ctx.inputs[step.model]["model"],
            endpoint_display_name=gcp.endpoint,
            machine_type=gcp.machine_type,
            min_replica_count=gcp.min_replica_count,
            max_replica_count=gcp.max_replica_count,
            traffic_percentage=share,
            undeploy_replaced=not before,
            service_account=self.settings.service_account,
        )
        outputs = dataclasses.asdict(deployment)
        if not before:
            _LOG.info("%s", NO_PREVIOUS)
            return outputs | {"canary": {"decision": "plain", "reason": NO_PREVIOUS}}
        endpoint, new = deployment.endpoint, deployment.deployed_model_id
        client = vertex.monitoring_client(
            gcp.monitoring_api_endpoint, credentials=self._credentials
        )

        def read() -> Any:
            try:
                return vertex.deployed_model_figures(
                    client,
                    project=self.settings.project,
                    endpoint_id=endpoint.rsplit("/", 1)[-1],
                    deployed_model_id=new,
                    start=started,
                    end=dt.datetime.now(dt.UTC),
                )
            except (GoogleAPIError, OSError) as exc:
                _LOG.warning("canary %s: Cloud Monitoring: %s", new, exc)
                # gRPC errors run to several lines; the chain's error is one.
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise _MonitoringError(
                    f"its figures could not be read from Cloud Monitoring "
                    f"({type(exc).__name__}: {first})"
                ) from None

        try:
            verdict = watch(read, setting, poll_seconds=setting.poll_seconds or 60.0)
        except _MonitoringError as exc:
            vertex.set_traffic_split(endpoint, before)
            vertex.undeploy(endpoint, new)
            raise CanaryRolledBackError(step.name, f"canary rolled back: {exc}") from None
        except BaseException:
            vertex.set_traffic_split(endpoint, before)
            vertex.undeploy(endpoint, new)
            raise
        if not verdict.promote:
            vertex.set_traffic_split(endpoint, before)
            vertex.undeploy(endpoint, new)
            raise CanaryRolledBackError(step.name, f"canary rolled back: {verdict.reason}")
        split = vertex.set_traffic_split(endpoint, {new: 100})
        # The models it replaces go only once it takes all the traffic.
        undeployed = []
        if gcp.undeploy_replaced:
            for old in sorted(before):
                vertex.undeploy(endpoint, old)
                undeployed.append(old)
            split = {new: 100}
        _LOG.info("canary %s promoted: %s", new, verdict.reason)
        return outputs | {
            "traffic_split": split,
            "undeployed": undeployed,
            "canary": verdict.to_json(),
        }

    def still_valid(self, step: Any, outputs: Mapping[str, Any]) -> bool:
        if isinstance(step, DatasetStep):
            return dataset_unchanged(outputs)
        return True


class _MonitoringError(Exception):
    """A canary's figures could not be read from Cloud Monitoring (one line: why)."""


def flex_template_parameters(step: DatasetStep) -> dict[str, str]:
    """The dataset step's Flex Template parameters: its own, its inputs and its output."""
    assert step.gcp is not None
    parameters = dict(step.gcp.parameters)
    if step.inputs and "input" not in parameters:
        parameters["input"] = ",".join(step.inputs)
    parameters["output"] = step.gcp.output
    return parameters


def _recorded(ctx: StepContext, step: Any, outputs: dict[str, Any]) -> dict[str, Any]:
    """The step's outputs, once its lineage is recorded (a failure to record only warns)."""
    from launchers.lineage import record_step

    record_step(ctx, step, outputs)
    return outputs


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")


def _label(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value.lower())[:63]
