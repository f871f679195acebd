"""The job spec: one YAML file describing a training-dataset job, validated on load.

Everything that can be checked before work starts is checked here: unknown keys (also a key
given twice), wrong types, unknown ops, step parameters, sizes that would exhaust memory,
split names (they become folder names), and column references (each step's input columns
must exist at that point of the step list). Errors name the YAML path, the offending value
and what is valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pyarrow as pa
import yaml

from beam_pipelines.dataflow_settings import DataflowSection
from beam_pipelines.streaming.settings import StreamingSpec, check_streaming_columns
from transforms.core.config import SpecError, Within, check_within, from_mapping
from transforms.core.errors import InputError
from transforms.core.schema import parse_type, type_name
from transforms.core.split import Split
from transforms.core.steps import Step
from transforms.io.bigquery import BigQuerySink, parse_table
from transforms.io.read import Source
from transforms.ops.registry import build_step
from transforms.validation.distances import JENSEN_SHANNON, L_INFINITY
from transforms.validation.schema import DEFAULT_THRESHOLDS

FORMATS = ("parquet", "tfrecord", "csv", "jsonl")
# ``package.module:function``: dotted identifiers, a colon, one identifier.
_FN_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")

# Limits of sizes that decide a job's memory and file count (refused at load):
# - output.num_shards: every shard is a file per split and format, listed in the manifest
#   and held open while written; 10,000 files of 1 GB are 10 TB per split.
MAX_SHARDS = 10_000
# - source.batch_size: a batch is one element in memory (rows x columns, then copied by
#   each step); 1,048,576 rows is far above useful (the default is 8,192).
MAX_BATCH_ROWS = 1 << 20
# - source.split_bytes: a file is cut into size/split_bytes ranges, all listed in memory
#   and each a Beam element; below 1 MiB a big file becomes millions of ranges.
MIN_SPLIT_BYTES = 1 << 20


@dataclasses.dataclass
class Label:
    """The ``label:`` section: the label column, optionally computed by an expression.

    Attributes:
        column: Name of the label column in the dataset.
        expr: Expression computing it (see transforms/ops/expressions.py); None if the column
            already exists.
        type: Spec type name of the computed label.
    """

    column: str
    expr: str | None = None
    type: str | None = None

    def validate(self) -> None:
        if self.type is not None:
            parse_type(self.type)
        if self.type is not None and self.expr is None:
            raise ValueError("label.type needs label.expr (the label is computed with that type)")


@dataclasses.dataclass
class Output:
    """The ``output:`` section.

    Attributes:
        path: Output prefix (local or gs://); ``--output`` overrides it.
        formats: Dataset file formats written for every split.
        num_shards: Files per split and format; 0 lets the runner decide.
        columns: Dataset columns in order. Default: the outputs of the feature steps and the
            label when there are feature steps, else every column.
        bigquery: Also write the dataset to BigQuery (see
            :class:`transforms.io.bigquery.BigQuerySink`).
    """

    path: str = ""
    formats: list[Literal["parquet", "tfrecord", "csv", "jsonl"]] = dataclasses.field(
        default_factory=lambda: ["parquet"]
    )
    num_shards: Annotated[int, Within(0, MAX_SHARDS, "0 lets the runner decide")] = 0
    columns: list[str] | None = None
    bigquery: BigQuerySink | None = None

    def validate(self) -> None:
        if not self.formats:
            raise ValueError(f"output.formats needs at least one of {', '.join(FORMATS)}")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"output.formats lists a format twice: {self.formats}")
        if self.num_shards < 0:
            raise ValueError(f"output.num_shards must be >= 0, got {self.num_shards}")


@dataclasses.dataclass
class Errors:
    """The ``errors:`` section (the dead-letter destination).

    Attributes:
        path: Where error records go as JSON lines; default ``{output}/errors``.
        max_fraction: Fail the run when more than this fraction of rows read is rejected.
        bigquery_table: Also append error records to this BigQuery table
            (``project.dataset.table``; created if missing).
    """

    path: str | None = None
    max_fraction: float | None = None
    bigquery_table: str | None = None

    def validate(self) -> None:
        if self.bigquery_table is not None:
            parse_table(self.bigquery_table)
        if self.max_fraction is not None and not 0 <= self.max_fraction <= 1:
            raise ValueError(f"errors.max_fraction must be within [0, 1], got {self.max_fraction}")


@dataclasses.dataclass
class Transform:
    """The ``transform:`` section.

    Attributes:
        artifact: Apply this fitted artifact instead of fitting (``--artifact`` overrides).
        fit_on: ``all`` rows, or the name of one split (e.g. ``train``, as TFX does) whose
            rows alone are used to fit; the fitted steps are applied to every split.
        preprocessing_fn: ``package.module:function``, a tf.Transform ``preprocessing_fn``
            run through ``tensorflow_transform.beam`` after the clean steps, instead of
            native ``features`` (see transforms/tft/backend.py). The dataset columns, and
            the label, are then the function's outputs.
    """

    artifact: str | None = None
    fit_on: str = "all"
    preprocessing_fn: str | None = None

    def validate(self) -> None:
        if self.preprocessing_fn is not None and not _FN_REFERENCE.fullmatch(self.preprocessing_fn):
            raise ValueError(
                f"transform.preprocessing_fn must be 'package.module:function', got "
                f"{self.preprocessing_fn!r}"
            )


@dataclasses.dataclass
class Thresholds:
    """Drift and skew thresholds for columns the data schema gives none.

    The defaults are Vertex AI Model Monitoring's, 0.3, as everywhere in beamforge
    (:data:`transforms.validation.schema.DEFAULT_THRESHOLDS`).

    Attributes:
        l_infinity: Largest L-infinity distance between two categorical distributions
            (string, boolean and date columns): the largest difference, over all values, of a
            value's share of rows. 0.1 means no value's share may move by more than 10 points.
        jensen_shannon: Largest Jensen-Shannon divergence (log base 2, in [0, 1]) between two
            numeric columns' histograms.
    """

    l_infinity: Annotated[float, Within(0.0, 1.0, "")] = DEFAULT_THRESHOLDS[L_INFINITY]
    jensen_shannon: Annotated[float, Within(0.0, 1.0, "")] = DEFAULT_THRESHOLDS[JENSEN_SHANNON]


@dataclasses.dataclass
class Validation:
    """The ``validation:`` section: how a run's input statistics are judged.

    Every run writes ``validation.json`` beside its manifest; this section says against what.

    Attributes:
        schema: A data schema file (``beamforge schema infer`` writes one): column types,
            presence, value domains and per-column thresholds. Without it, only drift and
            skew are measured. A relative path is relative to the spec file's folder, so
            the two travel together (``beamforge template build`` publishes it beside the
            job spec).
        baseline: What drift is measured against: a run folder, an output folder (its
            current run) or ``previous``: the run this output's manifest points to when the
            run starts (none on the first run), or, when that run had anomalies against its
            own baseline, that baseline again: data that failed does not become the norm.
            ``--baseline`` overrides it (give the output folder itself to accept its run).
        thresholds: Drift and skew thresholds for columns the schema gives none.
        skew: Pairs of splits whose input distributions are compared, e.g.
            ``[[train, eval]]`` (default: none). Equal-width histograms of heavy-tailed
            columns differ between random splits of the same data (a few outliers set the
            buckets), so split skew is asked for, not measured by default.
    """

    schema: str | None = None
    baseline: str | None = None
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    skew: list[list[str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _RawSpec:
    name: str
    source: Source
    clean: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    features: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    label: Label | None = None
    split: Split = dataclasses.field(default_factory=Split)
    output: Output = dataclasses.field(default_factory=Output)
    errors: Errors = dataclasses.field(default_factory=Errors)
    transform: Transform = dataclasses.field(default_factory=Transform)
    validation: Validation = dataclasses.field(default_factory=Validation)
    dataflow: DataflowSection | None = None
    streaming: StreamingSpec | None = None
    description: str = ""


@dataclasses.dataclass
class JobSpec:
    """A validated job spec.

    Attributes:
        name: Job name (recorded in errors, manifest and artifact).
        source: Where and how to read.
        clean: Cleaning steps in order.
        features: Feature steps in order (the label expression, if any, is the last one).
        label: Label column, if any.
        split: How rows are assigned to splits.
        output: Dataset destination and formats.
        errors: Dead-letter destination.
        transform: Artifact to apply instead of fitting.
        raw: The spec mapping as loaded (hashed into the manifest).
        origin: File the spec came from, for messages.
        dataflow: The ``dataflow:`` section; flags complete it when a job is submitted.
    """

    name: str
    source: Source
    clean: list[Step]
    features: list[Step]
    label: Label | None
    split: Split
    output: Output
    errors: Errors
    transform: Transform
    raw: Mapping[str, Any]
    description: str = ""
    origin: str = "<spec>"
    dataflow: DataflowSection | None = None
    # The ``streaming:`` section, for runs with --streaming.
    streaming: StreamingSpec | None = None
    # The ``validation:`` section: the data schema, baseline and thresholds.
    validation: Validation = dataclasses.field(default_factory=Validation)

    @property
    def steps(self) -> list[Step]:
        return [*self.clean, *self.features]

    def sha256(self) -> str:
        return hashlib.sha256(
            json.dumps(self.raw, sort_keys=True, default=str).encode()
        ).hexdigest()

    def output_columns(self, available: list[str]) -> list[str]:
        """Final dataset columns given the columns present after every step."""
        if self.output.columns is not None:
            return list(self.output.columns)
        if not self.features:
            return [c for c in available if not c.startswith("__")]
        cols: list[str] = []
        for step in self.features:
            for c in step.output_columns():
                if c not in cols:
                    cols.append(c)
        if self.label is not None and self.label.column not in cols:
            cols.append(self.label.column)
        return cols


def _label_step(label: Label) -> Step:
    params: dict[str, Any] = {
        "op": "expression",
        "name": "label",
        "output": label.column,
        "expr": label.expr,
    }
    if label.type is not None:
        params["type"] = label.type
    return build_step(params, "label")


def parse_spec(data: Any, *, origin: str = "<spec>") -> JobSpec:
    """Validates a spec mapping (as loaded from YAML).

    Raises:
        SpecError: with the YAML path of the first problem found.
    """
    try:
        raw = from_mapping(_RawSpec, data, "")
        clean = [build_step(item, f"clean[{i}]") for i, item in enumerate(raw.clean)]
        features = [build_step(item, f"features[{i}]") for i, item in enumerate(raw.features)]
        if raw.label is not None and raw.label.expr is not None:
            features.append(_label_step(raw.label))
        spec = JobSpec(
            name=raw.name,
            source=raw.source,
            clean=clean,
            features=features,
            label=raw.label,
            split=raw.split,
            output=raw.output,
            errors=raw.errors,
            transform=raw.transform,
            raw=data,
            description=raw.description,
            origin=origin,
            dataflow=raw.dataflow,
            streaming=raw.streaming,
            validation=_schema_beside(raw.validation, origin),
        )
        _check_names(spec)
        _check_skew_pairs(spec)
        _check_source_sizes(raw.source)
        if spec.transform.preprocessing_fn is not None:
            _check_preprocessing_fn(raw)
        if spec.transform.fit_on != "all" and spec.transform.fit_on not in spec.split.names:
            raise SpecError(
                "transform.fit_on",
                f"got {spec.transform.fit_on!r}; expected 'all' or a split name: "
                f"{', '.join(spec.split.names)}",
            )
        if spec.source.schema is not None:
            after_steps = check_columns(spec, list(spec.source.schema))
            check_streaming_columns(spec, after_steps)
    except SpecError as exc:
        raise exc.located(origin) from None
    return spec


def _schema_beside(section: Validation, origin: str) -> Validation:
    # A relative schema path is the spec file's neighbour, resolved now so that it is read
    # wherever the run starts (a Flex Template launcher, another working folder).
    if section.schema is None or origin.startswith("<"):
        return section
    return dataclasses.replace(section, schema=beside(origin, section.schema))


def beside(origin: str, path: str) -> str:
    """``path`` as named in the file ``origin``: a relative path is relative to its folder."""
    if "://" in path or os.path.isabs(path):
        return path
    if "://" in origin:
        return f"{origin.rsplit('/', 1)[0]}/{path}"
    return os.path.join(os.path.dirname(os.path.abspath(origin)), path)


def skew_pairs(spec: JobSpec) -> list[tuple[str, str]]:
    """The pairs of splits whose input distributions a run compares."""
    return [(a, b) for a, b in spec.validation.skew]


def _check_skew_pairs(spec: JobSpec) -> None:
    names = spec.split.names
    for i, pair in enumerate(spec.validation.skew):
        key = f"validation.skew[{i}]"
        if len(pair) != 2:
            raise SpecError(key, f"got {pair!r}; expected two split names, e.g. [train, eval]")
        for name in pair:
            if name not in names:
                raise SpecError(key, f"{name!r} is not a split; the splits are {', '.join(names)}")
        if pair[0] == pair[1]:
            raise SpecError(key, f"compares split {pair[0]!r} with itself")


def load_spec(path: str) -> JobSpec:
    """Reads and validates a YAML spec from a local path or gs:// URI.

    Raises:
        SpecError: for invalid YAML (a key given twice included) or an invalid spec, naming
            the file.
        transforms.core.errors.InputError: if the file does not exist, is a directory or cannot
            be read as UTF-8 text.
    """
    return parse_spec(load_yaml(path, what="spec file"), origin=path)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives a key twice.

    An integer too long for Python's int is kept as its text (the spec check then refuses it
    at its key).

    PyYAML keeps the last of repeated keys silently: ``{train: 0.5, train: 0.3}`` would load
    as one split and fail with a misleading message, or not fail at all.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key; the constructor below names it
            break
        if repeated:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found the key {key!r} twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        # Past Python's limit of digits for an int: kept as text, so the check of the key
        # it is the value of names that key ("got '9999...'; expected a number").
        return loader.construct_scalar(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(path: str, *, what: str = "file") -> Any:
    """Reads a YAML document from a local path or gs:// URI, refusing repeated keys.

    Args:
        path: The file.
        what: What the file is, for messages (``spec file``).

    Raises:
        SpecError: for text that is not valid YAML, naming the file and the line.
        transforms.core.errors.InputError: if the file does not exist, is a directory or cannot
            be read as UTF-8 text.
    """
    import os

    from apache_beam.io.filesystems import FileSystems

    if "://" not in path and os.path.isdir(path):
        raise InputError(path, f"is a directory; expected a YAML {what}")
    if not FileSystems.exists(path):
        raise InputError(path, f"{what} not found")
    try:
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            path, f"is not UTF-8 text (byte {exc.start}); expected a YAML {what}"
        ) from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
    return parse_yaml(text, source=path)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parses YAML text, refusing repeated keys.

    Raises:
        SpecError: for text that is not valid YAML, naming ``source`` and the line.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError("", f"not valid YAML: {_yaml_problem(exc)}", source=source) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own text spans several lines with carets; messages here are one line.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
    return " ".join(str(exc).split())


def _check_source_sizes(source: Source) -> None:
    # transforms.io.read.Source checks signs; the limits that protect memory are the spec's.
    check_within(
        source.batch_size,
        Within(1, MAX_BATCH_ROWS, "rows per record batch held in memory"),
        "source.batch_size",
    )
    if source.split_bytes != 0:
        check_within(
            source.split_bytes,
            Within(MIN_SPLIT_BYTES, None, "0 never splits; smaller ranges only add overhead"),
            "source.split_bytes",
        )


def _check_preprocessing_fn(raw: _RawSpec) -> None:
    # The function computes every feature and the label, so native ones would be ambiguous.
    if raw.features:
        raise SpecError(
            "transform.preprocessing_fn",
            "a spec with a preprocessing_fn computes its features there; remove 'features' "
            "or remove transform.preprocessing_fn",
        )
    if raw.label is not None and (raw.label.expr is not None or raw.label.type is not None):
        raise SpecError(
            "label",
            "with transform.preprocessing_fn the label is one of the function's outputs; "
            "give only label.column",
        )


def _check_names(spec: JobSpec) -> None:
    seen: dict[str, str] = {}
    for section, steps in (("clean", spec.clean), ("features", spec.features)):
        for i, step in enumerate(steps):
            where = f"{section}[{i}]" if step.name != "label" else "label"
            if step.name in seen:
                raise SpecError(
                    f"{where}.name",
                    f"step name {step.name!r} is already used by {seen[step.name]}; give one a distinct 'name'",
                )
            seen[step.name] = where


def check_columns(spec: JobSpec, columns: list[str]) -> list[str]:
    """Checks every column reference against the columns available at that point.

    Args:
        spec: The spec.
        columns: Source columns.

    Returns:
        The columns available after every step.

    Raises:
        SpecError: naming the step and the unknown column, listing the available ones.
    """
    available = list(columns)
    # Which step produced each column: a later step that writes it again without reading it
    # would silently replace the first one's feature.
    produced: dict[str, str] = {}
    for section, steps in (("clean", spec.clean), ("features", spec.features)):
        for i, step in enumerate(steps):
            where = f"{section}[{i}]" if step.name != "label" else "label.expr"
            for col in step.input_columns():
                if col not in available:
                    raise SpecError(
                        where,
                        f"step {step.name!r} reads unknown column {col!r}; available columns are "
                        f"{', '.join(available)}",
                    )
            for col in step.removed_columns():
                available.remove(col)
                produced.pop(col, None)
            for col in step.output_columns():
                if col in produced and col not in step.input_columns():
                    raise SpecError(
                        where,
                        f"step {step.name!r} writes column {col!r}, which step "
                        f"{produced[col]!r} already wrote; give it another output name",
                    )
                produced[col] = step.name
                if col not in available:
                    available.append(col)
    # With a preprocessing_fn the label and output columns are the function's outputs, known
    # only once it is traced (beam_pipelines.dataset.plan checks them).
    fn_outputs = spec.transform.preprocessing_fn is not None
    if spec.label is not None and not fn_outputs and spec.label.column not in available:
        raise SpecError(
            "label.column",
            f"label column {spec.label.column!r} does not exist; add label.expr or use one of {', '.join(available)}",
        )
    for col in spec.split.input_columns():
        if col not in columns:
            # Splits are computed on the row as read, so a transform cannot move a row.
            raise SpecError(
                "split",
                f"split column {col!r} is not a source column; source columns are {', '.join(columns)}",
            )
    for col in [] if fn_outputs else spec.output.columns or []:
        if col not in available:
            raise SpecError(
                "output.columns",
                f"unknown column {col!r}; available columns are {', '.join(available)}",
            )
    return available


def schema_mapping(schema: pa.Schema) -> dict[str, str]:
    """``{column: spec type name}`` for the visible columns of a schema."""
    return {f.name: type_name(f.type) for f in schema if not f.name.startswith("__")}
