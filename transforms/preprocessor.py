"""Serving-time preprocessing: replay a transform artifact on raw rows or batches.

The :class:`Preprocessor` applies exactly the steps and fitted parameters a dataset run used
(:func:`transforms.engine.apply_steps`), so training and serving see the same features. It is
plain Python, pyarrow and NumPy: no Beam pipeline and no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from transforms.artifact import Artifact, read_artifact
from transforms.engine import apply_steps, row_source, visible_row
from transforms.errors import UNPARSEABLE_VALUE, ErrorRecord, row_payload
from transforms.expressions import checked_cast
from transforms.schema import HIDDEN_PREFIX, arrow_schema, type_name
from transforms.steps import Step

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
        self.steps = [s for s in self.artifact.build_steps() if not s.is_barrier]
        self.input_schema = arrow_schema(self.artifact.input_schema)

    @classmethod
    def load(cls, directory: str) -> Preprocessor:
        """Reads and verifies the artifact under ``directory`` (local or gs://)."""
        return cls(read_artifact(directory))

    @property
    def output_columns(self) -> list[str]:
        return list(self.artifact.output_columns)

    def transform_batch(
        self, data: pa.RecordBatch | pa.Table
    ) -> tuple[pa.RecordBatch, list[ErrorRecord]]:
        """Transforms a batch that already has the input schema's columns.

        Columns are cast to the input schema's types (a value that does not cast rejects its
        row); missing input columns are taken as all null; extra columns are ignored unless
        hidden (``__file``/``__line``, used for error sources).

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

        Missing keys are null; values are converted to their column's type (strings holding
        numbers included); a value that does not convert rejects the row with an error record naming the key (reason ``unparseable_value``); unknown keys
        are ignored.

        Returns:
            The output rows (dicts in ``output_columns`` order), and the error records.
        """
        columns: dict[str, pa.Array] = {}
        bad = np.zeros(len(rows), dtype=bool)
        messages = np.full(len(rows), "", dtype=object)
        for field in self.input_schema:
            raw = [row.get(field.name) for row in rows]
            try:
                columns[field.name] = pa.array(raw, field.type)
                continue
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                pass
            # Slow path, only for requests with a bad value: convert row by row.
            values = []
            for i, value in enumerate(raw):
                try:
                    values.append(_convert(value, field.type))
                except (pa.ArrowException, TypeError, ValueError, OverflowError):
                    values.append(None)
                    if not bad[i]:
                        messages[i] = (
                            f"key {field.name!r}: {value!r} is not a valid {type_name(field.type)}"
                        )
                    bad[i] = True
            columns[field.name] = pa.array(values, field.type)
        errors = [
            ErrorRecord(
                pipeline=self.artifact.pipeline,
                step=INPUT_STEP,
                reason=UNPARSEABLE_VALUE,
                message=str(messages[int(i)]),
                payload=row_payload(dict(rows[int(i)])),
                source="",
            )
            for i in np.flatnonzero(bad)
        ]
        batch = pa.RecordBatch.from_pydict(columns, schema=self.input_schema)
        if bad.any():
            batch = batch.filter(pa.array(~bad))
        out, more = self.transform_batch(batch)
        return out.to_pylist(), errors + more

    def _conform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[ErrorRecord]]:
        arrays: list[pa.Array] = []
        fields: list[pa.Field] = []
        bad = np.zeros(batch.num_rows, dtype=bool)
        messages = np.full(batch.num_rows, "", dtype=object)
        names = batch.schema.names
        for field in self.input_schema:
            if field.name not in names:
                arrays.append(pa.nulls(batch.num_rows, field.type))
            else:
                values = batch.column(names.index(field.name))
                cast, failed = checked_cast(values, field.type)
                if failed.any():
                    shown = values.to_pylist()
                    for i in np.flatnonzero(failed & ~bad):
                        messages[i] = (
                            f"key {field.name!r}: {shown[i]!r} is not a valid {type_name(field.type)}"
                        )
                    bad |= failed
                arrays.append(cast)
            fields.append(field)
        for name in names:
            if name.startswith(HIDDEN_PREFIX):
                arrays.append(batch.column(names.index(name)))
                fields.append(batch.schema.field(name))
        conformed = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        if not bad.any():
            return conformed, []
        errors = [
            ErrorRecord(
                pipeline=self.artifact.pipeline,
                step=INPUT_STEP,
                reason=UNPARSEABLE_VALUE,
                message=str(messages[int(i)]),
                payload=row_payload(visible_row(batch, int(i))),
                source=row_source(batch, int(i)),
            )
            for i in np.flatnonzero(bad)
        ]
        return conformed.filter(pa.array(~bad)), errors


def _convert(value: Any, tp: pa.DataType) -> Any:
    """Converts one JSON-like value to ``tp``; strings holding numbers etc. are cast."""
    try:
        return pa.array([value], tp)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # e.g. "9" for an int64 column: the type's own cast, which refuses lossy conversions.
        return pa.array([value]).cast(tp)[0].as_py()


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
