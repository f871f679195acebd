"""Lineage: the taxi chain records every step in ML Metadata; ``beamforge lineage`` reads it.

One real local chain (examples/chicago_taxi/chain.yaml with its workdir and dataset under a
temporary folder) runs once for the module; the tests read its ``metadata.sqlite`` with ML
Metadata itself and through ``beamforge lineage`` (those tests are ``slow``; the others use
small stores of their own). The gcp target records into Vertex ML Metadata through the real
Vertex SDK, against :mod:`tests.vertex_fake` and the GCS emulator.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import pathlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from apache_beam.io.filesystems import FileSystems

from launchers import chain as chains
from launchers import lineage_commands, serving
from launchers.lineage import record_dataset_run, record_step
from tests import vertex_fake
from tests.conftest import REPO, TAXI_SAMPLE
from tests.vertex_fake import PROJECT, REGION, STORE, FakeVertex

CSV = str(TAXI_SAMPLE)


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_sha256(root: pathlib.Path) -> tuple[str, int]:
    found = sorted((str(p.relative_to(root)), _sha256(p)) for p in root.rglob("*") if p.is_file())
    text = "".join(f"{name}\0{sha}\n" for name, sha in found)
    return hashlib.sha256(text.encode()).hexdigest(), len(found)


def _raw_line() -> str:
    size = TAXI_SAMPLE.stat().st_size
    return f"raw_file {CSV} [size {size}, sha256 {_sha256(TAXI_SAMPLE)}]"


def _dataset_line(manifest: dict[str, Any]) -> str:
    splits = manifest["splits"]
    rows = sum(s["rows"] for s in splits.values())
    counts = ", ".join(f"{name} {splits[name]['rows']}" for name in sorted(splits))
    run = manifest["run"]
    return f"dataset {run['root']} [run {run['id']}, rows {rows} ({counts})]"


def lineage(*args: str) -> tuple[int, str, str]:
    """``beamforge lineage ARGS`` through the command's own parser and handler."""
    import io

    parser = argparse.ArgumentParser(prog="beamforge")
    lineage_commands.add_parsers(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = lineage_commands.command(parser.parse_args(["lineage", *args]))
    return int(code), out.getvalue(), err.getvalue()


class Chain:
    """The module's chain run: its spec, report, store and the manifest of its dataset."""

    def __init__(self, root: pathlib.Path) -> None:
        raw = yaml.safe_load((REPO / "examples/chicago_taxi/chain.yaml").read_text())
        raw["workdir"] = str(root / "work")
        raw["steps"][0]["output"] = str(root / "dataset")
        path = root / "chain.yaml"
        path.write_text(yaml.safe_dump(raw))
        self.file = str(path)
        self.spec = chains.load_chain(self.file)
        self.report = chains.run_chain(self.spec)
        self.store = str(root / "work" / "metadata.sqlite")
        self.manifest = json.loads((root / "dataset" / "manifest.json").read_text())
        self.server = serving.LocalServer.from_json(self.report.outputs["deploy"]["server"])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("lineage")
    with pytest.MonkeyPatch.context() as mp:
        # The chain's input is relative to the repository, as in the example.
        mp.chdir(REPO)
        ran = Chain(root)
        try:
            yield ran
        finally:
            serving.stop_server(ran.server)


def _mlmd(path: str) -> Any:
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    pb: Any = metadata_store_pb2
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


@pytest.mark.slow
def test_every_chain_step_is_recorded_in_ml_metadata(chain: Chain) -> None:
    assert chain.report.ran == ["dataset", "data_gate", "train", "gate", "upload", "deploy"]
    store = _mlmd(chain.store)
    assert sorted(t.name for t in store.get_artifact_types()) == [
        "beamforge.Dataset",
        "beamforge.Endpoint",
        "beamforge.Model",
        "beamforge.RawFile",
        "beamforge.Statistics",
        "beamforge.TransformArtifact",
        "beamforge.Validation",
    ]
    types = {t.id: t.name for t in store.get_execution_types()}
    executions = store.get_executions()
    assert [types[e.type_id] for e in executions] == [
        "beamforge.DatasetRun",
        "beamforge.Train",
        "beamforge.Upload",
        "beamforge.Deploy",
    ]
    atypes = {t.id: t.name for t in store.get_artifact_types()}
    run_root = chain.manifest["run"]["root"]
    model_dir = str(REPO / chain.report.outputs["train"]["model_dir"])
    expected = [
        ("beamforge.RawFile", CSV),
        ("beamforge.Dataset", run_root),
        ("beamforge.TransformArtifact", f"{run_root}/artifact"),
        ("beamforge.Statistics", f"{run_root}/stats.json"),
        # The taxi job spec validates its input: validation.json is the run's too.
        ("beamforge.Validation", f"{run_root}/validation.json"),
    ]
    assert chain.manifest["validation"]["path"] == f"{run_root}/validation.json"
    expected += [
        ("beamforge.Model", model_dir),
        ("beamforge.Model", f"local:{model_dir}"),
        ("beamforge.Endpoint", chain.server.url),
    ]
    assert [(atypes[a.type_id], a.uri) for a in store.get_artifacts()] == expected
    # Each execution's events: what it read (INPUT) and wrote (OUTPUT), by artifact URI.
    uris = {a.id: a.uri for a in store.get_artifacts()}
    io_by_execution = [
        sorted((e.type, uris[e.artifact_id]) for e in store.get_events_by_execution_ids([x.id]))
        for x in executions
    ]
    inp, out = 3, 4  # metadata_store_pb2.Event.INPUT / OUTPUT
    assert io_by_execution == [
        sorted([(inp, CSV)] + [(out, uri) for _, uri in expected[1:-3]]),
        [(inp, run_root), (inp, f"{run_root}/artifact"), (out, model_dir)],
        [(inp, model_dir), (out, f"local:{model_dir}")],
        [(inp, f"local:{model_dir}"), (out, chain.server.url)],
    ]
    (context,) = store.get_contexts()
    assert context.name == "chain:chicago_taxi"
    assert len(store.get_executions_by_context(context.id)) == 4


@pytest.mark.slow
def test_lineage_from_the_served_endpoint_back_to_the_csv(chain: Chain) -> None:
    run_root = chain.manifest["run"]["root"]
    run_id = chain.manifest["run"]["id"]
    model_dir = REPO / chain.report.outputs["train"]["model_dir"]
    model_sha, _ = _tree_sha256(model_dir)
    rows = chain.manifest["splits"]
    code, out, err = lineage(chain.server.predict_url, "--store", chain.store)
    assert (code, err) == (0, "")
    dataset = (
        f"dataset {run_root} [run {run_id}, rows {rows['train']['rows'] + rows['eval']['rows']} "
        f"(eval {rows['eval']['rows']}, train {rows['train']['rows']})]"
    )
    expected = [
        f"endpoint {chain.server.url} [pid {chain.server.pid}]",
        "  <- deploy chicago_taxi/deploy",
        f"     model local:{model_dir} [sha256 {model_sha}]",
        "       <- upload chicago_taxi/upload",
        f"          model {model_dir} [sha256 {model_sha}]",
        "            <- train chicago_taxi/train",
        f"               {dataset}",
        f"                 <- dataset_run {run_id}",
        f"                    {_raw_line()}",
        f"               transform_artifact {run_root}/artifact "
        f"[sha256 {chain.manifest['artifact']['sha256']}]",
        f"                 <- dataset_run {run_id} (shown above)",
    ]
    assert out.splitlines() == expected
    # The same walk as JSON, by the endpoint's URL and by the model's folder.
    code, out, _ = lineage(chain.server.url, "--chain", chain.file, "--json")
    walk = json.loads(out)
    assert code == 0 and walk["direction"] == "back"
    path = []
    node = walk["lineage"]
    while node["produced_by"]:
        path.append((node["artifact"]["kind"], node["produced_by"]["execution"]["kind"]))
        node = node["produced_by"]["inputs"][0]
    path.append((node["artifact"]["kind"], None))
    assert path == [
        ("endpoint", "deploy"),
        ("model", "upload"),
        ("model", "train"),
        ("dataset", "dataset_run"),
        ("raw_file", None),
    ]
    assert node["artifact"]["uri"] == CSV
    assert node["artifact"]["properties"] == {
        "sha256": _sha256(TAXI_SAMPLE),
        "size": TAXI_SAMPLE.stat().st_size,
    }
    code, out, _ = lineage(str(model_dir), "--store", chain.store)
    # From the model folder: the same path, from the model down.
    assert (code, out.splitlines()) == (0, [line[10:] for line in expected[4:]])


@pytest.mark.slow
def test_lineage_from_the_csv_forward_to_the_model(chain: Chain) -> None:
    run_root = chain.manifest["run"]["root"]
    model_dir = str(REPO / chain.report.outputs["train"]["model_dir"])
    # A relative path names the same file.
    code, out, _ = lineage(os.path.relpath(CSV, os.getcwd()), "--chain", chain.file, "--json")
    assert code == 0
    made = json.loads(out)
    assert made["direction"] == "forward"
    assert made["target"]["uri"] == CSV
    expected = [
        ("dataset", run_root, "dataset_run"),
        ("transform_artifact", f"{run_root}/artifact", "dataset_run"),
        ("statistics", f"{run_root}/stats.json", "dataset_run"),
    ]
    if "validation" in chain.manifest:
        expected.append(("validation", chain.manifest["validation"]["path"], "dataset_run"))
    expected += [
        ("model", model_dir, "train"),
        ("model", f"local:{model_dir}", "upload"),
        ("endpoint", chain.server.url, "deploy"),
    ]
    assert [
        (m["artifact"]["kind"], m["artifact"]["uri"], m["execution"]["kind"]) for m in made["made"]
    ] == expected
    code, text, _ = lineage(CSV, "--store", chain.store)
    run_id = chain.manifest["run"]["id"]
    model_sha, _ = _tree_sha256(pathlib.Path(model_dir))
    by = f" <- dataset_run {run_id}"
    expected_lines = [
        _raw_line(),
        "datasets made from it (1):",
        f"  {_dataset_line(chain.manifest)}{by}",
        "transform artifacts made from it (1):",
        f"  transform_artifact {run_root}/artifact [sha256 {chain.manifest['artifact']['sha256']}]"
        + by,
        "statistics made from it (1):",
        f"  statistics {run_root}/stats.json [sha256 {_sha256(pathlib.Path(run_root, 'stats.json'))}]"
        + by,
    ]
    if "validation" in chain.manifest:
        path = chain.manifest["validation"]["path"]
        expected_lines += [
            "validation results made from it (1):",
            f"  validation {path} [sha256 {_sha256(pathlib.Path(path))}]{by}",
        ]
    expected_lines += [
        "models made from it (2):",
        f"  model {model_dir} [sha256 {model_sha}] <- train chicago_taxi/train",
        f"  model local:{model_dir} [sha256 {model_sha}] <- upload chicago_taxi/upload",
        "endpoints made from it (1):",
        f"  endpoint {chain.server.url} [pid {chain.server.pid}] <- deploy chicago_taxi/deploy",
    ]
    assert (code, text.splitlines()) == (0, expected_lines)


@pytest.mark.slow
def test_a_second_run_on_the_same_csv_reuses_the_raw_file(
    chain: Chain, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec

    monkeypatch.chdir(REPO)
    output = tmp_path / "again"
    result = run_job(
        load_spec("examples/chicago_taxi/pipeline.yaml"), output=str(output), inputs=[CSV]
    )
    # What beamforge run does once the run committed: its own store, and here the chain's too.
    record_dataset_run(result.manifest, str(output / "metadata.sqlite"))
    record_dataset_run(result.manifest, chain.store)
    store = _mlmd(chain.store)
    (raw,) = store.get_artifacts_by_uri(CSV)
    readers = [e.execution_id for e in store.get_events_by_artifact_ids([raw.id])]
    assert len(readers) == 2
    code, out, _ = lineage(CSV, "--store", chain.store, "--json")
    datasets = [
        m["artifact"]["uri"] for m in json.loads(out)["made"] if m["artifact"]["kind"] == "dataset"
    ]
    assert datasets == sorted([chain.manifest["run"]["root"], result.manifest["run"]["root"]])
    # The run's own store walks its dataset back to the CSV, the dataset named by its output
    # folder, its manifest or its run folder; without --store, the store is the one in
    # the target's output folder.
    run = result.manifest["run"]
    targets = (output, output / "manifest.json", pathlib.Path(run["root"]))
    for target, store in itertools.product(
        targets, (["--store", str(output / "metadata.sqlite")], [])
    ):
        code, out, err = lineage(str(target), *store)
        assert (code, err) == (0, "")
        assert out.splitlines() == [
            _dataset_line(result.manifest),
            f"  <- dataset_run {run['id']}",
            f"     {_raw_line()}",
        ]


def _manifest(root: pathlib.Path, run: str, source: pathlib.Path) -> dict[str, Any]:
    """A committed run's manifest, as much of it as lineage reads."""
    return {
        "run": {"id": run, "output": str(root), "root": str(root / run)},
        "pipeline": "p",
        "source": {"files": [str(source)]},
        "splits": {"train": {"rows": 2}},
        "counts": {"read": 2, "total_written": 2, "total_rejected": 0},
        "artifact": {"path": str(root / run / "artifact"), "sha256": "ab" * 32},
    }


def test_a_raw_file_changed_in_place_is_a_new_artifact(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "trips.csv"
    store = str(tmp_path / "metadata.sqlite")
    source.write_text("a\n1\n2\n")
    record_dataset_run(_manifest(tmp_path, "run-1", source), store)
    first = _sha256(source)
    source.write_text("a\n3\n4\n")
    record_dataset_run(_manifest(tmp_path, "run-2", source), store)
    found = _mlmd(store).get_artifacts_by_uri(str(source))
    assert [a.properties["sha256"].string_value for a in found] == [
        first,
        _sha256(source),
    ]

    def made_from() -> list[str]:
        code, out, _ = lineage(str(source), "--store", store, "--json")
        assert code == 0
        return [m["artifact"]["uri"] for m in json.loads(out)["made"]]

    # The file as it is now names the second version; restored, the first.
    assert made_from() == [str(tmp_path / "run-2"), str(tmp_path / "run-2" / "artifact")]
    source.write_text("a\n1\n2\n")
    assert made_from() == [str(tmp_path / "run-1"), str(tmp_path / "run-1" / "artifact")]
    # Gone, it names the latest recorded.
    source.unlink()
    assert made_from() == [str(tmp_path / "run-2"), str(tmp_path / "run-2" / "artifact")]


def test_unknown_targets_and_missing_stores_are_one_line_errors(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "trips.csv"
    source.write_text("a\n1\n2\n")
    store = str(tmp_path / "metadata.sqlite")
    record_dataset_run(_manifest(tmp_path, "run-1", source), store)
    assert lineage("http://127.0.0.1:1", "--store", store) == (
        2,
        "",
        f"error: http://127.0.0.1:1: no dataset, model, endpoint or raw file recorded in {store}\n",
    )
    missing = str(tmp_path / "nothing.sqlite")
    assert lineage(str(source), "--store", missing) == (
        2,
        "",
        f"error: {missing}: no lineage store (metadata.sqlite) there\n",
    )
    assert not os.path.exists(missing)
    assert lineage(str(source), "--chain", str(tmp_path / "none.yaml")) == (
        2,
        "",
        f"error: {tmp_path / 'none.yaml'}: No such file or directory\n",
    )
    assert lineage(str(source), "--target", "gcp") == (
        2,
        "",
        "error: --target and --param go with --chain\n",
    )


def test_a_query_never_writes_to_the_store(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "trips.csv"
    source.write_text("a\n1\n2\n")
    empty, garbage, other = (tmp_path / n for n in ("empty.sqlite", "garbage.sqlite", "o.db"))
    empty.touch()
    garbage.write_text("garbage\n")
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()
    assert lineage(str(source), "--store", str(empty)) == (
        2,
        "",
        f"error: {empty}: an empty file, not an ML Metadata store (no MLMDEnv table)\n",
    )
    assert lineage(str(source), "--store", str(other)) == (
        2,
        "",
        f"error: {other}: a SQLite file, not an ML Metadata store (no MLMDEnv table)\n",
    )
    assert lineage(str(source), "--store", str(garbage)) == (
        2,
        "",
        f"error: {garbage}: not an ML Metadata store (file is not a database)\n",
    )
    assert (empty.stat().st_size, garbage.read_text()) == (0, "garbage\n")
    # A real store is read as it is: the query registers no types and changes no byte.
    store = tmp_path / "metadata.sqlite"
    record_dataset_run(_manifest(tmp_path, "run-1", source), str(store))
    before = _sha256(store)
    code, out, _ = lineage(str(source), "--store", str(store), "--json")
    assert code == 0
    assert [m["artifact"]["uri"] for m in json.loads(out)["made"]] == [
        str(tmp_path / "run-1"),
        str(tmp_path / "run-1" / "artifact"),
    ]
    assert _sha256(store) == before


def test_a_run_writing_to_gcs_records_no_sqlite_store_there(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "trips.csv"
    source.write_text("a\n1\n2\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="launchers.lineage"):
        record_dataset_run(_manifest(tmp_path, "run-1", source), "gs://bucket/out/metadata.sqlite")
    assert [r.getMessage() for r in caplog.records] == [
        "lineage of run run-1 not recorded: "
        "gs://bucket/out/metadata.sqlite: an ML Metadata SQLite store is a local file"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trips.csv"]


def test_a_lineage_failure_only_warns(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The workdir is a file: the store cannot be created; the step's outputs still stand.
    work = tmp_path / "work"
    work.write_text("")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes(b"model")
    spec = chains.load_chain(str(REPO / "examples/chicago_taxi/chain.yaml"))
    spec = dataclasses.replace(spec, workdir=str(work))
    ctx = chains.StepContext(chain=spec, target="local", inputs={}, previous_outputs={})
    outputs = {"model": f"local:{model_dir}", "model_dir": str(model_dir)}
    with caplog.at_level(logging.WARNING, logger="launchers.lineage"):
        record_step(ctx, spec.step("upload"), outputs)
    assert [r.getMessage() for r in caplog.records] == [
        f"lineage of step upload not recorded: [Errno 17] File exists: '{work}'"
    ]


# --- the gcp target: Vertex ML Metadata through the SDK, against the fake ---


@pytest.fixture()
def fake() -> Iterator[FakeVertex]:
    yield from vertex_fake.serve()


def _trainer(body: dict[str, Any]) -> None:
    base = body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    for name, data in (("model.joblib", b"model"), ("metrics.json", b'{"auc": 0.9}')):
        with FileSystems.create(f"{base}/model/{name}") as f:
            f.write(data)


@pytest.mark.emulator
def test_gcp_chain_records_into_vertex_ml_metadata(
    gcs_emulator: Any, fake: FakeVertex, tmp_path: pathlib.Path
) -> None:
    bucket = gcs_emulator.new_bucket("lineage-gcp")
    lines = TAXI_SAMPLE.read_bytes().splitlines(keepends=True)
    trips = f"gs://{bucket}/in/trips.csv"
    data = b"".join(lines[:201])
    with FileSystems.create(trips) as f:
        f.write(data)
    fake.trainer = _trainer
    spec_file = tmp_path / "chain.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "taxi",
                "workdir": str(tmp_path / "work"),
                "gcp": {
                    "project": PROJECT,
                    "region": REGION,
                    "staging_bucket": f"gs://{bucket}/stage",
                    "api_endpoint": fake.endpoint,
                },
                "steps": [
                    {
                        "name": "dataset",
                        "kind": "dataset",
                        "spec": str(REPO / "examples/chicago_taxi/pipeline.yaml"),
                        "inputs": [trips],
                        "output": str(tmp_path / "ds"),
                        "gcp": {"output": f"gs://{bucket}/ds", "launch": "local"},
                    },
                    {
                        "name": "train",
                        "kind": "train",
                        "dataset": "dataset",
                        "module": "examples.chicago_taxi.trainer.task",
                        "gcp": {"image_uri": "trainer:1", "poll_seconds": 0.001},
                    },
                    {
                        "name": "upload",
                        "kind": "upload",
                        "model": "train",
                        "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
                        "gcp": {"image_uri": "predictor:1"},
                    },
                    {
                        "name": "deploy",
                        "kind": "deploy",
                        "model": "upload",
                        "gcp": {"endpoint": "taxi"},
                    },
                ],
            }
        )
    )
    spec = chains.load_chain(str(spec_file))
    report = chains.run_chain(spec, target="gcp")
    assert report.ran == ["dataset", "train", "upload", "deploy"]
    assert not (tmp_path / "work" / "metadata.sqlite").exists()
    md = fake.metadata
    run_root = f"gs://{bucket}/ds/{report.outputs['dataset']['run']}"
    model_dir = report.outputs["train"]["model_dir"]
    model = report.outputs["upload"]["model"]
    endpoint = report.outputs["deploy"]["endpoint"]
    api = f"https://{REGION}-aiplatform.googleapis.com/v1"
    blob = gcs_emulator.client().bucket(bucket).get_blob("in/trips.csv")
    artifacts = sorted(
        (a["schemaTitle"], a["uri"], a["metadata"]["beamforge_kind"]) for a in md.artifacts.values()
    )
    assert artifacts == sorted(
        [
            ("system.Artifact", trips, "raw_file"),
            ("system.Dataset", run_root, "dataset"),
            ("system.Artifact", f"{run_root}/artifact", "transform_artifact"),
            ("system.Artifact", f"{run_root}/stats.json", "statistics"),
            ("system.Model", model_dir, "model"),
            ("google.VertexModel", f"{api}/{model}", "model"),
            ("google.VertexEndpoint", f"{api}/{endpoint}", "endpoint"),
        ]
        + (
            [("system.Artifact", report.outputs["dataset"]["validation"], "validation")]
            if "validation" in report.outputs["dataset"]
            else []
        )
    )
    (raw,) = [a for a in md.artifacts.values() if a["uri"] == trips]
    assert raw["metadata"] == {
        "beamforge_kind": "raw_file",
        "fingerprint": f"md5:{blob.md5_hash}",
        "size": len(data),
        "md5": blob.md5_hash,
        "crc32c": blob.crc32c,
        "generation": str(blob.generation),
    }
    assert sorted(
        (x["schemaTitle"], x["displayName"], x["metadata"]["beamforge_kind"], x["state"])
        for x in md.executions.values()
    ) == [
        ("system.ContainerExecution", "taxi/deploy", "deploy", "COMPLETE"),
        ("system.ContainerExecution", "taxi/train", "train", "COMPLETE"),
        ("system.ContainerExecution", "taxi/upload", "upload", "COMPLETE"),
        ("system.Run", report.outputs["dataset"]["run"], "dataset_run", "COMPLETE"),
    ]
    # The gs:// model folder's identity: every object under it, names and bytes.
    prefix = model_dir.removeprefix(f"gs://{bucket}/") + "/"
    blobs = sorted(
        (b.name.removeprefix(prefix), hashlib.sha256(b.download_as_bytes()).hexdigest())
        for b in gcs_emulator.client().bucket(bucket).list_blobs(prefix=prefix)
    )
    tree = hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in blobs).encode()).hexdigest()
    (trained,) = [a for a in md.artifacts.values() if a["uri"] == model_dir]
    assert trained["metadata"] == {
        "beamforge_kind": "model",
        "fingerprint": f"sha256:{tree}",
        "sha256": tree,
        "files": 5,
    }
    assert [n for n, _ in blobs] == [
        "artifact/transform.json",
        "artifact/vocabularies/vocabulary_company.txt",
        "artifact/vocabularies/vocabulary_payment_type.txt",
        "metrics.json",
        "model.joblib",
    ]
    by_name = {x["displayName"]: x["name"] for x in md.executions.values()}
    uri = {a["name"]: a["uri"] for a in md.artifacts.values()}
    deploy_events = sorted(
        (e["type"], uri[e["artifact"]])
        for e in md.events
        if e["execution"] == by_name["taxi/deploy"]
    )
    assert deploy_events == [("INPUT", f"{api}/{model}"), ("OUTPUT", f"{api}/{endpoint}")]
    (context,) = md.contexts.values()
    assert (context["schemaTitle"], context["displayName"]) == ("system.Pipeline", "chain:taxi")
    assert md.members[context["name"]] == set(md.artifacts) | set(md.executions)

    # Queried back through the SDK: from the Vertex endpoint to the CSV in the bucket.
    code, out, err = lineage(endpoint, "--chain", str(spec_file), "--target", "gcp", "--json")
    assert code == 0, err
    node = json.loads(out)["lineage"]
    path = []
    while node["produced_by"]:
        path.append((node["artifact"]["uri"], node["produced_by"]["execution"]["kind"]))
        node = node["produced_by"]["inputs"][0]
    assert path == [
        (f"{api}/{endpoint}", "deploy"),
        (f"{api}/{model}", "upload"),
        (model_dir, "train"),
        (run_root, "dataset_run"),
    ]
    assert node["artifact"]["uri"] == trips
    assert fake.calls("GET", f"{STORE}/artifacts") != []
    queried = [p for m, p, _ in fake.requests if p.endswith(":queryArtifactLineageSubgraph")]
    assert len(queried) == 1
    # And forward from the CSV.
    code, out, _ = lineage(trips, "--chain", str(spec_file), "--target", "gcp", "--json")
    kinds = [m["artifact"]["kind"] for m in json.loads(out)["made"]]
    assert code == 0 and kinds.count("model") == 2 and kinds[-1] == "endpoint"
