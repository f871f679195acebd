"""A chain as a Vertex AI Pipelines pipeline, with Google Cloud Pipeline Components.

The steps become Google's own components, chained the way their samples chain them:

- dataset: ``DataflowFlexTemplateJobOp`` launches the Flex Template, ``WaitGcpResourcesOp``
  waits for the job to finish (training never starts on a job that was merely submitted);
- train: a small component reads the committed dataset's manifest (the run's folder is known
  only after the job), ``CustomTrainingJobOp`` trains with the ``AIP_*`` contract, and a
  small component reads ``metrics.json`` and copies the transform artifact into the model
  directory;
- gate: a small component evaluates ``min <= metric <= max`` (a champion gate also scores
  the new model against the one the deploy step's endpoint serves now,
  :mod:`launchers.chain.champion`); every step after it sits inside ``dsl.If`` on its result;
- upload: ``dsl.importer`` brings the model directory in as an ``UnmanagedContainerModel``
  with the serving container, ``ModelUploadOp`` registers it;
- deploy: a small component looks the endpoint up by display name; ``dsl.If`` imports the
  one found, ``dsl.Else`` creates one (``EndpointCreateOp``), and ``dsl.OneOf`` hands
  whichever there is to ``ModelDeployOp`` with the step's machine, replicas and traffic.

The pipeline's parameters are the chain's (:mod:`~launchers.chain.compile.kfp_parameters`):
step fields that refer to ``${name}`` are resolved by Vertex when the run starts, and its
default pipeline root is ``gcp.pipeline_root`` (or ``{staging_bucket}/pipelines``).

The small components run in the chain's training image (``gcp.image_uri`` of the first
training step), which has beamforge installed: they call the same handoff code as
``beamforge chain --target gcp`` (the manifest's check of the split files, the artifact's
verified copy, the gate) instead of a second version of it in a bare ``python`` image, and
they pip-install nothing when they start, so a run in a VPC without a route to a package
index works. The image needs ``beamforge[gcp,orchestrators]`` (kfp for the task's
executor, google-cloud-storage and google-cloud-aiplatform for the lookups).

Rerunning and caching: Vertex reuses a task whose component and inputs are unchanged.
``beamforge chain`` reruns the dataset when its configuration or its input files changed
(:mod:`~launchers.chain.fingerprints`); here a fingerprint task (never cached) hashes the
step's configuration, with parameters resolved, and the size, generation and MD5 of every
GCS object the job reads (inputs, template, specs given as template parameters). The
fingerprint goes into the Flex Template launch's job name and labels, so the launch, and
everything after it, is reused exactly when nothing the job reads changed. Every other task
keeps caching on, keyed on what its inputs carry: the manifest reader on the finished job,
training on the dataset run's URIs, the rest on the training job and the model; the
endpoint lookup is never cached, since an endpoint changes outside the pipeline. Where
Vertex sees less than ``beamforge chain`` does:

- the training code is inside the training image: a new build must get a new tag (or be
  given by digest), or a rerun reuses the model trained by the old one;
- a launch reused from a run whose Dataflow job then failed makes the wait fail again: rerun
  that pipeline with caching off (``enable_caching=False``);
- the dataset step's ``gcp.timeout`` has no counterpart: the wait lasts as long as the job.
"""

# No postponed annotations here: kfp reads the pipeline function's parameter types.
import contextlib
import dataclasses
import json
import math
import os
import posixpath
from collections.abc import Mapping
from typing import Any

from launchers.chain.compile import pipeline_name
from launchers.chain.parameters import references, templated_leaves
from launchers.chain.spec import ChainSpec, DatasetStep, GcpSettings, check_target
from transforms.core.config import SpecError

# Labels on every job, model and endpoint the pipeline makes.
CHAIN_LABEL = "beamforge-chain"
FINGERPRINT_LABEL = "beamforge-fingerprint"


def compile_kfp_gcp(spec: ChainSpec, *, output: str) -> str:
    """Writes the chain as a Vertex AI pipeline (IR YAML) of Google Cloud Pipeline Components.

    Args:
        spec: The validated chain.
        output: The pipeline file to write.

    Returns:
        ``output``.

    Raises:
        SpecError: at the YAML path of what the pipeline cannot express: a missing ``gcp``
            section, a dataset step not launched as a Flex Template, no training step (whose
            image the small components run in) or a templated training image.
    """
    from kfp import compiler, dsl

    from launchers.chain.compile.gcp_components import components
    from launchers.chain.compile.kfp_parameters import channel_steps, pipeline_function

    settings, image = _check(spec)
    ops = components(image)

    def body(channels: Mapping[str, Any]) -> None:
        _add_tasks(spec, channel_steps(spec, channels), _Written(spec, channels), settings, ops)

    pipeline = dsl.pipeline(
        name=pipeline_name(spec.name),
        description=f"chain {spec.name} (gcp)",
        pipeline_root=settings.root(),
    )(pipeline_function(spec, body))
    # Checked and built: only now is anything written.
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    compiler.Compiler().compile(pipeline, output)
    return output


def _check(spec: ChainSpec) -> tuple[GcpSettings, str]:
    """The gcp settings and the small components' image; SpecError for what cannot be built."""
    check_target(spec, "gcp")
    assert spec.gcp is not None
    for i, step in enumerate(spec.steps):
        if isinstance(step, DatasetStep) and step.gcp and step.gcp.launch != "flex_template":
            raise SpecError(
                f"steps[{i}].gcp.launch",
                f"a Vertex AI pipeline launches the dataset job as a Flex Template, not "
                f"{step.gcp.launch!r}; use launch: flex_template with template: gs://... "
                "(beamforge template build makes one)",
                source=spec.origin,
            )
    trains = [i for i, step in enumerate(spec.steps) if step.KIND == "train"]
    if not trains:
        raise SpecError(
            "steps",
            "a Vertex AI pipeline needs a train step: its gcp.image_uri (with beamforge "
            "installed) runs the pipeline's own small components",
            source=spec.origin,
        )
    i = trains[0]
    templated = [p for p, _, _ in templated_leaves(spec.raw_steps[i], f"steps[{i}]")]
    path = f"steps[{i}].gcp.image_uri"
    if path in templated:
        text = spec.raw_steps[i]["gcp"]["image_uri"]
        raise SpecError(
            path,
            f"refers to ${{{references(text)[0]}}}, but the pipeline's small components run in "
            "this image, which must be known when the chain is compiled; write it out",
            source=spec.origin,
        )
    return spec.gcp, spec.steps[i].gcp.image_uri


def _label(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value.lower())[:63]


class _Written:
    """Each step as the chain file writes it, for the small components that take a step.

    A step travels as its JSON text, ``${name}`` and all, with the channels of the
    parameters it refers to: the component resolves and validates it with the chain's own
    code when the task runs (a value put into the text by kfp could break the JSON).
    """

    def __init__(self, spec: ChainSpec, channels: Mapping[str, Any]) -> None:
        self._spec = spec
        self._channels = channels

    def __call__(self, name: str) -> tuple[str, dict[str, Any]]:
        """The step's JSON text and the channels of the parameters it refers to, by name."""
        (raw,) = [s for s in self._spec.raw_steps if s.get("name") == name]
        used = [n for _, _, text in templated_leaves(raw) for n in references(text)]
        channels = {n: self._channels[n] for n in sorted(set(used))}
        return json.dumps(raw, sort_keys=True, default=str), channels


@dataclasses.dataclass(frozen=True)
class _Context:
    """What adding a step's tasks needs: the chain, its settings and the tasks so far."""

    spec: ChainSpec
    settings: GcpSettings
    ops: Any
    labels: dict[str, str]
    written: _Written
    # The task each step's outputs come from, and each dataset step's gcs output folder.
    tasks: dict[str, Any]
    roots: dict[str, str]


def _add_tasks(
    spec: ChainSpec, steps: list[Any], written: _Written, settings: GcpSettings, ops: Any
) -> None:
    from kfp import dsl

    labels = {**settings.labels, CHAIN_LABEL: _label(spec.name)}
    tasks: dict[str, Any] = {}
    context = _Context(spec, settings, ops, labels, written, tasks, {})
    with contextlib.ExitStack() as conditions:
        for step in steps:
            tasks[step.name] = _ADD[step.KIND](context, step)
            if step.KIND == "gate":
                conditions.enter_context(
                    dsl.If(tasks[step.name].output == True, name=f"{step.name}-passed")  # noqa: E712
                )


def _dataset(c: _Context, step: Any) -> Any:
    from google_cloud_pipeline_components.v1.dataflow import DataflowFlexTemplateJobOp
    from google_cloud_pipeline_components.v1.wait_gcp_resources import WaitGcpResourcesOp

    from launchers.chain.backends.gcp import flex_template_parameters

    gcp = step.gcp
    parameters = flex_template_parameters(step)
    written, values = c.written(step.name)
    fingerprint = c.ops.fingerprint_dataset(step=written, parameters=values)
    fingerprint.set_display_name(f"{step.name}-fingerprint")
    # It looks at GCS each run: a cached fingerprint would miss a changed input.
    fingerprint.set_caching_options(False)
    launch = DataflowFlexTemplateJobOp(
        project=c.settings.project,
        location=c.settings.region,
        container_spec_gcs_path=gcp.template,
        job_name=f"{pipeline_name(c.spec.name)}-{pipeline_name(step.name)}-{fingerprint.output}",
        parameters=parameters,
        service_account_email=c.settings.service_account or "",
        # Dataflow takes the network's name (Vertex AI takes its full path).
        network=posixpath.basename(c.settings.network or ""),
        kms_key_name=c.settings.kms_key or "",
        additional_user_labels={**c.labels, FINGERPRINT_LABEL: fingerprint.output},
    )
    launch.set_display_name(f"{step.name}-launch")
    wait = WaitGcpResourcesOp(gcp_resources=launch.outputs["gcp_resources"])
    wait.set_display_name(f"{step.name}-wait")
    c.roots[step.name] = gcp.output
    return wait


def _train(c: _Context, step: Any) -> Any:
    from google_cloud_pipeline_components.v1.custom_job import CustomTrainingJobOp

    from launchers import vertex

    gcp = step.gcp
    written, values = c.written(step.name)
    handoff = c.ops.read_dataset(
        root=c.roots[step.dataset],
        gcp_resources=c.tasks[step.dataset].outputs["gcp_resources"],
        train=written,
        parameters=values,
        base_root=posixpath.join(c.settings.staging_bucket, c.spec.name, step.name),
    )
    handoff.set_display_name(f"{step.name}-dataset")
    # The variables Vertex gives a training container for a managed dataset.
    env = {
        "AIP_TRAINING_DATA_URI": handoff.outputs["training_data_uri"],
        "AIP_DATA_FORMAT": handoff.outputs["data_format"],
    }
    if step.splits.validation is not None:
        env["AIP_VALIDATION_DATA_URI"] = handoff.outputs["validation_data_uri"]
    if step.splits.test is not None:
        env["AIP_TEST_DATA_URI"] = handoff.outputs["test_data_uri"]
    job = CustomTrainingJobOp(
        project=c.settings.project,
        location=c.settings.region,
        display_name=f"{c.spec.name}-{step.name}",
        worker_pool_specs=vertex.worker_pool_specs(
            image_uri=gcp.image_uri,
            command=gcp.command,
            args=step.args if gcp.args is None else gcp.args,
            env=env,
            machine_type=gcp.machine_type,
            replica_count=gcp.replica_count,
        ),
        # Vertex sets AIP_MODEL_DIR to {base_output_directory}/model.
        base_output_directory=handoff.outputs["base_output_directory"],
        service_account=c.settings.service_account or "",
        network=c.settings.network or "",
        encryption_spec_key_name=c.settings.kms_key or "",
        labels=c.labels,
        **({"timeout": f"{math.ceil(gcp.timeout)}s"} if gcp.timeout else {}),
    )
    job.set_display_name(step.name)
    outputs = c.ops.read_training(
        base_output_directory=handoff.outputs["base_output_directory"],
        artifact=handoff.outputs["artifact"],
        gcp_resources=job.outputs["gcp_resources"],
    )
    outputs.set_display_name(f"{step.name}-model")
    return outputs


def _gate(c: _Context, step: Any) -> Any:
    written, values = c.written(step.name)
    if step.metrics in c.roots:
        # A data gate: the dataset's validation counts, read from its committed manifest.
        task = c.ops.check_data_gate(
            gate=written,
            parameters=values,
            root=c.roots[step.metrics],
            gcp_resources=c.tasks[step.metrics].outputs["gcp_resources"],
        )
    elif step.champion is not None:
        # Against the model the deploy step's endpoint serves now, on the run's eval rows.
        train = c.spec.step(step.metrics)
        steps = {k: c.written(k) for k in (train.dataset, train.name, step.champion.deploy)}
        for _, channels in steps.values():
            values = {**values, **channels}
        task = c.ops.check_champion_gate(
            gate=written,
            parameters=values,
            metrics_json=c.tasks[step.metrics].outputs["metrics_json"],
            model_dir=c.tasks[step.metrics].outputs["model_dir"],
            root=c.roots[train.dataset],
            dataset=steps[train.dataset][0],
            train=steps[train.name][0],
            deploy=steps[step.champion.deploy][0],
            project=c.settings.project,
            location=c.settings.region,
        )
    else:
        task = c.ops.check_gate(
            gate=written,
            parameters=values,
            metrics_json=c.tasks[step.metrics].outputs["metrics_json"],
        )
    task.set_display_name(step.name)
    return task


def _upload(c: _Context, step: Any) -> Any:
    from google_cloud_pipeline_components.types.artifact_types import UnmanagedContainerModel
    from google_cloud_pipeline_components.v1.model import ModelUploadOp
    from kfp import dsl

    gcp = step.gcp
    module, _, cls = step.predictor.partition(":")
    env = {**gcp.env, "PREDICTOR_MODULE": module, "PREDICTOR_CLASS": cls}
    model = dsl.importer(
        artifact_uri=c.tasks[step.model].outputs["model_dir"],
        artifact_class=UnmanagedContainerModel,
        metadata={
            "containerSpec": {
                "imageUri": gcp.image_uri,
                "predictRoute": gcp.predict_route,
                "healthRoute": gcp.health_route,
                "ports": [{"containerPort": gcp.port}],
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
            }
        },
    )
    model.set_display_name(f"{step.name}-model")
    upload = ModelUploadOp(
        project=c.settings.project,
        location=c.settings.region,
        display_name=step.display_name or c.spec.name,
        unmanaged_container_model=model.output,
        labels=c.labels,
        encryption_spec_key_name=c.settings.kms_key or "",
    )
    upload.set_display_name(step.name)
    return upload


def _deploy(c: _Context, step: Any) -> Any:
    from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint
    from google_cloud_pipeline_components.v1.endpoint import EndpointCreateOp, ModelDeployOp
    from kfp import dsl

    gcp = step.gcp
    lookup = c.ops.find_endpoint(
        project=c.settings.project,
        location=c.settings.region,
        display_name=gcp.endpoint,
        percentage=gcp.traffic_percentage,
    )
    lookup.set_display_name(f"{step.name}-find-endpoint")
    # An endpoint changes outside the pipeline: look again every run.
    lookup.set_caching_options(False)
    # dsl.OneOf (kfp >= 2.7) hands on whichever branch ran: the endpoint found (brought in as
    # an artifact) or the one created, so a rerun reuses the endpoint instead of adding one.
    with dsl.If(lookup.outputs["found"] == True, name=f"{step.name}-endpoint-found"):  # noqa: E712
        found = dsl.importer(
            artifact_uri=lookup.outputs["uri"],
            artifact_class=VertexEndpoint,
            metadata={"resourceName": lookup.outputs["resource_name"]},
        )
        found.set_display_name(f"{step.name}-endpoint")
    with dsl.Else(name=f"{step.name}-endpoint-missing"):
        created = EndpointCreateOp(
            project=c.settings.project,
            location=c.settings.region,
            display_name=gcp.endpoint,
            labels=c.labels,
            encryption_spec_key_name=c.settings.kms_key or "",
        )
        created.set_display_name(f"{step.name}-create-endpoint")
    # All the traffic to the new model is known now; a share of it depends on the models
    # already on the endpoint, which the lookup splits the rest between.
    split: Any = {"0": 100} if gcp.traffic_percentage == 100 else lookup.outputs["traffic_split"]
    deploy = ModelDeployOp(
        model=c.tasks[step.model].outputs["model"],
        endpoint=dsl.OneOf(found.output, created.outputs["endpoint"]),
        traffic_split=split,
        dedicated_resources_machine_type=gcp.machine_type,
        dedicated_resources_min_replica_count=gcp.min_replica_count,
        dedicated_resources_max_replica_count=gcp.max_replica_count,
        service_account=c.settings.service_account or "",
    )
    deploy.set_display_name(step.name)
    if gcp.undeploy_replaced and gcp.traffic_percentage == 100:
        # As beamforge chain does: once the new model serves everything, the ones it
        # replaced stop costing money.
        retire = c.ops.undeploy_replaced(
            project=c.settings.project,
            location=c.settings.region,
            endpoint=lookup.outputs["resource_name"],
            deployed_model_ids=lookup.outputs["deployed_model_ids"],
            gcp_resources=deploy.outputs["gcp_resources"],
        )
        retire.set_display_name(f"{step.name}-undeploy-replaced")
        retire.set_caching_options(False)
    return deploy


_ADD = {"dataset": _dataset, "train": _train, "gate": _gate, "upload": _upload, "deploy": _deploy}
