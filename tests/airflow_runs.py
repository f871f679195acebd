"""Compiled chain DAGs run by Airflow in its own venv, from the tests.

Airflow cannot share the project's venv, so the tests drive it through subprocesses running
``.venv/airflow/bin/python`` on this very file: its top level imports the standard library
only, and the functions under "Airflow side" import Airflow inside. The pytest side
(:class:`AirflowHome`) migrates one sqlite database per session and gives each test a copy,
so every test has an Airflow of its own in a temporary folder.

Airflow side, ``python tests/airflow_runs.py COMMAND ARGS``:

- ``dagbag DAGS_FOLDER OUT.json``: the DagBag's import errors and, for each DAG, its tasks
  (operator, upstream ids), params and timetable;
- ``test DAG_FILE OUT.json [CONF.json [FAKES.json]]``: ``dag.test()`` with the run conf, the
  Google hooks pointed at the fakes first; writes the run's state, every task's state and
  every XCom.

The Vertex AI hooks are gRPC clients: :func:`install_fakes` replaces their methods by fakes
that record the request and answer with real ``google.cloud.aiplatform_v1`` messages. The
Dataflow hook (REST) keeps its real client, pointed at the fake Dataflow server; GCS goes to
the GCS emulator through ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
AIRFLOW_VENV = REPO / ".venv" / "airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
# A Google Cloud connection with no credentials (every endpoint the DAGs reach is local).
ANONYMOUS_CONNECTION = json.dumps(
    {"conn_type": "google_cloud_platform", "extra": {"project": "my-project", "is_anonymous": True}}
)


# --- pytest side --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AirflowHome:
    """An ``AIRFLOW_HOME`` with a migrated sqlite database."""

    root: pathlib.Path

    @classmethod
    def migrated(cls, root: pathlib.Path) -> AirflowHome:
        """Creates the home and migrates its database (a few seconds; once per session).

        Raises:
            FileNotFoundError: if Airflow's venv is missing (``make airflow`` creates it).
        """
        if not AIRFLOW_PYTHON.exists():
            raise FileNotFoundError(
                f"{AIRFLOW_PYTHON} is missing: run `make airflow` (tools/airflow-venv.sh)"
            )
        home = cls(root)
        result = subprocess.run(
            [str(AIRFLOW_VENV / "bin" / "airflow"), "db", "migrate"],
            env=home.env(root / "dags"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stderr[-4000:]}")
        return home

    def copy(self, root: pathlib.Path) -> AirflowHome:
        """Another home with a copy of this one's database (cheaper than migrating again)."""
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.root / "airflow.db", root / "airflow.db")
        return AirflowHome(root)

    def env(self, dags: pathlib.Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of an Airflow process using this home and DAGs folder."""
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.root),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.root / 'airflow.db'}",
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": ANONYMOUS_CONNECTION,
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": "127.0.0.1:1",
            "GCE_METADATA_IP": "127.0.0.1:1",
            **(extra or {}),
        }

    def run(
        self, command: str, *args: str, dags: pathlib.Path, timeout: float = 600, **extra: str
    ) -> dict[str, Any]:
        """Runs a command of this file's Airflow side; returns what it wrote.

        Raises:
            AssertionError: with the process's output if it failed.
        """
        out = self.root / f"{command}-result.json"
        out.unlink(missing_ok=True)
        result = subprocess.run(
            [str(AIRFLOW_PYTHON), __file__, command, *args, str(out)],
            env=self.env(dags, extra),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        # The process's output stays beside the result, for a failed run's story.
        (self.root / f"{command}.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0 and out.exists(), (
            f"{command} failed ({result.returncode}):\n{result.stdout[-6000:]}\n"
            f"{result.stderr[-6000:]}"
        )
        return dict(json.loads(out.read_text()))


# --- Airflow side -------------------------------------------------------------------------


def describe_dagbag(dags: str) -> dict[str, Any]:
    """The DagBag of a folder: import errors, and each DAG's tasks, params and timetable."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dags)
    out: dict[str, Any] = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}
    dags_out: dict[str, Any] = {}
    for dag_id, dag in bag.dags.items():
        params = {name: dag.params.get_param(name) for name in dag.params}
        dags_out[dag_id] = {
            "tasks": {
                t.task_id: {
                    "operator": type(t).__name__,
                    "upstream": sorted(t.upstream_task_ids),
                    "retries": t.retries,
                    "execution_timeout": (
                        t.execution_timeout.total_seconds() if t.execution_timeout else None
                    ),
                    "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
                }
                for t in dag.tasks
            },
            "params": {
                name: {
                    "default": p.value if p.has_value else "<required>",
                    "description": p.description,
                    "schema": p.schema,
                }
                for name, p in params.items()
            },
            "timetable": type(dag.timetable).__name__,
            "timetable_summary": getattr(dag.timetable, "summary", None),
            "timezone": str(getattr(dag.timetable, "_timezone", "")),
            "start_date": dag.start_date.isoformat() if dag.start_date else None,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
        }
    out["dags"] = dags_out
    return out


def run_dag(dag_file: str, conf: dict[str, Any]) -> dict[str, Any]:
    """``dag.test(run_conf=conf)`` on the one DAG of a file; the run's states and XComs."""
    import importlib.util

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    spec = importlib.util.spec_from_file_location("compiled_dag", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    # A failure shows at once rather than after the DAG's retry delays.
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf=conf)
    xcoms: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        for row in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id)):
            # Values the tasks pushed are stored as they are (deserialize_value would also
            # parse a str that holds JSON).
            xcoms.setdefault(row.task_id, {})[row.key] = row.value
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
    return {"state": str(run.state), "tasks": states, "xcom": xcoms}


def install_fakes(config: dict[str, Any]) -> None:
    """Points the Google hooks at the test's fakes (see the module docstring).

    ``config``: ``dataflow`` (the fake Dataflow server's URL), ``record`` (a JSON file the
    Vertex AI calls are appended to), ``metrics`` (what the stand-in trainer writes to
    ``{base_output_directory}/model/metrics.json``) and ``endpoints`` (existing endpoints:
    ``{"name", "display_name", "traffic_split"}``).
    """
    from airflow.providers.google.cloud.hooks.dataflow import DataflowHook
    from airflow.providers.google.cloud.hooks.gcs import GCSHook
    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook
    from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import (
        EndpointServiceHook,
    )
    from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook
    from google.api_core.client_options import ClientOptions
    from google.cloud.aiplatform_v1 import types

    record = pathlib.Path(config["record"])
    calls: list[dict[str, Any]] = []

    def log(method: str, **request: Any) -> None:
        def plain(value: Any) -> Any:
            if hasattr(type(value), "to_dict"):
                return type(value).to_dict(value)
            return value

        calls.append({"method": method, **{k: plain(v) for k, v in request.items()}})
        record.write_text(json.dumps(calls, indent=1, default=str))

    # The real Dataflow client (discovery REST), with the fake server as its endpoint.
    DataflowHook.get_client_options = lambda self, *a, **k: ClientOptions(  # type: ignore[method-assign]
        api_endpoint=config["dataflow"] + "/"
    )

    def create_custom_job(
        self: Any, project_id: str, region: str, custom_job: Any, **_: Any
    ) -> Any:
        job: Any = types.CustomJob(custom_job)
        log("create_custom_job", project_id=project_id, region=region, custom_job=job)
        # The stand-in trainer: metrics where Vertex sets AIP_MODEL_DIR.
        base = job.job_spec.base_output_directory.output_uri_prefix
        bucket, _, prefix = base[len("gs://") :].partition("/")
        GCSHook().upload(bucket, f"{prefix}/model/metrics.json", data=json.dumps(config["metrics"]))
        job.name = f"projects/{project_id}/locations/{region}/customJobs/1234"
        job.state = types.JobState.JOB_STATE_PENDING
        return job

    def wait_for_custom_job(
        self: Any, project_id: str, region: str, custom_job_id: str, **_: Any
    ) -> Any:
        log("wait_for_custom_job", custom_job_id=custom_job_id)
        return types.CustomJob(
            name=f"projects/{project_id}/locations/{region}/customJobs/{custom_job_id}",
            state=types.JobState.JOB_STATE_SUCCEEDED,
        )

    def upload_model(self: Any, project_id: str, region: str, model: Any, **_: Any) -> Any:
        log("upload_model", project_id=project_id, region=region, model=types.Model(model))
        return types.UploadModelResponse(
            model=f"projects/{project_id}/locations/{region}/models/5678"
        )

    endpoints = [
        types.Endpoint(
            name=e["name"],
            display_name=e["display_name"],
            traffic_split=e["traffic_split"],
            deployed_models=[types.DeployedModel(id=k) for k in e["traffic_split"]],
        )
        for e in config.get("endpoints", [])
    ]

    def list_endpoints(
        self: Any, project_id: str, region: str, filter: str | None = None, **_: Any
    ) -> Any:
        log("list_endpoints", project_id=project_id, region=region, filter=filter)
        return [e for e in endpoints if f'display_name="{e.display_name}"' == filter]

    def create_endpoint(self: Any, project_id: str, region: str, endpoint: Any, **_: Any) -> Any:
        made = types.Endpoint(endpoint)
        log("create_endpoint", project_id=project_id, region=region, endpoint=made)
        made.name = f"projects/{project_id}/locations/{region}/endpoints/9012"
        return made

    def deploy_model(
        self: Any,
        project_id: str,
        region: str,
        endpoint: str,
        deployed_model: Any,
        traffic_split: Any = None,
        **_: Any,
    ) -> Any:
        model = types.DeployedModel(deployed_model)
        log(
            "deploy_model",
            project_id=project_id,
            region=region,
            endpoint=endpoint,
            deployed_model=model,
            traffic_split=dict(traffic_split or {}),
        )
        model.id = "3456"
        return types.DeployModelResponse(deployed_model=model)

    def undeploy_model(
        self: Any, project_id: str, region: str, endpoint: str, deployed_model_id: str, **_: Any
    ) -> Any:
        log("undeploy_model", endpoint=endpoint, deployed_model_id=deployed_model_id)
        return types.UndeployModelResponse()

    def finished(self: Any, operation: Any, timeout: Any = None) -> Any:
        # The fakes answer with the finished operation's result right away.
        return operation

    CustomJobHook.create_custom_job = create_custom_job  # type: ignore[method-assign]
    CustomJobHook.wait_for_custom_job = wait_for_custom_job  # type: ignore[method-assign]
    ModelServiceHook.upload_model = upload_model  # type: ignore[method-assign]
    EndpointServiceHook.list_endpoints = list_endpoints  # type: ignore[method-assign]
    EndpointServiceHook.create_endpoint = create_endpoint  # type: ignore[method-assign]
    EndpointServiceHook.deploy_model = deploy_model  # type: ignore[method-assign]
    EndpointServiceHook.undeploy_model = undeploy_model  # type: ignore[method-assign]
    for hook in (ModelServiceHook, EndpointServiceHook):
        hook.wait_for_operation = finished  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "dagbag":
        folder, out = args
        result = describe_dagbag(folder)
    elif command == "test":
        dag_file, *rest, out = args
        conf = json.loads(pathlib.Path(rest[0]).read_text()) if rest else {}
        if len(rest) > 1:
            install_fakes(json.loads(pathlib.Path(rest[1]).read_text()))
        result = run_dag(dag_file, conf)
    else:
        raise SystemExit(f"unknown command {command!r}; expected dagbag or test")
    pathlib.Path(out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
