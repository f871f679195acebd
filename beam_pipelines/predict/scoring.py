"""Pure functions of batch scoring: preprocess a read batch, shape the prediction batch.

No Beam here: :mod:`beam_pipelines.predict.build` wires these into the pipeline, and they are
tested on record batches directly.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms.core.artifact import Artifact
from transforms.core.batch_steps import DROPPED, REJECTED
from transforms.core.errors import ErrorRecord
from transforms.core.schema import FILE_COLUMN, LINE_COLUMN
from transforms.serving.preprocessor import Preprocessor

__all__ = [
    "DEFAULT_KEYS",
    "DROP_STEP",
    "ROW_COLUMN",
    "Preprocessed",
    "key_column",
    "key_fields",
    "prediction_batch",
    "prediction_schema",
    "preprocess_batch",
    "preprocessor_keeping_rows",
]

# The readers' hidden source columns, and the names they get in the predictions.
DEFAULT_KEYS: dict[str, str] = {FILE_COLUMN: "file", LINE_COLUMN: "line"}
# The row's position in its read batch, carried through the transform artifact's steps.
ROW_COLUMN = "__row"
# Where rows a filter step of the artifact drops on purpose are counted.
DROP_STEP = "transform"


def key_column(index: int) -> str:
    """The hidden name of the ``index``-th key column while it travels with the features."""
    return f"__key{index}"


def preprocessor_keeping_rows(artifact: Artifact) -> Preprocessor:
    """A Preprocessor of ``artifact`` whose output also holds each row's :data:`ROW_COLUMN`.

    Hidden columns pass through the artifact's steps; asking for :data:`ROW_COLUMN` among the
    output columns tells which input row every surviving row is, so keys can be joined back
    after rows were rejected or dropped.
    """
    columns = [*artifact.output_columns, ROW_COLUMN]
    return Preprocessor(dataclasses.replace(artifact, output_columns=columns))


@dataclasses.dataclass
class Preprocessed:
    """What :func:`preprocess_batch` makes of one read batch.

    Attributes:
        batch: The features of the surviving rows plus the key columns
            (:func:`key_column` names), or None when no row survived.
        errors: One error record per rejected row.
        counts: Rejected rows by (``rejected``, step, reason) and dropped ones by
            (``dropped``, :data:`DROP_STEP`, ``filtered``).
    """

    batch: pa.RecordBatch | None
    errors: list[ErrorRecord]
    counts: collections.Counter[tuple[str, str, str]]


def preprocess_batch(
    preprocessor: Preprocessor, batch: pa.RecordBatch, keys: Sequence[str]
) -> Preprocessed:
    """Applies the transform artifact to a read batch, keeping the ``keys`` columns of each row.

    Args:
        preprocessor: From :func:`preprocessor_keeping_rows`.
        batch: A batch as the readers emit it (input columns plus ``__file``/``__line``).
        keys: Columns of ``batch`` to carry to the prediction (hidden ones included).

    Returns:
        The features with the keys, the error records and the counts.
    """
    numbered = batch.append_column(ROW_COLUMN, pa.array(np.arange(batch.num_rows)))
    features, errors = preprocessor.transform_batch(numbered)
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for error in errors:
        counts[(REJECTED, error.step, error.reason)] += 1
    dropped = batch.num_rows - features.num_rows - len(errors)
    if dropped:
        counts[(DROPPED, DROP_STEP, "filtered")] += dropped
    if not features.num_rows:
        return Preprocessed(None, errors, counts)
    rows = features.column(features.schema.get_field_index(ROW_COLUMN))
    names = batch.schema.names
    out = features.drop_columns([ROW_COLUMN])
    for i, key in enumerate(keys):
        out = out.append_column(key_column(i), batch.column(names.index(key)).take(rows))
    return Preprocessed(out, errors, counts)


def prediction_schema(key_fields: Sequence[pa.Field], label: str) -> pa.Schema:
    """The predictions' columns: the keys (output names), the label and the probability."""
    from beam_pipelines.predict.model import PROBABILITY

    return pa.schema(
        [*key_fields, pa.field(label, pa.int64()), pa.field(PROBABILITY, pa.float64())]
    )


def prediction_batch(
    features: pa.RecordBatch, probabilities: np.ndarray, schema: pa.Schema
) -> pa.RecordBatch:
    """The output rows for a scored batch: keys, label ``probability >= 0.5``, probability.

    Args:
        features: The scored batch, carrying the key columns (:func:`key_column` names).
        probabilities: The positive class probability of each row.
        schema: :func:`prediction_schema`: the keys' output names first, in order.
    """
    n_keys = len(schema) - 2
    names = features.schema.names
    arrays: list[pa.Array] = [
        features.column(names.index(key_column(i))).cast(schema.field(i).type)
        for i in range(n_keys)
    ]
    p = np.asarray(probabilities, dtype=np.float64)
    arrays.append(pa.array((p >= 0.5).astype(np.int64)))
    arrays.append(pa.array(p))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def key_fields(schema: pa.Schema, keys: Mapping[str, str]) -> list[pa.Field]:
    """The prediction fields of the ``{input column: output name}`` keys of a read schema."""
    return [pa.field(out, schema.field(src).type) for src, out in keys.items()]
