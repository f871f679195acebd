"""Request logging of the prediction server: what the model really saw, for serving skew.

A sample of the predict requests is written, one record per instance, to a folder of JSONL
files or to a BigQuery table (streaming inserts)::

    {"timestamp": "2026-11-29T16:00:00.123456+00:00", "request_id": "3f2a...",
     "instance_index": 0, "model_uri": "/models/taxi", "model_version": "sha256:...",
     "artifact_sha256": "...", "instance": {...raw instance as received...},
     "prediction": {...}, "latency_ms": 12.5}

In BigQuery ``instance`` and ``prediction`` are JSON text (STRING columns).

Configured like the rest of the server, by its environment (or the matching flags of
``python -m launchers.serving``):

- ``BEAMFORGE_REQUEST_LOG``: ``DIR`` (a local folder) or ``bq://project.dataset.table``;
  unset: no logging;
- ``BEAMFORGE_REQUEST_LOG_SAMPLE``: the fraction of requests logged, 0 to 1 (default 1);
- ``BEAMFORGE_REQUEST_LOG_FILE_BYTES`` / ``BEAMFORGE_REQUEST_LOG_FILE_SECONDS``: a JSONL
  file is closed and the next one started before it would pass this size, or once it is
  this old (defaults 64 MiB, 3600 s);
- ``BEAMFORGE_REQUEST_LOG_QUEUE``: requests waiting to be written (default 1000).

Sampling is by request: the request id is the client's ``X-Request-Id`` header (1-128 of
``A-Za-z0-9._:-``), else a random UUID; the answer carries it back in ``X-Request-Id``. A
request is logged when the first 8 bytes of the SHA-256 of its id, read as a big-endian
integer, are below ``sample * 2**64`` (:func:`sampled`): the same id gets the same decision in
every process and replica, so a test (or a retry) knows which requests are logged.

Only answered requests (status 200) are logged. The records are built and written by a
background thread fed by a bounded queue (``BEAMFORGE_REQUEST_LOG_QUEUE`` requests, and 64
MiB of request and answer bodies): a slow disk or table never holds up an answer. A
request that finds the queue full is dropped and counted; a batch the sink refuses is counted
as failed. The counts (``sampled``, ``logged``, ``records``, ``dropped``, ``failed``) are
printed on stderr when the server stops, once the queue is written out::

    request log /logs/taxi: sampled 52, logged 52, records 104, dropped 0, failed 0
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import glob
import hashlib
import json
import logging
import math
import os
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from launchers.serving.environment import ServerSetupError

__all__ = [
    "BIGQUERY_COLUMNS",
    "EVALUATION_HEADER",
    "MAX_QUEUED_BYTES",
    "REQUEST_ID_HEADER",
    "REQUEST_LOG_ENV",
    "REQUEST_LOG_FILE_BYTES_ENV",
    "REQUEST_LOG_FILE_SECONDS_ENV",
    "REQUEST_LOG_QUEUE_ENV",
    "REQUEST_LOG_SAMPLE_ENV",
    "BigQueryRows",
    "BigQueryTable",
    "JsonlFiles",
    "LogReader",
    "LoggedRequest",
    "ModelInfo",
    "RequestLog",
    "RequestLogError",
    "RequestLogSettings",
    "RequestLogging",
    "model_info",
    "open_request_log",
    "parse_sink",
    "request_id_of",
    "request_log_env",
    "request_records",
    "sampled",
]

_LOG = logging.getLogger(__name__)

REQUEST_LOG_ENV = "BEAMFORGE_REQUEST_LOG"
REQUEST_LOG_SAMPLE_ENV = "BEAMFORGE_REQUEST_LOG_SAMPLE"
REQUEST_LOG_FILE_BYTES_ENV = "BEAMFORGE_REQUEST_LOG_FILE_BYTES"
REQUEST_LOG_FILE_SECONDS_ENV = "BEAMFORGE_REQUEST_LOG_FILE_SECONDS"
REQUEST_LOG_QUEUE_ENV = "BEAMFORGE_REQUEST_LOG_QUEUE"
REQUEST_ID_HEADER = "X-Request-Id"
# Sent by beamforge's own evaluations (a champion gate scoring the deployed model): those
# requests are not serving traffic, and logging them would show the eval split as "what the
# server saw" to beamforge skew.
EVALUATION_HEADER = "X-Beamforge-Evaluation"

DEFAULT_FILE_BYTES = 64 << 20
DEFAULT_FILE_SECONDS = 3600.0
DEFAULT_QUEUE = 1000
# Requests written in one go (one file write, one insertAll call).
_BATCH = 500
# Request and answer bodies waiting for the writer, at most: a request may be 4 MiB.
MAX_QUEUED_BYTES = 64 << 20
# How often the idle writer wakes up to close a file that has grown old.
_TICK_SECONDS = 1.0
_FILE_PATTERN = "requests-*.jsonl"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# BigQuery project, dataset and table ids, as transforms.io.bigquery.tables reads them.
_BQ_SINK = re.compile(
    r"bq://(?P<project>(?:[a-z][a-z0-9.\-]*:)?[a-z][a-z0-9\-]{4,28}[a-z0-9])"
    r"\.(?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[A-Za-z0-9_\-]{1,1024})"
)
# Column name, BigQuery type, mode: one row per logged instance.
BIGQUERY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("timestamp", "TIMESTAMP", "REQUIRED"),
    ("request_id", "STRING", "REQUIRED"),
    ("instance_index", "INT64", "REQUIRED"),
    ("model_uri", "STRING", "NULLABLE"),
    ("model_version", "STRING", "NULLABLE"),
    ("artifact_sha256", "STRING", "NULLABLE"),
    ("instance", "STRING", "NULLABLE"),
    ("prediction", "STRING", "NULLABLE"),
    ("latency_ms", "FLOAT64", "NULLABLE"),
)


class RequestLogError(ValueError):
    """A request log that cannot be read or written (a sink refused a batch, no files...)."""


# --- settings -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BigQueryTable:
    """A ``bq://project.dataset.table`` sink."""

    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


def parse_sink(sink: str) -> str | BigQueryTable:
    """A request log's sink: a local folder (returned as given) or a BigQuery table.

    Raises:
        ValueError: for an empty sink, a malformed ``bq://`` table, or another URL scheme.
    """
    if not isinstance(sink, str) or not sink.strip():
        raise ValueError(
            "the request log sink is empty; expected DIR or bq://project.dataset.table"
        )
    if sink.startswith("bq://"):
        match = _BQ_SINK.fullmatch(sink)
        if match is None:
            raise ValueError(
                f"malformed BigQuery sink {sink!r}: expected bq://project.dataset.table (project: "
                "6-30 lowercase letters, digits or hyphens; dataset: letters, digits, underscores)"
            )
        return BigQueryTable(match["project"], match["dataset"], match["table"])
    if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", sink):
        raise ValueError(
            f"request log sink {sink!r}: expected a local folder or bq://project.dataset.table"
        )
    return sink


@dataclasses.dataclass(frozen=True)
class RequestLogSettings:
    """How the server logs requests.

    Attributes:
        sink: A local folder or ``bq://project.dataset.table``.
        sample: Fraction of requests logged, 0 to 1.
        file_bytes: A JSONL file is closed before it would pass this size.
        file_seconds: A JSONL file is closed once it is this old.
        queue: Requests that may wait for the writer; more are dropped.
    """

    sink: str
    sample: float = 1.0
    file_bytes: int = DEFAULT_FILE_BYTES
    file_seconds: float = DEFAULT_FILE_SECONDS
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        try:
            parse_sink(self.sink)
        except ValueError as exc:
            raise ServerSetupError(f"{REQUEST_LOG_ENV} (or --request-log): {exc}") from None
        if not 0.0 <= self.sample <= 1.0:
            raise ServerSetupError(
                f"the request log sample rate ({REQUEST_LOG_SAMPLE_ENV} or --request-log-sample) "
                f"must be a number from 0 to 1, got {self.sample!r}"
            )
        for name, value in (
            (REQUEST_LOG_FILE_BYTES_ENV, self.file_bytes),
            (REQUEST_LOG_FILE_SECONDS_ENV, self.file_seconds),
            (REQUEST_LOG_QUEUE_ENV, self.queue),
        ):
            if not value > 0:
                raise ServerSetupError(f"{name} must be positive, got {value!r}")

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        sink: str | None = None,
        sample: float | None = None,
    ) -> RequestLogSettings | None:
        """The settings from ``environ`` (``BEAMFORGE_REQUEST_LOG*``), flags first.

        Args:
            environ: The environment.
            sink: ``--request-log``, overriding ``BEAMFORGE_REQUEST_LOG``.
            sample: ``--request-log-sample``, overriding ``BEAMFORGE_REQUEST_LOG_SAMPLE``.

        Returns:
            None when no sink is set (nothing is logged).

        Raises:
            ServerSetupError: naming the variable whose value is unusable, or a sample rate
                given without a sink.
        """
        sink = sink if sink is not None else environ.get(REQUEST_LOG_ENV) or None
        raw_sample: Any = sample if sample is not None else environ.get(REQUEST_LOG_SAMPLE_ENV)
        if sink is None:
            if raw_sample not in (None, ""):
                raise ServerSetupError(
                    f"{REQUEST_LOG_SAMPLE_ENV} (or --request-log-sample) is set but "
                    f"{REQUEST_LOG_ENV} (or --request-log) is not: name the log's folder or "
                    "bq:// table"
                )
            return None
        return cls(
            sink=sink,
            sample=_number(raw_sample, REQUEST_LOG_SAMPLE_ENV, float, 1.0),
            file_bytes=_number(
                environ.get(REQUEST_LOG_FILE_BYTES_ENV),
                REQUEST_LOG_FILE_BYTES_ENV,
                int,
                DEFAULT_FILE_BYTES,
            ),
            file_seconds=_number(
                environ.get(REQUEST_LOG_FILE_SECONDS_ENV),
                REQUEST_LOG_FILE_SECONDS_ENV,
                float,
                DEFAULT_FILE_SECONDS,
            ),
            queue=_number(
                environ.get(REQUEST_LOG_QUEUE_ENV), REQUEST_LOG_QUEUE_ENV, int, DEFAULT_QUEUE
            ),
        )


def _number(raw: Any, name: str, kind: type[int] | type[float], default: Any) -> Any:
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        raise ServerSetupError(f"{name} must be {noun}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ServerSetupError(f"{name} must be a finite number, got {raw!r}")
    return value


def request_log_env(sink: str, sample: float = 1.0) -> dict[str, str]:
    """The server environment that logs to ``sink`` (a folder becomes an absolute path).

    Raises:
        ServerSetupError: for an unusable sink or sample rate.
    """
    settings = RequestLogSettings(sink=sink, sample=sample)
    target = parse_sink(settings.sink)
    where = os.path.abspath(target) if isinstance(target, str) else settings.sink
    return {REQUEST_LOG_ENV: where, REQUEST_LOG_SAMPLE_ENV: repr(float(settings.sample))}


def sampled(request_id: str, rate: float) -> bool:
    """Whether the request ``request_id`` is logged at sample rate ``rate`` (0 to 1).

    True when the first 8 bytes of SHA-256(``request_id``), a big-endian integer, are below
    ``rate * 2**64``: deterministic per id, uniform over ids.
    """
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2.0**64


def request_id_of(header: bytes | None) -> str:
    """The request's id: its ``X-Request-Id`` header if it is 1-128 of ``A-Za-z0-9._:-``.

    Any other value (or none) gets a new random id, so what is logged is always a plain token.
    """
    if header is not None:
        text = header.decode("latin-1").strip()
        if _REQUEST_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex


# --- what is logged -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The served model, as each record names it.

    Attributes:
        uri: The model directory (``AIP_STORAGE_URI``).
        version: ``AIP_DEPLOYED_MODEL_ID`` on a Vertex endpoint; else ``sha256:<hex>`` of the
            model directory's top-level files (names and bytes) when it is local; else None.
        artifact_sha256: The transform artifact's hash (``artifact/transform.json``), if any.
    """

    uri: str | None
    version: str | None
    artifact_sha256: str | None


def model_info(model_dir: str | None, environ: Mapping[str, str]) -> ModelInfo:
    """What identifies the model served from ``model_dir`` (see :class:`ModelInfo`)."""
    from transforms.core import files

    version = environ.get("AIP_DEPLOYED_MODEL_ID") or None
    artifact = None
    if model_dir:
        if version is None and os.path.isdir(model_dir):
            digest = hashlib.sha256()
            for name in sorted(os.listdir(model_dir)):
                path = os.path.join(model_dir, name)
                if os.path.isfile(path):
                    digest.update(name.encode() + b"\0")
                    with open(path, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            digest.update(block)
            version = f"sha256:{digest.hexdigest()}"
        found = files.read_bytes(files.join(model_dir, "artifact", "transform.json"))
        if found is not None:
            try:
                recorded = json.loads(found).get("sha256")
            except (ValueError, AttributeError):
                recorded = None
            artifact = recorded if isinstance(recorded, str) else None
    return ModelInfo(uri=model_dir, version=version, artifact_sha256=artifact)


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    """One answered request, as the server saw it (parsed later, by the writer thread).

    Attributes:
        request_id: Its id.
        timestamp: When it arrived (seconds since the epoch).
        latency_ms: From its arrival at the model server to the end of its answer.
        body: The request body (checked: a Vertex predict request).
        answer: The response body.
    """

    request_id: str
    timestamp: float
    latency_ms: float
    body: bytes
    answer: bytes


def request_records(request: LoggedRequest, model: ModelInfo) -> list[dict[str, Any]]:
    """One record per instance of ``request``, its prediction beside it (None if unknown)."""
    instances = json.loads(request.body).get("instances") or []
    try:
        # Non-finite numbers are not JSON: a model's NaN is logged as null.
        answer = json.loads(request.answer, parse_constant=lambda _: None)
    except ValueError:
        answer = None
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        predictions = [None] * len(instances)
    stamp = datetime.datetime.fromtimestamp(request.timestamp, datetime.UTC).isoformat()
    return [
        {
            "timestamp": stamp,
            "request_id": request.request_id,
            "instance_index": i,
            "model_uri": model.uri,
            "model_version": model.version,
            "artifact_sha256": model.artifact_sha256,
            "instance": instance,
            "prediction": prediction,
            "latency_ms": round(request.latency_ms, 3),
        }
        for i, (instance, prediction) in enumerate(zip(instances, predictions, strict=True))
    ]


# --- sinks --------------------------------------------------------------------------------


class Sink(Protocol):
    """Where records go; used by one thread only."""

    def write(self, records: Sequence[dict[str, Any]]) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


class JsonlFiles:
    """Records as JSON lines in ``requests-<UTC time>-<pid>-<n>.jsonl`` files of a folder.

    A file is closed and the next one started before a line would take it past
    ``max_bytes`` (a single longer line gets a file of its own), and once it is
    ``max_seconds`` old. Every write is flushed: a reader sees whole lines.

    Args:
        directory: The folder (created if missing).
        max_bytes: Size limit of a file.
        max_seconds: Age limit of a file.
        clock: Monotonic seconds, for the age.

    Raises:
        ServerSetupError: if the folder cannot be created or written to.
    """

    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int = DEFAULT_FILE_BYTES,
        max_seconds: float = DEFAULT_FILE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ServerSetupError(
                f"{REQUEST_LOG_ENV} {directory}: cannot create the folder: {exc.strerror or exc}"
            ) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ServerSetupError(f"{REQUEST_LOG_ENV} {directory}: the folder is not writable")
        self.directory = directory
        self._max_bytes = max_bytes
        self._max_seconds = max_seconds
        self._clock = clock
        self._file: Any = None
        self._opened = 0.0
        self._size = 0
        self._sequence = 0
        self.paths: list[str] = []

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.tick()
        pending: list[bytes] = []
        for record in records:
            line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            if self._file is not None and self._size + len(line) > self._max_bytes:
                self._flush(pending)
                pending = []
                self._close_file()
            if self._file is None:
                self._open_file()
            pending.append(line)
            self._size += len(line)
        self._flush(pending)

    def tick(self) -> None:
        if self._file is not None and self._clock() - self._opened >= self._max_seconds:
            self._close_file()

    def close(self) -> None:
        self._close_file()

    def _open_file(self) -> None:
        self._sequence += 1
        now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"requests-{now}-{os.getpid()}-{self._sequence:04d}.jsonl"
        path = os.path.join(self.directory, name)
        self._file = open(path, "xb")  # noqa: SIM115 - held open across writes
        self._opened = self._clock()
        self._size = 0
        self.paths.append(path)

    def _flush(self, lines: list[bytes]) -> None:
        if lines:
            self._file.write(b"".join(lines))
            self._file.flush()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class BigQueryRows:
    """Records as rows of a BigQuery table, by streaming inserts (``tabledata.insertAll``).

    The table is created with :data:`BIGQUERY_COLUMNS` when missing; an existing one must
    have those columns. ``BIGQUERY_EMULATOR_HOST`` points the client at an emulator.

    Args:
        table: The table.
        client: A google-cloud-bigquery client; default one for the table's project.

    Raises:
        ServerSetupError: if the table cannot be reached, created or lacks a column.
    """

    def __init__(self, table: BigQueryTable, client: Any = None) -> None:
        from google.cloud import bigquery

        from transforms.io.bigquery.client import make_client

        self.table = table
        self._client = client or make_client(table.project)
        # A start-up check: short, so a wrong endpoint is an error within seconds.
        retry = bigquery.DEFAULT_RETRY.with_deadline(15.0)
        where = f"{REQUEST_LOG_ENV} bq://{table}"
        try:
            found = self._find(retry)
            if found is None:
                schema = [bigquery.SchemaField(n, t, mode=m) for n, t, m in BIGQUERY_COLUMNS]
                self._client.create_table(
                    bigquery.Table(str(table), schema=schema),
                    exists_ok=True,
                    retry=retry,
                    timeout=15.0,
                )
            else:
                missing = [n for n, _, _ in BIGQUERY_COLUMNS if n not in found]
                if missing:
                    raise ServerSetupError(
                        f"{where}: the table has no column {', '.join(missing)}; a request log "
                        f"table has {', '.join(n for n, _, _ in BIGQUERY_COLUMNS)}"
                    )
        except _cloud_errors() as exc:
            raise ServerSetupError(f"{where}: {_google_error(exc)}") from None

    def _find(self, retry: Any) -> set[str] | None:
        from google.api_core.exceptions import NotFound

        try:
            existing = self._client.get_table(str(self.table), retry=retry, timeout=15.0)
        except NotFound:
            return None
        return {field.name for field in existing.schema}

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        from transforms.io.bigquery.client import TIMEOUT, default_retry

        rows = [_bigquery_row(r) for r in records]
        try:
            errors = self._client.insert_rows_json(
                str(self.table), rows, retry=default_retry(), timeout=TIMEOUT
            )
        except _cloud_errors() as exc:
            raise RequestLogError(f"bq://{self.table}: {_google_error(exc)}") from None
        if errors:
            raise RequestLogError(f"bq://{self.table} refused rows: {errors[0]}")

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._client.close()


def _bigquery_row(record: dict[str, Any]) -> dict[str, Any]:
    row = dict(record)
    for key in ("instance", "prediction"):
        row[key] = None if row[key] is None else json.dumps(row[key], ensure_ascii=False)
    return row


def _cloud_errors() -> tuple[type[Exception], ...]:
    """What a BigQuery call raises when the service (not this code) is at fault."""
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (GoogleAPIError, GoogleAuthError, requests.RequestException, OSError)


def _google_error(exc: Exception) -> str:
    message = str(getattr(exc, "message", None) or exc or type(exc).__name__)
    cause = getattr(exc, "cause", None)  # a RetryError's last failure says what went wrong
    if isinstance(cause, Exception):
        message += f" (last error: {_google_error(cause)})"
    return " ".join(message.split())


# --- the writer ---------------------------------------------------------------------------

_STOP = object()


class RequestLog:
    """Sampled requests, queued and written to a sink by a background thread.

    :meth:`submit` never blocks: a request that finds the queue full is dropped and counted.

    Args:
        sink: Where the records go.
        model: What names the served model in each record.
        sample: Fraction of requests logged (:func:`sampled`).
        queue_size: Requests that may wait for the writer.
        max_queued_bytes: Bytes (request and answer bodies) that may wait for the writer.
        description: The sink, for messages.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        model: ModelInfo,
        sample: float = 1.0,
        queue_size: int = DEFAULT_QUEUE,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        description: str = "",
    ) -> None:
        self.sample = sample
        self.description = description
        self._sink = sink
        self._model = model
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("sampled", "logged", "records", "dropped", "failed"), 0)
        self._problems = 0  # the writer thread's own count, for its warnings
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def sampled(self, request_id: str) -> bool:
        """Whether this request is to be logged."""
        return sampled(request_id, self.sample)

    def submit(self, request: LoggedRequest) -> bool:
        """Queues an answered, sampled request; False if it was dropped (queue full)."""
        self._count("sampled")
        size = len(request.body) + len(request.answer)
        try:
            with self._lock:
                # Requests are up to 4 MiB each: the queue is bounded in bytes as well.
                if self._queued_bytes + size > self._max_queued_bytes:
                    raise queue.Full
                self._queue.put_nowait(request)
                self._queued_bytes += size
        except queue.Full:
            dropped = self._count("dropped")
            if _power_of_ten(dropped):
                _LOG.warning(
                    "request log %s: the queue is full, %d request(s) dropped so far",
                    self.description,
                    dropped,
                )
            return False
        return True

    def counters(self) -> dict[str, int]:
        """Requests ``sampled`` (answered and chosen), ``logged`` (written), ``dropped``
        (the queue was full) and ``failed`` (the sink refused them), and ``records``
        (instances written). Once closed, ``sampled = logged + dropped + failed``."""
        with self._lock:
            return dict(self._counts)

    def close(self, timeout: float = 5.0) -> dict[str, int]:
        """Writes what is queued (for at most ``timeout`` seconds), closes the sink; once.

        Returns:
            The final :meth:`counters`.
        """
        if not self.closed:
            self.closed = True
            deadline = time.monotonic() + timeout
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                _LOG.warning(
                    "request log %s: not written out within %g s", self.description, timeout
                )
        return self.counters()

    def summary(self) -> str:
        """One line: the sink and the :meth:`counters`."""
        counts = ", ".join(f"{name} {n}" for name, n in self.counters().items())
        return f"request log {self.description}: {counts}"

    def _count(self, name: str, n: int = 1) -> int:
        with self._lock:
            self._counts[name] += n
            return self._counts[name]

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=_TICK_SECONDS)
            except queue.Empty:
                self._guarded(self._sink.tick)
                continue
            batch: list[LoggedRequest] = []
            item = first
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= _BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                with self._lock:
                    self._queued_bytes -= sum(len(r.body) + len(r.answer) for r in batch)
                self._write(batch)
        self._guarded(self._sink.close)

    def _write(self, batch: list[LoggedRequest]) -> None:
        records: list[dict[str, Any]] = []

        def write() -> None:
            records.extend(r for request in batch for r in request_records(request, self._model))
            self._sink.write(records)

        if self._guarded(write):
            self._count("logged", len(batch))
            self._count("records", len(records))
        else:
            self._count("failed", len(batch))

    def _guarded(self, action: Callable[[], None]) -> bool:
        # A full disk or a refused insert loses this batch, not the server; a value JSON
        # cannot hold (ValueError, TypeError) loses it too.
        try:
            action()
        except (OSError, RequestLogError, ValueError, TypeError) as exc:
            self._problems += 1
            if _power_of_ten(self._problems):
                _LOG.warning(
                    "request log %s: %s (%d problem(s) so far)",
                    self.description,
                    exc,
                    self._problems,
                )
            return False
        return True


def _power_of_ten(n: int) -> bool:
    # Warnings at the 1st, 10th, 100th... occurrence: seen, without flooding the log.
    return n > 0 and 10 ** (len(str(n)) - 1) == n


def open_request_log(
    settings: RequestLogSettings, model_dir: str | None, environ: Mapping[str, str]
) -> RequestLog:
    """The :class:`RequestLog` the settings describe, its sink opened and checked.

    Raises:
        ServerSetupError: if the sink cannot be used (a folder not writable, a table that
            cannot be reached or has other columns).
    """
    target = parse_sink(settings.sink)
    sink: Sink
    if isinstance(target, BigQueryTable):
        sink = BigQueryRows(target)
    else:
        sink = JsonlFiles(target, max_bytes=settings.file_bytes, max_seconds=settings.file_seconds)
    return RequestLog(
        sink,
        model=model_info(model_dir, environ),
        sample=settings.sample,
        queue_size=settings.queue,
        description=settings.sink,
    )


# --- the server side ----------------------------------------------------------------------


class RequestLogging:
    """ASGI middleware: gives each predict request an id and logs the sampled ones.

    Sits behind :class:`~launchers.serving.protocol.RequestGuard` (it sees only checked
    requests) and in front of the model server. Every predict answer carries the request's
    ``X-Request-Id``; a sampled request answered with 200 is handed to the
    :class:`RequestLog` once its answer has been sent. Requests marked with
    ``X-Beamforge-Evaluation`` (beamforge's own evaluations) are never logged.

    Args:
        app: The ASGI app behind it.
        log: Where sampled requests go.
        predict_route: Path of the predict route.
    """

    def __init__(self, app: Any, *, log: RequestLog, predict_route: str) -> None:
        self._app = app
        self._log = log
        self._route = predict_route

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http" or scope["path"] != self._route:
            await self._app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        request_id = request_id_of(headers.get(REQUEST_ID_HEADER.lower().encode()))
        arrived, started = time.time(), time.perf_counter()
        keep = self._log.sampled(request_id) and EVALUATION_HEADER.lower().encode() not in headers
        body: list[bytes] = []
        answer: list[bytes] = []
        status = 0

        async def receive_body() -> dict[str, Any]:
            message = dict(await receive())
            if keep and message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def send_answer(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())
                message = dict(message, headers=[*message.get("headers", []), extra])
            elif message["type"] == "http.response.body" and keep:
                answer.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await send(message)
                    if status == 200:
                        latency = (time.perf_counter() - started) * 1000.0
                        self._log.submit(
                            LoggedRequest(
                                request_id, arrived, latency, b"".join(body), b"".join(answer)
                            )
                        )
                    return
            await send(message)

        await self._app(scope, receive_body, send_answer)

    def _closing(self, send: Any) -> Any:
        # The server stops (SIGTERM included: uvicorn re-raises it once its lifespan has
        # ended, so nothing after Server.run would run): the queue is written out first.
        async def send_lifespan(message: dict[str, Any]) -> None:
            ended = message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed")
            if ended and not self._log.closed:
                await asyncio.to_thread(self._log.close)
                print(self._log.summary(), file=sys.stderr, flush=True)
            await send(message)

        return send_lifespan


# --- reading a log back -------------------------------------------------------------------


class LogReader:
    """The logged instances of a request log (a folder of JSONL files or a ``bq://`` table).

    Iterate :meth:`instances`; afterwards :attr:`unreadable` counts the lines (or rows) that
    were not a request record with an instance object, and :attr:`records` those that were.

    Args:
        source: The folder or ``bq://project.dataset.table``.
        client: A google-cloud-bigquery client for a table (default: one for its project).

    Raises:
        RequestLogError: for a folder without request log files, a path that is not a
            folder, or a table that cannot be read.
    """

    def __init__(self, source: str, client: Any = None) -> None:
        try:
            self._target = parse_sink(source)
        except ValueError as exc:
            raise RequestLogError(str(exc)) from None
        self.source = source
        self._client = client
        self.unreadable = 0
        self.records = 0
        self.files: list[str] = []
        if isinstance(self._target, str):
            if not os.path.isdir(self._target):
                raise RequestLogError(f"{source}: no such folder (a request log folder)")
            self.files = sorted(glob.glob(os.path.join(self._target, _FILE_PATTERN)))
            if not self.files:
                raise RequestLogError(f"{source}: no request log files ({_FILE_PATTERN})")

    def instances(self) -> Iterator[dict[str, Any]]:
        """Each logged raw instance, in file (or table) order."""
        rows = self._table_rows() if isinstance(self._target, BigQueryTable) else self._lines()
        for row in rows:
            instance = row.get("instance") if isinstance(row, dict) else None
            if isinstance(instance, str):
                try:
                    instance = json.loads(instance)
                except ValueError:
                    instance = None
            if not isinstance(instance, dict):
                self.unreadable += 1
                continue
            self.records += 1
            yield instance

    def _lines(self) -> Iterator[Any]:
        for path in self.files:
            with open(path, "rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError:
                        # A torn last line of a file being written, or a foreign line.
                        self.unreadable += 1

    def _table_rows(self) -> Iterator[Any]:
        assert isinstance(self._target, BigQueryTable)
        from transforms.io.bigquery.client import TIMEOUT, default_retry, make_client

        client = self._client or make_client(self._target.project)
        try:
            for row in client.list_rows(str(self._target), retry=default_retry(), timeout=TIMEOUT):
                yield {"instance": row.get("instance")}
        except _cloud_errors() as exc:
            raise RequestLogError(f"bq://{self._target}: {_google_error(exc)}") from None
