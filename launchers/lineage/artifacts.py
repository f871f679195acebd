"""The artifacts of each step, with their identities, from manifests and step outputs.

Local paths become absolute (the same file named two ways is one artifact); a local file is
identified by its SHA-256, a ``gs://`` object by the MD5 (or, for composite objects that have
none, the CRC32C and generation) that GCS keeps, without reading it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from launchers.lineage.model import Artifact, Value
from transforms.core import files

_CHUNK = 1 << 20


def location(path: str) -> str:
    """The URI of a path: local paths absolute, anything with a scheme as it is."""
    return path if files.is_remote(path) else os.path.abspath(path)


def vertex_uri(resource: str) -> str:
    """The URI the Vertex SDK gives a Vertex AI resource's artifact (its REST URL)."""
    parts = resource.split("/")
    region = parts[3] if len(parts) > 3 and parts[2] == "locations" else "us-central1"
    return f"https://{region}-aiplatform.googleapis.com/v1/{resource}"


def raw_file(path: str) -> Artifact:
    """A raw input file: its size and content hash.

    Raises:
        FileNotFoundError: if there is no such file.
    """
    uri = location(path)
    if uri.startswith("gs://"):
        return _gcs_file(uri)
    if files.is_remote(uri):
        from apache_beam.io.filesystems import FileSystems

        (match,) = FileSystems.match([uri])[0].metadata_list
        stamp = f"size:{match.size_in_bytes}@{match.last_updated_in_seconds}"
        return Artifact("raw_file", uri, stamp, {"size": match.size_in_bytes})
    digest = hashlib.sha256()
    with open(uri, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    sha = digest.hexdigest()
    return Artifact("raw_file", uri, f"sha256:{sha}", {"size": os.path.getsize(uri), "sha256": sha})


def _gcs_file(uri: str) -> Artifact:
    from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path

    bucket, name = parse_gcs_path(uri)
    blob = GcsIO().client.bucket(bucket).get_blob(name)
    if blob is None:
        raise FileNotFoundError(f"{uri} does not exist")
    props: dict[str, Value] = {"size": int(blob.size or 0), "generation": str(blob.generation)}
    if blob.md5_hash:
        props["md5"] = blob.md5_hash
    if blob.crc32c:
        props["crc32c"] = blob.crc32c
    # Composite objects have no MD5: their CRC32C and generation stand for the content.
    fingerprint = (
        f"md5:{blob.md5_hash}" if blob.md5_hash else f"crc32c:{blob.crc32c}@{blob.generation}"
    )
    return Artifact("raw_file", uri, fingerprint, props)


def dataset(manifest: Mapping[str, Any]) -> Artifact:
    """The dataset a committed run wrote: its run folder, run id and row counts."""
    run = manifest["run"]
    output = location(str(run["output"]))
    props: dict[str, Value] = {
        "run_id": str(run["id"]),
        "output": output,
        "manifest": files.join(output, "manifest.json"),
        "rows": int(manifest["counts"]["total_written"]),
        "pipeline": str(manifest.get("pipeline", "")),
    }
    for name, split in manifest["splits"].items():
        props[f"rows_{name}"] = int(split["rows"])
    return Artifact("dataset", location(str(run["root"])), str(run["id"]), props)


def dataset_of_step(outputs: Mapping[str, Any]) -> Artifact:
    """The dataset a chain's dataset step handed on (the same artifact its run recorded)."""
    output = location(str(outputs["root"]))
    props: dict[str, Value] = {
        "run_id": str(outputs["run"]),
        "output": output,
        "manifest": files.join(output, "manifest.json"),
        "rows": sum(int(v) for v in outputs["rows"].values()),
    }
    props |= {f"rows_{k}": int(v) for k, v in outputs["rows"].items()}
    return Artifact("dataset", files.join(output, str(outputs["run"])), str(outputs["run"]), props)


def transform_artifact(path: str, sha256: str) -> Artifact:
    """The transform artifact, identified by the SHA-256 its manifest records."""
    return Artifact("transform_artifact", location(path), f"sha256:{sha256}", {"sha256": sha256})


def run_outputs(manifest: Mapping[str, Any]) -> list[Artifact]:
    """What a dataset run wrote: the dataset, its transform artifact, statistics, validation."""
    found = [
        dataset(manifest),
        transform_artifact(manifest["artifact"]["path"], manifest["artifact"]["sha256"]),
    ]
    stats = manifest.get("stats")
    if isinstance(stats, str):
        found.append(_small_file("statistics", stats))
    validation = manifest.get("validation")
    if isinstance(validation, Mapping) and isinstance(validation.get("path"), str):
        found.append(_small_file("validation", validation["path"]))
    return found


def run_inputs(manifest: Mapping[str, Any]) -> list[Artifact]:
    """The raw files a dataset run read (as its manifest lists them)."""
    return [raw_file(path) for path in manifest["source"]["files"]]


def _small_file(kind: str, path: str) -> Artifact:
    uri = location(path)
    data = files.read_bytes(uri)
    if data is None:
        raise FileNotFoundError(f"{uri} does not exist")
    sha = hashlib.sha256(data).hexdigest()
    return Artifact(kind, uri, f"sha256:{sha}", {"sha256": sha, "size": len(data)})


def model(model_dir: str) -> Artifact:
    """A trained model's folder, identified by the SHA-256 of its files (names and bytes)."""
    uri = location(model_dir)
    sha, count = _tree_sha256(uri)
    return Artifact("model", uri, f"sha256:{sha}", {"sha256": sha, "files": count})


def uploaded_model(outputs: Mapping[str, Any], trained: Artifact) -> Artifact:
    """The model an upload step registered (``local:`` or a Vertex AI model resource)."""
    name = str(outputs["model"])
    props: dict[str, Value] = {
        "sha256": str(trained.properties["sha256"]),
        "model_dir": trained.uri,
    }
    if name.startswith("projects/"):
        props |= {"registry": "vertex", "resourceName": name}
        return Artifact("model", vertex_uri(name), trained.fingerprint, props)
    props["registry"] = "local"
    return Artifact("model", name, trained.fingerprint, props)


def endpoint(outputs: Mapping[str, Any]) -> Artifact:
    """The endpoint a deploy step served the model on: a local server or a Vertex endpoint."""
    if "endpoint" in outputs:
        name = str(outputs["endpoint"])
        deployed = str(outputs["deployed_model_id"])
        props: dict[str, Value] = {"resourceName": name, "deployed_model_id": deployed}
        return Artifact("endpoint", vertex_uri(name), f"deployed_model:{deployed}", props)
    server = outputs["server"]
    props = {"url": str(outputs["url"]), "predict_url": str(outputs["predict_url"])}
    props["pid"] = int(server["pid"])
    return Artifact("endpoint", str(outputs["url"]), f"pid:{server['pid']}", props)


def _tree_sha256(root: str) -> tuple[str, int]:
    """SHA-256 over the sorted (relative name, SHA-256 of bytes) of every file under root."""
    entries: list[tuple[str, str]] = []
    if files.is_remote(root):
        from apache_beam.io.filesystems import FileSystems

        prefix = root.rstrip("/") + "/"
        for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
            with FileSystems.open(meta.path, compression_type="uncompressed") as f:
                entries.append((meta.path[len(prefix) :], _stream_sha256(f)))
    else:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    entries.append((os.path.relpath(path, root), _stream_sha256(f)))
    if not entries:
        raise FileNotFoundError(f"{root} holds no files")
    digest = hashlib.sha256()
    for name, sha in sorted(entries):
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest(), len(entries)


def _stream_sha256(f: Any) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
