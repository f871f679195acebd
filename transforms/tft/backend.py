"""The tf.Transform backend: a user's ``preprocessing_fn`` run on cleaned record batches.

A spec may name a ``preprocessing_fn`` (``package.module:function``) instead of native
feature steps. It runs through ``tensorflow_transform.beam`` inside the dataset pipeline,
between the clean steps and the split writers, and its ``transform_fn`` SavedModel is
written beside the artifact (``{artifact}/transform_fn_dir``, loadable with
``tft.TFTransformOutput``).

Inputs the function sees: every visible column as a ``SparseTensor`` of shape
``[batch, None]`` (one list per cell, empty where the value is null), as TFX's ExampleGen
feeds CSV data: integers and booleans as int64, floats as float32, strings as bytes. List
columns are fed as their values. Hidden ``__`` columns (source file and line, split) are
passed around the function and restored on its outputs.

Outputs: one column per output of the function, in its order. A ``[batch]`` tensor (one
value per row, tf.Transform's ``FixedLenFeature([])``) becomes a plain column; anything
else a list column.

Every function here but :class:`AnalyzeAndTransform` is plain Python over Arrow and
TensorFlow objects, usable without a pipeline. TensorFlow is imported lazily so that the
rest of beamforge does not need it.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.core.artifact import PREPROCESSING_FN_KEY
from transforms.core.schema import HIDDEN_PREFIX

BACKEND = "tensorflow_transform"
# The artifact's ``fitted`` mapping records the backend under this key (not a step name).
FITTED_KEY = PREPROCESSING_FN_KEY
TRANSFORM_FN_DIR = "transform_fn_dir"
TEMP_DIR = "tft_tmp"
# TFTransformOutput.RAW_METADATA_DIR: the raw feature spec beside transform_fn/.
RAW_METADATA_DIR = "metadata"

PreprocessingFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _import_module(name: str) -> Any:
    # The `beamforge` script's path does not hold the current directory, while `python -m`
    # would: a module of the user's project (run from its root) is looked up there too, after
    # everything installed, so it never shadows an installed package.
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.partition(".")[0]
        cwd = os.getcwd()
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def load_preprocessing_fn(reference: str) -> PreprocessingFn:
    """Imports ``package.module:function``, looking in the current directory too.

    Raises:
        ValueError: if the reference is malformed, the module does not import or has no
            such callable; the message says what to fix.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"preprocessing_fn must be 'package.module:function', got {reference!r}")
    try:
        module = _import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"preprocessing_fn {reference!r}: module {module_name!r} does not import ({exc}); "
            "is it on the Python path (and in the package the workers install)?"
        ) from exc
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise ValueError(
            f"preprocessing_fn {reference!r}: module {module_name!r} has no function {attribute!r}"
        )
    return fn  # type: ignore[no-any-return]


def _value_type(tp: pa.DataType, column: str) -> pa.DataType:
    """The Arrow value type tf.Transform is fed for a column's (value) type."""
    if pa.types.is_integer(tp) or pa.types.is_boolean(tp):
        return pa.int64()
    if pa.types.is_floating(tp):
        return pa.float32()
    if pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_binary(tp):
        return pa.binary()
    if pa.types.is_large_binary(tp):
        return pa.binary()
    raise ValueError(
        f"column {column!r} has type {tp}, which a preprocessing_fn cannot take; cast it to "
        "an integer, float or string type in a clean step, or drop it"
    )


def _is_list(tp: pa.DataType) -> bool:
    return bool(pa.types.is_list(tp) or pa.types.is_large_list(tp))


def input_value_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """``{visible column: Arrow value type fed to tf.Transform}``.

    Raises:
        ValueError: naming a column of a type TensorFlow cannot take (timestamps, structs).
    """
    out = {}
    for field in schema:
        if field.name.startswith(HIDDEN_PREFIX):
            continue
        tp = field.type.value_type if _is_list(field.type) else field.type
        out[field.name] = _value_type(tp, field.name)
    return out


def tft_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema of the batches tf.Transform reads (see :func:`to_tft_batch`)."""
    values = input_value_types(schema)
    fields = []
    for field in schema:
        value_type = values.get(field.name, field.type)
        fields.append(pa.field(field.name, pa.list_(value_type)))
    return pa.schema(fields)


def _cell_lists(values: pa.Array, value_type: pa.DataType) -> pa.ListArray:
    # One list per cell; a null becomes an empty list, which tf.Transform reads as a
    # missing value of a VarLenFeature.
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(valid, dtype=np.int32)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.drop_null().cast(value_type))


def _passthrough_lists(values: pa.Array) -> pa.ListArray:
    # tf.Transform passes through list columns with one element per row, nulls included.
    offsets = np.arange(len(values) + 1, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def to_tft_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Converts a cleaned batch to tf.Transform's input: one list per cell.

    Args:
        batch: Cleaned rows (with their hidden columns).
        schema: :func:`tft_arrow_schema` of the cleaned schema.

    Returns:
        A batch with ``schema``: visible columns as value lists (empty for nulls), hidden
        columns as one-element lists that tf.Transform passes through.
    """
    columns = []
    for field in schema:
        values = batch.column(field.name)
        if field.name.startswith(HIDDEN_PREFIX):
            columns.append(_passthrough_lists(values))
        elif _is_list(values.type):
            columns.append(values.cast(field.type))
        else:
            columns.append(_cell_lists(values, field.type.value_type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def from_tft_batch(
    batch: pa.RecordBatch, output_schema: pa.Schema, hidden: pa.Schema
) -> pa.RecordBatch:
    """Converts tf.Transform's output batch back to plain columns.

    Args:
        batch: ``TransformDataset`` output (``output_record_batches=True``): one list
            column per output, then the passed-through hidden columns as lists.
        output_schema: The function's outputs as planned (:func:`output_schema`).
        hidden: The hidden columns to restore, with their original types.

    Returns:
        A batch with ``output_schema``'s columns followed by the hidden ones.
    """
    arrays, fields = [], []
    for field in [*output_schema, *hidden]:
        values = batch.column(field.name)
        if not _is_list(field.type):
            # A FixedLenFeature([]) output (or a passthrough) holds exactly one value per row.
            values = pc.list_flatten(values)
        arrays.append(values.cast(field.type))
        fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _input_type_specs(schema: pa.Schema) -> dict[str, Any]:
    import tensorflow as tf

    dtypes = {pa.int64(): tf.int64, pa.float32(): tf.float32, pa.binary(): tf.string}
    return {
        name: tf.SparseTensorSpec([None, None], dtypes[tp])
        for name, tp in input_value_types(schema).items()
    }


def _feature_specs(schema: pa.Schema) -> dict[str, Any]:
    import tensorflow as tf

    return {
        name: tf.io.VarLenFeature(spec.dtype) for name, spec in _input_type_specs(schema).items()
    }


def raw_metadata(schema: pa.Schema) -> Any:
    """tf.Transform's ``DatasetMetadata`` of the raw input: one ``VarLenFeature`` per column.

    Every raw column is fed as a sparse tensor (a null is an empty list), so this is also
    the feature spec that parses ``tf.Example`` requests into what the ``transform_fn`` takes.
    """
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    return dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_feature_specs(schema))
    )


def _arrow_output_type(tensor: Any, name: str) -> pa.DataType:
    import tensorflow as tf

    if tensor.dtype.is_floating:
        value: pa.DataType = pa.float32()
    elif tensor.dtype.is_integer or tensor.dtype == tf.bool:
        value = pa.int64()
    elif tensor.dtype == tf.string:
        value = pa.string()
    else:
        raise ValueError(f"preprocessing_fn output {name!r} has dtype {tensor.dtype.name}")
    if isinstance(tensor, tf.Tensor) and tensor.shape.rank == 1:
        return value
    return pa.list_(value)


def output_schema(fn: PreprocessingFn, schema: pa.Schema) -> pa.Schema:
    """The function's output columns and types, by tracing it (no data is read).

    tf.Transform traces the same function with ``tf.function`` over the same input
    signature when it runs, so the types agree with what the run produces.

    Args:
        fn: The preprocessing_fn.
        schema: The cleaned schema it is fed (hidden columns are ignored).

    Raises:
        ValueError: for an input column TensorFlow cannot take, an output named like a
            hidden column or of an unsupported dtype.
    """
    from tensorflow_transform import impl_helper

    specs = _input_type_specs(schema)
    with tempfile.TemporaryDirectory() as temp:
        _, _, outputs = impl_helper.trace_preprocessing_function(
            fn, specs, use_tf_compat_v1=False, base_temp_dir=temp
        )
    fields = []
    for name, tensor in outputs.items():
        if name.startswith(HIDDEN_PREFIX):
            raise ValueError(
                f"preprocessing_fn output {name!r} starts with {HIDDEN_PREFIX!r}, which is "
                "reserved for the pipeline's own columns; rename it"
            )
        fields.append(pa.field(name, _arrow_output_type(tensor, name)))
    return pa.schema(fields)


def tensor_adapter_config(schema: pa.Schema) -> Any:
    """tfx_bsl's ``TensorAdapterConfig`` for :func:`tft_arrow_schema` batches.

    Only the visible columns get a tensor representation; tf.Transform passes the rest
    (the hidden ones) through.
    """
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    tft_schema = schema_utils.schema_from_feature_spec(_feature_specs(schema))
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(tft_schema)
    return tensor_adapter.TensorAdapterConfig(tft_arrow_schema(schema), representations)


def hidden_schema(schema: pa.Schema) -> pa.Schema:
    """The hidden ``__`` columns of a schema, restored after the function."""
    return pa.schema([f for f in schema if f.name.startswith(HIDDEN_PREFIX)])


def _delete_tree(path: str) -> str:
    if FileSystems.exists(path):
        FileSystems.delete([path])
    return path


def _restore(pair: tuple[pa.RecordBatch, Any], outputs: pa.Schema, hidden: pa.Schema) -> Any:
    return from_tft_batch(pair[0], outputs, hidden)


def _only_rows(batch: pa.RecordBatch, column: str, value: int) -> pa.RecordBatch:
    return batch.filter(pc.equal(batch.column(column), value))


class AnalyzeAndTransform(beam.PTransform):
    """Analyzes cleaned batches with a ``preprocessing_fn`` and transforms them.

    Input: ``PCollection[pa.RecordBatch]`` of cleaned rows with the cleaned ``schema``
    (hidden columns included), bounded: tf.Transform's analyzers need the whole data set.
    Output: ``PCollection[pa.RecordBatch]`` with ``outputs`` (:func:`output_schema`) plus
    the input's hidden columns; exactly as many rows as came in (tf.Transform neither
    rejects nor drops rows, so this step has no error output).
    Side effects: the ``transform_fn`` SavedModel, the transformed and the raw metadata under
    ``transform_fn_dir``; tf.Transform's temporary files under ``temp_dir``, deleted once
    every batch is transformed. :attr:`written` is a one-element PCollection that exists
    once both are done (write the artifact's ``transform.json`` after it).
    Metrics: tf.Transform's own (namespace ``tfx.Transform``).
    """

    def __init__(
        self,
        *,
        preprocessing_fn: PreprocessingFn,
        schema: pa.Schema,
        outputs: pa.Schema,
        transform_fn_dir: str,
        temp_dir: str,
        fit_column: str | None = None,
        fit_value: int | None = None,
    ) -> None:
        """Configures the transform.

        Args:
            preprocessing_fn: The function.
            schema: Cleaned input schema (hidden columns included).
            outputs: The function's output schema, from :func:`output_schema`.
            transform_fn_dir: Where ``tft_beam.WriteTransformFn`` writes.
            temp_dir: tf.Transform's temporary directory (deleted at the end).
            fit_column: With ``fit_value``, analyze only rows whose ``fit_column`` equals
                it (e.g. the train split); every row is transformed.
            fit_value: See ``fit_column``.

        Raises:
            ValueError: for an input column TensorFlow cannot take, or a half-given filter.
        """
        super().__init__()
        if (fit_column is None) != (fit_value is None):
            raise ValueError("give both fit_column and fit_value, or neither")
        self._fn = preprocessing_fn
        self._schema = schema
        self._outputs = outputs
        self._hidden = hidden_schema(schema)
        self._tft_schema = tft_arrow_schema(schema)
        self._transform_fn_dir = transform_fn_dir
        self._temp_dir = temp_dir
        self._fit_column = fit_column
        self._fit_value = fit_value
        self.written: beam.PCollection | None = None

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        import tensorflow_transform.beam as tft_beam

        config = tensor_adapter_config(self._schema)
        analyze_input = batches
        if self._fit_column is not None:
            analyze_input = batches | "FitRows" >> beam.Map(
                _only_rows, self._fit_column, self._fit_value
            )
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys=set(self._hidden.names)):
            raw = batches | "ToTFT" >> beam.Map(to_tft_batch, self._tft_schema)
            raw_fit = (
                raw
                if analyze_input is batches
                else analyze_input | "FitToTFT" >> beam.Map(to_tft_batch, self._tft_schema)
            )
            transform_fn = (raw_fit, config) | "Analyze" >> tft_beam.AnalyzeDataset(self._fn)
            transformed, _ = ((raw, config), transform_fn) | "Transform" >> (
                tft_beam.TransformDataset(output_record_batches=True)
            )
            published = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
                self._transform_fn_dir
            )
            # WriteTransformFn writes transform_fn/ and transformed_metadata/ only; the raw
            # metadata/ beside them is what TFTransformOutput.raw_feature_spec() reads, which a
            # trainer's serving signature parses requests with (as TFX's Transform exports).
            raw_written = raw_metadata(self._schema) | "WriteRawMetadata" >> (
                tft_beam.tft_beam_io.WriteMetadata(
                    FileSystems.join(self._transform_fn_dir, RAW_METADATA_DIR), batches.pipeline
                )
            )
        out = transformed | "FromTFT" >> beam.Map(_restore, self._outputs, self._hidden)
        # The count needs every transformed batch, and the side input the published
        # transform_fn: after both, nothing reads the temporary files.
        temp_dir, transform_fn_dir = self._temp_dir, self._transform_fn_dir
        self.written = (
            out
            | "AllTransformed" >> beam.combiners.Count.Globally()
            | "DeleteTemp"
            >> beam.Map(
                lambda _, __, ___: _delete_tree(temp_dir),
                beam.pvalue.AsSingleton(published),
                beam.pvalue.AsSingleton(raw_written),
            )
            | "Written" >> beam.Map(lambda _: transform_fn_dir)
        )
        return out


def fitted_entry(reference: str) -> dict[str, str]:
    """What the artifact's ``transform.json`` records about the backend.

    ``transform_fn`` is relative to the artifact directory.
    """
    return {"backend": BACKEND, "preprocessing_fn": reference, "transform_fn": TRANSFORM_FN_DIR}
