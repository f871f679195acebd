"""What the Cloud Function does with a GCS event: filter, claim once, start the chain.

This module is copied into the function's directory as ``trigger_runtime.py`` and runs there
without beamforge: at import it needs only the standard library, and it imports
google-cloud-storage and google-cloud-aiplatform only when it uses them. Its settings come
from the ``trigger.json`` beside the function (written by
:func:`launchers.trigger.build.build_trigger`).

For each ``google.cloud.storage.object.v1.finalized`` event:

1. Objects outside the trigger's bucket, prefix, suffix or glob are ignored (one log line).
2. Events whose data is no JSON object, or names no bucket and object, or no generation in
   decimal digits, are ignored too (one log line, answer 200: redelivering them cannot help).
3. GCS delivers at least once: the event's bucket, name and generation are the delivery's key
   (a digest: no event text goes into a path). The delivery is claimed first, create-if-absent
   (a local file linked into place, which fails if one exists, or a GCS object written with
   ``if_generation_match=0``), a record holding the time of the claim; once the chain started
   or failed, the record says so. A key recorded with an outcome, or claimed less than the
   function's timeout (plus a margin) ago, starts nothing: it is a repeat, or a delivery still
   in flight. A claim older than that with no outcome was left by a delivery that died before
   starting the chain (an instance killed): the redelivery takes it over (on GCS a rewrite
   with ``if_generation_match`` of the record's generation, locally a replace under a lock,
   so only one redelivery wins) and starts the chain.
4. The chain starts with the object's ``gs://BUCKET/NAME`` as the trigger's parameter: on the
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
# Seconds past the function's timeout after which a claim without an outcome is a dead
# delivery's (the platform stops a delivery at its timeout; the margin covers clock skew).
CLAIM_MARGIN = 60
# The local records folder's lock, held while a claim is decided.
LOCK_FILE = ".lock"
# Tries at claiming a record that keeps being removed under the claim.
_ATTEMPTS = 3
# GCS generations are positive 64-bit integers, sent as decimal text.
_GENERATION = re.compile(r"[0-9]{1,19}")


class StartError(RuntimeError):
    """The chain could not be started, or its local run failed."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the function did with one event.

    Attributes:
        status: ``ignored``, ``repeated`` (the key was recorded, or claimed by a delivery
            still in flight) or ``started``.
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
    """The record's file name for one object generation: a digest only.

    Names may hold any character and the event's fields are not trusted: none of their text
    goes into the path.
    """
    digest = hashlib.sha256(f"{bucket}\n{name}\n{generation}".encode()).hexdigest()
    return f"{digest[:40]}.json"


def run_id(chain: str, key: str) -> str:
    """The Vertex pipeline run id for a delivery: the chain's name and the key's digest."""
    return f"{chain[:100].rstrip('-')}-{key[:20]}"


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


def claim_expiry(settings: Mapping[str, Any]) -> float:
    """Seconds after which a claim without an outcome is taken to be a dead delivery's."""
    return float(settings["timeout"]) + CLAIM_MARGIN


def claim(settings: Mapping[str, Any], key: str, record: Mapping[str, Any]) -> str:
    """Claims the delivery ``key``: ``claimed``, ``taken over`` or ``repeated``.

    ``record`` (which holds ``claimed``, the time of this claim) is written if no record of
    ``key`` exists, or over one that holds no outcome and was claimed more than
    :func:`claim_expiry` seconds ago; only one of several racing deliveries wins.
    """
    directory = _records_dir(settings)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if _is_gcs(directory):
        return _claim_gcs(settings, f"{directory.rstrip('/')}/{key}", text)
    return _claim_local(settings, directory, key, text)


def _claim_gcs(settings: Mapping[str, Any], path: str, text: str) -> str:
    from google.api_core import exceptions

    blob = _gcs_blob(path, _project(settings))
    # A record removed between the two steps (by a delivery that could not start the
    # chain) is claimed again, a few times at most.
    for _ in range(_ATTEMPTS):
        try:
            blob.upload_from_string(text, content_type="application/json", if_generation_match=0)
            return "claimed"
        except exceptions.PreconditionFailed:
            pass
        found = blob.bucket.get_blob(blob.name)
        # Read before the download, which sets the blob's properties from its headers.
        generation = found.generation if found is not None else None
        if not generation:
            continue
        try:
            if not _stale(settings, found.download_as_bytes(if_generation_match=generation)):
                return "repeated"
            # Only the delivery whose write finds the stale record's generation wins.
            blob.upload_from_string(
                text, content_type="application/json", if_generation_match=generation
            )
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            # Rewritten or removed by another delivery since.
            return "repeated"
        return "taken over"
    return "repeated"


def _claim_local(settings: Mapping[str, Any], directory: str, key: str, text: str) -> str:
    import fcntl

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, key)
    # Written aside and linked into place: a record is never seen half written, and the link
    # fails if one exists (create-if-absent).
    temporary = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        with open(os.path.join(directory, LOCK_FILE), "a", encoding="utf-8") as lock:
            # One decision at a time: the check of a stale record and its replacement.
            fcntl.flock(lock, fcntl.LOCK_EX)
            for _ in range(_ATTEMPTS):
                try:
                    os.link(temporary, path)
                    return "claimed"
                except FileExistsError:
                    pass
                try:
                    with open(path, "rb") as f:
                        found = f.read()
                except FileNotFoundError:
                    continue  # Removed since: claim it again.
                if not _stale(settings, found):
                    return "repeated"
                os.replace(temporary, path)
                return "taken over"
            return "repeated"
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _stale(settings: Mapping[str, Any], found: bytes) -> bool:
    """Whether a record holds no outcome and its claim is older than the claims' expiry."""
    try:
        record = json.loads(found)
        if not isinstance(record, dict):
            raise ValueError("not an object")
        if "started" in record or "failed" in record:
            return False
        claimed = dt.datetime.fromisoformat(str(record.get("claimed") or record["received"]))
    except (ValueError, KeyError):
        # No writer of this module leaves such a record (it is written whole): one written by
        # other hands would otherwise block the object for ever.
        return True
    if claimed.tzinfo is None:
        claimed = claimed.replace(tzinfo=dt.UTC)
    age = (dt.datetime.now(dt.UTC) - claimed).total_seconds()
    return age > claim_expiry(settings)


def update(settings: Mapping[str, Any], key: str, record: Mapping[str, Any]) -> None:
    """Rewrites a claimed record with what became of the delivery."""
    directory = _records_dir(settings)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if _is_gcs(directory):
        blob = _gcs_blob(f"{directory.rstrip('/')}/{key}", _project(settings))
        blob.upload_from_string(text, content_type="application/json")
        return
    # Replaced whole: a record cut short would read as no outcome.
    path = os.path.join(directory, key)
    temporary = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


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


def handle(event_type: str, event_id: str, data: Any, settings: Mapping[str, Any]) -> Outcome:
    """Handles one event: ignores it, recognises a repeat, or starts the chain.

    Args:
        event_type: The CloudEvent's type.
        event_id: The CloudEvent's id (for the log).
        data: The event's data as delivered: any JSON value, text or bytes (only a JSON
            object with the object's ``bucket``, ``name`` and ``generation`` is handled).
        settings: The function's settings (:func:`load_settings`).

    Raises:
        StartError: if the local chain ran and failed (the record says so).
        Exception: whatever kept the chain from starting: the Vertex submission's error, an
            OSError starting the local Python (the record is removed first).
    """
    problem, bucket, name, generation = _read_event(event_type, data, settings)
    path = f"gs://{bucket}/{name}" if bucket and name else ""
    if problem:
        log("INFO", f"ignored {path or 'event ' + event_id}: {problem}", event_id=event_id)
        return Outcome("ignored", path, problem)
    key = delivery_key(bucket, name, generation)
    record: dict[str, Any] = {
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "event_id": event_id,
        "claimed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": settings["target"],
    }
    claimed = claim(settings, key, record)
    if claimed == "repeated":
        detail = f"generation {generation} was delivered before"
        log("INFO", f"repeated {path}: {detail}", event_id=event_id, record=key)
        return Outcome("repeated", path, detail)
    if claimed == "taken over":
        log(
            "WARNING",
            f"took over the claim of {path}: no outcome after {claim_expiry(settings):g} s "
            "(its delivery died before starting the chain)",
            event_id=event_id,
            record=key,
        )
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


def _read_event(
    event_type: str, data: Any, settings: Mapping[str, Any]
) -> tuple[str, str, str, str]:
    """Why the event is ignored ('' if not), and its bucket, name and generation."""
    fields = data if isinstance(data, Mapping) else {}
    bucket, name, generation = (fields.get(k) for k in ("bucket", "name", "generation"))
    if not (isinstance(bucket, str) and bucket and isinstance(name, str) and name):
        bucket, name = "", ""
    if event_type != FINALIZED:
        return f"event type {event_type!r} is not {FINALIZED}", bucket, name, ""
    if not isinstance(data, Mapping):
        return f"its data is not a JSON object (got {type(data).__name__})", "", "", ""
    if not bucket:
        return "the event names no bucket and object", "", "", ""
    if bucket != settings["bucket"]:
        return f"bucket {bucket!r} is not {settings['bucket']!r}", bucket, name, ""
    filters = {k: settings.get(k) or "" for k in ("prefix", "suffix", "glob")}
    if not object_matches(name, **filters):
        shown = ", ".join(f"{k} {v!r}" for k, v in filters.items() if v)
        return f"the name does not match {shown}", bucket, name, ""
    if not (isinstance(generation, str) and _GENERATION.fullmatch(generation)):
        text = repr(generation)
        text = text if len(text) <= 40 else text[:37] + "..."
        return f"generation {text} is not an object generation (decimal digits)", bucket, name, ""
    return "", bucket, name, generation
