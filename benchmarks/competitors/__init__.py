"""The systems beamforge is measured against, each a script run as its own process.

Every competitor computes TFX's taxi ``preprocessing_fn`` (17 ``<name>_xf`` outputs, see
/work/shared/data/chicago_taxi/README.md) from one CSV file and writes Parquet under its
output directory:

    python -m benchmarks.competitors.<name> --input DATA.csv --output DIR

This module holds what they share: the taxi columns and their raw types, and the command
line.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence

from examples.chicago_taxi.schema import RAW_SCHEMA

# The raw columns in the file's order, with the types TFX's schema gives them.
RAW_TYPES: dict[str, str] = dict(RAW_SCHEMA)

# TFX taxi_utils_native_keras.py's feature groups.
Z_SCORE_KEYS = ["trip_miles", "fare", "trip_seconds"]
VOCAB_KEYS = ["payment_type", "company"]
BUCKET_KEYS = ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"]
PASSTHROUGH_KEYS = [
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "pickup_census_tract",
    "dropoff_census_tract",
    "pickup_community_area",
    "dropoff_community_area",
]
FARE_KEY = "fare"
LABEL_KEY = "tips"
VOCAB_SIZE = 1000
OOV_SIZE = 10
BUCKET_COUNT = 10


def xf(name: str) -> str:
    """The output name of a raw column, as TFX's ``_transformed_name``."""
    return f"{name}_xf"


# The 17 outputs, in a fixed order.
OUTPUT_NAMES = [
    xf(k) for k in Z_SCORE_KEYS + VOCAB_KEYS + BUCKET_KEYS + PASSTHROUGH_KEYS + [LABEL_KEY]
]


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses a competitor's command line: ``--input CSV --output DIR``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, help="taxi CSV file (header line, then rows)")
    parser.add_argument("--output", required=True, help="directory for the Parquet output")
    parser.add_argument("--temp", help="scratch directory (default: a new temporary one)")
    return parser.parse_args(argv)


def main_with_scratch(
    description: str,
    run: Callable[[str, str, str], None],
    prefix: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Command line of a Beam competitor: ``run(input, output, scratch)``, with ``--temp`` or a
    temporary scratch directory removed afterwards."""
    args = parse_args(description, argv)
    if args.temp:
        run(args.input, args.output, args.temp)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as temp:
        run(args.input, args.output, temp)
