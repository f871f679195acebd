"""TFX's Chicago taxi ``preprocessing_fn`` (``taxi_utils_native_keras`` in TFX 1.21).

Used by ``pipeline_tft.yaml`` through the tf.Transform backend and by the parity tests as
the reference for the native ops in ``pipeline.yaml``. The inputs are ``SparseTensor``s of
shape ``[batch, None]`` (one list per cell, empty where the value is missing), as TFX's
ExampleGen produces them from CSV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

DENSE_FLOAT_FEATURE_KEYS = ["trip_miles", "fare", "trip_seconds"]
VOCAB_FEATURE_KEYS = ["payment_type", "company"]
BUCKET_FEATURE_KEYS = [
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
]
CATEGORICAL_FEATURE_KEYS = [
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "pickup_census_tract",
    "dropoff_census_tract",
    "pickup_community_area",
    "dropoff_community_area",
]
VOCAB_SIZE = 1000
OOV_SIZE = 10
FEATURE_BUCKET_COUNT = 10
LABEL_KEY = "tips"
FARE_KEY = "fare"


def transformed_name(key: str) -> str:
    """The output name of a transformed input column."""
    return key + "_xf"


def fill_in_missing(x: Any) -> Any:
    """Densifies a ``[batch, None]`` SparseTensor to ``[batch]``: 0 or '' where missing.

    Dense tensors are returned unchanged.
    """
    if not isinstance(x, tf.sparse.SparseTensor):
        return x
    default_value = "" if x.dtype == tf.string else 0
    return tf.squeeze(
        tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value
        ),
        axis=1,
    )


def preprocessing_fn(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """tf.Transform preprocessing: z-scores, vocabularies, buckets, passthroughs, label.

    Args:
        inputs: Raw taxi columns by name.

    Returns:
        The 17 ``*_xf`` columns; ``tips_xf`` is 1 where the tip exceeds 20% of the fare
        (compared in float32).
    """
    outputs = {}
    for key in DENSE_FLOAT_FEATURE_KEYS:
        outputs[transformed_name(key)] = tft.scale_to_z_score(fill_in_missing(inputs[key]))
    for key in VOCAB_FEATURE_KEYS:
        outputs[transformed_name(key)] = tft.compute_and_apply_vocabulary(
            fill_in_missing(inputs[key]), top_k=VOCAB_SIZE, num_oov_buckets=OOV_SIZE
        )
    for key in BUCKET_FEATURE_KEYS:
        outputs[transformed_name(key)] = tft.bucketize(
            fill_in_missing(inputs[key]), FEATURE_BUCKET_COUNT
        )
    for key in CATEGORICAL_FEATURE_KEYS:
        outputs[transformed_name(key)] = fill_in_missing(inputs[key])
    taxi_fare = fill_in_missing(inputs[FARE_KEY])
    tips = fill_in_missing(inputs[LABEL_KEY])
    outputs[transformed_name(LABEL_KEY)] = tf.where(
        tf.math.is_nan(taxi_fare),
        tf.cast(tf.zeros_like(taxi_fare), tf.int64),
        tf.cast(tf.greater(tips, tf.multiply(taxi_fare, tf.constant(0.2))), tf.int64),
    )
    return outputs
