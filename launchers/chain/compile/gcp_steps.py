"""The work of the small components of a chain compiled for Vertex AI Pipelines.

Google's components launch the jobs (Dataflow, CustomJob, Model upload, deployment); what
passes between them is done here, by the same code ``beamforge chain --target gcp`` runs
(:mod:`~launchers.chain.handoff`, :func:`~launchers.chain.run.evaluate_gate`). A step
arrives as the chain file writes it (JSON text, ``${name}`` and all) with the values of the
parameters it refers to, and is resolved and validated with the chain's own code
(:func:`resolve_step`). No orchestrator library is imported here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from launchers.chain.errors import GateFailedError
from launchers.chain.parameters import substitute
from launchers.chain.spec import DatasetStep, GateStep, TrainStep
from transforms.core.config import from_mapping

_MAGIC = "*?["


def resolve_step(cls: type[Any], step: str, values: Mapping[str, str]) -> Any:
    """A step from its JSON text as the chain file writes it, references resolved.

    A pipeline passes each step as written (``${name}`` and all) with the values of the
    parameters it refers to, and the step is validated here as ``--param`` would have it.

    Raises:
        SpecError: if the step with these values is not valid.
    """
    raw = {k: v for k, v in json.loads(step).items() if k != "kind"}
    return from_mapping(cls, substitute(raw, values))


def _config(step: Any) -> dict[str, Any]:
    return {"kind": step.KIND, **dataclasses.asdict(step)}


def gcs_objects(patterns: Sequence[str], *, client: Any = None) -> dict[str, str]:
    """``size:generation:md5`` of each GCS object the ``gs://`` patterns name.

    A pattern's ``*`` and ``?`` stay inside one folder, as Beam's ``FileSystems.match``
    does; a pattern that names nothing is recorded as ``missing``. Other paths are skipped
    (the caller keeps them in the configuration it fingerprints).
    """
    from google.cloud import storage

    client = client or storage.Client()
    out: dict[str, str] = {}
    for pattern in patterns:
        if not pattern.startswith("gs://"):
            continue
        bucket, _, name = pattern[len("gs://") :].partition("/")
        magic = min((i for i, c in enumerate(name) if c in _MAGIC), default=len(name))
        found = False
        for blob in client.list_blobs(bucket, prefix=name[:magic]):
            if magic == len(name):
                if blob.name != name:
                    continue
            elif not _glob_match(blob.name, name):
                continue
            out[f"gs://{bucket}/{blob.name}"] = f"{blob.size}:{blob.generation}:{blob.md5_hash}"
            found = True
        if not found:
            out[pattern] = "missing"
    return dict(sorted(out.items()))


def _glob_match(name: str, pattern: str) -> bool:
    parts, pattern_parts = name.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts, strict=True)
    )


def dataset_fingerprint(step: str, values: Mapping[str, str], *, client: Any = None) -> str:
    """The fingerprint of a dataset step's inputs on the gcp target (40 hex digits).

    It covers what :func:`~launchers.chain.fingerprints.fingerprint` covers for a dataset
    step, as the job on Dataflow sees it: the step's configuration (parameters resolved) and
    the GCS objects the job reads (its inputs, its template and the specs it is given as
    template parameters) by size, generation and MD5. 40 digits fit a Dataflow job name and
    a label value.

    Args:
        step: The dataset step as written (JSON), for :func:`resolve_step`.
        values: The values of the parameters it refers to.
        client: A ``google.cloud.storage.Client`` (default: a new one).
    """
    from launchers.chain.backends.gcp import flex_template_parameters

    dataset = resolve_step(DatasetStep, step, values)
    assert dataset.gcp is not None
    parameters = flex_template_parameters(dataset)
    read = [
        *dataset.inputs,
        dataset.gcp.template or "",
        *(v for k, v in sorted(parameters.items()) if k not in ("input", "output")),
    ]
    files = gcs_objects(read, client=client)
    document = {"config": _config(dataset), "target": "gcp", "files": files}
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def dataset_handoff(
    root: str, train: str, values: Mapping[str, str], base_root: str
) -> dict[str, Any]:
    """What a training step needs from its committed dataset.

    Args:
        root: The dataset step's ``gcp.output`` (its manifest is the commit marker).
        train: The training step as written (JSON), for :func:`resolve_step`.
        values: The values of the parameters it refers to.
        base_root: Where the training step's CustomJobs write (``{staging}/{chain}/{step}``).

    Returns:
        ``env`` (the ``AIP_*_DATA_URI`` / ``AIP_DATA_FORMAT`` variables), ``artifact`` (the
        transform artifact), ``run`` (the dataset run id), ``base_output_directory`` (one per
        dataset run and training configuration, so a rerun that reuses the job finds its
        model, and another configuration never overwrites it) and ``outputs`` (the dataset
        step's outputs, as ``beamforge chain`` records them).
    """
    from launchers.chain.handoff import dataset_outputs, read_manifest, training_uris

    step = resolve_step(TrainStep, train, values)
    outputs = dataset_outputs(root, read_manifest(root))
    config = json.dumps(_config(step), sort_keys=True, default=str)
    key = hashlib.sha256(config.encode("utf-8")).hexdigest()[:12]
    return {
        "env": training_uris(step, outputs),
        "artifact": outputs["artifact"],
        "run": outputs["run"],
        "base_output_directory": posixpath.join(base_root, f"{outputs['run']}-{key}"),
        "outputs": outputs,
    }


def training_outputs(base_output_directory: str, artifact: str) -> dict[str, Any]:
    """A finished CustomJob's model directory and metrics, with the transform artifact.

    Vertex sets ``AIP_MODEL_DIR`` to ``{base_output_directory}/model``; the artifact is
    copied (and so verified) into it so that serving replays the same preprocessing.
    """
    from launchers.chain.handoff import copy_artifact
    from launchers.local_train import read_metrics

    model_dir = posixpath.join(base_output_directory, "model")
    metrics = read_metrics(model_dir)
    copy_artifact(artifact, model_dir)
    return {"model_dir": model_dir, "metrics": metrics}


def gate_result(
    gate: str, values: Mapping[str, str], metrics: Mapping[str, Any]
) -> tuple[bool, str]:
    """Whether a gate (JSON, as written) passes on a training step's metrics; why not if not."""
    from launchers.chain.run import evaluate_gate

    try:
        outputs = evaluate_gate(resolve_step(GateStep, gate, values), metrics)
    except GateFailedError as exc:
        return False, str(exc)
    return True, f"{outputs['metric']} = {outputs['value']:.6g}"


def champion_gate_result(
    gate: str,
    values: Mapping[str, str],
    metrics: Mapping[str, Any],
    *,
    model_dir: str,
    root: str,
    dataset: str,
    train: str,
    deploy: str,
    project: str,
    location: str,
) -> tuple[bool, str]:
    """Whether a champion gate passes: its bounds, then the challenger against the endpoint's model.

    Args:
        gate: The gate step (JSON, as written).
        values: The values of the parameters the steps refer to.
        metrics: The training step's metrics (for ``min``/``max``).
        model_dir: The challenger's model directory.
        root: The dataset step's gcs output folder (its committed manifest).
        dataset: The dataset step (JSON, as written): its job spec, published beside the
            Flex Template (``gcp.parameters.spec``) or the step's ``spec``.
        train: The train step (JSON, as written): its eval split.
        deploy: The deploy step (JSON, as written): its endpoint's display name.
        project: The project of the endpoint.
        location: Its region.
    """
    from google.cloud import aiplatform

    from launchers.chain import champion as champions
    from launchers.chain.handoff import read_manifest
    from launchers.chain.run import evaluate_gate
    from launchers.chain.spec import DeployStep

    step = resolve_step(GateStep, gate, values)
    try:
        evaluate_gate(step, metrics)
        endpoint = resolve_step(DeployStep, deploy, values).gcp
        aiplatform.init(project=project, location=location)
        found = champions.endpoint_champion(endpoint.endpoint) if endpoint else None
        if found is None:
            return True, str(champions.no_champion(step)["comparison"])
        source = resolve_step(DatasetStep, dataset, values)
        spec = (source.gcp.parameters.get("spec") if source.gcp else None) or source.spec
        split = resolve_step(TrainStep, train, values).splits.validation
        outputs = champions.judge(step, read_manifest(root), spec, split, model_dir, (found, False))
    except GateFailedError as exc:
        return False, str(exc)
    return True, str(outputs["comparison"])


def data_gate_result(gate: str, values: Mapping[str, str], root: str) -> tuple[bool, str]:
    """Whether a gate (JSON, as written) passes on a committed dataset's validation counts."""
    from launchers.chain.handoff import read_manifest, validation_outputs
    from launchers.chain.run import evaluate_gate

    found = validation_outputs(read_manifest(root))
    try:
        outputs = evaluate_gate(
            resolve_step(GateStep, gate, values),
            found.get("metrics", {}),
            found.get("validation"),
            dataset=True,
        )
    except GateFailedError as exc:
        return False, str(exc)
    return True, f"{outputs['metric']} = {outputs['value']:.6g}"


def traffic_split(current: Mapping[str, int], percentage: int) -> dict[str, int]:
    """An endpoint's traffic split once a new model (``"0"``) takes ``percentage``.

    The models already there share the rest in proportion to their current shares, as the
    Vertex AI SDK's ``Endpoint.deploy(traffic_percentage=...)`` does; with none there the
    new model takes everything.
    """
    current = {k: v for k, v in current.items() if v > 0}
    if not current:
        return {"0": 100}
    rest = 100 - percentage
    total = sum(current.values())
    split = {k: v * rest // total for k, v in sorted(current.items())}
    # Rounding down leaves a few percent: hand them out one by one, as the SDK does.
    left = rest - sum(split.values())
    for key in split:
        if left == 0:
            break
        split[key] += 1
        left -= 1
    return {**{k: v for k, v in split.items() if v > 0}, "0": percentage}


def find_endpoint(
    *, project: str, location: str, display_name: str, percentage: int
) -> dict[str, Any]:
    """The endpoint called ``display_name``, if there is one, and the split a deployment needs.

    Returns:
        ``found``, ``resource_name`` and ``uri`` (the VertexEndpoint artifact's), the
        ``traffic_split`` for a new model taking ``percentage``, and ``deployed_model_ids``
        (the models it may replace).
    """
    from google.cloud import aiplatform

    found = aiplatform.Endpoint.list(
        filter=f'display_name="{display_name}"', project=project, location=location
    )
    if not found:
        return {
            "found": False,
            "resource_name": "",
            "uri": "",
            "traffic_split": {"0": 100},
            "deployed_model_ids": [],
        }
    endpoint = found[0]
    current = {str(k): int(v) for k, v in dict(endpoint.traffic_split).items()}
    return {
        "found": True,
        "resource_name": endpoint.resource_name,
        "uri": f"https://{location}-aiplatform.googleapis.com/v1/{endpoint.resource_name}",
        "traffic_split": traffic_split(current, percentage),
        "deployed_model_ids": sorted(m.id for m in endpoint.list_models()),
    }


def undeploy(
    *, project: str, location: str, endpoint: str, deployed_model_ids: Sequence[str]
) -> None:
    """Undeploys the models a new one replaced (it took all the traffic)."""
    if not endpoint or not deployed_model_ids:
        return
    from google.cloud import aiplatform

    target = aiplatform.Endpoint(endpoint, project=project, location=location)
    for deployed_model_id in deployed_model_ids:
        target.undeploy(deployed_model_id, sync=True)


__all__ = [
    "champion_gate_result",
    "dataset_fingerprint",
    "dataset_handoff",
    "find_endpoint",
    "gate_result",
    "gcs_objects",
    "resolve_step",
    "traffic_split",
    "training_outputs",
    "undeploy",
]
