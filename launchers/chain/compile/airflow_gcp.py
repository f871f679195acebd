"""The ``gcp`` target's DAG: the Google provider's Dataflow and Vertex AI operators.

Each step becomes the operators Cloud Composer users chain by hand, doing what
:class:`~launchers.chain.backends.GcpBackend` does:

- dataset: ``DataflowStartFlexTemplateOperator`` (the step's Flex Template, its parameters
  with ``input`` and ``output``), then ``DataflowJobStatusSensor`` until the job is DONE --
  training never starts on a job that has merely been submitted;
- train: ``{step}_inputs`` reads the dataset's manifest (GCSHook) for the ``AIP_*`` URIs and
  picks the job's base output directory; ``CreateCustomJobOperator`` runs the container with
  them; ``{step}_artifact`` copies the transform artifact beside the model for serving;
- gate: a ``ShortCircuitOperator`` reading ``metrics.json`` from the model directory;
- upload: ``UploadModelOperator`` with the serving container (``PREDICTOR_MODULE``/``CLASS``);
- deploy: ``{step}_endpoint`` reuses the endpoint with the display name or branches to
  ``CreateEndpointOperator``; ``DeployModelOperator`` deploys with the chain's traffic split
  (the models already there share the rest); ``{step}_retire`` undeploys what a model taking
  all the traffic replaced.

Project, region, service account and labels come from the chain's ``gcp`` section; fields
that refer to a chain parameter are ``{{ params['NAME'] }}`` in the operators' templated fields.
"""

from __future__ import annotations

import posixpath
from typing import Any

from launchers.chain.compile import airflow_runtime
from launchers.chain.compile.airflow_dag import DagParts
from launchers.chain.compile.airflow_source import Code, call, identifier, literal, timedelta, xcom
from launchers.chain.parameters import overlay, references
from launchers.chain.spec import (
    ChainSpec,
    DatasetStep,
    DeployStep,
    GateStep,
    TrainStep,
    UploadStep,
    check_target,
)
from transforms.core.config import SpecError

# Seconds between the Dataflow sensor's polls (it gives its worker slot back in between).
_DATAFLOW_POKE_SECONDS = 30

_DOC = """\
The steps run on Google Cloud with the Google provider's operators: the dataset as a
Dataflow Flex Template job (waited on by a sensor), training as a Vertex AI CustomJob given
the dataset's splits as AIP_* URIs, the gate on the trainer's metrics.json, then Model
upload, endpoint create or reuse, and deployment with the chain's traffic split. The
connection google_cloud_default gives the credentials."""

_DEPLOY_CLASS = '''\
class DeployModelWithSplit(DeployModelOperator):
    """DeployModelOperator whose traffic split is templated: the endpoint lookup computes it."""

    template_fields = (*DeployModelOperator.template_fields, "traffic_split")
'''


def gcp_parts(spec: ChainSpec) -> DagParts:
    """The tasks, constants and functions of a gcp-target DAG.

    Raises:
        SpecError: at the YAML path of a missing gcp section, a dataset not launched as a
            Flex Template, or an endpoint name that refers to a parameter.
    """
    from beam_pipelines.dataset import EXTENSIONS

    check_target(spec, "gcp")
    assert spec.gcp is not None
    gcp = spec.gcp
    for i, (step, raw) in enumerate(zip(spec.steps, spec.raw_steps, strict=True)):
        if isinstance(step, DatasetStep) and step.gcp and step.gcp.launch != "flex_template":
            raise SpecError(
                f"steps[{i}].gcp.launch",
                f"the Airflow DAG launches a dataset as a Dataflow Flex Template; got "
                f"launch: {step.gcp.launch} (build one with beamforge template build, then set "
                "launch: flex_template and template)",
                source=spec.origin,
            )
        endpoint = (raw.get("gcp") or {}).get("endpoint") if isinstance(step, DeployStep) else None
        if isinstance(endpoint, str) and references(endpoint):
            raise SpecError(
                f"steps[{i}].gcp.endpoint",
                "CreateEndpointOperator does not template its endpoint: give the endpoint's "
                "display name as text, not a parameter",
                source=spec.origin,
            )
    steps = overlay(spec.steps, spec.raw_steps, lambda name: f"{{{{ params[{name!r}] }}}}")
    labels = {"beamforge-chain": _label(spec.name), **gcp.labels}
    constants = (
        f"PROJECT = {literal(gcp.project)}\n"
        f"REGION = {literal(gcp.region)}\n"
        f"SERVICE_ACCOUNT = {literal(gcp.service_account)}\n"
        f"LABELS = {literal(labels)}\n"
        'GCP_CONN_ID = "google_cloud_default"\n'
        "# The file extension of each dataset format, for the AIP_*_DATA_URI patterns.\n"
        f"EXTENSIONS = {literal(dict(EXTENSIONS))}\n"
    )
    builder = _Builder(spec)
    for step in steps:
        if isinstance(step, DatasetStep):
            builder.dataset(step)
        elif isinstance(step, TrainStep):
            builder.train(step, steps)
        elif isinstance(step, GateStep):
            builder.gate(step)
        elif isinstance(step, UploadStep):
            builder.upload(step)
        elif isinstance(step, DeployStep):
            builder.deploy(step)
    return DagParts(
        doc=_DOC,
        imports=[
            "from airflow.providers.google.cloud.operators.dataflow import (\n"
            "    DataflowStartFlexTemplateOperator,\n"
            ")",
            "from airflow.providers.google.cloud.operators.vertex_ai.custom_job import (\n"
            "    CreateCustomJobOperator,\n"
            ")",
            "from airflow.providers.google.cloud.operators.vertex_ai.endpoint_service import (\n"
            "    CreateEndpointOperator,\n"
            "    DeployModelOperator,\n"
            ")",
            "from airflow.providers.google.cloud.operators.vertex_ai.model_service import (\n"
            "    UploadModelOperator,\n"
            ")",
            "from airflow.providers.google.cloud.sensors.dataflow import DataflowJobStatusSensor",
            "from airflow.providers.standard.operators.python import (\n"
            "    BranchPythonOperator,\n"
            "    PythonOperator,\n"
            "    ShortCircuitOperator,\n"
            ")",
            "from airflow.sdk import XComArg",
            # The functions' annotations name it.
            "from typing import Any",
        ],
        constants=constants,
        functions=airflow_runtime.source(airflow_runtime.GCP_FUNCTIONS) + "\n\n" + _DEPLOY_CLASS,
        tasks="\n".join(builder.tasks) + "\n    " + "\n    ".join(builder.edges) + "\n",
        default_args={
            "owner": "beamforge",
            # Google API calls fail now and then; a job that failed is not retried blindly
            # more than twice.
            "retries": 2,
            "retry_delay": timedelta(60),
            "retry_exponential_backoff": True,
        },
    )


class _Builder:
    """Adds each step's operators, chaining the first of a step after the last of the one before."""

    def __init__(self, spec: ChainSpec) -> None:
        assert spec.gcp is not None
        self.spec = spec
        self.gcp = spec.gcp
        self.tasks: list[str] = []
        self.edges: list[str] = []
        self._names: set[str] = set()
        self._task_ids: set[str] = set()
        self._last: str | None = None
        # What later steps read of earlier ones: a step's output root, a training's inputs task.
        self.dataset_output: dict[str, str] = {}
        self.train_inputs: dict[str, str] = {}
        self.display_names: dict[str, str] = {}

    def _add(self, task_id: str, operator: str, arguments: list[tuple[str, Any]]) -> str:
        # Step names are unique, but a step's extra task can take another step's extra id
        # (deploy's create_endpoint and deploy_create's endpoint).
        if task_id in self._task_ids:
            raise SpecError(
                "steps",
                f"two tasks of the DAG would be named {task_id!r}; rename one of the steps",
                source=self.spec.origin,
            )
        self._task_ids.add(task_id)
        var = identifier(task_id, self._names)
        self.tasks.append(call(var, operator, [("task_id", task_id), *arguments], 1))
        return var

    def _extra_id(self, step_name: str, suffix: str) -> str:
        task_id = f"{step_name}_{suffix}"
        if task_id in {s.name for s in self.spec.steps}:
            index = [s.name for s in self.spec.steps].index(step_name)
            raise SpecError(
                f"steps[{index}].name",
                f"the DAG names a task of step {step_name!r} {task_id!r}, which is also a "
                "step's name; rename one",
                source=self.spec.origin,
            )
        return task_id

    def _chain(self, *variables: str) -> None:
        # The chain's order holds even between steps that pass each other nothing.
        path = ([self._last] if self._last else []) + list(variables)
        if len(path) > 1:
            self.edges.append(" >> ".join(path))
        self._last = variables[-1]

    def _google(self) -> list[tuple[str, Any]]:
        return [
            ("project_id", Code("PROJECT")),
            ("gcp_conn_id", Code("GCP_CONN_ID")),
        ]

    def dataset(self, step: DatasetStep) -> None:
        from launchers.chain.backends.gcp import flex_template_parameters

        assert step.gcp is not None
        environment: dict[str, Any] = {"additionalUserLabels": Code("LABELS")}
        if self.gcp.service_account:
            environment["serviceAccountEmail"] = Code("SERVICE_ACCOUNT")
        body = {
            "launchParameter": {
                "jobName": _job_name(f"{self.spec.name}-{step.name}"),
                "containerSpecGcsPath": step.gcp.template,
                "parameters": flex_template_parameters(step),
                "environment": environment,
            }
        }
        launch = self._add(
            step.name,
            "DataflowStartFlexTemplateOperator",
            [
                ("location", Code("REGION")),
                *self._google(),
                ("body", body),
                # The sensor waits for the job: the launch only submits it.
                ("wait_until_finished", False),
                ("append_job_name", True),
            ],
        )
        sensor_arguments: list[tuple[str, Any]] = [
            ("job_id", xcom(step.name, key="job_id")),
            ("expected_statuses", "JOB_STATE_DONE"),
            ("location", Code("REGION")),
            *self._google(),
            ("poke_interval", _DATAFLOW_POKE_SECONDS),
            ("mode", "reschedule"),
        ]
        if step.gcp.timeout is not None:
            sensor_arguments.append(("timeout", step.gcp.timeout))
        done = self._add(
            self._extra_id(step.name, "done"), "DataflowJobStatusSensor", sensor_arguments
        )
        self._chain(launch, done)
        self.dataset_output[step.name] = step.gcp.output

    def train(self, step: TrainStep, steps: list[Any]) -> None:
        assert step.gcp is not None
        gcp = step.gcp
        inputs_id = self._extra_id(step.name, "inputs")
        inputs = self._add(
            inputs_id,
            "PythonOperator",
            [
                ("python_callable", Code("training_inputs")),
                (
                    "op_kwargs",
                    {
                        "dataset": self.dataset_output[step.dataset],
                        "splits": {
                            "training": step.splits.training,
                            "validation": step.splits.validation,
                            "test": step.splits.test,
                        },
                        "extensions": Code("EXTENSIONS"),
                        "output_root": posixpath.join(
                            self.gcp.staging_bucket, self.spec.name, step.name
                        ),
                        "gcp_conn_id": Code("GCP_CONN_ID"),
                    },
                ),
            ],
        )
        roles = [
            ("AIP_TRAINING_DATA_URI", step.splits.training),
            ("AIP_VALIDATION_DATA_URI", step.splits.validation),
            ("AIP_TEST_DATA_URI", step.splits.test),
        ]
        env = [
            {"name": name, "value": xcom(inputs_id, "env", name)}
            for name, split in roles
            if split is not None
        ] + [{"name": "AIP_DATA_FORMAT", "value": xcom(inputs_id, "env", "AIP_DATA_FORMAT")}]
        container: dict[str, Any] = {"image_uri": gcp.image_uri}
        if gcp.command:
            container["command"] = list(gcp.command)
        args = step.args if gcp.args is None else gcp.args
        if args:
            container["args"] = list(args)
        container["env"] = env
        job_spec: dict[str, Any] = {
            "worker_pool_specs": [
                {
                    "machine_spec": {"machine_type": gcp.machine_type},
                    "replica_count": gcp.replica_count,
                    "container_spec": container,
                }
            ],
            "base_output_directory": {
                "output_uri_prefix": xcom(inputs_id, "base_output_directory")
            },
        }
        if self.gcp.service_account:
            job_spec["service_account"] = Code("SERVICE_ACCOUNT")
        arguments: list[tuple[str, Any]] = [
            ("region", Code("REGION")),
            *self._google(),
            (
                "custom_job",
                {
                    "display_name": f"{self.spec.name}-{step.name}",
                    "job_spec": job_spec,
                    "labels": Code("LABELS"),
                },
            ),
            ("poll_interval", max(1, round(gcp.poll_seconds))),
        ]
        if gcp.timeout is not None:
            arguments.append(("execution_timeout", timedelta(gcp.timeout)))
        job = self._add(step.name, "CreateCustomJobOperator", arguments)
        artifact = self._add(
            self._extra_id(step.name, "artifact"),
            "PythonOperator",
            [
                ("python_callable", Code("copy_artifact")),
                (
                    "op_kwargs",
                    {
                        "artifact": xcom(inputs_id, "artifact"),
                        "model_dir": xcom(inputs_id, "model_dir"),
                        "gcp_conn_id": Code("GCP_CONN_ID"),
                    },
                ),
            ],
        )
        self._chain(inputs, job, artifact)
        self.train_inputs[step.name] = inputs_id

    def gate(self, step: GateStep) -> None:
        if step.metrics in self.dataset_output:
            self._data_gate(step)
            return
        inputs_id = self.train_inputs[step.metrics]
        gate = self._add(
            step.name,
            "ShortCircuitOperator",
            [
                ("python_callable", Code("metrics_gate")),
                (
                    "op_kwargs",
                    {
                        "metrics_uri": xcom(inputs_id, "model_dir") + "/metrics.json",
                        "metric": step.metric,
                        "minimum": step.min,
                        "maximum": step.max,
                        "gcp_conn_id": Code("GCP_CONN_ID"),
                    },
                ),
            ],
        )
        self._chain(gate)

    def _data_gate(self, step: GateStep) -> None:
        gate = self._add(
            step.name,
            "ShortCircuitOperator",
            [
                ("python_callable", Code("validation_gate")),
                (
                    "op_kwargs",
                    {
                        "dataset_uri": self.dataset_output[step.metrics],
                        "metric": step.metric,
                        "minimum": step.min,
                        "maximum": step.max,
                        "gcp_conn_id": Code("GCP_CONN_ID"),
                    },
                ),
            ],
        )
        self._chain(gate)

    def upload(self, step: UploadStep) -> None:
        assert step.gcp is not None
        gcp = step.gcp
        module, _, cls = step.predictor.partition(":")
        env = {**gcp.env, "PREDICTOR_MODULE": module, "PREDICTOR_CLASS": cls}
        display_name = step.display_name or self.spec.name
        upload = self._add(
            step.name,
            "UploadModelOperator",
            [
                ("region", Code("REGION")),
                *self._google(),
                (
                    "model",
                    {
                        "display_name": display_name,
                        "artifact_uri": xcom(self.train_inputs[step.model], "model_dir"),
                        "container_spec": {
                            "image_uri": gcp.image_uri,
                            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                            "ports": [{"container_port": gcp.port}],
                            "predict_route": gcp.predict_route,
                            "health_route": gcp.health_route,
                        },
                        "labels": Code("LABELS"),
                    },
                ),
            ],
        )
        self._chain(upload)
        self.display_names[step.name] = display_name

    def deploy(self, step: DeployStep) -> None:
        assert step.gcp is not None
        gcp = step.gcp
        find_id = self._extra_id(step.name, "endpoint")
        create_id = self._extra_id(step.name, "create_endpoint")
        find = self._add(
            find_id,
            "BranchPythonOperator",
            [
                ("python_callable", Code("find_endpoint")),
                (
                    "op_kwargs",
                    {
                        "project_id": Code("PROJECT"),
                        "region": Code("REGION"),
                        "display_name": gcp.endpoint,
                        "traffic_percentage": gcp.traffic_percentage,
                        "create_task": create_id,
                        "deploy_task": step.name,
                        "gcp_conn_id": Code("GCP_CONN_ID"),
                    },
                ),
            ],
        )
        create = self._add(
            create_id,
            "CreateEndpointOperator",
            [
                ("region", Code("REGION")),
                *self._google(),
                ("endpoint", {"display_name": gcp.endpoint, "labels": Code("LABELS")}),
            ],
        )
        # The endpoint found, else the one created (whichever of the two ran).
        endpoint_id = (
            "{{ "
            f"ti.xcom_pull(task_ids={find_id!r}, key='endpoint_id') "
            f"or ti.xcom_pull(task_ids={create_id!r}, key='endpoint_id')"
            " }}"
        )
        deployed_model: dict[str, Any] = {
            "model": f"projects/{self.gcp.project}/locations/{self.gcp.region}/models/"
            + xcom(step.model, key="model_id"),
            "display_name": self.display_names.get(step.model, self.spec.name),
            "dedicated_resources": {
                "machine_spec": {"machine_type": gcp.machine_type},
                "min_replica_count": gcp.min_replica_count,
                "max_replica_count": gcp.max_replica_count,
            },
        }
        if self.gcp.service_account:
            deployed_model["service_account"] = Code("SERVICE_ACCOUNT")
        deploy = self._add(
            step.name,
            "DeployModelWithSplit",
            [
                ("region", Code("REGION")),
                *self._google(),
                ("endpoint_id", endpoint_id),
                ("deployed_model", deployed_model),
                ("traffic_split", Code(f'XComArg({find}, key="traffic_split")')),
                # After the lookup, whichever of reuse and create ran.
                ("trigger_rule", "none_failed_min_one_success"),
            ],
        )
        self._chain(find, create, deploy)
        self.edges.append(f"{find} >> {deploy}")
        if gcp.undeploy_replaced and gcp.traffic_percentage == 100:
            retire = self._add(
                self._extra_id(step.name, "retire"),
                "PythonOperator",
                [
                    ("python_callable", Code("undeploy_replaced")),
                    (
                        "op_kwargs",
                        {
                            "project_id": Code("PROJECT"),
                            "region": Code("REGION"),
                            "endpoint_id": endpoint_id,
                            "replaced": Code(f'XComArg({find}, key="replaced")'),
                            "gcp_conn_id": Code("GCP_CONN_ID"),
                        },
                    ),
                ],
            )
            self._chain(retire)


def _job_name(text: str) -> str:
    """A Dataflow job name: lower-case letters, digits and dashes, starting with a letter."""
    name = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return name if name[:1].isalpha() else f"chain-{name}"


def _label(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value.lower())[:63]
