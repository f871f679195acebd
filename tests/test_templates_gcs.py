"""Publishing a Flex Template to gs:// through Beam FileSystems, against the GCS emulator.

The emulator (``gcp-storage-emulator`` from PyPI) runs in a subprocess on a free port on
127.0.0.1; the tests skip where it is not installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from launchers.dataflow.templates import TEMPLATE_FILE, build_template

IMAGE = "us-central1-docker.pkg.dev/my-proj-123/beamforge/beamforge:1.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    exe = pathlib.Path(sys.executable).parent / "gcp-storage-emulator"
    if not exe.exists() and shutil.which("gcp-storage-emulator") is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    port = _free_port()
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the GCS emulator did not start") from None
                time.sleep(0.02)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="test-project", credentials=AnonymousCredentials())
        client.create_bucket("templates-bucket")
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# Slow: Beam's gs:// filesystem looks for default credentials (about 20 s) before it falls
# back to anonymous access.
@pytest.mark.slow
def test_build_uploads_the_template_spec_and_the_job_spec(gcs: Any, tmp_path: pathlib.Path) -> None:
    built = build_template(
        spec_name="chicago_taxi",
        description="",
        spec_text=b"name: chicago_taxi\n",
        out_dir=tmp_path / "t",
        image=IMAGE,
        gcs_path="gs://templates-bucket/taxi/t.json",
    )

    assert (built.gcs_path, built.spec_uri) == (
        "gs://templates-bucket/taxi/t.json",
        "gs://templates-bucket/taxi/t.spec.yaml",
    )
    bucket = gcs.bucket("templates-bucket")
    assert sorted(b.name for b in gcs.list_blobs("templates-bucket")) == [
        "taxi/t.json",
        "taxi/t.spec.yaml",
    ]
    uploaded = bucket.blob("taxi/t.json").download_as_bytes().decode()
    assert uploaded == (tmp_path / "t" / TEMPLATE_FILE).read_text()
    assert json.loads(uploaded)["image"] == IMAGE
    assert bucket.blob("taxi/t.spec.yaml").download_as_bytes() == b"name: chicago_taxi\n"
    assert os.environ["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_the_job_specs_data_schema_is_published_beside_it(
    gcs: Any, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The taxi spec names schema.yaml beside itself: the published spec names the copy.
    import yaml

    from launchers.cli import main

    repo = pathlib.Path(__file__).resolve().parent.parent
    spec = repo / "examples" / "chicago_taxi" / "pipeline.yaml"
    code = main(
        [
            "template", "build", str(spec), "--image", IMAGE, "--out", str(tmp_path / "t"),
            "--gcs-path", "gs://templates-bucket/taxi/t.json",
        ]
    )  # fmt: skip
    assert code == 0
    assert "  data schema gs://templates-bucket/taxi/t.schema.yaml" in capsys.readouterr().out
    bucket = gcs.bucket("templates-bucket")
    assert sorted(b.name for b in gcs.list_blobs("templates-bucket")) == [
        "taxi/t.json",
        "taxi/t.schema.yaml",
        "taxi/t.spec.yaml",
    ]
    schema = bucket.blob("taxi/t.schema.yaml").download_as_bytes()
    assert schema == (repo / "examples" / "chicago_taxi" / "schema.yaml").read_bytes()
    published = yaml.safe_load(bucket.blob("taxi/t.spec.yaml").download_as_bytes())
    original = yaml.safe_load(spec.read_text())
    assert published["validation"] == {
        **original["validation"],
        "schema": "gs://templates-bucket/taxi/t.schema.yaml",
    }
    assert {k: v for k, v in published.items() if k != "validation"} == {
        k: v for k, v in original.items() if k != "validation"
    }
