"""Chains: dataset job -> training -> evaluation gate -> model upload -> deployment.

A chain spec (YAML) names its steps in order; each step reads the outputs of earlier steps by
name. ``run_chain`` runs them on a target, ``local`` (the embedded default: local dataset
run, training subprocess, local prediction server) or ``gcp`` (Dataflow, Vertex AI), through
one backend interface: the chain decides the order, the backend how a step is done.

State is written (local path or gs://) after every step. A re-run resumes after the last
completed step and never repeats a finished one; each step is fingerprinted from its
configuration, the content of the files it reads (the dataset spec, its inputs, the
training code), the outputs of the steps it refers to and the fingerprint of the step before
it, so a changed input or spec invalidates that step and everything downstream.

Example (``examples/chicago_taxi/chain.yaml``)::

    name: taxi
    workdir: demo-chain
    steps:
      - {name: dataset, kind: dataset, spec: examples/chicago_taxi/pipeline.yaml,
         inputs: [examples/chicago_taxi/data/sample.csv], output: demo-chain/dataset}
      - {name: train, kind: train, dataset: dataset, module: examples.chicago_taxi.trainer.task}
      - {name: gate, kind: gate, metrics: train, metric: auc, min: 0.7}
      - {name: upload, kind: upload, model: train,
         predictor: "examples.chicago_taxi.predictor:TaxiPredictor"}
      - {name: deploy, kind: deploy, model: upload}
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import hashlib
import importlib.util
import json
import logging
import os
import posixpath
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import yaml

from launchers.exit_codes import ExitCode
from transforms.core.config import SpecError, from_mapping

_LOG = logging.getLogger(__name__)

TARGETS = ("local", "gcp")
COMPLETED = "completed"
FAILED = "failed"
PENDING = "pending"
STALE = "stale"
# Test hook for crash-resume: the chain process SIGKILLs itself right after persisting the
# state of the step named here, as a machine failure between two steps would.
KILL_AFTER_ENV = "BEAMFORGE_CHAIN_KILL_AFTER"
STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# The spec


@dataclasses.dataclass
class GcpSettings:
    """Where the ``gcp`` target runs.

    Attributes:
        project: Project id.
        region: Region for Dataflow and Vertex AI.
        staging_bucket: ``gs://`` bucket for job outputs (training base output directories).
        service_account: Service account for jobs and endpoints.
        api_endpoint: Vertex AI API endpoint override (``http://`` for a local fake server).
        dataflow_api_endpoint: Dataflow API endpoint override.
    """

    project: str
    region: str
    staging_bucket: str
    service_account: str | None = None
    api_endpoint: str | None = None
    dataflow_api_endpoint: str | None = None

    def validate(self) -> None:
        if not self.staging_bucket.startswith("gs://"):
            raise ValueError(f"staging_bucket must be a gs:// path, got {self.staging_bucket!r}")


@dataclasses.dataclass
class DatasetGcp:
    """How the dataset job runs on the ``gcp`` target.

    Attributes:
        output: ``gs://`` output prefix.
        launch: ``local`` (this machine writing to gs://), ``dataflow`` (DataflowRunner with
            the dataset spec's ``dataflow:`` settings) or ``flex_template``.
        template: ``gs://`` Flex Template spec, for ``flex_template``.
        parameters: Template parameters, for ``flex_template`` (``output`` is added).
        beam_args: More Beam/Dataflow flags.
        timeout: Seconds to wait for the Dataflow job.
    """

    output: str
    launch: Literal["local", "dataflow", "flex_template"] = "dataflow"
    template: str | None = None
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    beam_args: list[str] = dataclasses.field(default_factory=list)
    timeout: float | None = None

    def validate(self) -> None:
        if not self.output.startswith("gs://"):
            raise ValueError(f"output must be a gs:// path, got {self.output!r}")
        if self.launch == "flex_template" and not self.template:
            raise ValueError("launch: flex_template needs template (the gs:// template spec)")


@dataclasses.dataclass
class DatasetStep:
    """A dataset job (``beam_pipelines.dataset``); outputs its manifest, splits and artifact."""

    KIND: ClassVar[str] = "dataset"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {}
    name: str
    spec: str
    output: str
    inputs: list[str] = dataclasses.field(default_factory=list)
    beam_args: list[str] = dataclasses.field(default_factory=list)
    gcp: DatasetGcp | None = None


@dataclasses.dataclass
class Splits:
    """Which dataset split feeds which ``AIP_*_DATA_URI``."""

    training: str = "train"
    validation: str | None = "eval"
    test: str | None = None


@dataclasses.dataclass
class TrainGcp:
    """A Vertex AI CustomJob.

    Attributes:
        image_uri: Prebuilt or custom training container.
        command: Container command (default: the image's entry point).
        args: Container arguments (default: the step's ``args``).
        machine_type: Worker machine type.
        replica_count: Workers.
        timeout: Seconds to wait for the job.
        poll_seconds: First delay between polls (backs off to 2 min).
    """

    image_uri: str
    command: list[str] = dataclasses.field(default_factory=list)
    args: list[str] | None = None
    machine_type: str = "n1-standard-4"
    replica_count: int = 1
    timeout: float | None = 6 * 3600
    poll_seconds: float = 10.0


@dataclasses.dataclass
class TrainStep:
    """Training on a dataset step's output; outputs the model directory and metrics."""

    KIND: ClassVar[str] = "train"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"dataset": ("dataset",)}
    name: str
    dataset: str
    module: str | None = None
    script: str | None = None
    args: list[str] = dataclasses.field(default_factory=list)
    splits: Splits = dataclasses.field(default_factory=Splits)
    timeout: float | None = 3600.0
    gcp: TrainGcp | None = None

    def validate(self) -> None:
        if (self.module is None) == (self.script is None):
            raise ValueError("give exactly one of module (python -m) or script (a .py file)")


@dataclasses.dataclass
class GateStep:
    """An evaluation gate: the chain stops unless ``min <= metrics[metric] <= max``."""

    KIND: ClassVar[str] = "gate"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"metrics": ("train",)}
    name: str
    metrics: str
    metric: str
    min: float | None = None
    max: float | None = None

    def validate(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min, max or both")


@dataclasses.dataclass
class UploadGcp:
    """The serving container Vertex runs the model in (a CPR image with the predictor)."""

    image_uri: str
    predict_route: str = "/predict"
    health_route: str = "/health"
    port: int = 8080
    env: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class UploadStep:
    """Registers a training step's model (Vertex AI Model.upload; locally, a record)."""

    KIND: ClassVar[str] = "upload"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"model": ("train",)}
    name: str
    model: str
    predictor: str
    display_name: str | None = None
    gcp: UploadGcp | None = None


@dataclasses.dataclass
class DeployGcp:
    """A Vertex AI endpoint deployment."""

    endpoint: str
    machine_type: str = "n1-standard-2"
    min_replica_count: int = 1
    max_replica_count: int = 1
    traffic_percentage: int = 100
    undeploy_replaced: bool = True

    def validate(self) -> None:
        if not 0 < self.traffic_percentage <= 100:
            raise ValueError(f"traffic_percentage must be in 1..100, got {self.traffic_percentage}")


@dataclasses.dataclass
class DeployStep:
    """Serves an uploaded model (Vertex AI endpoint; locally, the CPR server in a subprocess)."""

    KIND: ClassVar[str] = "deploy"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"model": ("upload",)}
    name: str
    model: str
    host: str = "127.0.0.1"
    port: int = 0
    start_timeout: float = 120.0
    gcp: DeployGcp | None = None


ChainStep = DatasetStep | TrainStep | GateStep | UploadStep | DeployStep
KINDS: dict[str, type[Any]] = {
    c.KIND: c for c in (DatasetStep, TrainStep, GateStep, UploadStep, DeployStep)
}


@dataclasses.dataclass
class ChainSpec:
    """A validated chain.

    Attributes:
        name: Chain name (job names, labels, display names).
        workdir: Where local step outputs (model directories, logs) go.
        steps: The steps, in order.
        state: State file (local or gs://); default ``{workdir}/state-{target}.json``.
        gcp: Settings of the ``gcp`` target.
        origin: The file the spec came from.
    """

    name: str
    workdir: str
    steps: list[Any]
    state: str | None = None
    gcp: GcpSettings | None = None
    origin: str = "<chain>"

    def state_path(self, target: str) -> str:
        return self.state or posixpath.join(self.workdir, f"state-{target}.json")

    def step(self, name: str) -> Any:
        return next(s for s in self.steps if s.name == name)


@dataclasses.dataclass
class _RawChain:
    name: str
    workdir: str
    steps: list[Any]
    state: str | None = None
    gcp: Any = None


def parse_chain(data: Any, *, origin: str = "<chain>") -> ChainSpec:
    """Validates a chain mapping (from YAML).

    Raises:
        SpecError: with the YAML path for an unknown key or step kind, a wrong type, a
            duplicate step name, or a reference to no earlier step of the right kind.
    """
    try:
        raw = from_mapping(_RawChain, data)
        gcp = from_mapping(GcpSettings, raw.gcp, "gcp") if raw.gcp is not None else None
        steps: list[Any] = []
        for i, item in enumerate(raw.steps):
            path = f"steps[{i}]"
            if not isinstance(item, Mapping):
                raise SpecError(path, f"got {item!r}; expected a mapping with kind and name")
            kind = item.get("kind")
            if kind not in KINDS:
                raise SpecError(
                    f"{path}.kind",
                    f"unknown step kind {kind!r}; valid kinds are {', '.join(KINDS)}",
                )
            fields = {k: v for k, v in item.items() if k != "kind"}
            step = from_mapping(KINDS[kind], fields, path)
            earlier = {s.name: s for s in steps}
            if step.name in earlier:
                raise SpecError(f"{path}.name", f"step name {step.name!r} is used twice")
            for field, kinds in step.REFS.items():
                ref = getattr(step, field)
                target = earlier.get(ref)
                if target is None or target.KIND not in kinds:
                    candidates = [s.name for s in steps if s.KIND in kinds]
                    raise SpecError(
                        f"{path}.{field}",
                        f"{ref!r} is not an earlier {' or '.join(kinds)} step; "
                        f"earlier {' or '.join(kinds)} steps: {candidates or 'none'}",
                    )
            steps.append(step)
        if not steps:
            raise SpecError("steps", "a chain needs at least one step")
    except SpecError as exc:
        raise exc.located(origin) from None
    return ChainSpec(
        name=raw.name, workdir=raw.workdir, steps=steps, state=raw.state, gcp=gcp, origin=origin
    )


def load_chain(path: str) -> ChainSpec:
    """Reads and validates a chain spec file.

    Raises:
        SpecError: as :func:`parse_chain`, or for YAML that does not parse.
        FileNotFoundError: if the file is missing.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("", f"not valid YAML: {exc}", source=path) from None
    return parse_chain(data, origin=path)


def check_target(spec: ChainSpec, target: str) -> None:
    """Checks that every step can run on ``target`` (the gcp target needs gcp sections).

    Raises:
        SpecError: naming the missing section.
    """
    if target not in TARGETS:
        raise SpecError("", f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if target != "gcp":
        return
    try:
        if spec.gcp is None:
            raise SpecError("gcp", "the gcp target needs a gcp section (project, region, ...)")
        for i, step in enumerate(spec.steps):
            if hasattr(step, "gcp") and step.gcp is None:
                raise SpecError(
                    f"steps[{i}].gcp", f"the gcp target needs {step.name}'s gcp section"
                )
    except SpecError as exc:
        raise exc.located(spec.origin) from None


# ---------------------------------------------------------------------------------------------
# State


@dataclasses.dataclass
class StepState:
    """What the state file knows about one step."""

    status: str
    fingerprint: str
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: str = ""
    finished: str = ""
    error: str = ""
    runs: int = 0


@dataclasses.dataclass
class ChainState:
    """The persisted state of a chain on one target."""

    chain: str
    target: str
    steps: dict[str, StepState] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "chain": self.chain,
                "target": self.target,
                "steps": {k: dataclasses.asdict(v) for k, v in self.steps.items()},
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ChainState:
        data = json.loads(text)
        return cls(
            chain=data["chain"],
            target=data["target"],
            steps={k: StepState(**v) for k, v in data["steps"].items()},
        )


def load_state(path: str, chain: str, target: str) -> ChainState:
    """The state at ``path`` (local or gs://), or a fresh one if there is none."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return ChainState(chain=chain, target=target)
    with FileSystems.open(path) as f:
        return ChainState.from_json(f.read().decode("utf-8"))


def save_state(path: str, state: ChainState) -> None:
    """Writes the state; locally through a temporary file and a rename (never half-written)."""
    from apache_beam.io.filesystems import FileSystems

    data = state.to_json().encode("utf-8")
    if "://" not in path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    # A GCS object appears whole when its upload completes.
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# Fingerprints


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprints(patterns: Sequence[str]) -> dict[str, str]:
    """Content hashes of local files (globs expanded); size and mtime of remote ones."""
    out: dict[str, str] = {}
    for pattern in patterns:
        if "://" in pattern:
            from apache_beam.io.filesystems import FileSystems

            for match in FileSystems.match([pattern]):
                for meta in match.metadata_list:
                    out[meta.path] = f"{meta.size_in_bytes}:{meta.last_updated_in_seconds}"
            continue
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in paths:
            out[path] = _sha256_file(path) if os.path.isfile(path) else "missing"
    return out


def _code_files(step: TrainStep) -> list[str]:
    """The trainer's source: the script, or every .py file beside the module."""
    if step.script:
        return [step.script]
    assert step.module is not None
    # The trainer runs with the working directory on its path: look there first.
    local = os.path.join(*step.module.split("."))
    if os.path.isfile(local + ".py"):
        folder = os.path.dirname(local) or "."
    elif os.path.isfile(os.path.join(local, "__main__.py")):
        folder = local
    else:
        try:
            found = importlib.util.find_spec(step.module)
        except ModuleNotFoundError:
            found = None
        if found is None or not found.origin:
            raise ChainError(step.name, f"module {step.module!r} cannot be found")
        folder = os.path.dirname(found.origin)
    return sorted(glob.glob(os.path.join(folder, "*.py")))


def _config(step: Any) -> dict[str, Any]:
    return {"kind": step.KIND, **dataclasses.asdict(step)}


def fingerprint(step: Any, target: str, previous: str, referenced: Mapping[str, StepState]) -> str:
    """The fingerprint of a step's inputs.

    Args:
        step: The step.
        target: ``local`` or ``gcp``.
        previous: The fingerprint of the step before it ('' for the first).
        referenced: The states of the steps it refers to (their outputs count).
    """
    files: dict[str, str] = {}
    if isinstance(step, DatasetStep):
        files = file_fingerprints([step.spec, *step.inputs])
    elif isinstance(step, TrainStep):
        files = file_fingerprints(_code_files(step))
    document = {
        "config": _config(step),
        "target": target,
        "previous": previous,
        "files": files,
        "referenced": {k: v.outputs for k, v in sorted(referenced.items())},
    }
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Errors


class ChainError(RuntimeError):
    """A chain stopped at a step.

    Attributes:
        step: The step's name.
        exit_code: The CLI's exit code for this outcome.
    """

    exit_code: ClassVar[int] = ExitCode.FAILED

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"step {step}: {message}")


class GateFailedError(ChainError):
    """The evaluation gate stopped the chain."""

    exit_code = ExitCode.STOPPED


# ---------------------------------------------------------------------------------------------
# Backends


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a backend gets for a step: the chain, and the outputs of the steps it refers to."""

    chain: ChainSpec
    target: str
    inputs: dict[str, dict[str, Any]]
    previous_outputs: dict[str, Any]

    def step_dir(self, step: Any) -> str:
        return posixpath.join(self.chain.workdir, step.name)


class Backend(Protocol):
    """How each kind of step is done on one target; the chain decides the order."""

    def dataset(self, step: DatasetStep, ctx: StepContext) -> dict[str, Any]: ...
    def train(self, step: TrainStep, ctx: StepContext) -> dict[str, Any]: ...
    def upload(self, step: UploadStep, ctx: StepContext) -> dict[str, Any]: ...
    def deploy(self, step: DeployStep, ctx: StepContext) -> dict[str, Any]: ...
    def still_valid(self, step: Any, outputs: Mapping[str, Any]) -> bool: ...


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
    }


def _dataset_unchanged(outputs: Mapping[str, Any]) -> bool:
    # Still the run the chain recorded: a rerun of the dataset elsewhere makes it stale.
    from transforms.io.commit import resolve_dataset

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

    dest = FileSystems.join(model_dir, "artifact")
    write_artifact(dest, read_artifact(source))
    return dest


class LocalBackend:
    """The embedded default: everything on this machine."""

    def dataset(self, step: DatasetStep, ctx: StepContext) -> dict[str, Any]:
        from beam_pipelines.dataset import run_job
        from beam_pipelines.spec import load_spec

        result = run_job(
            load_spec(step.spec),
            output=step.output,
            inputs=step.inputs or None,
            beam_args=step.beam_args,
        )
        # The manifest is the commit marker: read it back rather than trusting the result.
        return dataset_outputs(step.output, read_manifest(step.output)) | {
            "seconds": round(result.seconds, 3)
        }

    def train(self, step: TrainStep, ctx: StepContext) -> dict[str, Any]:
        import shutil

        from launchers.local_train import python_command, run_training

        dataset = ctx.inputs[step.dataset]
        folder = ctx.step_dir(step)
        model_dir = posixpath.join(folder, "model")
        # A re-run starts from an empty model directory: nothing stale is served.
        shutil.rmtree(model_dir, ignore_errors=True)
        env = training_uris(step, dataset) | {
            "AIP_MODEL_DIR": model_dir,
            "AIP_CHECKPOINT_DIR": posixpath.join(folder, "checkpoints"),
            "CLOUD_ML_PROJECT_ID": "local",
        }
        result = run_training(
            python_command(step.module, step.script, step.args),
            env=env,
            log=posixpath.join(folder, "train.log"),
            timeout=step.timeout,
        )
        copy_artifact(dataset["artifact"], model_dir)
        return {
            "model_dir": model_dir,
            "metrics": result.metrics,
            "log": result.log,
            "env": env,
        }

    def upload(self, step: UploadStep, ctx: StepContext) -> dict[str, Any]:
        model_dir = ctx.inputs[step.model]["model_dir"]
        return {
            "model": f"local:{os.path.abspath(model_dir)}",
            "model_dir": model_dir,
            "predictor": step.predictor,
            "display_name": step.display_name or ctx.chain.name,
        }

    def deploy(self, step: DeployStep, ctx: StepContext) -> dict[str, Any]:
        from launchers.serving import LocalServer, start_server, stop_server

        upload = ctx.inputs[step.model]
        server = start_server(
            upload["model_dir"],
            predictor=upload["predictor"],
            log=posixpath.join(ctx.step_dir(step), "server.log"),
            host=step.host,
            port=step.port,
            timeout=step.start_timeout,
        )
        # The server this one replaces goes only once the new one is healthy.
        replaced = ctx.previous_outputs.get("server")
        stopped = None
        if replaced and replaced.get("pid") != server.pid:
            old = LocalServer.from_json(replaced)
            if stop_server(old):
                stopped = old.pid
        return {
            "server": server.to_json(),
            "url": server.url,
            "predict_url": server.predict_url,
            "health_url": server.health_url,
            "replaced_pid": stopped,
        }

    def still_valid(self, step: Any, outputs: Mapping[str, Any]) -> bool:
        from apache_beam.io.filesystems import FileSystems

        if isinstance(step, DatasetStep):
            return _dataset_unchanged(outputs)
        if isinstance(step, TrainStep):
            return bool(FileSystems.exists(FileSystems.join(outputs["model_dir"], "model.joblib")))
        if isinstance(step, DeployStep):
            from launchers.serving import LocalServer, is_healthy

            return is_healthy(LocalServer.from_json(outputs["server"]))
        return True


class GcpBackend:
    """Dataflow for the dataset, Vertex AI for training, upload and deployment."""

    def __init__(self, settings: GcpSettings, *, credentials: Any = None) -> None:
        from launchers import vertex

        self.settings = settings
        self._credentials = credentials
        vertex.init(
            vertex.VertexSettings(
                project=settings.project,
                region=settings.region,
                staging_bucket=settings.staging_bucket,
                service_account=settings.service_account,
                api_endpoint=settings.api_endpoint,
            ),
            credentials=credentials,
        )

    def dataset(self, step: DatasetStep, ctx: StepContext) -> dict[str, Any]:
        from beam_pipelines.spec import load_spec

        assert step.gcp is not None
        gcp = step.gcp
        spec = load_spec(step.spec)
        if gcp.launch == "local":
            from beam_pipelines.dataset import run_job

            run_job(spec, output=gcp.output, inputs=step.inputs or None, beam_args=gcp.beam_args)
        else:
            from launchers.dataflow import jobs

            client = jobs.jobs_client(api_endpoint=self.settings.dataflow_api_endpoint)
            if gcp.launch == "dataflow":
                from launchers.dataflow.settings import DataflowSettings, resolve_settings
                from launchers.dataflow.submit import SubmittedJob, submit

                settings: DataflowSettings
                settings, rest = resolve_settings(spec.dataflow, gcp.beam_args)
                submitted = submit(
                    spec, settings, output=gcp.output, inputs=step.inputs or None, beam_args=rest
                )
                assert isinstance(submitted, SubmittedJob)
                job_id = submitted.job_id
            else:
                assert gcp.template is not None
                job = jobs.launch_flex_template(
                    jobs.templates_client(api_endpoint=self.settings.dataflow_api_endpoint),
                    project=self.settings.project,
                    region=self.settings.region,
                    job_name=f"{ctx.chain.name}-{step.name}-{_stamp()}".lower().replace("_", "-"),
                    template_path=gcp.template,
                    parameters={**gcp.parameters, "output": gcp.output},
                )
                job_id = job.id
            # Training never starts on a job that has merely been submitted.
            jobs.wait_for_job(
                client,
                jobs.JobRef(self.settings.project, self.settings.region, job_id),
                timeout=gcp.timeout,
            )
        return dataset_outputs(gcp.output, read_manifest(gcp.output))

    def train(self, step: TrainStep, ctx: StepContext) -> dict[str, Any]:
        from launchers import vertex
        from launchers.dataflow.jobs import Backoff
        from launchers.local_train import read_metrics

        assert step.gcp is not None
        gcp = step.gcp
        dataset = ctx.inputs[step.dataset]
        base = posixpath.join(self.settings.staging_bucket, ctx.chain.name, step.name, _stamp())
        specs = vertex.worker_pool_specs(
            image_uri=gcp.image_uri,
            command=gcp.command,
            args=step.args if gcp.args is None else gcp.args,
            env=training_uris(step, dataset),
            machine_type=gcp.machine_type,
            replica_count=gcp.replica_count,
        )
        job = vertex.submit_custom_job(
            display_name=f"{ctx.chain.name}-{step.name}",
            specs=specs,
            base_output_dir=base,
            service_account=self.settings.service_account,
            labels={"beamforge-chain": _label(ctx.chain.name)},
        )
        vertex.wait_for_custom_job(
            job.resource_name,
            timeout=gcp.timeout,
            backoff=Backoff(initial=gcp.poll_seconds, factor=1.5, maximum=120.0),
        )
        # Vertex sets AIP_MODEL_DIR to {base_output_directory}/model.
        model_dir = posixpath.join(base, "model")
        metrics = read_metrics(model_dir)
        copy_artifact(dataset["artifact"], model_dir)
        return {"model_dir": model_dir, "metrics": metrics, "job": job.resource_name}

    def upload(self, step: UploadStep, ctx: StepContext) -> dict[str, Any]:
        from launchers import vertex

        assert step.gcp is not None
        gcp = step.gcp
        model_dir = ctx.inputs[step.model]["model_dir"]
        module, _, cls = step.predictor.partition(":")
        name = vertex.upload_model(
            display_name=step.display_name or ctx.chain.name,
            artifact_uri=model_dir,
            container=vertex.ServingContainer(
                image_uri=gcp.image_uri,
                predict_route=gcp.predict_route,
                health_route=gcp.health_route,
                port=gcp.port,
                env={**gcp.env, "PREDICTOR_MODULE": module, "PREDICTOR_CLASS": cls},
            ),
            labels={"beamforge-chain": _label(ctx.chain.name)},
        )
        return {"model": name, "model_dir": model_dir, "predictor": step.predictor}

    def deploy(self, step: DeployStep, ctx: StepContext) -> dict[str, Any]:
        from launchers import vertex

        assert step.gcp is not None
        gcp = step.gcp
        deployment = vertex.deploy_model(
            model_name=ctx.inputs[step.model]["model"],
            endpoint_display_name=gcp.endpoint,
            machine_type=gcp.machine_type,
            min_replica_count=gcp.min_replica_count,
            max_replica_count=gcp.max_replica_count,
            traffic_percentage=gcp.traffic_percentage,
            undeploy_replaced=gcp.undeploy_replaced,
            service_account=self.settings.service_account,
        )
        return dataclasses.asdict(deployment)

    def still_valid(self, step: Any, outputs: Mapping[str, Any]) -> bool:
        if isinstance(step, DatasetStep):
            return _dataset_unchanged(outputs)
        return True


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")


def _label(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value.lower())[:63]


def backend_for(spec: ChainSpec, target: str, *, credentials: Any = None) -> Backend:
    """The backend of a target (``gcp`` needs the spec's gcp section)."""
    check_target(spec, target)
    if target == "gcp":
        assert spec.gcp is not None
        return GcpBackend(spec.gcp, credentials=credentials)
    return LocalBackend()


# ---------------------------------------------------------------------------------------------
# Running


def evaluate_gate(step: GateStep, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a gate against a training step's metrics.

    Returns:
        The gate's outputs (metric, value, bounds).

    Raises:
        GateFailedError: if the metric is missing, not a number, or out of bounds.
    """
    if step.metric not in metrics:
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
        raise GateFailedError(
            step.name, f"metric {step.metric!r} not reported; the trainer reported {numeric}"
        )
    value = metrics[step.metric]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateFailedError(step.name, f"metric {step.metric!r} is {value!r}, not a number")
    if step.min is not None and value < step.min:
        raise GateFailedError(step.name, f"{step.metric} = {value:.6g} is below min {step.min:g}")
    if step.max is not None and value > step.max:
        raise GateFailedError(step.name, f"{step.metric} = {value:.6g} is above max {step.max:g}")
    return {"metric": step.metric, "value": value, "min": step.min, "max": step.max}


@dataclasses.dataclass
class ChainReport:
    """What a chain run did.

    Attributes:
        ran: Steps that ran, in order.
        skipped: Completed steps that were reused.
        outputs: Every step's outputs by name (reused ones included).
        state_path: Where the state is.
    """

    ran: list[str]
    skipped: list[str]
    outputs: dict[str, dict[str, Any]]
    state_path: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_chain(
    spec: ChainSpec,
    *,
    target: str = "local",
    backend: Backend | None = None,
    on_step: Callable[[str, str], None] | None = None,
) -> ChainReport:
    """Runs the chain's steps in order on ``target``, resuming from the persisted state.

    Args:
        spec: The validated chain.
        target: ``local`` or ``gcp``.
        backend: The backend (default: :func:`backend_for` the target).
        on_step: Called with (step name, ``running``/``skipped``/``completed``/``failed``).

    Returns:
        The report.

    Raises:
        ChainError: the step that stopped the chain (the gate: GateFailedError); the state
            records it as failed and the steps after it do not run.
    """
    check_target(spec, target)
    backend = backend or backend_for(spec, target)
    path = spec.state_path(target)
    state = load_state(path, spec.name, target)
    report = ChainReport(ran=[], skipped=[], outputs={}, state_path=path)
    previous = ""
    notify = on_step or (lambda name, what: None)
    for step in spec.steps:
        referenced = {getattr(step, f): state.steps[getattr(step, f)] for f in step.REFS}
        fp = fingerprint(step, target, previous, referenced)
        old = state.steps.get(step.name)
        if (
            old is not None
            and old.status == COMPLETED
            and old.fingerprint == fp
            and backend.still_valid(step, old.outputs)
        ):
            # The run count of the step before is part of the next fingerprint: a step that
            # ran again invalidates what follows even if its outputs look the same.
            previous = f"{fp}:{old.runs}"
            report.skipped.append(step.name)
            report.outputs[step.name] = old.outputs
            notify(step.name, "skipped")
            continue
        ctx = StepContext(
            chain=spec,
            target=target,
            inputs={k: v.outputs for k, v in referenced.items()},
            previous_outputs=old.outputs if old else {},
        )
        current = StepState(
            status=PENDING,
            fingerprint=fp,
            started=_now(),
            runs=(old.runs if old else 0) + 1,
            outputs=old.outputs if old else {},
        )
        notify(step.name, "running")
        _LOG.info("chain %s: running step %s (%s)", spec.name, step.name, step.KIND)
        try:
            outputs = _run_step(backend, step, ctx)
        except Exception as exc:
            current.status = FAILED
            current.finished = _now()
            current.error = str(exc)
            state.steps[step.name] = current
            save_state(path, state)
            notify(step.name, "failed")
            if isinstance(exc, ChainError):
                raise
            raise ChainError(step.name, str(exc)) from exc
        previous = f"{fp}:{current.runs}"
        current.status = COMPLETED
        current.finished = _now()
        current.outputs = outputs
        state.steps[step.name] = current
        save_state(path, state)
        report.ran.append(step.name)
        report.outputs[step.name] = outputs
        notify(step.name, "completed")
        if os.environ.get(KILL_AFTER_ENV) == step.name:
            os.kill(os.getpid(), signal.SIGKILL)
    return report


def _run_step(backend: Backend, step: Any, ctx: StepContext) -> dict[str, Any]:
    if isinstance(step, DatasetStep):
        return backend.dataset(step, ctx)
    if isinstance(step, TrainStep):
        return backend.train(step, ctx)
    if isinstance(step, GateStep):
        return evaluate_gate(step, ctx.inputs[step.metrics].get("metrics", {}))
    if isinstance(step, UploadStep):
        return backend.upload(step, ctx)
    if isinstance(step, DeployStep):
        return backend.deploy(step, ctx)
    raise TypeError(f"unknown step type {type(step).__name__}")  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class StepStatus:
    """One line of ``beamforge chain status``."""

    name: str
    kind: str
    status: str
    finished: str
    runs: int
    detail: str


def chain_status(spec: ChainSpec, target: str = "local") -> list[StepStatus]:
    """Each step's status: completed, stale (its inputs changed since), failed or pending.

    Nothing is run and no cloud API is called; fingerprints are recomputed from the spec,
    the files and the recorded outputs.
    """
    check_target(spec, target)
    state = load_state(spec.state_path(target), spec.name, target)
    out: list[StepStatus] = []
    previous = ""
    upstream_changed = False
    for step in spec.steps:
        refs = {getattr(step, f) for f in step.REFS}
        old = state.steps.get(step.name)
        if all(r in state.steps for r in refs):
            fp = fingerprint(step, target, previous, {r: state.steps[r] for r in refs})
        else:
            fp = "unknown"
        previous = f"{fp}:{old.runs if old else 0}"
        if old is None:
            upstream_changed = True
            out.append(StepStatus(step.name, step.KIND, PENDING, "", 0, ""))
            continue
        status = old.status
        # Whatever follows a step that will run again runs again too.
        if status == COMPLETED and (old.fingerprint != fp or upstream_changed):
            status = STALE
        upstream_changed = upstream_changed or status != COMPLETED
        out.append(
            StepStatus(step.name, step.KIND, status, old.finished, old.runs, _detail(old, status))
        )
    return out


def _detail(state: StepState, status: str) -> str:
    if status == FAILED:
        return state.error.splitlines()[0] if state.error else ""
    o = state.outputs
    for key in ("predict_url", "endpoint", "model", "model_dir", "root"):
        if key in o and isinstance(o[key], str):
            return o[key]
    if "value" in o:
        return f"{o['metric']} = {o['value']:.4g}"
    return ""


def format_status(spec: ChainSpec, target: str, rows: Sequence[StepStatus]) -> str:
    """The status table, one line per step."""
    lines = [f"chain {spec.name} ({target}): state {spec.state_path(target)}"]
    for r in rows:
        when = r.finished or "-"
        lines.append(f"  {r.name:<12} {r.kind:<8} {r.status:<10} {when:<26} {r.detail}")
    return "\n".join(lines)
