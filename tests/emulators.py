"""Local Google Cloud emulators for the tests: GCS, BigQuery and Pub/Sub on free ports.

Loaded as a pytest plugin (``pytest_plugins`` in tests that use it). The emulators run in
subprocesses for the whole session and are torn down after it:

- GCS: ``gcp-storage-emulator`` (PyPI, in the project venv), on disk in a temporary folder
  so the BigQuery emulator can read what Beam wrote to gs:// (load jobs).
- BigQuery: ``bqemulator`` from its own venv (``.venv/bqemulator``, created by
  ``tools/bqemulator-venv.sh``; its pins conflict with the project's).
- Pub/Sub: the official emulator of the Google Cloud SDK (Java), one per test.

Where an emulator is not installed the tests that need it skip and say how to install it; in CI
(``CI`` set) they fail instead, so a missing emulator never passes unnoticed.
Tests using them are marked ``emulator``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

PROJECT = "test-project"
REPO = pathlib.Path(__file__).resolve().parent.parent
BQ_VENV = REPO / ".venv" / "bqemulator"
START_SECONDS = 60


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator: needs the local GCS and/or BigQuery emulator (started by fixtures)"
    )


def missing(reason: str) -> None:
    """Skips a test whose tool is missing; under CI (``CI`` set) fails it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have every emulator and tool)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, what: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:
                return  # Any HTTP answer means the server is up.
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not answer {url} within {START_SECONDS} s"
                ) from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclasses.dataclass
class Gcs:
    """A running GCS emulator."""

    endpoint: str
    root: pathlib.Path

    def client(self) -> Any:
        """A google-cloud-storage client talking to the emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def new_bucket(self, name: str) -> str:
        """Creates a bucket and returns its name."""
        self.client().create_bucket(name)
        return name


@dataclasses.dataclass
class BigQuery:
    """A running BigQuery emulator."""

    endpoint: str
    grpc: str
    project: str = PROJECT

    def client(self) -> Any:
        """A google-cloud-bigquery client talking to the emulator."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Gcs]:
    """The GCS emulator for the session; ``STORAGE_EMULATOR_HOST`` points at it.

    Beam's gs:// filesystem looks for default credentials with retries (about 20 s per
    process) before it falls back to anonymous access: the tests hand it "no credentials"
    up front, which makes it build the anonymous client at once.
    """
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        missing("gcp-storage-emulator is not installed: pip install gcp-storage-emulator")
    root = pathlib.Path(tempfile.mkdtemp(prefix="gcs-emulator-"))
    port = free_port()
    log = root.parent / f"{root.name}.log"
    with log.open("wb") as out:
        # The emulator with GCS's generation preconditions (tests/gcs_preconditions.py).
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.gcs_preconditions",
                "-d",
                str(root),
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=pathlib.Path(__file__).resolve().parent.parent,
        )
    endpoint = f"http://127.0.0.1:{port}"
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        _wait_http(f"{endpoint}/storage/v1/b?project={PROJECT}", proc, "the GCS emulator", log)
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        _anonymous_beam_credentials()
        yield Gcs(endpoint=endpoint, root=root)
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)
        log.unlink(missing_ok=True)


def _anonymous_beam_credentials() -> None:
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


@pytest.fixture(scope="session")
def bigquery_emulator(gcs_emulator: Gcs) -> Iterator[BigQuery]:
    """The BigQuery emulator for the session; gs:// in load jobs reads the GCS emulator's disk.

    Sets ``BIGQUERY_EMULATOR_HOST`` (honoured by google-cloud-bigquery and by
    :mod:`transforms.io.bigquery`) and ``BIGQUERY_EMULATOR_GRPC_HOST`` (the Storage Read API).
    """
    exe = BQ_VENV / "bin" / "bqemulator"
    if not exe.exists():
        missing(f"the BigQuery emulator is not installed: run tools/bqemulator-venv.sh ({exe})")
    rest, grpc = free_port(), free_port()
    data = pathlib.Path(tempfile.mkdtemp(prefix="bq-emulator-"))
    log = data / "emulator.log"
    env = dict(os.environ, BQEMU_GCS_LOCAL_ROOT=str(gcs_emulator.root / ".cloudstorage"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                str(rest),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc),
                "--project",
                PROJECT,
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{rest}"
    names = ("BIGQUERY_EMULATOR_HOST", "BIGQUERY_EMULATOR_GRPC_HOST")
    saved = {n: os.environ.get(n) for n in names}
    try:
        _wait_http(f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets", proc, "bqemulator", log)
        os.environ["BIGQUERY_EMULATOR_HOST"] = endpoint
        os.environ["BIGQUERY_EMULATOR_GRPC_HOST"] = f"127.0.0.1:{grpc}"
        yield BigQuery(endpoint=endpoint, grpc=f"127.0.0.1:{grpc}")
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
        _stop(proc)
        shutil.rmtree(data, ignore_errors=True)


PUBSUB_EMULATOR = pathlib.Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)


@dataclasses.dataclass
class PubSub:
    """A running Pub/Sub emulator with one topic and one subscription on it."""

    host: str
    topic: str
    subscription: str
    project: str = PROJECT

    def publisher(self) -> Any:
        """A google-cloud-pubsub publisher talking to the emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient(credentials=AnonymousCredentials())

    def subscriber(self) -> Any:
        """A google-cloud-pubsub subscriber talking to the emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import pubsub_v1

        return pubsub_v1.SubscriberClient(credentials=AnonymousCredentials())

    def new_topic(self, name: str) -> str:
        """Creates another topic and returns its path."""
        path = f"projects/{self.project}/topics/{name}"
        self.publisher().create_topic(name=path)
        return path

    def new_subscription(self, topic: str, name: str) -> str:
        """Creates a subscription to ``topic`` and returns its path."""
        path = f"projects/{self.project}/subscriptions/{name}"
        self.subscriber().create_subscription(name=path, topic=topic)
        return path


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not listen on {port} within {START_SECONDS} s"
                ) from None
            time.sleep(0.05)


@pytest.fixture
def pubsub_emulator() -> Iterator[PubSub]:
    """A fresh Pub/Sub emulator per test, with topic ``rows`` and subscription ``rows-sub``.

    A fresh emulator (about 1 s to start) keeps tests from seeing each other's messages.
    Sets ``PUBSUB_EMULATOR_HOST``, which google-cloud-pubsub and Beam's Pub/Sub IO honour.
    """
    if not PUBSUB_EMULATOR.exists():
        missing(f"the Pub/Sub emulator is not installed (Google Cloud SDK): {PUBSUB_EMULATOR}")
    if shutil.which("java") is None:
        missing("the Pub/Sub emulator needs Java (17 or later) on PATH")
    port = free_port()
    data = pathlib.Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
    log = data / "emulator.log"
    with log.open("wb") as out:
        # Its own process group: the launcher script starts java as a child.
        proc = subprocess.Popen(
            [str(PUBSUB_EMULATOR), "--host=127.0.0.1", f"--port={port}", f"--dir={data}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host = f"127.0.0.1:{port}"
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        _wait_port(port, proc, "the Pub/Sub emulator", log)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        emulator = PubSub(host=host, topic="", subscription="")
        emulator.topic = emulator.new_topic("rows")
        emulator.subscription = emulator.new_subscription(emulator.topic, "rows-sub")
        yield emulator
    finally:
        if saved is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved
        _stop_group(proc)
        shutil.rmtree(data, ignore_errors=True)


def _stop_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
