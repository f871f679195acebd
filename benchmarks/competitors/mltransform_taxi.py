"""Beam's MLTransform: the taxi features as a Beam user writes them with ``apache_beam.ml``.

Lines are read with ``ReadFromText`` and parsed to one dict per row (TFX's fills, the label
``tips > fare * 0.2`` computed in float32 in the same Map, since MLTransform has no
expression op); ``MLTransform`` does ``ScaleToZScore``, ``ComputeAndApplyVocabulary(top_k=1000,
num_oov_buckets=10)`` and ``Bucketize(num_buckets=10)`` with its fit artifacts written to a
scratch directory; untouched columns pass through. Rows are written with ``WriteToParquet``.
The pipeline runs on Beam's FnApiRunner: in Beam 2.77 the ``DirectRunner`` name first tries
the Prism runner, which downloads a binary.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.transforms.base import MLTransform
from apache_beam.ml.transforms.tft import Bucketize, ComputeAndApplyVocabulary, ScaleToZScore
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner

from benchmarks.competitors import (
    BUCKET_COUNT,
    BUCKET_KEYS,
    FARE_KEY,
    LABEL_KEY,
    OOV_SIZE,
    OUTPUT_NAMES,
    PASSTHROUGH_KEYS,
    RAW_TYPES,
    VOCAB_KEYS,
    VOCAB_SIZE,
    Z_SCORE_KEYS,
    main_with_scratch,
    xf,
)

_COLUMNS = list(RAW_TYPES)
_INDEX = {name: i for i, name in enumerate(_COLUMNS)}

OUTPUT_SCHEMA = pa.schema(
    [
        (name, pa.float32() if name in {xf(k) for k in Z_SCORE_KEYS} else pa.int64())
        for name in OUTPUT_NAMES
    ]
)


def parse_row(line: str) -> dict[str, Any]:
    """One CSV line to MLTransform's input dict: TFX's fills and the float32 label."""
    fields = next(csv.reader([line]))

    def number(name: str) -> float:
        text = fields[_INDEX[name]]
        return float(text) if text else 0.0

    row: dict[str, Any] = {}
    for key in Z_SCORE_KEYS + BUCKET_KEYS:
        row[key] = number(key)
    for key in VOCAB_KEYS:
        row[key] = fields[_INDEX[key]]
    for key in PASSTHROUGH_KEYS:
        text = fields[_INDEX[key]]
        row[xf(key)] = int(text) if text else 0
    tips = np.float32(number(LABEL_KEY))
    fare = np.float32(number(FARE_KEY))
    row[xf(LABEL_KEY)] = int(tips > fare * np.float32(0.2))
    return row


def to_output(row: Any) -> dict[str, Any]:
    """MLTransform's output row (one-value arrays under the input names) to a flat dict."""
    values = row._asdict()
    out: dict[str, Any] = {}
    for key in Z_SCORE_KEYS:
        out[xf(key)] = float(values[key][0])
    for key in VOCAB_KEYS + BUCKET_KEYS:
        out[xf(key)] = int(values[key][0])
    for key in [*PASSTHROUGH_KEYS, LABEL_KEY]:
        out[xf(key)] = values[xf(key)]
    return out


def run(input_path: str, output_dir: str, temp_dir: str) -> None:
    """Fits and applies the taxi features to ``input_path``; Parquet shards in ``output_dir``."""
    transform = (
        MLTransform(write_artifact_location=f"{temp_dir}/artifacts")
        .with_transform(ScaleToZScore(columns=Z_SCORE_KEYS))
        .with_transform(
            ComputeAndApplyVocabulary(
                columns=VOCAB_KEYS, top_k=VOCAB_SIZE, num_oov_buckets=OOV_SIZE
            )
        )
        .with_transform(Bucketize(columns=BUCKET_KEYS, num_buckets=BUCKET_COUNT))
    )
    options = PipelineOptions(temp_location=temp_dir)
    with beam.Pipeline(runner=fn_runner.FnApiRunner(), options=options) as p:
        _ = (
            p
            | "ReadLines" >> beam.io.ReadFromText(input_path, skip_header_lines=1)
            | "Parse" >> beam.Map(parse_row)
            | "MLTransform" >> transform
            | "Flatten" >> beam.Map(to_output)
            | "Write"
            >> beam.io.WriteToParquet(
                f"{output_dir}/part", schema=OUTPUT_SCHEMA, file_name_suffix=".parquet"
            )
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``--input CSV --output DIR [--temp DIR]``."""
    main_with_scratch(__doc__ or "", run, "mltransform_taxi_", argv)


if __name__ == "__main__":
    main()
