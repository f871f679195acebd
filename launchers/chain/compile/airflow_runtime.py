"""The functions a compiled chain DAG calls when its tasks run, copied into the DAG file.

The compiler copies each function's source (:func:`source`) into the DAG it writes, so a
DAG file stands alone in a Composer bucket: the functions import what they use inside their
bodies, from the standard library and Airflow's Google provider only. The ``local`` target's
step functions run in the project's Python (an ``ExternalPythonOperator``), where they import
:mod:`launchers.chain.compile.steps`; nothing here is imported by beamforge itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

# --- local target: run in the project's Python, beside beamforge -------------------------


def run_step(
    chain_file: str, step_name: str, upstream: str, parameters: dict, directory: str
) -> str:
    """Runs one chain step with ``beamforge chain --target local``'s code; its outputs as JSON.

    Relative paths in the chain (specs, inputs, the trainer module) are read from
    ``directory``, as ``beamforge chain`` reads them from where it is started.
    """
    import json
    import os

    os.chdir(directory)
    from launchers.chain.compile.steps import run_local_step

    return json.dumps(run_local_step(chain_file, step_name, upstream, parameters))


def evaluate_gate(
    chain_file: str, step_name: str, upstream: str, parameters: dict, directory: str
) -> dict:
    """Checks a gate with beamforge's code; whether it passed, the value and why it stopped."""
    import math
    import os

    os.chdir(directory)
    from launchers.chain.compile.steps import check_gate

    passed, value, reason = check_gate(chain_file, step_name, upstream, parameters)
    # NaN (a missing metric) is no JSON: XCom gets null instead.
    return {"passed": passed, "value": None if math.isnan(value) else value, "reason": reason}


def gate_decision(decision: dict) -> bool:
    """The gate's verdict for its ShortCircuitOperator; a stopped gate says why in the log."""
    print(
        f"gate value {decision['value']}: "
        + (decision["reason"] or "passed; the steps after it run")
        + ("" if decision["passed"] else "; the steps after it are skipped")
    )
    return bool(decision["passed"])


# --- gcp target: run in Airflow, with the Google provider's hooks --------------------------


def _split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` as ``("bucket", "a/b")``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"expected a gs:// URI, got {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


def training_inputs(
    dataset: str,
    splits: dict,
    extensions: dict,
    output_root: str,
    gcp_conn_id: str,
) -> dict:
    """What a CustomJob needs from a finished dataset: ``AIP_*`` URIs, its output directory.

    Reads the dataset's ``manifest.json`` (its commit marker) and turns each split into the
    file pattern Vertex passes as ``AIP_*_DATA_URI``, after checking that the pattern matches
    exactly the files the manifest lists.

    Args:
        dataset: The dataset step's ``gs://`` output (where ``manifest.json`` is).
        splits: ``{"training": NAME, "validation": NAME or None, "test": NAME or None}``.
        extensions: File extension of each data format.
        output_root: The job's base output directory goes under it, one per run.
        gcp_conn_id: The Airflow connection to Google Cloud.

    Returns:
        ``env`` (the ``AIP_*`` variables), ``base_output_directory``, ``model_dir`` (Vertex's
        ``AIP_MODEL_DIR``), ``artifact`` (the transform artifact) and ``manifest``.
    """
    import datetime
    import json

    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id)
    manifest_uri = dataset.rstrip("/") + "/manifest.json"
    bucket, name = _split_uri(manifest_uri)
    if not hook.exists(bucket, name):
        raise FileNotFoundError(f"{manifest_uri} does not exist: the dataset run did not finish")
    manifest = json.loads(hook.download(bucket, name))
    run_root = manifest["run"]["root"].rstrip("/")
    patterns = {}
    data_format = ""
    for split_name, split in manifest["splits"].items():
        formats = list(split["files"])
        data_format = "parquet" if "parquet" in formats else formats[0]
        folder = f"{run_root}/{split_name}/"
        pattern = f"{folder}part-*.{extensions[data_format]}"
        folder_bucket, prefix = _split_uri(folder)
        found = sorted(
            f"gs://{folder_bucket}/{blob}"
            for blob in hook.list(folder_bucket, prefix=prefix)
            if blob[len(prefix) :].startswith("part-")
            and blob.endswith("." + extensions[data_format])
        )
        listed = sorted(entry["path"] for entry in split["files"][data_format])
        if found != listed:
            raise RuntimeError(
                f"{pattern} matches {len(found)} file(s) but the manifest lists {len(listed)}; "
                "the dataset folder was changed after its run committed"
            )
        patterns[split_name] = pattern
    env = {"AIP_DATA_FORMAT": data_format}
    for role, variable in (
        ("training", "AIP_TRAINING_DATA_URI"),
        ("validation", "AIP_VALIDATION_DATA_URI"),
        ("test", "AIP_TEST_DATA_URI"),
    ):
        split_name = splits.get(role)
        if split_name is None:
            continue
        if split_name not in patterns:
            raise ValueError(
                f"splits.{role}: the dataset has no split {split_name!r}; it has {sorted(patterns)}"
            )
        env[variable] = patterns[split_name]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    base = f"{output_root.rstrip('/')}/{stamp}"
    return {
        "env": env,
        "base_output_directory": base,
        # Vertex sets AIP_MODEL_DIR to {base_output_directory}/model.
        "model_dir": f"{base}/model",
        "artifact": manifest["artifact"]["path"],
        "manifest": manifest_uri,
    }


def copy_artifact(artifact: str, model_dir: str, gcp_conn_id: str) -> str:
    """Copies the dataset's transform artifact into ``{model_dir}/artifact`` for serving."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id)
    source_bucket, prefix = _split_uri(artifact.rstrip("/") + "/")
    dest_bucket, dest_prefix = _split_uri(model_dir.rstrip("/") + "/artifact/")
    names = hook.list(source_bucket, prefix=prefix)
    if not names:
        raise FileNotFoundError(f"{artifact} holds no files: the dataset has no artifact")
    for name in names:
        hook.copy(source_bucket, name, dest_bucket, dest_prefix + name[len(prefix) :])
    return f"gs://{dest_bucket}/{dest_prefix.rstrip('/')}"


def validation_gate(
    dataset_uri: str,
    metric: str,
    minimum: float | None,
    maximum: float | None,
    gcp_conn_id: str,
) -> bool:
    """Whether a dataset's validation passes a data gate (a ShortCircuitOperator's callable).

    Reads the counts the dataset's ``manifest.json`` records of its ``validation.json``
    (``anomalies``, ``drifted_columns``, ``skewed_columns``); a stop prints what was found.
    """
    import json

    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id)
    bucket, name = _split_uri(dataset_uri.rstrip("/") + "/manifest.json")
    manifest = json.loads(hook.download(bucket, name))
    summary = manifest.get("validation")
    if not isinstance(summary, dict):
        print(f"gs://{bucket}/{name} records no validation; stopping")
        return False
    counts = {
        "anomalies": summary["anomalies"],
        "drifted_columns": len(summary["drifted_columns"]),
        "skewed_columns": len(summary["skewed_columns"]),
    }
    if metric not in counts:
        print(f"metric {metric!r} is not a validation count {sorted(counts)}; stopping")
        return False
    value = counts[metric]
    low = minimum is not None and value < minimum
    high = maximum is not None and value > maximum
    if not (low or high):
        return True
    bound = f"below min {minimum:g}" if low else f"above max {maximum:g}"
    found = json.loads(hook.download(*_split_uri(summary["path"])))
    details = "; ".join(a["message"] for a in found.get("anomalies", []))
    print(f"{metric} = {value} is {bound}: {details}; stopping")
    return False


def metrics_gate(
    metrics_uri: str,
    metric: str,
    minimum: float | None,
    maximum: float | None,
    gcp_conn_id: str,
) -> bool:
    """Whether the trainer's ``metrics.json`` passes the gate (a ShortCircuitOperator's callable).

    A missing or non-numeric metric stops the chain as a value out of bounds does.
    """
    import json

    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id)
    bucket, name = _split_uri(metrics_uri)
    if not hook.exists(bucket, name):
        print(f"{metrics_uri} does not exist: the trainer reported no metrics; stopping")
        return False
    metrics = json.loads(hook.download(bucket, name))
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        print(f"metric {metric!r} is {value!r}, not a number; stopping")
        return False
    if minimum is not None and value < minimum:
        print(f"{metric} = {value:.6g} is below min {minimum:g}; stopping")
        return False
    if maximum is not None and value > maximum:
        print(f"{metric} = {value:.6g} is above max {maximum:g}; stopping")
        return False
    print(f"{metric} = {value:.6g} passed; the steps after the gate run")
    return True


def new_traffic_split(current: dict, traffic_percentage: int) -> dict:
    """The endpoint's traffic split with a new model (``"0"``) taking ``traffic_percentage``.

    The models already deployed share the rest in proportion, as the Vertex AI SDK shares it.
    """
    rest = 100 - traffic_percentage
    split = {}
    if rest and current:
        left = rest
        for deployed_id, share in current.items():
            split[deployed_id] = int(share / 100 * rest)
            left -= split[deployed_id]
        for deployed_id in split:
            if left == 0:
                break
            split[deployed_id] += 1
            left -= 1
    split["0"] = traffic_percentage if split else 100
    return split


def find_endpoint(
    project_id: str,
    region: str,
    display_name: str,
    traffic_percentage: int,
    create_task: str,
    deploy_task: str,
    gcp_conn_id: str,
    ti: Any = None,
) -> str:
    """Reuses the endpoint with this display name, or branches to the task that creates one.

    Pushes ``endpoint_id`` (when found), ``traffic_split`` (for the deployment) and
    ``replaced`` (the deployed models the new one replaces) to XCom.
    """
    from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import (
        EndpointServiceHook,
    )

    hook = EndpointServiceHook(gcp_conn_id=gcp_conn_id)
    found = list(
        hook.list_endpoints(
            project_id=project_id, region=region, filter=f'display_name="{display_name}"'
        )
    )
    if not found:
        ti.xcom_push(key="traffic_split", value={"0": 100})
        ti.xcom_push(key="replaced", value=[])
        return create_task
    endpoint = found[0]
    current = {k: int(v) for k, v in dict(endpoint.traffic_split).items()}
    ti.xcom_push(key="endpoint_id", value=endpoint.name.rpartition("/")[2])
    ti.xcom_push(key="traffic_split", value=new_traffic_split(current, traffic_percentage))
    ti.xcom_push(key="replaced", value=sorted(m.id for m in endpoint.deployed_models))
    print(f"reusing endpoint {endpoint.name} ({display_name})")
    return deploy_task


def undeploy_replaced(
    project_id: str, region: str, endpoint_id: str, replaced: list, gcp_conn_id: str
) -> list:
    """Undeploys the models a new one replaced once it serves all the traffic."""
    from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import (
        EndpointServiceHook,
    )

    hook = EndpointServiceHook(gcp_conn_id=gcp_conn_id)
    for deployed_id in replaced:
        operation = hook.undeploy_model(
            project_id=project_id,
            region=region,
            endpoint=endpoint_id,
            deployed_model_id=deployed_id,
        )
        hook.wait_for_operation(operation=operation)
        print(f"undeployed {deployed_id} from endpoint {endpoint_id}")
    return list(replaced)


LOCAL_FUNCTIONS: tuple[Callable[..., Any], ...] = (run_step, evaluate_gate, gate_decision)
GCP_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    _split_uri,
    training_inputs,
    copy_artifact,
    metrics_gate,
    validation_gate,
    new_traffic_split,
    find_endpoint,
    undeploy_replaced,
)


def source(functions: tuple[Callable[..., Any], ...]) -> str:
    """The source of ``functions``, to be copied into a DAG file."""
    return "\n\n".join(inspect.getsource(f).rstrip() + "\n" for f in functions)
