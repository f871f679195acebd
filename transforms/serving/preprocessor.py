"""Serving-time preprocessing: replay a transform artifact on raw rows or batches.

The :class:`Preprocessor` applies exactly the steps and fitted parameters a dataset run used
(:func:`transforms.core.batch_steps.apply_steps`), so training and serving see the same features. It is
plain Python, pyarrow and NumPy: no Beam pipeline and no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
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
from transforms.serving.columns import (
    Column,
    UnsupportedError,
    convert_columns,
    from_arrow,
    supported,
)
from transforms.serving.plan import Plan, compile_plan

INPUT_STEP = "input"

# Arrow batches up to this many rows go through the compiled plan; larger ones through the
# steps' own Arrow functions, which cost less per row once the per-call overhead is paid
# (measured crossover on the taxi artifact: between 4,000 and 8,000 rows).
PLANNED_BATCH_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class Served:
    """What :meth:`Preprocessor.transform_instances` gives for a list of rows.

    Attributes:
        rows: The output rows (dicts in ``output_columns`` order), in input order.
        errors: One error record per rejected row: input errors first, then each step's.
        row_index: The input index of each output row.
        error_index: The input index of each error record's row.
    """

    rows: list[dict[str, Any]]
    errors: list[ErrorRecord]
    row_index: list[int]
    error_index: list[int]

    def dropped(self, size: int) -> list[int]:
        """Input indexes of the rows a filter step dropped on purpose (of ``size`` rows)."""
        seen = set(self.row_index) | set(self.error_index)
        return [i for i in range(size) if i not in seen]


@dataclasses.dataclass
class Preprocessor:
    """Applies a fitted artifact to raw data.

    Build one with :meth:`load` (from an artifact directory) or from an :class:`Artifact`;
    ``compiled=False`` serves rows through the batch path only (what the compiled plan is
    checked against).
    Barrier steps (deduplication) are skipped: they regroup a whole data set and mean
    nothing for single requests.
    """

    artifact: Artifact
    compiled: bool = True
    steps: list[Step] = dataclasses.field(init=False)
    input_schema: pa.Schema = dataclasses.field(init=False)
    plan: Plan | None = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        _refuse_preprocessing_fn(self.artifact, "the artifact directory")
        self.steps = [s for s in self.artifact.build_steps(build_step) if not s.is_barrier]
        self.input_schema = arrow_schema(self.artifact.input_schema)
        # Compiled once: request rows run through NumPy column functions (the plan) when
        # every input column's type is one it takes; other artifacts use the general path.
        self.plan = (
            compile_plan(self.steps, self.artifact.fitted)
            if self.compiled and all(supported(f.type) for f in self.input_schema)
            else None
        )
        self._allowed = frozenset(self.artifact.allow_non_finite)
        self._outputs = list(self.artifact.output_columns)

    @classmethod
    def load(cls, directory: str, *, compiled: bool = True) -> Preprocessor:
        """Reads and verifies the artifact under ``directory`` (local or gs://).

        ``directory`` may be a dataset folder: its manifest names the artifact.

        Raises:
            ArtifactError: for an artifact that cannot be read, or one fitted by a
                ``preprocessing_fn`` (served by tf.Transform's own layer, not replayed here).
        """
        artifact = read_artifact(directory, build_step)
        _refuse_preprocessing_fn(artifact, resolve_artifact_dir(directory))
        return cls(artifact, compiled)

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
        (``__file``/``__line``, used for error sources). Batches of up to
        ``PLANNED_BATCH_ROWS`` rows run through the compiled plan, larger ones through the
        steps' own Arrow functions; both give the same batch and error records.

        Returns:
            The output columns of the surviving rows, and one error record per rejected row.
        """
        batch = _as_batch(data)
        batch, errors = self._conform(batch)
        if self.plan is not None and batch.num_rows <= PLANNED_BATCH_ROWS:
            try:
                return self._planned_batch(batch, self.plan, errors)
            except UnsupportedError:
                pass
        applied = apply_steps(
            batch, self.steps, self.artifact.fitted, pipeline=self.artifact.pipeline
        )
        return _select(applied.batch, self.output_columns), errors + applied.errors

    def _planned_batch(
        self, batch: pa.RecordBatch, plan: Plan, errors: list[ErrorRecord]
    ) -> tuple[pa.RecordBatch, list[ErrorRecord]]:
        """The plan over a conformed batch; error records as :func:`apply_steps` makes them."""
        names = batch.schema.names
        columns = {f.name: from_arrow(batch.column(names.index(f.name))) for f in self.input_schema}
        columns, _, refused = _run_plan(
            plan,
            columns,
            lambda original: row_payload(visible_row(batch, original)),
            lambda original: row_source(batch, original),
            self.artifact.pipeline,
        )
        arrays = [_output(columns, name).to_arrow() for name in self._outputs]
        out = pa.RecordBatch.from_arrays(arrays, names=self._outputs)
        return out, errors + [error for _, error in refused]

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

        The artifact's steps run as a compiled plan of NumPy column functions
        (:mod:`transforms.serving.plan`) with the same results as the batch path
        (:meth:`transform_batch`), which rows of a type the plan does not take go through.

        Returns:
            The output rows (dicts in ``output_columns`` order), and the error records.
        """
        served = self.transform_instances(rows)
        return served.rows, served.errors

    def transform_instances(self, rows: Sequence[Mapping[str, Any]]) -> Served:
        """:meth:`transform_rows`, also saying which input row each output and error is.

        A prediction server answers every instance in place: with its features, its error,
        or as dropped (:meth:`Served.dropped`).
        """
        if self.plan is not None:
            try:
                return self._planned(rows, self.plan)
            except UnsupportedError:
                pass
        return self._general(rows)

    def _planned(self, rows: Sequence[Mapping[str, Any]], plan: Plan) -> Served:
        size = len(rows)
        columns: dict[str, Column] = {}
        problems: dict[int, list[tuple[str, Rejection]]] = {}
        converted = convert_columns(self._by_key(rows), list(self.input_schema), self._allowed)
        for field, (column, rejected) in zip(self.input_schema, converted, strict=True):
            columns[field.name] = column
            for i, rejection in rejected.items():
                problems.setdefault(i, []).append((field.name, rejection))
        pipeline = self.artifact.pipeline
        error_index = sorted(problems)
        errors = [
            _input_error(pipeline, problems[i], row_payload(dict(rows[i])), "") for i in error_index
        ]
        index = np.arange(size)
        if problems:
            keep = ~rejected_mask(size, problems)
            columns = {name: c.take(keep) for name, c in columns.items()}
            index = index[keep]
        raw = dict(columns)

        def payload(original: int) -> str:
            return row_payload({name: c.to_list_at(original) for name, c in raw.items()})

        columns, at, refused = _run_plan(plan, columns, payload, lambda original: "", pipeline)
        errors += [error for _, error in refused]
        error_index += [int(index[original]) for original, _ in refused]
        values = [_output(columns, name).to_list() for name in self._outputs]
        names = self._outputs
        out = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        if not values:
            out = [{} for _ in at]
        return Served(out, errors, index[at].tolist(), error_index)

    def _by_key(self, rows: Sequence[Mapping[str, Any]]) -> list[Sequence[Any]]:
        """Each input column's values (None where a row lacks the key), in schema order."""
        names = self.input_schema.names
        if rows and len(names) > 1 and set(map(type, rows)) == {dict}:
            try:
                # One C-level pass when every row is a plain dict holding every key.
                return list(zip(*map(operator.itemgetter(*names), rows), strict=True))
            except KeyError:
                pass
        return [[row.get(name) for row in rows] for name in names]

    def _general(self, rows: Sequence[Mapping[str, Any]]) -> Served:
        """The batch path over a whole call; indexes by redoing rows one by one if needed."""
        out, errors = self._general_rows(rows)
        if not errors and len(out) == len(rows):
            return Served(out, errors, list(range(len(rows))), [])
        row_index: list[int] = []
        by_record: dict[tuple[str, str, str, str], list[int]] = {}
        for i, row in enumerate(rows):
            one, failed = self._general_rows([row])
            row_index.extend([i] * len(one))
            for e in failed:
                by_record.setdefault(_key(e), []).append(i)
        error_index = [by_record[_key(e)].pop(0) for e in errors]
        return Served(out, errors, row_index, error_index)

    def _general_rows(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[ErrorRecord]]:
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


def _run_plan(
    plan: Plan,
    columns: dict[str, Column],
    payload: Callable[[int], str],
    source: Callable[[int], str],
    pipeline: str,
) -> tuple[dict[str, Column], np.ndarray, list[tuple[int, ErrorRecord]]]:
    """Runs the plan's steps, removing the rows each refuses, as :func:`apply_steps` does.

    Returns:
        The columns of the surviving rows, the position in the input of each, and one
        ``(input position, error record)`` per rejected row, in :func:`apply_steps`' order.
    """
    at = np.arange(len(next(iter(columns.values())).values) if columns else 0)
    refused_rows: list[tuple[int, ErrorRecord]] = []
    for step in plan.steps:
        refusals = step.run(columns)
        if not refusals:
            continue
        refused = np.zeros(len(at), dtype=bool)
        for refusal in refusals:
            mask = refusal.mask & ~refused
            hit = np.flatnonzero(mask)
            if not len(hit):
                continue
            refused |= mask
            if refusal.kind != "rejected":
                continue
            for local in hit.tolist():
                original = int(at[local])
                record = ErrorRecord(
                    pipeline=pipeline,
                    step=step.name,
                    reason=refusal.reason,
                    message=refusal.messages[local],
                    payload=payload(original),
                    source=source(original),
                )
                refused_rows.append((original, record))
        if refused.any():
            keep = ~refused
            columns = {name: c.take(keep) for name, c in columns.items()}
            at = at[keep]
    return columns, at, refused_rows


def _output(columns: Mapping[str, Column], name: str) -> Column:
    column = columns.get(name)
    if column is None:
        # The batch path names the missing columns.
        raise UnsupportedError(f"no output column {name!r}")
    return column


def _key(error: ErrorRecord) -> tuple[str, str, str, str]:
    return (error.step, error.reason, error.message, error.payload)


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
