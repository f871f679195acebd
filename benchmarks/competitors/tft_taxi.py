"""tf.Transform as TFX runs it: CSV to Arrow through tfx_bsl, AnalyzeAndTransformDataset.

The ``preprocessing_fn`` is TFX's taxi one (``taxi_utils_native_keras.py`` of tfx 1.21): the
raw columns arrive as sparse tensors (TFX's schema has no fixed shapes), are filled by
``_fill_in_missing`` and go through ``tft.scale_to_z_score``, ``compute_and_apply_vocabulary``
and ``bucketize``. Input is read as TFX's Transform component reads it: ``CsvTFXIO`` producing
record batches plus its ``TensorAdapterConfig``; output is record batches
(``output_record_batches=True``, as TFX asks for), flattened to one value per row and written
as Parquet. The pipeline runs on Beam's FnApiRunner: in Beam 2.77 the ``DirectRunner`` name
first tries the Prism runner, which downloads a binary.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from benchmarks.competitors import (
    OUTPUT_NAMES,
    RAW_TYPES,
    Z_SCORE_KEYS,
    main_with_scratch,
    xf,
)
from examples.chicago_taxi.taxi_preprocessing import preprocessing_fn

_FEATURE_TYPES = {
    "int64": schema_pb2.INT,
    "float32": schema_pb2.FLOAT,
    "string": schema_pb2.BYTES,
}

OUTPUT_SCHEMA = pa.schema(
    [
        (name, pa.float32() if name in {xf(k) for k in Z_SCORE_KEYS} else pa.int64())
        for name in OUTPUT_NAMES
    ]
)


def raw_schema() -> schema_pb2.Schema:
    """TFX's inferred schema for the taxi CSV: typed features without a fixed shape."""
    schema = schema_pb2.Schema()
    for name, tp in RAW_TYPES.items():
        feature = schema.feature.add()
        feature.name = name
        feature.type = _FEATURE_TYPES[tp]
    return schema


def to_table(batch: pa.RecordBatch) -> pa.Table:
    """tf.Transform's output batch (one-value list columns) as a flat table."""
    columns = []
    for field in OUTPUT_SCHEMA:
        column = batch.column(field.name)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.list_flatten(column)
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA)


def run(input_path: str, output_dir: str, temp_dir: str) -> None:
    """Analyzes and transforms ``input_path``, writing Parquet shards under ``output_dir``."""
    source = tfxio.CsvTFXIO(
        file_pattern=input_path,
        column_names=list(RAW_TYPES),
        schema=raw_schema(),
        skip_header_lines=1,
        telemetry_descriptors=["benchmarks"],
    )
    options = PipelineOptions(temp_location=temp_dir)
    with (
        beam.Pipeline(runner=fn_runner.FnApiRunner(), options=options) as p,
        tft_beam.Context(temp_dir=temp_dir),
    ):
        raw = p | "ReadCsv" >> source.BeamSource()
        (transformed, _), _ = (
            raw,
            source.TensorAdapterConfig(),
        ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=True
        )
        _ = (
            transformed
            | "ToTable" >> beam.Map(lambda pair: to_table(pair[0]))
            | "Write"
            >> beam.io.WriteToParquetBatched(
                f"{output_dir}/part", schema=OUTPUT_SCHEMA, file_name_suffix=".parquet"
            )
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``--input CSV --output DIR [--temp DIR]``."""
    main_with_scratch(__doc__ or "", run, "tft_taxi_", argv)


if __name__ == "__main__":
    main()
