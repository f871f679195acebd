"""The chain spec: its steps, their target sections, and their validation.

A chain spec (YAML) names its steps in order; each step reads the outputs of earlier steps by
name, and a reference to no earlier step of the right kind is an error at load time.

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
import os
import posixpath
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from launchers.chain.parameters import (
    Parameter,
    check_no_references,
    check_references,
    parse_parameters,
    references,
    resolve_values,
    substitute,
    templated_leaves,
)
from launchers.chain.schedule import Schedule, schedule_section
from transforms.core.config import FieldError, SpecError, Within, from_mapping

TARGETS = ("local", "gcp")
# A week: the longest a Vertex AI CustomJob may run; nothing here waits longer.
_MAX_WAIT = 7 * 24 * 3600
# Chain and step names become pipeline, DAG, task, job and label names: the forms all take.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


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
        pipeline_root: ``gs://`` root of Vertex AI pipeline runs' artifacts; default
            ``{staging_bucket}/pipelines``.
        network: VPC network the pipeline's jobs peer with
            (``projects/NUMBER/global/networks/NAME``).
        kms_key: Cloud KMS key (CMEK) the pipeline run and its resources are encrypted with.
        labels: Labels put on pipeline runs and schedules.
    """

    project: str
    region: str
    staging_bucket: str
    service_account: str | None = None
    api_endpoint: str | None = None
    dataflow_api_endpoint: str | None = None
    pipeline_root: str | None = None
    network: str | None = None
    kms_key: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if not self.staging_bucket.startswith("gs://"):
            raise ValueError(f"staging_bucket must be a gs:// path, got {self.staging_bucket!r}")
        if self.pipeline_root is not None and not self.pipeline_root.startswith("gs://"):
            raise FieldError("pipeline_root", f"must be a gs:// path, got {self.pipeline_root!r}")
        for key, value in self.labels.items():
            if not _LABEL.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
                raise FieldError(
                    f"labels.{key}",
                    "label keys and values are lower-case letters, digits, _ and -, up to 63 "
                    "characters (keys start with a letter)",
                )

    def root(self) -> str:
        """Where pipeline runs keep their artifacts."""
        return self.pipeline_root or posixpath.join(self.staging_bucket, "pipelines")


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
    timeout: Annotated[float, Within(1.0, float(_MAX_WAIT), "seconds, a week at most")] | None = (
        None
    )

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
    timeout: Annotated[float, Within(1.0, float(_MAX_WAIT), "seconds, a week at most")] | None = (
        6 * 3600
    )
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
    timeout: Annotated[float, Within(1.0, float(_MAX_WAIT), "seconds, a week at most")] | None = (
        3600.0
    )
    gcp: TrainGcp | None = None

    def validate(self) -> None:
        if (self.module is None) == (self.script is None):
            raise ValueError("give exactly one of module (python -m) or script (a .py file)")


@dataclasses.dataclass
class Champion:
    """The model a gate's challenger must beat: what a deploy step serves now.

    Attributes:
        deploy: The deploy step (of this chain, usually after the gate) whose model is the
            champion.
        margin: How much better the challenger must be (``improvement > margin``; a
            negative margin lets an equal or slightly worse model through).
    """

    deploy: str
    margin: float = 0.0


@dataclasses.dataclass
class GateStep:
    """A gate: the chain stops unless ``min <= metrics[metric] <= max``.

    ``metrics`` names a train step (its trainer's metrics: an evaluation gate) or a dataset
    step (its validation's counts: ``anomalies``, ``drifted_columns``, ``skewed_columns``:
    a data gate). With ``champion``, an evaluation gate also stops unless the train step's
    model beats the model the deploy step serves now (:mod:`launchers.chain.champion`).
    """

    KIND: ClassVar[str] = "gate"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"metrics": ("train", "dataset")}
    name: str
    metrics: str
    metric: str
    min: float | None = None
    max: float | None = None
    champion: Champion | None = None

    def validate(self) -> None:
        if self.min is None and self.max is None and self.champion is None:
            raise ValueError("a gate needs min, max or both")
        if self.champion is not None:
            from launchers.chain.champion import check_champion_settings

            try:
                check_champion_settings(self.metric)
            except ValueError as exc:
                raise FieldError("metric", str(exc)) from None


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
    """A Vertex AI endpoint deployment.

    ``canary`` deploys gradually on this target only (it takes the place of the step's
    ``canary`` here: Vertex AI writes its figures to Cloud Monitoring once a minute, so a
    cloud canary usually waits longer and for more requests than a local one).
    ``monitoring_api_endpoint`` overrides the Cloud Monitoring API endpoint a canary's
    figures are read from (``http://host:port``: a local fake, plaintext gRPC).
    """

    endpoint: str
    machine_type: str = "n1-standard-2"
    min_replica_count: int = 1
    max_replica_count: int = 1
    traffic_percentage: int = 100
    undeploy_replaced: bool = True
    canary: CanarySetting | None = None
    monitoring_api_endpoint: str | None = None

    def validate(self) -> None:
        if not 0 < self.traffic_percentage <= 100:
            raise ValueError(f"traffic_percentage must be in 1..100, got {self.traffic_percentage}")
        if self.canary is not None and self.traffic_percentage != 100:
            raise FieldError(
                "traffic_percentage",
                "a canary's share is canary.share; leave traffic_percentage at 100",
            )


@dataclasses.dataclass
class CanarySetting:
    """A gradual deployment: the new model takes a share of the traffic until it is judged.

    The canary is judged on its own answers once it has served ``min_requests`` (locally
    counted from its server's ``/metrics``; on Vertex AI from Cloud Monitoring): promoted to
    100 % (the previous model is retired only then) when its error rate (5xx answers) is at
    most ``max_error_rate`` and its p99 latency at most ``max_latency_ms``; else rolled back
    (the previous model back to 100 %, the canary retired, the step stops the chain, exit 3).
    With no previous deployment there is nothing to compare with: a plain deployment.

    Attributes:
        share: Percent of the traffic the canary takes while it is watched.
        min_requests: Answers the canary must have given before it is judged.
        max_error_rate: Largest share of 5xx answers that passes.
        max_latency_ms: Largest p99 latency that passes (None: latency is not judged).
        timeout: Seconds to wait for ``min_requests``.
        on_timeout: What too few requests by the timeout means: ``rollback`` (not enough
            evidence, the default) or ``promote`` (judged on what was served, when no
            error limit was crossed).
        poll_seconds: Seconds between readings of the canary's figures (default: 0.5
            locally; 60 on gcp, Cloud Monitoring's sampling period).
    """

    share: Annotated[int, Within(1, 99, "percent of the traffic")] = 10
    min_requests: Annotated[int, Within(1, None)] = 100
    max_error_rate: Annotated[float, Within(0.0, 1.0, "a fraction of the requests")] = 0.01
    max_latency_ms: Annotated[float, Within(0.0, None, "milliseconds")] | None = 500.0
    timeout: Annotated[float, Within(1.0, float(_MAX_WAIT), "seconds, a week at most")] = 600.0
    on_timeout: Literal["rollback", "promote"] = "rollback"
    poll_seconds: Annotated[float, Within(0.01, 3600.0, "seconds")] | None = None


@dataclasses.dataclass
class RequestLogSetting:
    """The local server's request log (:mod:`launchers.serving.request_log`).

    Attributes:
        sink: A local folder of JSONL files or ``bq://project.dataset.table``.
        sample: The fraction of requests logged, decided by request id.
    """

    sink: str
    sample: Annotated[float, Within(0.0, 1.0, "the fraction of requests logged")] = 1.0

    def validate(self) -> None:
        from launchers.serving.request_log import parse_sink

        try:
            parse_sink(self.sink)
        except ValueError as exc:
            raise FieldError("sink", str(exc)) from None


@dataclasses.dataclass
class DeployStep:
    """Serves an uploaded model (Vertex AI endpoint; locally, the CPR server in a subprocess).

    ``request_log: {sink, sample}`` has the local server log a sample of its requests, for
    ``beamforge skew``. ``canary: {share, min_requests, ...}`` deploys gradually on either
    target (:class:`CanarySetting`); locally the servers then sit behind a local endpoint
    (:mod:`launchers.serving.endpoint`), whose URL stays the same from one deployment to the
    next.
    """

    KIND: ClassVar[str] = "deploy"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"model": ("upload",)}
    name: str
    model: str
    host: str = "127.0.0.1"
    port: int = 0
    start_timeout: Annotated[float, Within(1.0, 3600.0, "seconds")] = 120.0
    request_log: RequestLogSetting | None = None
    canary: CanarySetting | None = None
    gcp: DeployGcp | None = None

    def validate(self) -> None:
        if self.canary is not None and self.gcp is not None and self.gcp.traffic_percentage != 100:
            raise FieldError(
                "gcp.traffic_percentage",
                "a canary's share is canary.share; leave traffic_percentage at 100",
            )


@dataclasses.dataclass
class PredictGcp:
    """Where and how a predict step runs on the ``gcp`` target.

    Attributes:
        output: ``gs://`` output folder or ``bq://project.dataset.table``.
        launch: ``dataflow`` (a Dataflow job with the dataset spec's ``dataflow:``
            settings, waited for) or ``local`` (this machine, writing to the output).
        errors: With a BigQuery output: the ``gs://`` folder of the errors and manifest.
        beam_args: More Beam/Dataflow flags.
        timeout: Seconds to wait for the Dataflow job.
    """

    output: str
    launch: Literal["local", "dataflow"] = "dataflow"
    errors: str | None = None
    beam_args: list[str] = dataclasses.field(default_factory=list)
    timeout: Annotated[float, Within(1.0, float(_MAX_WAIT), "seconds, a week at most")] | None = (
        None
    )

    def validate(self) -> None:
        if not self.output.startswith(("gs://", "bq://")):
            raise FieldError(
                "output", f"must be a gs:// folder or bq:// table, got {self.output!r}"
            )
        if self.output.startswith("bq://") and not (self.errors or "").startswith("gs://"):
            raise FieldError("errors", "a bq:// output needs errors: a gs:// folder")


@dataclasses.dataclass
class PredictStep:
    """Batch scoring with a train step's model (``beamforge predict``; Beam RunInference).

    Raw rows are read as the model's dataset step reads them, transformed by the model's
    artifact and scored; predictions (with ``keys``, default the source file and line) go
    to ``output`` (a folder or ``bq://project.dataset.table``), bad rows to the errors,
    counts to a manifest that balances.
    """

    KIND: ClassVar[str] = "predict"
    REFS: ClassVar[dict[str, tuple[str, ...]]] = {"model": ("train",)}
    name: str
    model: str
    inputs: list[str]
    output: str
    keys: list[str] = dataclasses.field(default_factory=list)
    format: Literal["parquet", "jsonl"] = "parquet"
    errors: str | None = None
    beam_args: list[str] = dataclasses.field(default_factory=list)
    gcp: PredictGcp | None = None

    def validate(self) -> None:
        if not self.inputs:
            raise FieldError("inputs", "needs raw files, globs or one bq:// table")


ChainStep = DatasetStep | TrainStep | GateStep | UploadStep | DeployStep | PredictStep
KINDS: dict[str, type[Any]] = {
    c.KIND: c for c in (DatasetStep, TrainStep, GateStep, UploadStep, DeployStep, PredictStep)
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
        parameters: The parameter table (:mod:`~launchers.chain.parameters`).
        values: The value of each parameter the steps were resolved with.
        schedule: When schedulers start the chain.
        raw_steps: The steps as written, references unresolved (for compilers).
        trigger: The ``trigger:`` section as written (the Cloud Function that starts the
            chain on new data; read by :mod:`launchers.trigger`).
        serving: The ``serving:`` section as written (the serving container and its
            Kubernetes manifests; read by :mod:`launchers.gke`).
        cicd: The ``cicd:`` section as written (the Cloud Build config; read by
            :mod:`launchers.cicd`).
    """

    name: str
    workdir: str
    steps: list[Any]
    state: str | None = None
    gcp: GcpSettings | None = None
    origin: str = "<chain>"
    parameters: dict[str, Parameter] = dataclasses.field(default_factory=dict)
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    schedule: Schedule | None = None
    raw_steps: list[Any] = dataclasses.field(default_factory=list)
    trigger: dict[str, Any] | None = None
    serving: dict[str, Any] | None = None
    cicd: dict[str, Any] | None = None

    def state_path(self, target: str) -> str:
        """The state file of this chain on ``target``."""
        return self.state or posixpath.join(self.workdir, f"state-{target}.json")

    def step(self, name: str) -> Any:
        """The step called ``name`` (StopIteration if there is none)."""
        return next(s for s in self.steps if s.name == name)


@dataclasses.dataclass
class _RawChain:
    name: str
    workdir: str
    steps: Any
    state: str | None = None
    gcp: Any = None
    parameters: Any = None
    schedule: Any = None
    trigger: Any = None
    serving: Any = None
    cicd: Any = None


def parse_chain(
    data: Any, *, origin: str = "<chain>", values: Mapping[str, str] | None = None
) -> ChainSpec:
    """Validates a chain mapping (from YAML).

    Args:
        data: The mapping.
        origin: The file it came from (named in errors).
        values: Parameter values given by the caller (``--param``); the others take their
            defaults.

    Raises:
        SpecError: with the YAML path for an unknown key or step kind, a wrong type, a
            duplicate step name, a reference to no earlier step of the right kind, a
            ``${name}`` that is no parameter, or a parameter with no value.
    """
    try:
        raw = from_mapping(_RawChain, data)
        if not _NAME.fullmatch(raw.name):
            raise SpecError("name", _name_problem(raw.name))
        for key in ("name", "workdir", "state", "gcp", "schedule", "trigger", "serving", "cicd"):
            check_no_references(getattr(raw, key), key)
        gcp = from_mapping(GcpSettings, raw.gcp, "gcp") if raw.gcp is not None else None
        schedule = None
        if raw.schedule is not None:
            schedule = from_mapping(Schedule, schedule_section(raw.schedule), "schedule")
        parameters = parse_parameters(raw.parameters)
        if not isinstance(raw.steps, list):
            raise SpecError("steps", f"got {raw.steps!r}; expected a list of steps")
        check_references(raw.steps, parameters, origin=origin)
        resolved_values = resolve_values(parameters, values, origin=origin)
        try:
            steps = _parse_steps(substitute(raw.steps, resolved_values))
        except SpecError as exc:
            raise _in_text_only(exc, raw.steps) from None
    except SpecError as exc:
        raise (exc if exc.source else exc.located(origin)) from None
    return ChainSpec(
        name=raw.name,
        workdir=raw.workdir,
        steps=steps,
        state=raw.state,
        gcp=gcp,
        origin=origin,
        parameters=parameters,
        values=resolved_values,
        schedule=schedule,
        raw_steps=raw.steps,
        trigger=_section(raw.trigger, "trigger", origin),
        serving=_section(raw.serving, "serving", origin),
        cicd=_section(raw.cicd, "cicd", origin),
    )


def _name_problem(name: str) -> str:
    return (
        f"got {name!r}; a name is letters, digits, _ and -, starting with a letter, up to 63 "
        "characters (it names pipelines, DAGs, jobs and labels)"
    )


def _in_text_only(exc: SpecError, raw_steps: list[Any]) -> SpecError:
    """A type error at a value that refers to a parameter says where parameters stand."""
    for path, _, text in templated_leaves(raw_steps, "steps"):
        if path == exc.path and references(text):
            return SpecError(
                path,
                f"{text!r} refers to a parameter, but parameters stand only in text values; "
                f"this one is not text ({exc.problem})",
            )
    return exc


def _section(data: Any, name: str, origin: str) -> dict[str, Any] | None:
    """A section read by its own module: here only checked to be a mapping."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise SpecError(name, f"got {data!r}; expected a mapping", source=origin)
    return dict(data)


def _parse_steps(items: list[Any]) -> list[Any]:
    steps: list[Any] = []
    for i, item in enumerate(items):
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
        if not _NAME.fullmatch(step.name):
            raise SpecError(f"{path}.name", _name_problem(step.name))
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
    _check_champions(steps)
    _check_predict_outputs(steps)
    return steps


def _folder(path: str) -> str:
    """A folder path as compared for overlap: absolute locally, no trailing slash."""
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def _overlaps(a: str, b: str) -> bool:
    a, b = _folder(a), _folder(b)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _check_predict_outputs(steps: list[Any]) -> None:
    """A predict step's folders must not overlap a dataset step's output folder.

    Predictions committed there would replace the dataset (or sit inside the folder its
    runs rewrite), and the dataset's next run would replace the predictions.
    """
    datasets = [
        (s.name, out)
        for s in steps
        if s.KIND == "dataset"
        for out in (s.output, s.gcp.output if s.gcp else None)
        if out
    ]
    for i, step in enumerate(steps):
        if step.KIND != "predict":
            continue
        gcp = step.gcp
        folders = [
            ("output", step.output),
            ("errors", step.errors),
            ("gcp.output", gcp.output if gcp else None),
            ("gcp.errors", gcp.errors if gcp else None),
        ]
        for field, folder in folders:
            if not folder or folder.startswith("bq://"):
                continue
            for name, output in datasets:
                if _overlaps(folder, output):
                    raise SpecError(
                        f"steps[{i}].{field}",
                        f"{folder!r} overlaps the output folder {output!r} of dataset step "
                        f"{name!r}; give the predictions a folder of their own",
                    )


def _check_champions(steps: list[Any]) -> None:
    """A gate's champion names a deploy step anywhere in the chain, and it gates a model.

    The deploy step usually comes after the gate (the gate decides whether it runs), so this
    reference is not one of the REFS, which name earlier steps whose outputs a step reads:
    the gate reads what the deploy step serves now, not an output of this run.
    """
    by_name = {s.name: s for s in steps}
    for i, step in enumerate(steps):
        champion = getattr(step, "champion", None)
        if champion is None:
            continue
        target = by_name.get(champion.deploy)
        if target is None or target.KIND != "deploy":
            deploys = [s.name for s in steps if s.KIND == "deploy"]
            raise SpecError(
                f"steps[{i}].champion.deploy",
                f"{champion.deploy!r} is not a deploy step of this chain; deploy steps: "
                f"{deploys or 'none'}",
            )
        if by_name[step.metrics].KIND != "train":
            raise SpecError(
                f"steps[{i}].champion",
                f"a champion is compared with a train step's model; {step.metrics!r} is a "
                f"{by_name[step.metrics].KIND} step",
            )


def load_chain(path: str, values: Mapping[str, str] | None = None) -> ChainSpec:
    """Reads and validates a chain spec file, its parameters set to ``values`` or defaults.

    Raises:
        SpecError: as :func:`parse_chain`, or for a file that is not UTF-8 text or YAML that
            does not parse (a key given twice included).
        OSError: if the file cannot be read (missing, a directory, no permission).
    """
    from beam_pipelines.spec import parse_yaml

    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError("", f"is not UTF-8 text (byte {exc.start})", source=path) from None
    return parse_chain(parse_yaml(text, source=path), origin=path, values=values)


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
