"""Serving-time preprocessing: replay a transform artifact on raw rows or batches.

The :class:`Preprocessor` applies exactly the steps and fitted parameters a dataset run used
(:func:`transforms.core.batch_steps.apply_steps`), so training and serving see the same features. It is
plain Python, pyarrow and NumPy: no Beam pipeline and no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from transforms.core.artifact import PREPROCESSING_FN_KEY, Artifact, ArtifactError, read_artifact
from transforms.core.batch_steps import apply_steps, row_source, visible_row
from transforms.core.dataset_folder import resolve_artifact_dir
from transforms.core.errors import ErrorRecord, row_payload
from transforms.core.schema import HIDDEN_PREFIX, arrow_schema
from transforms.core.steps import Step
from transforms.core.values import (
    Rejection,
    convert_batch,
    convert_values,
    describe,
    rejected_mask,
)
from transforms.ops.registry import build_step

INPUT_STEP = "input"


@dataclasses.dataclass
class Preprocessor:
    """Applies a fitted artifact to raw data.

    Build one with :meth:`load` (from an artifact directory) or from an :class:`Artifact`.
    Barrier steps (deduplication) are skipped: they regroup a whole data set and mean
    nothing for single requests.
    """

    artifact: Artifact
    steps: list[Step] = dataclasses.field(init=False)
    input_schema: pa.Schema = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        _refuse_preprocessing_fn(self.artifact, "the artifact directory")
        self.steps = [s for s in self.artifact.build_steps(build_step) if not s.is_barrier]
        self.input_schema = arrow_schema(self.artifact.input_schema)

    @classmethod
    def load(cls, directory: str) -> Preprocessor:
        """Reads and verifies the artifact under ``directory`` (local or gs://).

        ``directory`` may be a dataset folder: its manifest names the artifact.

        Raises:
            ArtifactError: for an artifact that cannot be read, or one fitted by a
                ``preprocessing_fn`` (served by tf.Transform's own layer, not replayed here).
        """
        artifact = read_artifact(directory, build_step)
        _refuse_preprocessing_fn(artifact, resolve_artifact_dir(directory))
        return cls(artifact)

    @property
    def output_columns(self) -> list[str]:
        return list(self.artifact.output_columns)

    def transform_batch(
        self, data: pa.RecordBatch | pa.Table
    ) -> tuple[pa.RecordBatch, list[ErrorRecord]]:
        """Transforms a batch that already has the input schema's columns.

        Columns are converted to the input schema's types by the readers' rule
        (:func:`transforms.core.values.convert_array`: string columns are parsed as CSV fields
        are, typed ones cast when no value is lost, non-finite floats rejected outside the
        artifact's ``allow_non_finite``); a value that does not convert rejects its row.
        Missing input columns are taken as all null; extra columns are ignored unless hidden
        (``__file``/``__line``, used for error sources).

        Returns:
            The output columns of the surviving rows, and one error record per rejected row.
        """
        batch = _as_batch(data)
        batch, errors = self._conform(batch)
        applied = apply_steps(
            batch, self.steps, self.artifact.fitted, pipeline=self.artifact.pipeline
        )
        return _select(applied.batch, self.output_columns), errors + applied.errors

    def transform_rows(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[ErrorRecord]]:
        """Transforms raw rows (dicts of JSON-like values), e.g. a prediction request.

        Values are accepted exactly as the dataset's readers accept them
        (:mod:`transforms.core.values`): JSON-typed values as the JSONL reader does (``3.7`` is
        not an int64), strings for a non-text column as the CSV reader parses its fields,
        and a NaN or infinite float only in the artifact's ``allow_non_finite`` columns.
        A value the column cannot take rejects its row with an error record naming the key
        (reason ``unparseable_value`` or ``non_finite``). Missing keys are null; unknown
        keys are ignored.

        Returns:
            The output rows (dicts in ``output_columns`` order), and the error records.
        """
        allowed = set(self.artifact.allow_non_finite)
        columns: dict[str, pa.Array] = {}
        problems: dict[int, list[tuple[str, Rejection]]] = {}
        for field in self.input_schema:
            converted = convert_values(
                [row.get(field.name) for row in rows],
                field.type,
                allow_non_finite=field.name in allowed,
                strings_as_text=True,
                binary_base64=True,
            )
            columns[field.name] = converted.array
            for i, rejection in converted.rejected.items():
                problems.setdefault(i, []).append((field.name, rejection))
        errors = [
            _input_error(self.artifact.pipeline, problems[i], row_payload(dict(rows[i])), "")
            for i in sorted(problems)
        ]
        batch = pa.RecordBatch.from_pydict(columns, schema=self.input_schema)
        if problems:
            batch = batch.filter(pa.array(~rejected_mask(len(rows), problems)))
        out, more = self.transform_batch(batch)
        return out.to_pylist(), errors + more

    def _conform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[ErrorRecord]]:
        converted, problems = convert_batch(
            batch, self.input_schema, allow_non_finite=self.artifact.allow_non_finite
        )
        arrays = [c.combine_chunks() for c in converted.columns]
        fields = list(self.input_schema)
        names = batch.schema.names
        for name in names:
            if name.startswith(HIDDEN_PREFIX):
                arrays.append(batch.column(names.index(name)))
                fields.append(batch.schema.field(name))
        conformed = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        if not problems:
            return conformed, []
        errors = [
            _input_error(
                self.artifact.pipeline,
                problems[i],
                row_payload(visible_row(batch, i)),
                row_source(batch, i),
            )
            for i in sorted(problems)
        ]
        return conformed.filter(pa.array(~rejected_mask(batch.num_rows, problems))), errors


def _input_error(
    pipeline: str, rejected: list[tuple[str, Rejection]], payload: str, source: str
) -> ErrorRecord:
    reason, message = describe(rejected, prefix="key")
    return ErrorRecord(
        pipeline=pipeline,
        step=INPUT_STEP,
        reason=reason,
        message=message,
        payload=payload,
        source=source,
    )


def _as_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    if isinstance(data, pa.Table):
        return (
            data.combine_chunks().to_batches()[0]
            if data.num_rows
            else pa.RecordBatch.from_pylist([], schema=data.schema)
        )
    return data


def _select(batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    missing = [c for c in columns if c not in batch.schema.names]
    if missing:
        raise ValueError(
            f"output columns {missing} are not produced by the artifact's steps; "
            f"the batch has {batch.schema.names}"
        )
    return batch.select(columns)


def _refuse_preprocessing_fn(artifact: Artifact, directory: str) -> None:
    # A run through tf.Transform records only its clean steps here; the features are in the
    # transform_fn SavedModel, which only TensorFlow can replay. Refused at load, not on
    # the first request.
    backend = artifact.fitted.get(PREPROCESSING_FN_KEY)
    if not isinstance(backend, Mapping):
        return
    saved_model = f"{directory.rstrip('/')}/{backend.get('transform_fn', 'transform_fn_dir')}"
    raise ArtifactError(
        f"{directory}: fitted by preprocessing_fn {backend.get('preprocessing_fn')!r} through "
        "tf.Transform; the Preprocessor replays native steps only: serve it with "
        f"tft.TFTransformOutput({saved_model!r}).transform_features_layer()"
    )
