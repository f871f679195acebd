"""The Cloud Function that starts a chain on new data, run here against the GCS emulator.

``build_trigger`` writes the function's folder; the tests serve it with functions-framework,
in-process (its test client) and as a real ``functions-framework`` process on 127.0.0.1, and
post real CloudEvents (binary and structured mode) for objects put in an emulator bucket. On
the local target the function runs ``beamforge chain`` (dataset on a 200-row taxi slice read
from gs://, a tiny trainer); on the gcp target it submits the compiled pipeline to the fake
Vertex AI server through the real SDK.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from launchers.chain import load_chain, parse_chain
from launchers.chain.spec import ChainSpec
from launchers.trigger import build_trigger
from launchers.trigger.build import REQUIREMENTS, requirements
from launchers.trigger.commands import env_flag
from launchers.trigger.globs import can_end_with, can_start_with, shortest_match
from launchers.trigger.runtime import FINALIZED, delivery_key, object_matches, run_id
from tests import vertex_fake
from tests.conftest import REPO, TAXI_SAMPLE
from tests.emulators import Gcs, free_port
from tests.vertex_fake import PARENT, PROJECT, REGION, FakeVertex
from transforms.core.config import SpecError

pytestmark = pytest.mark.emulator

PIPELINE = str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")
TAXI_CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"
FUNCTIONS_FRAMEWORK = pathlib.Path(sys.executable).parent / "functions-framework"
SERVICE_ACCOUNT = "pipelines@test-project.iam.gserviceaccount.com"

# A stand-in trainer: counts its runs and writes what a trainer writes.
TRAINER = textwrap.dedent(
    """
    import json, os, sys
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(os.environ["AIP_TRAINING_DATA_URI"] + "\\n")
    if os.environ.get("FAIL"):
        sys.exit("the trainer failed")
    os.makedirs(os.environ["AIP_MODEL_DIR"], exist_ok=True)
    with open(os.path.join(os.environ["AIP_MODEL_DIR"], "metrics.json"), "w") as f:
        json.dump({"auc": 0.8}, f)
    """
)

# Beam looks for Google credentials with retries (about 20 s) before it reads gs://
# anonymously, which the emulator takes; the chain's processes start anonymous at once, as
# the gcs_emulator fixture makes this one.
ANONYMOUS_BEAM = textwrap.dedent(
    """
    from apache_beam.internal.gcp import auth

    auth._Credentials._credentials = None
    auth._Credentials._credentials_init = True
    """
)


# --- the section and its rules -------------------------------------------------------------


def _chain_data(**trigger: Any) -> dict[str, Any]:
    return {
        "name": "taxi",
        "workdir": "out",
        "parameters": {"input": {"default": "trips.csv", "description": "raw trips"}},
        "steps": [
            {
                "name": "dataset",
                "kind": "dataset",
                "spec": PIPELINE,
                "inputs": ["${input}"],
                "output": "out/ds",
            },
            {"name": "train", "kind": "train", "dataset": "dataset", "script": "train.py"},
        ],
        "trigger": {"bucket": "trips-in", "glob": "incoming/*.csv", **trigger},
    }


@pytest.mark.parametrize(
    ("trigger", "target", "message"),
    [
        (
            {"suffix": ".csv", "glob": "incoming/*.json"},
            "local",
            "x.yaml: trigger.suffix: no object name ends with '.csv' and matches glob "
            "'incoming/*.json': the trigger would never fire",
        ),
        (
            {"prefix": "raw/"},
            "local",
            "x.yaml: trigger.prefix: no object name starts with 'raw/' and matches glob "
            "'incoming/*.csv': the trigger would never fire",
        ),
        (
            # ``*`` stays within one part of the name.
            {"prefix": "incoming/2026/"},
            "local",
            "x.yaml: trigger.prefix: no object name starts with 'incoming/2026/' and matches "
            "glob 'incoming/*.csv': the trigger would never fire",
        ),
        (
            {"parameter": "inputs"},
            "local",
            "x.yaml: trigger.parameter: 'inputs' is not a parameter of this chain; "
            "parameters: input",
        ),
        (
            {"bucket": "Trips_In"},
            "local",
            "x.yaml: trigger.bucket: 'Trips_In' is not a valid bucket name (3-63 lowercase "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit)",
        ),
        (
            {"bucket": "gs://trips-in"},
            "local",
            "x.yaml: trigger.bucket: got 'gs://trips-in'; give the bucket's name alone, "
            "without gs://",
        ),
        (
            {},
            "gcp",
            "x.yaml: gcp: the gcp target's function submits the chain to Vertex AI Pipelines: "
            "it needs the chain's gcp section (project, region, staging_bucket)",
        ),
        (
            {"sufix": ".csv"},
            "local",
            "x.yaml: trigger.sufix: unknown key 'sufix'; valid keys are bucket, prefix, "
            "suffix, glob, parameter, records, function",
        ),
        (
            {"function": {"name": "Taxi_Trigger"}},
            "local",
            "x.yaml: trigger.function.name: 'Taxi_Trigger' is not a function name (lower-case "
            "letters, digits and dashes, starting with a letter, 63 at most)",
        ),
        (
            {"function": {"timeout": 600}},
            "local",
            "x.yaml: trigger.function.timeout: got 600; expected an integer from 1 to 540 "
            "(the limit of event-driven functions)",
        ),
        (
            {"function": {"memory": "lots"}},
            "local",
            "x.yaml: trigger.function.memory: got 'lots'; expected a size like 512Mi or 1Gi",
        ),
        (
            {"function": {"env": {"X_GOOGLE_FOO": "1"}}},
            "local",
            "x.yaml: trigger.function.env.X_GOOGLE_FOO: an environment variable name is "
            "letters, digits and _ (not starting with a digit), and not one Cloud Functions "
            "keeps for itself",
        ),
        (
            {"records": "gs://Bad/records"},
            "local",
            "x.yaml: trigger.records: malformed gs:// path 'gs://Bad/records': 'Bad' is not a "
            "valid bucket name (3-63 lowercase letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit)",
        ),
        (
            {"glob": "**.json", "records": "gs://trips-in/trigger"},
            "local",
            "x.yaml: trigger.records: gs://trips-in/trigger is in the watched bucket and names "
            "under it can pass the filters: each record would start the chain again; keep them "
            "elsewhere or narrow the filters",
        ),
        (
            # Generations start with any digit: every name under the records folder counts.
            {"glob": "rec/17*", "records": "gs://trips-in/rec"},
            "local",
            "x.yaml: trigger.records: gs://trips-in/rec is in the watched bucket and names "
            "under it can pass the filters: each record would start the chain again; keep them "
            "elsewhere or narrow the filters",
        ),
        (
            {"glob": "", "prefix": "rec/2", "records": "gs://trips-in/"},
            "local",
            "x.yaml: trigger.records: gs://trips-in/ is in the watched bucket and names under "
            "it can pass the filters: each record would start the chain again; keep them "
            "elsewhere or narrow the filters",
        ),
        (
            # Each filter alone can hold; not all three at once (two characters).
            {"glob": "??", "prefix": "ab", "suffix": "cd"},
            "local",
            "x.yaml: trigger.glob: no object name of at most 1024 bytes starts with 'ab', ends "
            "with 'cd' and matches glob '??': the trigger would never fire",
        ),
        (
            {"glob": "a/*/b", "prefix": "a/x/", "suffix": "/y/b"},
            "local",
            "x.yaml: trigger.glob: no object name of at most 1024 bytes starts with 'a/x/', "
            "ends with '/y/b' and matches glob 'a/*/b': the trigger would never fire",
        ),
        (
            {"glob": "", "prefix": "é" * 513},
            "local",
            "x.yaml: trigger.prefix: is 1026 bytes of UTF-8; GCS object names are 1024 bytes "
            "at most: the trigger would never fire",
        ),
        (
            {"glob": "", "prefix": "p" * 600, "suffix": "s" * 500},
            "local",
            "x.yaml: trigger.suffix: no object name of at most 1024 bytes starts with "
            f"{'p' * 600!r} and ends with {'s' * 500!r}: the trigger would never fire",
        ),
        (
            {"glob": "incoming/*.csv\n"},
            "local",
            "x.yaml: trigger.glob: got 'incoming/*.csv\\n'; object names hold no carriage "
            "return or line feed: the trigger would never fire",
        ),
        ({}, "cloud", "x.yaml: <root>: unknown target 'cloud'; expected one of local, gcp"),
        (
            {"function": {"region": "us-central1; touch x"}},
            "local",
            "x.yaml: trigger.function.region: got 'us-central1; touch x'; expected a region "
            "like us-central1",
        ),
        (
            {"function": {"service_account": "a b$(id)"}},
            "local",
            "x.yaml: trigger.function.service_account: got 'a b$(id)'; expected a service "
            "account's e-mail address like trigger@my-project.iam.gserviceaccount.com",
        ),
        (
            {"function": {"memory": "512Gi"}},
            "local",
            "x.yaml: trigger.function.memory: got '512Gi'; a gen2 function has from 128Mi to 32Gi",
        ),
        (
            {"function": {"memory": "1M"}},
            "local",
            "x.yaml: trigger.function.memory: got '1M'; a gen2 function has from 128Mi to 32Gi",
        ),
        (
            {"function": {"memory": "9" * 30 + "Mi"}},
            "local",
            f"x.yaml: trigger.function.memory: got '{'9' * 30}Mi'; a gen2 function has from "
            "128Mi to 32Gi",
        ),
        (
            {"bucket": "192.168.5.4"},
            "local",
            "x.yaml: trigger.bucket: '192.168.5.4' looks like an IP address, which GCS refuses "
            "as a name",
        ),
        *(
            (
                {"function": {"env": {name: "1"}}},
                "local",
                f"x.yaml: trigger.function.env.{name}: an environment variable name is "
                "letters, digits and _ (not starting with a digit), and not one Cloud "
                "Functions keeps for itself",
            )
            for name in ("PORT", "K_CONFIGURATION", "FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE")
        ),
    ],
)
def test_bad_trigger_fails_before_anything_is_written(
    trigger: dict[str, Any], target: str, message: str, tmp_path: pathlib.Path
) -> None:
    spec = parse_chain(_chain_data(**trigger), origin="x.yaml")
    output = tmp_path / "function"
    with pytest.raises(SpecError) as info:
        build_trigger(spec, output=str(output), target=target)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert not output.exists()


@pytest.mark.parametrize(
    ("trigger", "records"),
    [
        # The records folder's names cannot pass the filters: accepted.
        ({"glob": "rec/17*", "records": "gs://trips-in/records"}, "gs://trips-in/records"),
        ({"glob": "", "prefix": "in/", "records": "gs://trips-in/rec"}, "gs://trips-in/rec"),
        ({"glob": "????", "prefix": "ab", "suffix": "cd"}, "out/trigger"),
        ({"glob": "", "prefix": "p" * 600, "suffix": "p" * 500}, "out/trigger"),
        # Names that merely start like a reserved one, and the sizes at the limits.
        ({"function": {"env": {"PORTAL_URL": "x", "K_SERVICES": "y"}}}, "out/trigger"),
        ({"function": {"memory": "128Mi"}}, "out/trigger"),
        ({"function": {"memory": "32Gi"}}, "out/trigger"),
        ({"function": {"memory": "256MB", "region": "europe-west4"}}, "out/trigger"),
    ],
)
def test_filters_that_can_hold_are_accepted(trigger: dict[str, Any], records: str) -> None:
    from launchers.trigger import parse_trigger

    spec = parse_chain(_chain_data(**trigger), origin="x.yaml")
    assert parse_trigger(spec, "local").records == records


def test_gcp_target_keeps_records_on_gcs_and_a_chain_without_trigger_fails(
    tmp_path: pathlib.Path,
) -> None:
    data = _chain_data(records="out/records")
    data["gcp"] = {"project": PROJECT, "region": REGION, "staging_bucket": "gs://stage-b"}
    with pytest.raises(SpecError) as info:
        build_trigger(parse_chain(data, origin="x.yaml"), output=str(tmp_path), target="gcp")
    assert str(info.value) == (
        "x.yaml: trigger.records: got 'out/records'; a Cloud Function keeps its delivery "
        "records in a gs:// folder (its own disk is gone with the instance)"
    )
    del data["trigger"]
    with pytest.raises(SpecError) as info:
        build_trigger(parse_chain(data, origin="x.yaml"), output=str(tmp_path), target="local")
    assert str(info.value) == (
        "x.yaml: trigger: the chain has no trigger section; add one with at least bucket"
    )
    # The gcp target compiles the chain for Vertex first: what it cannot express fails
    # before any file is written too.
    data = _chain_data(records="gs://stage-b/records")
    data["gcp"] = {"project": PROJECT, "region": REGION, "staging_bucket": "gs://stage-b"}
    output = tmp_path / "function"
    with pytest.raises(SpecError) as info:
        build_trigger(parse_chain(data, origin="x.yaml"), output=str(output), target="gcp")
    assert str(info.value) == "x.yaml: steps[0].gcp: the gcp target needs dataset's gcp section"
    assert not output.exists()


@pytest.mark.parametrize(
    ("glob", "prefix", "suffix", "possible"),
    [
        ("incoming/*.csv", "incoming/", ".csv", True),
        ("incoming/*.csv", "incoming/trips", "trips.csv", True),
        ("incoming/*.csv", "in", "", True),
        ("incoming/*.csv", "incoming/a/", "", False),
        ("incoming/**.csv", "incoming/a/b/", "", True),
        ("incoming/*.csv", "", ".json", False),
        ("incoming/*.csv", "", "/x.csv", True),
        ("incoming/?.csv", "incoming/ab", "", False),
        ("a/*/b/*.csv", "a/x/b/", "y.csv", True),
        ("data.csv", "data", ".csv", True),
        ("data.csv", "", "ta.csv2", False),
    ],
)
def test_glob_and_prefix_or_suffix(glob: str, prefix: str, suffix: str, possible: bool) -> None:
    assert (can_start_with(glob, prefix) and can_end_with(glob, suffix)) is possible


_NAMES = st.text(alphabet="ab/.", max_size=8)
_GLOBS = st.lists(
    st.sampled_from(["a", "b", "/", ".", "*", "**", "?"]), min_size=1, max_size=6
).map("".join)


@settings(max_examples=300, deadline=None)
@given(glob=_GLOBS, name=_NAMES, cut=st.integers(min_value=0, max_value=8))
def test_glob_checks_never_refuse_a_name_the_function_would_take(
    glob: str, name: str, cut: int
) -> None:
    # Every name the function takes: each of its prefixes and suffixes passes the checks.
    if object_matches(name, glob=glob):
        assert can_start_with(glob, name[:cut])
        assert can_end_with(glob, name[cut:])


_AFFIXES = st.text(alphabet="ab/.", max_size=3)


def _brute_shortest(glob: str, prefix: str, suffix: str, longest: int) -> int | None:
    # Every name of at most ``longest`` characters over the filters' characters and one more.
    names = [""]
    for size in range(longest + 1):
        for name in names:
            if object_matches(name, prefix=prefix, suffix=suffix, glob=glob):
                return size
        names = [name + char for name in names for char in "ab/.c"]
    return None


@settings(max_examples=150, deadline=None)
@given(glob=_GLOBS, prefix=_AFFIXES, suffix=_AFFIXES)
def test_shortest_match_finds_the_shortest_name_of_all_filters(
    glob: str, prefix: str, suffix: str
) -> None:
    found = shortest_match(glob, prefix, suffix)
    brute = _brute_shortest(glob, prefix, suffix, 5)
    if brute is not None or (found is not None and found <= 5):
        assert found == brute
    assert shortest_match(glob, prefix, suffix, limit=4) == (
        found if found is not None and found <= 4 else None
    )


@pytest.mark.parametrize(
    ("name", "filters", "matches"),
    [
        ("incoming/trips.csv", {"glob": "incoming/*.csv"}, True),
        ("incoming/2026/trips.csv", {"glob": "incoming/*.csv"}, False),
        ("incoming/2026/trips.csv", {"glob": "incoming/**.csv"}, True),
        ("incoming/trips.csv.tmp", {"glob": "incoming/*.csv"}, False),
        ("incoming/trips.csv", {"prefix": "incoming/", "suffix": ".csv"}, True),
        ("outgoing/trips.csv", {"prefix": "incoming/", "suffix": ".csv"}, False),
        ("incoming/t[1].csv", {"glob": "incoming/t[1].csv"}, True),
        ("anything", {}, True),
    ],
)
def test_object_matches(name: str, filters: dict[str, str], matches: bool) -> None:
    assert object_matches(name, **filters) is matches


def test_env_flag_escapes_commas_the_gcloud_way() -> None:
    assert env_flag({}) is None
    assert env_flag({"A": "1", "B": "x y"}) == "--set-env-vars=A=1,B=x y"
    assert env_flag({"A": "1,2", "B": "3"}) == "--set-env-vars=^|^A=1,2|B=3"


def test_requirements_are_pinned_to_the_tested_versions() -> None:
    assert {n: importlib.metadata.version(n) for n in REQUIREMENTS} == REQUIREMENTS
    assert requirements("local") == "functions-framework==3.10.1\ngoogle-cloud-storage==3.17.1\n"


# --- events ----------------------------------------------------------------------------------


def _event(bucket: str, blob: Any, event_type: str = FINALIZED) -> CloudEvent:
    # The shape GCS sends through Eventarc (the object's metadata is the data).
    return CloudEvent(
        {
            "type": event_type,
            "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
            "subject": f"objects/{blob.name}",
            "datacontenttype": "application/json",
        },
        {
            "kind": "storage#object",
            "bucket": bucket,
            "name": blob.name,
            "generation": str(blob.generation),
            "contentType": "text/csv",
            "size": str(blob.size),
        },
    )


def _encode(event: CloudEvent, mode: str) -> tuple[dict[str, str], bytes]:
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    return dict(headers), bytes(body)


def _upload(gcs: Gcs, bucket: str, name: str, text: str) -> Any:
    blob = gcs.client().bucket(bucket).blob(name)
    blob.upload_from_string(text, content_type="text/csv")
    blob.reload()
    return blob


def _slice() -> str:
    lines = TAXI_SAMPLE.read_text().splitlines(keepends=True)
    return "".join(lines[:201])


def _bucket(request: pytest.FixtureRequest, kind: str) -> str:
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def _log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"severity"')]


# --- the local target ------------------------------------------------------------------------


@pytest.fixture()
def local_chain(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    gcs_emulator: Gcs,
    request: pytest.FixtureRequest,
) -> tuple[ChainSpec, str]:
    """A dataset + tiny-trainer chain in a folder of its own, and its trigger's bucket."""
    bucket = gcs_emulator.new_bucket(_bucket(request, "trips"))
    (tmp_path / "train.py").write_text(TRAINER)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(ANONYMOUS_BEAM)
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("RUNS_FILE", str(tmp_path / "runs.txt"))
    monkeypatch.chdir(tmp_path)
    data = _chain_data(bucket=bucket)
    (tmp_path / "chain.yaml").write_text(yaml.safe_dump(data))
    return load_chain("chain.yaml"), bucket


def _runs(folder: pathlib.Path) -> list[str]:
    path = folder / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def _records(folder: pathlib.Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _check_one_run(folder: pathlib.Path, path: str) -> None:
    state = json.loads((folder / "out" / "state-local.json").read_text())
    assert {name: step["status"] for name, step in state["steps"].items()} == {
        "dataset": "completed",
        "train": "completed",
    }
    manifest = json.loads((folder / "out" / "ds" / "manifest.json").read_text())
    assert manifest["counts"]["read"] == 200
    assert manifest["source"]["files"] == [path]
    run = manifest["run"]["root"]
    assert _runs(folder) == [f"{run}/train/part-*.parquet"]


@pytest.mark.timeout(300)
def test_local_function_in_process_runs_the_chain_once_per_object(
    local_chain: tuple[ChainSpec, str],
    gcs_emulator: Gcs,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import functions_framework

    spec, bucket = local_chain
    written = build_trigger(spec, output="function", target="local")
    assert [pathlib.Path(p).name for p in written] == [
        "main.py",
        "trigger_runtime.py",
        "trigger.json",
        "requirements.txt",
        "serve.sh",
    ]
    settings = json.loads((tmp_path / "function" / "trigger.json").read_text())
    assert settings == {
        "chain": "taxi",
        "target": "local",
        "bucket": bucket,
        "prefix": "",
        "suffix": "",
        "glob": "incoming/*.csv",
        "parameter": "input",
        "values": {"input": "trips.csv"},
        "records": "out/trigger",
        "timeout": 540,
        "local": {
            "python": sys.executable,
            "directory": str(tmp_path),
            "chain_file": str(tmp_path / "chain.yaml"),
            "timeout": 540,
        },
    }
    client = functions_framework.create_app(
        target="on_object_finalized",
        source=str(tmp_path / "function" / "main.py"),
        signature_type="cloudevent",
    ).test_client()
    trips = _upload(gcs_emulator, bucket, "incoming/trips.csv", _slice())
    path = f"gs://{bucket}/incoming/trips.csv"
    capsys.readouterr()

    headers, body = _encode(_event(bucket, trips), "binary")
    answer = client.post("/", headers=headers, data=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    _check_one_run(tmp_path, path)
    key = delivery_key(bucket, "incoming/trips.csv", str(trips.generation))
    records = _records(tmp_path / "out" / "trigger")
    assert list(records) == [key]
    assert records[key]["started"] == "beamforge chain succeeded (exit 0)"
    assert (records[key]["bucket"], records[key]["generation"]) == (bucket, str(trips.generation))

    # The same delivery again, now in structured mode (a new event id, as a redelivery
    # through another path would have): nothing starts.
    headers, body = _encode(_event(bucket, trips), "structured")
    assert client.post("/", headers=headers, data=body).status_code == 200
    # Objects the filters leave out, another bucket, another event type: nothing either.
    notes = _upload(gcs_emulator, bucket, "incoming/notes.txt", "not trips\n")
    nested = _upload(gcs_emulator, bucket, "incoming/2026/trips.csv", _slice())
    for event in (
        _event(bucket, notes),
        _event(bucket, nested),
        _event("other-bucket", trips),
        _event(bucket, trips, "google.cloud.storage.object.v1.deleted"),
    ):
        headers, body = _encode(event, "binary")
        assert client.post("/", headers=headers, data=body).status_code == 200
    _check_one_run(tmp_path, path)
    assert list(_records(tmp_path / "out" / "trigger")) == [key]
    messages = [line["message"] for line in _log_lines(capsys.readouterr().out)]
    assert messages == [
        f"started the chain for {path}: beamforge chain succeeded (exit 0)",
        f"repeated {path}: generation {trips.generation} was delivered before",
        f"ignored gs://{bucket}/incoming/notes.txt: the name does not match glob 'incoming/*.csv'",
        f"ignored gs://{bucket}/incoming/2026/trips.csv: the name does not match glob "
        "'incoming/*.csv'",
        f"ignored gs://other-bucket/incoming/trips.csv: bucket 'other-bucket' is not '{bucket}'",
        f"ignored {path}: event type 'google.cloud.storage.object.v1.deleted' is not {FINALIZED}",
    ]


@pytest.mark.timeout(300)
def test_a_chain_that_cannot_start_is_not_recorded_and_a_failed_one_is(
    local_chain: tuple[ChainSpec, str],
    gcs_emulator: Gcs,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import functions_framework

    spec, bucket = local_chain
    build_trigger(spec, output="function", target="local")
    client = functions_framework.create_app(
        target="on_object_finalized",
        source=str(tmp_path / "function" / "main.py"),
        signature_type="cloudevent",
    ).test_client()
    trips = _upload(gcs_emulator, bucket, "incoming/trips.csv", _slice())
    path = f"gs://{bucket}/incoming/trips.csv"
    headers, body = _encode(_event(bucket, trips), "binary")
    capsys.readouterr()

    # No Python where the function looks for it: nothing started, nothing recorded, and the
    # answer is an error, so that a retried delivery tries again.
    monkeypatch.setenv("BEAMFORGE_PYTHON", str(tmp_path / "no-python"))
    assert client.post("/", headers=headers, data=body).status_code == 500
    assert _records(tmp_path / "out" / "trigger") == {}
    assert _runs(tmp_path) == []

    # The chain starts and fails: recorded as failed (beamforge chain resumes it from its
    # state); a repeat of the delivery starts nothing.
    monkeypatch.delenv("BEAMFORGE_PYTHON")
    monkeypatch.setenv("FAIL", "1")
    assert client.post("/", headers=headers, data=body).status_code == 500
    assert len(_runs(tmp_path)) == 1
    key = delivery_key(bucket, "incoming/trips.csv", str(trips.generation))
    (record,) = _records(tmp_path / "out" / "trigger").values()
    assert record["failed"].startswith("beamforge chain exited with code 1:\n")
    assert "step train: trainer exited with code 1" in record["failed"]
    assert client.post("/", headers=headers, data=body).status_code == 200
    assert len(_runs(tmp_path)) == 1
    lines = _log_lines(capsys.readouterr().out)
    assert [(line["severity"], line["message"].split(":")[0]) for line in lines] == [
        ("ERROR", "could not start the chain for gs"),
        ("ERROR", "chain for gs"),
        ("INFO", "repeated gs"),
    ]
    assert lines[0]["message"] == (
        f"could not start the chain for {path}: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'no-python'}'"
    )
    assert lines[2]["record"] == key


def _raw_event(event_id: str, content_type: str, body: bytes) -> tuple[dict[str, str], bytes]:
    # A binary-mode CloudEvent with any body, as a misbehaving sender may post.
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": FINALIZED,
        "ce-source": "//storage.googleapis.com/projects/_/buckets/x",
        "Content-Type": content_type,
    }
    return headers, body


def test_events_without_a_usable_object_are_ignored_and_write_nothing(
    local_chain: tuple[ChainSpec, str],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import functions_framework

    spec, bucket = local_chain
    build_trigger(spec, output="function", target="local")
    client = functions_framework.create_app(
        target="on_object_finalized",
        source=str(tmp_path / "function" / "main.py"),
        signature_type="cloudevent",
    ).test_client()
    name = "incoming/trips.csv"
    path = f"gs://{bucket}/{name}"
    objects: list[dict[str, Any]] = [
        {"bucket": bucket, "name": name, "generation": "../../TRAVERSAL"},
        {"bucket": bucket, "name": name, "generation": {"a": 1}},
        {"bucket": bucket, "name": name, "generation": "1" * 400},
        {"bucket": bucket, "name": name},
        {"bucket": bucket, "name": name, "generation": 17},
        {"bucket": bucket, "name": name, "generation": "١٢"},  # digits, not ASCII ones
        {"bucket": bucket, "name": ["incoming", "trips.csv"], "generation": "1"},
        {"bucket": "", "name": name, "generation": "1"},
    ]
    capsys.readouterr()
    for i, data in enumerate(objects):
        headers, body = _raw_event(f"e{i}", "application/json", json.dumps(data).encode())
        answer = client.post("/", headers=headers, data=body)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    for event_id, content_type, body in [
        ("list", "application/json", b'[{"bucket": "x"}]'),
        ("string", "application/json", b'"incoming/trips.csv"'),
        ("number", "application/json", b"17"),
        ("text", "text/plain", b"incoming/trips.csv"),
        ("empty", "application/json", b""),
    ]:
        answer = client.post("/", headers=_raw_event(event_id, content_type, body)[0], data=body)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    messages = [line["message"] for line in _log_lines(capsys.readouterr().out)]
    why = "is not an object generation (decimal digits)"
    assert messages == [
        f"ignored {path}: generation '../../TRAVERSAL' {why}",
        f"ignored {path}: generation {{'a': 1}} {why}",
        f"ignored {path}: generation '{'1' * 36}... {why}",
        f"ignored {path}: generation None {why}",
        f"ignored {path}: generation 17 {why}",
        f"ignored {path}: generation '١٢' {why}",
        "ignored event e6: the event names no bucket and object",
        "ignored event e7: the event names no bucket and object",
        "ignored event list: its data is not a JSON object (got list)",
        "ignored event string: its data is not a JSON object (got str)",
        "ignored event number: its data is not a JSON object (got int)",
        "ignored event text: its data is not a JSON object (got bytes)",
        "ignored event empty: its data is not a JSON object (got NoneType)",
    ]
    # No record anywhere (the records folder is not even made), no run.
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.parent.rglob("*TRAVERSAL*")) == []
    assert _runs(tmp_path) == []


def _claim_record(bucket: str, name: str, generation: str, age: float) -> str:
    claimed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    record = {
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "event_id": "lost",
        "claimed": claimed.isoformat(timespec="seconds"),
        "target": "local",
    }
    return json.dumps(record)


@pytest.mark.timeout(300)
def test_a_stale_claim_without_outcome_is_taken_over_and_a_fresh_one_is_a_repeat(
    local_chain: tuple[ChainSpec, str],
    gcs_emulator: Gcs,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import functions_framework

    spec, bucket = local_chain
    build_trigger(spec, output="function", target="local")
    client = functions_framework.create_app(
        target="on_object_finalized",
        source=str(tmp_path / "function" / "main.py"),
        signature_type="cloudevent",
    ).test_client()
    trips = _upload(gcs_emulator, bucket, "incoming/trips.csv", _slice())
    path = f"gs://{bucket}/incoming/trips.csv"
    generation = str(trips.generation)
    key = delivery_key(bucket, trips.name, generation)
    records = tmp_path / "out" / "trigger"
    records.mkdir(parents=True)
    headers, body = _encode(_event(bucket, trips), "binary")
    capsys.readouterr()

    # Claimed 10 minutes ago (the timeout, 540 s, and the margin, 60 s, not yet past): a
    # delivery may still be at work: a repeat.
    (records / key).write_text(_claim_record(bucket, trips.name, generation, 599))
    assert client.post("/", headers=headers, data=body).status_code == 200
    assert _runs(tmp_path) == []
    # Claimed longer ago with no outcome: its delivery died; this one starts the chain.
    (records / key).write_text(_claim_record(bucket, trips.name, generation, 602))
    answer = client.post("/", headers=headers, data=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    _check_one_run(tmp_path, path)
    record = _records(records)[key]
    assert record["started"] == "beamforge chain succeeded (exit 0)"
    assert record["event_id"] != "lost"
    # Now it has an outcome: a repeat, however old.
    (records / key).write_text(json.dumps({**record, "claimed": "2020-01-01T00:00:00+00:00"}))
    assert client.post("/", headers=headers, data=body).status_code == 200
    _check_one_run(tmp_path, path)
    lines = _log_lines(capsys.readouterr().out)
    assert [(line["severity"], line["message"]) for line in lines] == [
        ("INFO", f"repeated {path}: generation {generation} was delivered before"),
        (
            "WARNING",
            f"took over the claim of {path}: no outcome after 600 s (its delivery died before "
            "starting the chain)",
        ),
        ("INFO", f"started the chain for {path}: beamforge chain succeeded (exit 0)"),
        ("INFO", f"repeated {path}: generation {generation} was delivered before"),
    ]
    assert sorted(p.name for p in records.iterdir()) == [".lock", key]


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_racing_redeliveries_take_over_a_stale_claim_once(
    where: str, gcs_emulator: Gcs, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from launchers.trigger.runtime import claim

    if where == "gcs":
        bucket = gcs_emulator.new_bucket(_bucket(request, "records"))
        records = f"gs://{bucket}/rec"
        blob = gcs_emulator.client().bucket(bucket).blob(f"rec/{delivery_key('b', 'n', '7')}")
        write = blob.upload_from_string
        read = blob.download_as_text
    else:
        records = str(tmp_path / "rec")
        file = tmp_path / "rec" / delivery_key("b", "n", "7")
        write = file.write_text
        read = file.read_text
    settings = {"records": records, "timeout": 60, "vertex": {"project": PROJECT}, "root": "/"}
    key = delivery_key("b", "n", "7")
    fresh = _claim_record("b", "n", "7", 0)
    assert claim(settings, key, json.loads(fresh)) == "claimed"
    assert json.loads(read()) == json.loads(fresh)
    assert claim(settings, key, json.loads(fresh)) == "repeated"
    mine = [{**json.loads(fresh), "event_id": f"delivery-{i}"} for i in range(6)]
    for stale in (_claim_record("b", "n", "7", 121), "{not json"):
        write(stale)
        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(lambda record: claim(settings, key, record), mine))
        assert sorted(outcomes) == ["repeated"] * 5 + ["taken over"]
        assert json.loads(read()) == mine[outcomes.index("taken over")]
    # Claimed 2 minutes ago, but with an outcome: a repeat.
    write(json.dumps({**json.loads(_claim_record("b", "n", "7", 121)), "failed": "exit 1"}))
    assert claim(settings, key, mine[0]) == "repeated"


def test_the_build_owns_its_folder(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_chain(str(TAXI_CHAIN))
    output = tmp_path / "function"
    build_trigger(spec, output=str(output), target="gcp")
    gcp_files = [
        "deploy.sh",
        "main.py",
        "pipeline.yaml",
        "requirements.txt",
        "serve.sh",
        "trigger.json",
        "trigger_runtime.py",
    ]
    assert sorted(p.name for p in output.iterdir()) == sorted([".beamforge-trigger", *gcp_files])
    marker = json.loads((output / ".beamforge-trigger").read_text())
    assert marker == {
        "written_by": "beamforge trigger build",
        "files": [
            "pipeline.yaml",
            "main.py",
            "trigger_runtime.py",
            "trigger.json",
            "requirements.txt",
            "deploy.sh",
            "serve.sh",
        ],
    }
    # A rebuild for the other target removes what the first wrote: no deploy.sh or
    # pipeline.yaml of the gcp target is left to deploy.
    build_trigger(spec, output=str(output), target="local")
    local_files = ["main.py", "requirements.txt", "serve.sh", "trigger.json", "trigger_runtime.py"]
    assert sorted(p.name for p in output.iterdir()) == [".beamforge-trigger", *local_files]
    marker = json.loads((output / ".beamforge-trigger").read_text())
    assert sorted(marker["files"]) == local_files
    # A marker listing other files removes none of them.
    (output / "notes.txt").write_text("mine\n")
    (output / ".beamforge-trigger").write_text('{"files": ["notes.txt", "../chain.yaml"]}')
    build_trigger(spec, output=str(output), target="local")
    assert (output / "notes.txt").read_text() == "mine\n"

    # A folder the build did not write is refused, whatever it holds, and left as it was.
    for held in (["main.py", "requirements.txt"], ["a.txt", "b.txt", "c", "d", "e", "f"]):
        other = tmp_path / f"other-{len(held)}"
        other.mkdir()
        for name in held:
            (other / name).write_text(f"the user's {name}\n")
        with pytest.raises(SpecError) as info:
            build_trigger(spec, output=str(other), target="local")
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        assert str(info.value) == (
            f"{TAXI_CHAIN}: <root>: output {str(other)!r} is a folder beamforge trigger build "
            f"did not write (it holds {shown}); give a new or empty folder: the function is "
            "deployed with all of it"
        )
        assert {p.name: p.read_text() for p in other.iterdir()} == {
            name: f"the user's {name}\n" for name in held
        }
    # An empty folder is taken.
    (tmp_path / "empty").mkdir()
    assert len(build_trigger(spec, output=str(tmp_path / "empty"), target="local")) == 5


@pytest.fixture()
def served(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """``functions-framework`` serving the built function (``function/``) on 127.0.0.1."""
    port = free_port()
    log = tmp_path / "functions-framework.log"
    with log.open("wb") as out:
        # The built serve.sh, with no virtualenv on PATH: it runs the functions-framework
        # installed where the function was built.
        env = {**os.environ, "PORT": str(port), "PATH": "/usr/bin:/bin"}
        env.pop("FUNCTIONS_FRAMEWORK", None)
        proc = subprocess.Popen(
            ["/bin/sh", str(tmp_path / "function" / "serve.sh")],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(url, timeout=1)
            except urllib.error.HTTPError:
                break  # It answers (a GET is no CloudEvent).
            except OSError:
                assert time.monotonic() < deadline, "functions-framework did not start in 30 s"
                time.sleep(0.1)
            else:
                break
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _post(url: str, headers: dict[str, str], body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=240) as answer:
        return int(answer.status)


@pytest.mark.timeout(300)
def test_local_function_served_by_functions_framework(
    local_chain: tuple[ChainSpec, str], gcs_emulator: Gcs, tmp_path: pathlib.Path, request: Any
) -> None:
    spec, bucket = local_chain
    build_trigger(spec, output="function", target="local")
    url, log = request.getfixturevalue("served")
    trips = _upload(gcs_emulator, bucket, "incoming/trips.csv", _slice())
    path = f"gs://{bucket}/incoming/trips.csv"
    assert _post(url, *_encode(_event(bucket, trips), "structured")) == 200
    _check_one_run(tmp_path, path)
    assert _post(url, *_encode(_event(bucket, trips), "binary")) == 200
    notes = _upload(gcs_emulator, bucket, "incoming/notes.txt", "not trips\n")
    assert _post(url, *_encode(_event(bucket, notes), "binary")) == 200
    _check_one_run(tmp_path, path)
    assert [line["message"] for line in _log_lines(log.read_text())] == [
        f"started the chain for {path}: beamforge chain succeeded (exit 0)",
        f"repeated {path}: generation {trips.generation} was delivered before",
        f"ignored gs://{bucket}/incoming/notes.txt: the name does not match glob 'incoming/*.csv'",
    ]
    # A plain JSON body is no CloudEvent: functions-framework refuses it.
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(url, {"Content-Type": "application/json"}, b'{"bucket": "x"}')
    assert info.value.code == 400


def test_serve_script_runs_the_installed_functions_framework_unless_told_otherwise(
    local_chain: tuple[ChainSpec, str], tmp_path: pathlib.Path
) -> None:
    spec, _ = local_chain
    build_trigger(spec, output="function", target="local")
    script = (tmp_path / "function" / "serve.sh").read_text()
    assert script == (
        "#!/bin/sh\n"
        "# Serves the function on 127.0.0.1 (PORT, default 8080) for CloudEvents posted to it,\n"
        "# with FUNCTIONS_FRAMEWORK (default: the one installed where it was built).\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        f'exec "${{FUNCTIONS_FRAMEWORK:-{FUNCTIONS_FRAMEWORK}}}" \\\n'
        "  --target=on_object_finalized \\\n"
        "  --signature-type=cloudevent \\\n"
        "  --host=127.0.0.1 \\\n"
        '  "--port=${PORT:-8080}"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "FUNCTIONS_FRAMEWORK": "/bin/echo", "PORT": "9"}
    done = subprocess.run(
        ["/bin/sh", str(tmp_path / "function" / "serve.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "--target=on_object_finalized --signature-type=cloudevent --host=127.0.0.1 --port=9\n",
        "",
    )


def test_the_function_runtime_imports_only_the_standard_library(
    local_chain: tuple[ChainSpec, str], tmp_path: pathlib.Path
) -> None:
    spec, _ = local_chain
    build_trigger(spec, output="function", target="local")
    # -S: no site-packages at all.
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import trigger_runtime"],
        cwd=tmp_path / "function",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


# --- the gcp target --------------------------------------------------------------------------


@pytest.fixture()
def fake(gcs_emulator: Gcs, caplog: pytest.LogCaptureFixture) -> Iterator[FakeVertex]:
    yield from vertex_fake.serve()
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


@pytest.mark.timeout(300)
def test_gcp_function_submits_the_pipeline_with_the_object_as_input(
    fake: FakeVertex,
    gcs_emulator: Gcs,
    tmp_path: pathlib.Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import functions_framework

    bucket = gcs_emulator.new_bucket(_bucket(request, "trips"))
    # The SDK makes the pipeline root's bucket if it is missing (for one that exists it
    # asks Google for the project's number): a bucket of its own, made by the SDK.
    root_bucket = _bucket(request, "pipelines")
    spec = load_chain(str(TAXI_CHAIN))
    assert spec.gcp is not None
    spec.gcp.staging_bucket = f"gs://{root_bucket}/stage"
    spec.gcp.api_endpoint = fake.endpoint
    spec.gcp.project = PROJECT
    spec.gcp.service_account = SERVICE_ACCOUNT
    spec.trigger = {
        "bucket": bucket,
        "prefix": "incoming/",
        "suffix": ".csv",
        "records": f"gs://{bucket}/trigger-records",
        "function": {
            "memory": "1Gi",
            "max_instances": 3,
            "retry": True,
            "env": {"LOG_LEVEL": "info"},
        },
    }
    output = tmp_path / "function"
    written = build_trigger(spec, output=str(output), target="gcp")
    assert [pathlib.Path(p).name for p in written] == [
        "pipeline.yaml",
        "main.py",
        "trigger_runtime.py",
        "trigger.json",
        "requirements.txt",
        "deploy.sh",
        "serve.sh",
    ]
    assert (output / "requirements.txt").read_text() == (
        "functions-framework==3.10.1\n"
        "google-cloud-storage==3.17.1\n"
        "google-cloud-aiplatform==1.165.1\n"
    )
    assert (output / "deploy.sh").read_text() == (
        "#!/bin/sh\n"
        "# Deploys chicago-taxi-trigger: chain chicago_taxi starts on Vertex AI Pipelines\n"
        f"# for each object finalized in gs://{bucket} that passes the filters.\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        "exec gcloud \\\n"
        "  functions \\\n"
        "  deploy \\\n"
        "  chicago-taxi-trigger \\\n"
        "  --gen2 \\\n"
        f"  --project={PROJECT} \\\n"
        "  --region=us-central1 \\\n"
        "  --runtime=python311 \\\n"
        "  --source=. \\\n"
        "  --entry-point=on_object_finalized \\\n"
        f"  --trigger-event-filters=type={FINALIZED} \\\n"
        f"  --trigger-event-filters=bucket={bucket} \\\n"
        "  --memory=1Gi \\\n"
        "  --timeout=540s \\\n"
        "  --max-instances=3 \\\n"
        "  --retry \\\n"
        f"  --service-account={SERVICE_ACCOUNT} \\\n"
        "  --set-env-vars=LOG_LEVEL=info\n"
    )
    assert os.access(output / "deploy.sh", os.X_OK)
    settings = json.loads((output / "trigger.json").read_text())
    assert settings["vertex"] == {
        "project": PROJECT,
        "region": REGION,
        "display_name": "chicago_taxi",
        "pipeline_root": f"gs://{root_bucket}/stage/pipelines",
        "service_account": SERVICE_ACCOUNT,
        "network": None,
        "kms_key": None,
        "labels": {"beamforge-chain": "chicago_taxi", "beamforge-trigger": "chicago-taxi-trigger"},
        "api_endpoint": fake.endpoint,
    }
    client = functions_framework.create_app(
        target="on_object_finalized", source=str(output / "main.py"), signature_type="cloudevent"
    ).test_client()
    trips = _upload(gcs_emulator, bucket, "incoming/trips-2026-11.csv", _slice())
    path = f"gs://{bucket}/incoming/trips-2026-11.csv"
    for mode in ("structured", "binary"):
        headers, data = _encode(_event(bucket, trips), mode)
        answer = client.post("/", headers=headers, data=data)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    other = _upload(gcs_emulator, bucket, "archive/trips.csv", _slice())
    headers, body = _encode(_event(bucket, other), "binary")
    assert client.post("/", headers=headers, data=body).status_code == 200

    (body,) = fake.calls("POST", f"{PARENT}/pipelineJobs")
    key = delivery_key(bucket, trips.name, str(trips.generation))
    job_id = run_id("chicago-taxi", key)
    assert list(fake.pipeline_jobs) == [f"{PARENT}/pipelineJobs/{job_id}"]
    assert body["displayName"] == "chicago_taxi"
    assert body["pipelineSpec"] == yaml.safe_load((output / "pipeline.yaml").read_text())
    assert body["runtimeConfig"] == {
        "gcsOutputDirectory": f"gs://{root_bucket}/stage/pipelines",
        "parameterValues": {
            "input": path,
            "gcs_root": "gs://my-bucket/beamforge/chicago_taxi",
            "model_name": "chicago-taxi-tips",
        },
    }
    assert body["serviceAccount"] == SERVICE_ACCOUNT
    assert body["labels"] == {
        "beamforge-chain": "chicago_taxi",
        "beamforge-trigger": "chicago-taxi-trigger",
    }
    record = gcs_emulator.client().bucket(bucket).blob(f"trigger-records/{key}")
    assert json.loads(record.download_as_text())["started"] == f"{PARENT}/pipelineJobs/{job_id}"
    messages = [line["message"] for line in _log_lines(capsys.readouterr().out)]
    assert messages == [
        f"started the chain for {path}: {PARENT}/pipelineJobs/{job_id}",
        f"repeated {path}: generation {trips.generation} was delivered before",
        f"ignored gs://{bucket}/archive/trips.csv: the name does not match prefix "
        "'incoming/', suffix '.csv'",
    ]
