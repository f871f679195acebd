"""The plan of a scoring run: model, input, keys, output and layout, resolved before any work.

Output layout under the output folder (local path or gs://; :mod:`transforms.io.commit`, as
dataset runs commit)::

    manifest.json        the commit marker: names the run folder and lists every file
    _lock.json           while a run writes
    run-YYYYMMDDTHHMMSSZ-XXXXXXXX/
        predictions/part-SSSSS-of-NNNNN.{parquet,jsonl}   (not with a BigQuery output)
        errors/errors-SSSSS-of-NNNNN.jsonl

With a BigQuery output (``bq://project.dataset.table``) the rows go to a staging table
``{table}__{run id}`` while the run writes and move into the table (replacing its rows) just
before the manifest is published; the folder keeps the errors and the manifest.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Literal

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.predict.model import (
    ARTIFACT_DIR,
    MODEL_FILE,
    PROBABILITY,
    check_model_dir,
    load_bundle,
)
from beam_pipelines.predict.scoring import DEFAULT_KEYS, key_fields, prediction_schema
from transforms.core import schema as schema_lib
from transforms.core.artifact import Artifact, read_artifact
from transforms.core.errors import InputError
from transforms.io import commit as commit_lib
from transforms.io.bigquery import BigQuerySource, TableRef, parse_table, source_schema
from transforms.io.gcs import check_gcs_paths
from transforms.io.read import Source, expand_paths, resolve_schema
from transforms.ops.registry import build_step

__all__ = [
    "BQ_SCHEME",
    "FORMATS",
    "OutputFormat",
    "PredictInputError",
    "PredictPlan",
    "parse_bigquery",
    "plan_predict",
]

BQ_SCHEME = "bq://"
FORMATS = ("parquet", "jsonl")
OutputFormat = Literal["parquet", "jsonl"]
# Input formats recognised by file name when no source section is given.
_BY_EXTENSION = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


class PredictInputError(InputError):
    """An input of a scoring run cannot be used (the message names it and the fix)."""


@dataclasses.dataclass
class PredictPlan:
    """Everything a scoring run decided before the pipeline exists.

    Attributes:
        model_dir: The model directory (``model.joblib`` and ``artifact/``).
        artifact: Its transform artifact.
        label: The model's label column name.
        source: The file source (format, CSV layout, paths), or None for BigQuery input.
        bigquery: The BigQuery input table, or None for files.
        input_files: The files read (empty for BigQuery).
        input_schema: The columns read, with their types.
        keys: ``{input column: output name}`` of the key columns, in order.
        schema: The predictions' Arrow schema (keys, label, probability).
        output: The output folder (manifest, run folders).
        output_format: ``parquet`` or ``jsonl`` (files output).
        table: The BigQuery output table, or None.
        run_id: This run's id.
        commit: The run's hold on the output (taken by the runner; None in a dry run).
    """

    model_dir: str
    artifact: Artifact
    label: str
    source: Source | None
    bigquery: BigQuerySource | None
    input_files: list[str]
    input_schema: pa.Schema
    keys: dict[str, str]
    schema: pa.Schema
    output: str
    output_format: OutputFormat
    table: TableRef | None
    run_id: str
    commit: commit_lib.OutputCommit | None = None

    @property
    def pipeline(self) -> str:
        """The name error records carry: the pipeline that fitted the artifact."""
        return self.artifact.pipeline

    @property
    def root(self) -> str:
        """This run's folder."""
        return FileSystems.join(self.output, self.run_id)

    @property
    def predictions_prefix(self) -> str:
        return FileSystems.join(self.root, "predictions", "part")

    @property
    def errors(self) -> str:
        return FileSystems.join(self.root, "errors")

    @property
    def manifest(self) -> str:
        return FileSystems.join(self.output, commit_lib.MANIFEST)

    @property
    def staging_table(self) -> TableRef | None:
        """The table a BigQuery output's rows go to until the commit."""
        if self.table is None:
            return None
        return self.table.with_table(f"{self.table.table}__{self.run_id.replace('-', '_')}")


def parse_bigquery(location: str) -> TableRef | None:
    """The table of a ``bq://project.dataset.table`` location; None for a path.

    Raises:
        PredictInputError: for a malformed table reference.
    """
    if not location.startswith(BQ_SCHEME):
        return None
    try:
        return parse_table(location[len(BQ_SCHEME) :])
    except ValueError as exc:
        raise PredictInputError(location, str(exc)) from None


def plan_predict(
    model_dir: str,
    inputs: Sequence[str],
    output: str,
    *,
    source: Source | None = None,
    keys: Sequence[str] = (),
    output_format: OutputFormat = "parquet",
    run_folder: str | None = None,
) -> PredictPlan:
    """Resolves the model, the input, the keys and the output before any data is read.

    See :func:`beam_pipelines.predict.run_predict` for the arguments.

    Raises:
        PredictInputError: for a missing model, input or key, or an output that cannot be.
        ArtifactError: for a transform artifact that cannot be read.
    """
    if output_format not in FORMATS:
        raise PredictInputError("--format", f"got {output_format!r}; expected one of {FORMATS}")
    if not inputs:
        raise PredictInputError("--input", "no input: give files, globs or bq://TABLE")
    check_gcs_paths([model_dir])
    check_model_dir(model_dir)
    bundle = load_bundle(model_dir)
    artifact = read_artifact(FileSystems.join(model_dir, ARTIFACT_DIR), build_step)
    _check_features(model_dir, bundle.features, artifact)
    table = parse_bigquery(output)
    folder = run_folder if table is not None else output
    if not folder:
        raise PredictInputError(
            output,
            "a BigQuery output needs a folder for the errors and the manifest (--errors DIR)",
        )
    folder = _absolute(folder)
    check_gcs_paths([folder])
    # A dataset's folder is refused before the inputs are read (a dry run included).
    commit_lib.check_output_kind(folder, commit_lib.PREDICTIONS)
    in_table = parse_bigquery(inputs[0])
    bigquery = files_source = None
    files: list[str] = []
    if in_table is not None:
        if len(inputs) > 1:
            raise PredictInputError("--input", "a BigQuery input is one table, not several inputs")
        bigquery = BigQuerySource(table=str(in_table))
        try:
            schema = schema_lib.with_source_columns(source_schema(bigquery))
        except ValueError as exc:
            raise PredictInputError(inputs[0], str(exc)) from None
    else:
        check_gcs_paths(inputs)
        files = expand_paths(list(inputs))
        files_source = _file_source(source, artifact, list(inputs), files)
        schema = schema_lib.with_source_columns(resolve_schema(files_source, files))
    wanted = _keys(keys, schema, bundle.label)
    return PredictPlan(
        model_dir=model_dir,
        artifact=artifact,
        label=bundle.label,
        source=files_source,
        bigquery=bigquery,
        input_files=files,
        input_schema=schema,
        keys=wanted,
        schema=prediction_schema(key_fields(schema, wanted), bundle.label),
        output=folder,
        output_format=output_format,
        table=table,
        run_id=commit_lib.new_run_id(),
    )


def _check_features(model_dir: str, features: Sequence[str], artifact: Artifact) -> None:
    """Every feature the model was fitted on must be a column the artifact outputs.

    Raises:
        PredictInputError: naming the first missing feature and the artifact's outputs.
    """
    outputs = artifact.output_columns
    for feature in features:
        if feature not in outputs:
            raise PredictInputError(
                FileSystems.join(model_dir, MODEL_FILE),
                f"feature {feature!r} is not an output of the transform artifact "
                f"(outputs: {', '.join(outputs)})",
            )


def _file_source(
    source: Source | None, artifact: Artifact, patterns: list[str], files: list[str]
) -> Source:
    """The dataset spec's source on these paths; else one from the artifact's input schema."""
    if source is not None:
        return dataclasses.replace(source, path=patterns, bigquery=None)
    ext = os.path.splitext(files[0].removesuffix(".gz"))[1].lower()
    fmt = _BY_EXTENSION.get(ext)
    if fmt is None:
        raise PredictInputError(
            files[0],
            f"cannot tell the format from the name; use one of {', '.join(_BY_EXTENSION)} or "
            "score through a chain whose dataset spec names the source format",
        )
    return Source(
        format=fmt,  # type: ignore[arg-type]
        path=patterns,
        schema=dict(artifact.input_schema),
        allow_non_finite=list(artifact.allow_non_finite),
    )


def _keys(keys: Sequence[str], schema: pa.Schema, label: str) -> dict[str, str]:
    if not keys:
        return dict(DEFAULT_KEYS)
    names = schema_lib.visible(schema).names
    out: dict[str, str] = {}
    for key in keys:
        if key not in names:
            raise PredictInputError(
                f"--key {key}", f"no such input column; the input has {', '.join(names)}"
            )
        if key in (label, PROBABILITY):
            raise PredictInputError(
                f"--key {key}", f"{key} is a prediction column; choose another key column"
            )
        if key in out:
            raise PredictInputError(f"--key {key}", "given twice")
        out[key] = key
    return out


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)
