"""What the Cloud Function does with a GCS event: filter, record once, start the chain.

This module is copied into the function's directory as ``trigger_runtime.py`` and runs there
without beamforge: at import it needs only the standard library, and it imports
google-cloud-storage and google-cloud-aiplatform only when it uses them. Its settings come
from the ``trigger.json`` beside the function (written by
:func:`launchers.trigger.build.build_trigger`).

For each ``google.cloud.storage.object.v1.finalized`` event:

1. Objects outside the trigger's bucket, prefix, suffix or glob are ignored (one log line).
2. GCS delivers at least once: the event's bucket, name and generation are the delivery's key,
   recorded create-if-absent (a local file opened with ``O_EXCL``, or a GCS object written
   with ``if_generation_match=0``). A key already recorded starts nothing.
3. The chain starts with the object's ``gs://BUCKET/NAME`` as the trigger's parameter: on the
   gcp target the bundled Vertex AI pipeline is submitted (its run id derived from the key,
   so even a submission repeated after a lost answer is refused by Vertex); on the local
   target ``beamforge chain`` runs in the project's Python.

If the chain cannot be started (the submission fails, the local Python is missing), the
record is removed again and the error propagates: the function answers 500 and a retried
delivery tries again.

Log lines are JSON on stdout, which Cloud Logging reads as structured entries with their
severity.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from typing import Any

FINALIZED = "google.cloud.storage.object.v1.finalized"
SETTINGS_FILE = "trigger.json"
PIPELINE_FILE = "pipeline.yaml"
# Exit codes of ``beamforge chain`` that mean the chain ran: done, or stopped by its gate.
CHAIN_RAN = {0: "succeeded", 3: "stopped by its gate"}
# What a run's log keeps of a failed local chain.
_TAIL_LINES = 20


class StartError(RuntimeError):
    """The chain could not be started, or its local run failed."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the function did with one event.

    Attributes:
        status: ``ignored``, ``repeated`` (the key was recorded before) or ``started``.
        path: The object's ``gs://`` path ('' for an event without one).
        detail: Why it was ignored, or what was started (run name, exit status).
    """

    status: str
    path: str
    detail: str


def log(severity: str, message: str, **fields: Any) -> None:
    """Writes one structured log line (Cloud Logging's JSON form)."""
    print(json.dumps({"severity": severity, "message": message, **fields}), flush=True)


def load_settings(path: str) -> dict[str, Any]:
    """Reads the function's settings; ``root`` is the directory they were read from."""
    with open(path, encoding="utf-8") as f:
        settings: dict[str, Any] = json.load(f)
    settings["root"] = os.path.dirname(os.path.abspath(path))
    return settings


def glob_regex(glob: str) -> str:
    """The regular expression of a GCS-style glob.

    ``*`` and ``?`` stay within one ``/``-separated part, ``**`` crosses parts; every other
    character is literal.
    """
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def object_matches(name: str, *, prefix: str = "", suffix: str = "", glob: str = "") -> bool:
    """Whether an object name passes the trigger's filters (an empty filter passes all)."""
    return (
        name.startswith(prefix)
        and name.endswith(suffix)
        and (not glob or re.fullmatch(glob_regex(glob), name, re.DOTALL) is not None)
    )


def delivery_key(bucket: str, name: str, generation: str) -> str:
    """The record's file name for one object generation (names may hold any character)."""
    digest = hashlib.sha256(f"{bucket}\n{name}\n{generation}".encode()).hexdigest()
    return f"{generation}-{digest[:32]}.json"


def run_id(chain: str, key: str) -> str:
    """The Vertex pipeline run id for a delivery: the chain's name and the key's digest."""
    return f"{chain[:100].rstrip('-')}-{key.rsplit('-', 1)[1][:20]}"


def _is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def _records_dir(settings: Mapping[str, Any]) -> str:
    records = str(settings["records"])
    if _is_gcs(records) or os.path.isabs(records):
        return records
    return os.path.join(_directory(settings), records)


def _directory(settings: Mapping[str, Any]) -> str:
    local = settings.get("local") or {}
    return os.environ.get("BEAMFORGE_DIR") or str(local.get("directory") or settings["root"])


def _gcs_blob(path: str, project: str | None) -> Any:
    from google.cloud import storage

    bucket, _, name = path[len("gs://") :].partition("/")
    return storage.Client(project=project).bucket(bucket).blob(name)


def claim(settings: Mapping[str, Any], key: str, record: Mapping[str, Any]) -> bool:
    """Records ``key`` unless it is recorded already; True if this call recorded it."""
    directory = _records_dir(settings)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if _is_gcs(directory):
        from google.api_core import exceptions

        blob = _gcs_blob(f"{directory.rstrip('/')}/{key}", _project(settings))
        try:
            blob.upload_from_string(text, content_type="application/json", if_generation_match=0)
        except exceptions.PreconditionFailed:
            return False
        return True
    os.makedirs(directory, exist_ok=True)
    try:
        fd = os.open(os.path.join(directory, key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def update(settings: Mapping[str, Any], key: str, record: Mapping[str, Any]) -> None:
    """Rewrites a claimed record with what became of the delivery."""
    directory = _records_dir(settings)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if _is_gcs(directory):
        blob = _gcs_blob(f"{directory.rstrip('/')}/{key}", _project(settings))
        blob.upload_from_string(text, content_type="application/json")
        return
    with open(os.path.join(directory, key), "w", encoding="utf-8") as f:
        f.write(text)


def release(settings: Mapping[str, Any], key: str) -> None:
    """Removes a record, so that a retried delivery of the same event starts the chain."""
    directory = _records_dir(settings)
    if _is_gcs(directory):
        _gcs_blob(f"{directory.rstrip('/')}/{key}", _project(settings)).delete()
        return
    os.remove(os.path.join(directory, key))


def _project(settings: Mapping[str, Any]) -> str | None:
    vertex = settings.get("vertex") or {}
    return vertex.get("project")


def submit_pipeline(settings: Mapping[str, Any], values: Mapping[str, str], job_id: str) -> str:
    """Submits the bundled pipeline to Vertex AI Pipelines; returns the run's resource name."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    vertex = settings["vertex"]
    credentials = None
    options: dict[str, Any] = {}
    endpoint = vertex.get("api_endpoint")
    if endpoint:
        options["api_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            # A plain-http endpoint is a local stand-in: REST (gRPC always uses TLS) and
            # nothing to authenticate against.
            from google.auth.credentials import AnonymousCredentials

            options["api_transport"] = "rest"
            credentials = AnonymousCredentials()
    aiplatform.init(
        project=vertex["project"], location=vertex["region"], credentials=credentials, **options
    )
    job = aiplatform.PipelineJob(
        display_name=vertex["display_name"],
        template_path=os.path.join(settings["root"], PIPELINE_FILE),
        job_id=job_id,
        pipeline_root=vertex["pipeline_root"],
        parameter_values=dict(values),
        encryption_spec_key_name=vertex.get("kms_key"),
        labels=vertex.get("labels") or None,
        credentials=credentials,
        project=vertex["project"],
        location=vertex["region"],
    )
    name = f"projects/{vertex['project']}/locations/{vertex['region']}/pipelineJobs/{job_id}"
    try:
        job.submit(service_account=vertex.get("service_account"), network=vertex.get("network"))
    except exceptions.AlreadyExists:
        # An earlier delivery's submission went through but its answer was lost.
        return name
    return str(job.resource_name)


def run_local_chain(settings: Mapping[str, Any], values: Mapping[str, str]) -> str:
    """Runs ``beamforge chain`` in the project's Python; returns how it ended.

    Raises:
        StartError: if the chain failed (its last log lines included) or outlived the
            function's timeout.
        OSError: if the project's Python cannot be started.
    """
    local = settings["local"]
    python = os.environ.get("BEAMFORGE_PYTHON") or str(local["python"])
    command = [python, "-m", "launchers.cli", "chain", str(local["chain_file"])]
    command += ["--target", "local"]
    for name, value in values.items():
        command += ["--param", f"{name}={value}"]
    timeout = float(local["timeout"])
    try:
        done = subprocess.run(
            command,
            cwd=_directory(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StartError(f"beamforge chain did not finish in {timeout:g} s") from exc
    if done.returncode in CHAIN_RAN:
        return f"beamforge chain {CHAIN_RAN[done.returncode]} (exit {done.returncode})"
    tail = "\n".join(done.stdout.splitlines()[-_TAIL_LINES:])
    raise StartError(f"beamforge chain exited with code {done.returncode}:\n{tail}")


def handle(
    event_type: str, event_id: str, data: Mapping[str, Any], settings: Mapping[str, Any]
) -> Outcome:
    """Handles one event: ignores it, recognises a repeat, or starts the chain.

    Raises:
        StartError: if the local chain ran and failed (the record says so).
        Exception: whatever kept the chain from starting: the Vertex submission's error, an
            OSError starting the local Python (the record is removed first).
    """
    bucket = str(data.get("bucket") or "")
    name = str(data.get("name") or "")
    path = f"gs://{bucket}/{name}" if bucket and name else ""
    problem = _why_ignored(event_type, bucket, name, settings)
    if problem:
        log("INFO", f"ignored {path or 'event ' + event_id}: {problem}", event_id=event_id)
        return Outcome("ignored", path, problem)
    generation = str(data.get("generation") or "")
    key = delivery_key(bucket, name, generation)
    record: dict[str, Any] = {
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "event_id": event_id,
        "received": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": settings["target"],
    }
    if not claim(settings, key, record):
        detail = f"generation {generation} was delivered before"
        log("INFO", f"repeated {path}: {detail}", event_id=event_id, record=key)
        return Outcome("repeated", path, detail)
    values = {**settings["values"], settings["parameter"]: path}
    try:
        if settings["target"] == "gcp":
            detail = submit_pipeline(settings, values, run_id(settings["chain"], key))
        else:
            detail = run_local_chain(settings, values)
    except StartError as exc:
        # The chain ran and failed: its own state records where (beamforge chain resumes it).
        update(settings, key, {**record, "failed": str(exc)})
        log("ERROR", f"chain for {path} failed: {exc}", event_id=event_id, record=key)
        raise
    except Exception as exc:
        release(settings, key)
        log("ERROR", f"could not start the chain for {path}: {exc}", event_id=event_id)
        raise
    update(settings, key, {**record, "started": detail})
    log("INFO", f"started the chain for {path}: {detail}", event_id=event_id, record=key)
    return Outcome("started", path, detail)


def _why_ignored(event_type: str, bucket: str, name: str, settings: Mapping[str, Any]) -> str:
    if event_type != FINALIZED:
        return f"event type {event_type!r} is not {FINALIZED}"
    if not bucket or not name:
        return "the event names no bucket and object"
    if bucket != settings["bucket"]:
        return f"bucket {bucket!r} is not {settings['bucket']!r}"
    filters = {k: settings.get(k) or "" for k in ("prefix", "suffix", "glob")}
    if not object_matches(name, **filters):
        shown = ", ".join(f"{k} {v!r}" for k, v in filters.items() if v)
        return f"the name does not match {shown}"
    return ""
