"""Flex Template generation: golden files, parameters vs metadata, build context, builds.

Regenerate the goldens after an intended change with
``BEAMFORGE_UPDATE_GOLDEN=1 pytest tests/test_templates.py`` and review the diff. Goldens
are generated with a fixed version table, so upgrading a package does not change them; a
separate test checks that real builds pin the installed versions.
"""

from __future__ import annotations

import gzip
import importlib.metadata as md
import io
import json
import os
import pathlib
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from beam_pipelines import flex_main
from launchers.cli import main
from launchers.dataflow.templates import (
    DOCKERFILE,
    METADATA_FILE,
    REQUIREMENTS_FILE,
    TEMPLATE_FILE,
    TemplateBuildError,
    build_context,
    build_template,
    cloud_build_client,
    cloud_build_request,
    docker_build,
    generate,
    parse_params,
    runtime_requirements,
    submit_cloud_build,
)
from tests.conftest import REPO, TAXI_SAMPLE
from tests.fake_rest import JsonHandler, RecordingServer, serving

GOLDEN = REPO / "tests" / "golden" / "templates" / "chicago_taxi"
TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
IMAGE = "us-central1-docker.pkg.dev/my-proj-123/beamforge/beamforge:1.0"
VERSIONS = {
    "apache-beam": "2.77.0",
    "pyarrow": "25.0.0",
    "numpy": "2.0.0",
    "pyyaml": "6.0.2",
    "fastavro": "1.10.0",
    "pyfarmhash": "0.4.0",
    "datasketches": "5.2.0",
}


def _taxi_files() -> dict[str, str]:
    return generate(
        spec_name="chicago_taxi",
        description="TFX taxi preprocessing.",
        image=IMAGE,
        versions=VERSIONS,
    ).files


@pytest.mark.parametrize("name", [TEMPLATE_FILE, METADATA_FILE, DOCKERFILE, REQUIREMENTS_FILE])
def test_generated_files_match_the_goldens(name: str) -> None:
    text = _taxi_files()[name]
    golden = GOLDEN / name
    if os.environ.get("BEAMFORGE_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_generation_is_deterministic() -> None:
    assert _taxi_files() == _taxi_files()


def test_template_spec_and_metadata_are_valid_dataflow_messages() -> None:
    from google.cloud.dataflow_v1beta3 import types
    from google.protobuf import json_format

    files = _taxi_files()
    # Strict parsing: an unknown or misspelt field fails.
    spec = json_format.Parse(files[TEMPLATE_FILE], types.ContainerSpec.pb(types.ContainerSpec()))
    meta = json_format.Parse(
        files[METADATA_FILE], types.TemplateMetadata.pb(types.TemplateMetadata())
    )

    assert spec.image == IMAGE
    assert spec.sdk_info.language == types.SDKInfo.Language.PYTHON
    assert spec.sdk_info.version == "2.77.0"
    assert spec.default_environment.sdk_container_image == IMAGE
    assert spec.metadata == meta
    assert meta.name == "beamforge-chicago-taxi"


def test_metadata_declares_exactly_what_the_entry_point_parses() -> None:
    meta = json.loads(_taxi_files()[METADATA_FILE])
    declared = {p["name"]: p["isOptional"] for p in meta["parameters"]}
    parsed = {
        action.dest: not action.required
        for action in flex_main.parser()._actions
        if action.option_strings and action.dest != "help"
    }

    assert declared == parsed
    assert set(declared) >= {"spec", "input", "output", "artifact"}
    assert declared["spec"] is False


def test_entry_point_parses_the_parameters_and_passes_the_rest_to_beam() -> None:
    args, rest = flex_main.parser().parse_known_args(
        ["--spec=gs://b-1/s.yaml", "--output=gs://b-1/o", "--runner=DataflowRunner", "--project=p"]
    )

    assert (args.spec, args.output, args.input, args.artifact) == (
        "gs://b-1/s.yaml",
        "gs://b-1/o",
        None,
        None,
    )
    assert rest == ["--runner=DataflowRunner", "--project=p"]


def test_entry_point_builds_the_dataflow_job(tmp_path: pathlib.Path) -> None:
    # What the template launcher does, with Beam's dry run instead of a submission. The
    # output is local: run_job first retires an old manifest there, and gs:// would need GCS.
    result = flex_main.run(
        [
            f"--spec={TAXI_SPEC}",
            f"--input={TAXI_SAMPLE}",
            f"--output={tmp_path / 'out'}",
            "--runner=DataflowRunner",
            "--project=my-proj-123",
            "--region=us-central1",
            "--temp_location=gs://my-bucket/tmp",
            f"--sdk_container_image={IMAGE}",
            "--job_name=taxi-flex",
            "--dry_run=True",
        ]
    )

    assert result.manifest == {}
    assert result.plan.layout.output == str(tmp_path / "out")
    assert result.plan.input_files == [str(TAXI_SAMPLE)]
    assert result.pipeline_result.job.proto.name == "taxi-flex"


def test_regexes_accept_and_refuse() -> None:
    assert parse_params(["spec=gs://b-1/s.yaml", "input=gs://b-1/a.csv,gs://b-1/*.csv"]) == {
        "spec": "gs://b-1/s.yaml",
        "input": "gs://b-1/a.csv,gs://b-1/*.csv",
    }
    with pytest.raises(ValueError, match="parameter input="):
        parse_params(["spec=gs://b-1/s.yaml", "input=gs://b-1/a.csv,/local.csv"])
    with pytest.raises(ValueError, match="is not NAME=VALUE"):
        parse_params(["spec"])


def test_requirements_pin_the_installed_runtime_dependencies() -> None:
    lines = runtime_requirements()

    assert lines[0] == f"apache-beam[gcp]=={md.version('apache-beam')}"
    assert lines[1] == f"pyarrow=={md.version('pyarrow')}"
    assert [line.split("==")[0] for line in lines] == [
        "apache-beam[gcp]",
        "pyarrow",
        "numpy",
        "pyyaml",
        "fastavro",
        "pyfarmhash",
        "datasketches",
    ]


def test_build_context_is_reproducible_and_complete() -> None:
    files = generate(spec_name="t", description="", image=IMAGE, versions=VERSIONS)

    first = build_context(files)

    assert first == build_context(files)
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        dockerfile = tar.extractfile(DOCKERFILE).read().decode()  # type: ignore[union-attr]
    names = [m.name for m in members]
    assert names[:3] == [DOCKERFILE, REQUIREMENTS_FILE, "setup.py"]
    assert "beam_pipelines/flex_main.py" in names
    assert "launchers/dataflow/templates.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert {m.mtime for m in members} == {0}
    assert dockerfile == files.files[DOCKERFILE]
    assert gzip.decompress(first)  # a valid gzip stream


def test_cli_template_build_writes_the_directory(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "template"

    code = main(["template", "build", str(TAXI_SPEC), "--out", str(out), "--image", IMAGE])

    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [DOCKERFILE, METADATA_FILE, REQUIREMENTS_FILE, TEMPLATE_FILE]
    )
    spec = json.loads((out / TEMPLATE_FILE).read_text())
    assert spec["image"] == IMAGE
    assert spec["sdkInfo"] == {"language": "PYTHON", "version": md.version("apache-beam")}
    assert (
        f"FROM apache/beam_python3.11_sdk:{md.version('apache-beam')}"
        in (out / DOCKERFILE).read_text()
    )
    assert capsys.readouterr().out.startswith(f"template {out} for image {IMAGE}\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gcs_path": "gs://b-1/t.yaml"}, "--gcs-path must be gs://BUCKET/PATH.json"),
        ({"gcs_path": "/local/t.json"}, "--gcs-path must be gs://"),
        ({"gcs_path": "gs://b-1/t.json", "image": "beamforge:latest"}, "is not in a registry"),
        ({"build": "cloudbuild"}, "--build cloudbuild needs --project and --gcs-path"),
    ],
)
def test_inconsistent_build_arguments_fail_before_writing(
    tmp_path: pathlib.Path, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"image": IMAGE, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_template(spec_name="t", description="", spec_text=b"", out_dir=tmp_path / "t", **args)

    assert not (tmp_path / "t").exists()


def test_a_missing_docker_fails_clearly() -> None:
    with pytest.raises(TemplateBuildError, match="'no-such-docker' is not installed"):
        docker_build(b"", IMAGE, docker="no-such-docker")


def test_docker_without_a_daemon_fails_clearly() -> None:
    import shutil
    import subprocess

    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed here")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0:
        pytest.skip("a docker daemon is running here; the build would really run")
    files = generate(spec_name="t", description="", image=IMAGE, versions=VERSIONS)

    with pytest.raises(TemplateBuildError, match=r"is the docker daemon running\?"):
        docker_build(build_context(files), IMAGE, docker=docker)


class _FakeCloudBuild(RecordingServer):
    def __init__(self) -> None:
        super().__init__(_CloudBuildHandler)


class _CloudBuildHandler(JsonHandler):
    server: _FakeCloudBuild

    def do_POST(self) -> None:
        self.record()
        self.reply(
            {
                "name": "projects/my-proj-123/operations/op-1",
                "metadata": {
                    "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
                    "build": {"id": "build-7", "status": "QUEUED"},
                },
            }
        )


@pytest.fixture
def fake_cloud_build() -> Iterator[_FakeCloudBuild]:
    yield from serving(_FakeCloudBuild())


def test_cloud_build_request_at_the_client_boundary(fake_cloud_build: _FakeCloudBuild) -> None:
    client = cloud_build_client(
        api_endpoint=f"http://127.0.0.1:{fake_cloud_build.server_address[1]}"
    )

    build_id = submit_cloud_build(
        client,
        project="my-proj-123",
        build=cloud_build_request(image=IMAGE, source="gs://b-1/templates/taxi.context.tar.gz"),
    )

    assert build_id == "build-7"
    assert fake_cloud_build.requests == [
        (
            "POST",
            "/v1/projects/my-proj-123/builds",
            {
                "source": {
                    "storageSource": {"bucket": "b-1", "object": "templates/taxi.context.tar.gz"}
                },
                "steps": [
                    {
                        "name": "gcr.io/cloud-builders/docker",
                        "args": ["build", "--tag", IMAGE, "."],
                    }
                ],
                "images": [IMAGE],
                "tags": ["beamforge"],
                "timeout": "1800s",
            },
        )
    ]


def test_cloud_build_source_must_be_on_gcs() -> None:
    with pytest.raises(ValueError, match="the Cloud Build source must be gs://"):
        cloud_build_request(image=IMAGE, source="/tmp/context.tar.gz")
