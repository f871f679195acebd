"""What one step hands the next: a dataset's outputs, the training URIs, the artifact.

A dataset step's outputs are read back from its manifest (the commit marker), never from
what the job said it wrote; training gets its splits as the ``AIP_*_DATA_URI`` patterns
Vertex passes; the transform artifact is copied (and so verified) beside the model so that
serving replays the same preprocessing. Both backends use these.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from launchers.chain.errors import ChainError
from launchers.chain.spec import TrainStep


def dataset_outputs(root: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset step's outputs from its manifest: split patterns, format, artifact, manifest.

    Each split's pattern names files of the committed run's folder only, and is checked to
    match exactly the files the manifest lists: a trainer given the pattern (Vertex's
    ``AIP_*_DATA_URI`` are patterns) reads what the manifest says, nothing more.

    Raises:
        ChainError: if a pattern matches other files than the manifest lists.
    """
    from apache_beam.io.filesystems import FileSystems

    from beam_pipelines.dataset import EXTENSIONS

    run_root = manifest["run"]["root"]
    splits: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    data_format = ""
    for name, split in manifest["splits"].items():
        formats = list(split["files"])
        data_format = "parquet" if "parquet" in formats else formats[0]
        pattern = FileSystems.join(run_root, name, f"part-*.{EXTENSIONS[data_format]}")
        listed = sorted(e["path"] for e in split["files"][data_format])
        matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        if matched != listed:
            raise ChainError(
                "dataset",
                f"{pattern} matches {len(matched)} file(s) but the manifest of {root} lists "
                f"{len(listed)}; the dataset folder was changed after its run committed",
            )
        splits[name] = pattern
        files[name] = listed
    text = json.dumps(manifest, sort_keys=True)
    return {
        "root": root,
        "run": manifest["run"]["id"],
        "manifest": FileSystems.join(root, "manifest.json"),
        "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "format": data_format,
        "splits": splits,
        "files": files,
        "rows": {name: split["rows"] for name, split in manifest["splits"].items()},
        "artifact": manifest["artifact"]["path"],
        "artifact_sha256": manifest["artifact"]["sha256"],
        **validation_outputs(manifest),
    }


def validation_outputs(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a gate reads of a dataset's validation: counts as metrics, and the file.

    ``metrics`` holds ``anomalies`` (every anomaly, drift and skew included),
    ``drifted_columns`` and ``skewed_columns`` (how many columns are over their
    threshold), so ``{kind: gate, metrics: dataset, metric: anomalies, max: 0}`` stops a
    chain on any of them.
    """
    summary = manifest.get("validation")
    if not isinstance(summary, dict):
        return {}
    return {
        "validation": summary["path"],
        "metrics": {
            "anomalies": summary["anomalies"],
            "drifted_columns": len(summary["drifted_columns"]),
            "skewed_columns": len(summary["skewed_columns"]),
        },
    }


def dataset_unchanged(outputs: Mapping[str, Any]) -> bool:
    """Whether the dataset folder still holds the run the chain recorded.

    A rerun of the dataset elsewhere (another chain, ``beamforge run``) makes the step stale.
    """
    from transforms.core.dataset_folder import resolve_dataset

    found = resolve_dataset(str(outputs["root"]))
    return found is not None and found[1].get("run", {}).get("id") == outputs.get("run")


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of a finished dataset run.

    Raises:
        FileNotFoundError: if there is none (the run did not finish).
    """
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(root, "manifest.json")
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the dataset run did not finish")
    with FileSystems.open(path) as f:
        return dict(json.loads(f.read().decode("utf-8")))


def training_uris(step: TrainStep, dataset: Mapping[str, Any]) -> dict[str, str]:
    """The ``AIP_*_DATA_URI`` / ``AIP_DATA_FORMAT`` variables for a training step."""
    from launchers.vertex import training_env

    splits = dataset["splits"]

    def uri(split: str | None, role: str) -> str | None:
        if split is None:
            return None
        if split not in splits:
            raise ChainError(
                step.name,
                f"splits.{role}: the dataset has no split {split!r}; it has {sorted(splits)}",
            )
        return str(splits[split])

    training = uri(step.splits.training, "training")
    assert training is not None
    return training_env(
        training=training,
        validation=uri(step.splits.validation, "validation"),
        test=uri(step.splits.test, "test"),
        data_format=str(dataset["format"]),
    )


def copy_artifact(source: str, model_dir: str) -> str:
    """Copies (and so verifies) the transform artifact into ``{model_dir}/artifact``."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.core.artifact import read_artifact, write_artifact
    from transforms.ops.registry import build_step

    dest = FileSystems.join(model_dir, "artifact")
    write_artifact(dest, read_artifact(source, build_step))
    return dest
