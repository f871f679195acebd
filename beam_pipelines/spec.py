"""The job spec: one YAML file describing a training-dataset job, validated on load.

Everything that can be checked before work starts is checked here: unknown keys, wrong
types, unknown ops, step parameters and column references (each step's input columns must
exist at that point of the step list). Errors name the YAML path, the offending value and
what is valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
import yaml

from transforms.bigquery import BigQuerySink, parse_table
from transforms.config import SpecError, from_mapping
from transforms.read import Source
from transforms.schema import parse_type, type_name
from transforms.split import Split
from transforms.steps import Step, build_step

FORMATS = ("parquet", "tfrecord", "csv", "jsonl")
# ``package.module:function``: dotted identifiers, a colon, one identifier.
_FN_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclasses.dataclass
class Label:
    """The ``label:`` section: the label column, optionally computed by an expression.

    Attributes:
        column: Name of the label column in the dataset.
        expr: Expression computing it (see transforms/expressions.py); None if the column
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
            :class:`transforms.bigquery.BigQuerySink`).
    """

    path: str = ""
    formats: list[Literal["parquet", "tfrecord", "csv", "jsonl"]] = dataclasses.field(
        default_factory=lambda: ["parquet"]
    )
    num_shards: int = 0
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
            native ``features`` (see transforms/tft_backend.py). The dataset columns, and
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
    dataflow: dict[str, Any] | None = None
    # Validated by beam_pipelines.streaming when the job runs with --streaming.
    streaming: dict[str, Any] | None = None
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
    # The ``dataflow:`` section as written; launchers.dataflow validates it.
    dataflow: Mapping[str, Any] | None = None

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
        )
        _check_names(spec)
        if spec.transform.preprocessing_fn is not None:
            _check_preprocessing_fn(raw)
        if spec.transform.fit_on != "all" and spec.transform.fit_on not in spec.split.names:
            raise SpecError(
                "transform.fit_on",
                f"got {spec.transform.fit_on!r}; expected 'all' or a split name: "
                f"{', '.join(spec.split.names)}",
            )
        if spec.source.schema is not None:
            check_columns(spec, list(spec.source.schema))
    except SpecError as exc:
        raise exc.located(origin) from None
    return spec


def load_spec(path: str) -> JobSpec:
    """Reads and validates a YAML spec from a local path or gs:// URI.

    Raises:
        SpecError: for invalid YAML or an invalid spec, naming the file.
        FileNotFoundError: if the file does not exist.
    """
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"spec file not found: {path}")
    with FileSystems.open(path) as f:
        text = f.read().decode("utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("", f"not valid YAML: {exc}", source=path) from None
    return parse_spec(data, origin=path)


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
            for col in step.output_columns():
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
