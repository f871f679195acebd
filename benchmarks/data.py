"""Benchmark data: the Chicago taxi file scaled to any number of rows.

Rows are drawn with replacement from the 15,002-row TFX taxi file and their measurements
jittered a little, so every system sees realistic values (same empties, same categories,
same skew) without 100x exact duplicates that would flatter vocabularies and sketches.
Generation is vectorised (NumPy + Arrow): 1.5M rows take a few seconds. Files are cached
under ``benchmarks/work/`` by (rows, seed); the same pair always gives the same bytes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

SOURCE = Path("/work/shared/data/chicago_taxi/data.csv")
WORK_DIR = Path(__file__).resolve().parent / "work"

# Measurements jittered by a relative amount, rounded to the decimals the source uses.
FLOAT_JITTER: dict[str, tuple[float, int]] = {
    "fare": (0.01, 2),
    "tips": (0.01, 2),
    "trip_miles": (0.01, 2),
    "pickup_latitude": (0.0001, 6),
    "pickup_longitude": (0.0001, 6),
    "dropoff_latitude": (0.0001, 6),
    "dropoff_longitude": (0.0001, 6),
}
# Integer measurements jittered by a relative amount and rounded to whole numbers.
INT_JITTER: dict[str, float] = {"trip_seconds": 0.01}
# Everything else (hours, days, months, areas, tracts, timestamps, payment type, company)
# is kept as drawn: these are categories, and jittering them would invent new ones.


def read_source(path: Path = SOURCE) -> pa.Table:
    """Reads the taxi file with every column as text, so empties and spellings survive.

    Args:
        path: The CSV file (header line, then rows).

    Returns:
        A table of string columns in the file's order; empty fields are empty strings.
    """
    with path.open("rb") as f:
        names = f.readline().decode("utf-8").strip().split(",")
    return pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False,
        ),
    )


def _jitter_float(
    values: pa.Array, rng: np.random.Generator, rel: float, decimals: int
) -> pa.Array:
    empty = pc.equal(values, "").to_numpy(zero_copy_only=False)
    numbers = np.where(empty, "0", values.to_numpy(zero_copy_only=False)).astype(np.float64)
    factor = 1.0 + rng.uniform(-rel, rel, size=len(numbers))
    jittered = np.round(numbers * factor, decimals)
    text = pc.cast(pa.array(jittered), pa.string())
    return pc.if_else(pa.array(empty), "", text)


def _jitter_int(values: pa.Array, rng: np.random.Generator, rel: float) -> pa.Array:
    empty = pc.equal(values, "").to_numpy(zero_copy_only=False)
    numbers = np.where(empty, "0", values.to_numpy(zero_copy_only=False)).astype(np.int64)
    factor = 1.0 + rng.uniform(-rel, rel, size=len(numbers))
    jittered = np.rint(numbers * factor).astype(np.int64)
    text = pc.cast(pa.array(jittered), pa.string())
    return pc.if_else(pa.array(empty), "", text)


def scale(source: pa.Table, rows: int, seed: int) -> pa.Table:
    """Draws ``rows`` rows from ``source`` with replacement and jitters the measurements.

    Args:
        source: The string table from :func:`read_source`.
        rows: Rows wanted.
        seed: Seed of the random draw and the jitter.

    Returns:
        A string table with the source's columns and ``rows`` rows.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    rng = np.random.default_rng(seed)
    picked = source.take(pa.array(rng.integers(0, source.num_rows, size=rows)))
    columns = []
    # Columns are visited in a fixed order so the random stream (and the bytes) depend
    # only on the seed.
    for name in source.column_names:
        values = picked.column(name).combine_chunks()
        if name in FLOAT_JITTER:
            rel, decimals = FLOAT_JITTER[name]
            values = _jitter_float(values, rng, rel, decimals)
        elif name in INT_JITTER:
            values = _jitter_int(values, rng, INT_JITTER[name])
        columns.append(values)
    return pa.table(columns, names=source.column_names)


def to_csv_bytes(table: pa.Table) -> bytes:
    """Renders a string table as CSV text: header line, rows, no quoting.

    Args:
        table: String columns whose values hold no comma, quote or newline.

    Returns:
        The file's bytes, each line ending in a newline.

    Raises:
        ValueError: If a value would need quoting.
    """
    header = ",".join(table.column_names) + "\n"
    if table.num_rows == 0:
        return header.encode("utf-8")
    columns = [table.column(name).combine_chunks() for name in table.column_names]
    for name, values in zip(table.column_names, columns, strict=True):
        if pc.any(pc.match_substring_regex(values, r'[,"\n\r]')).as_py():
            raise ValueError(f"column {name} holds a value that needs CSV quoting")
    lines = pc.binary_join_element_wise(*columns, ",")
    body = "\n".join(lines.to_pylist()) + "\n"
    return (header + body).encode("utf-8")


def generate(rows: int, seed: int = 0, work_dir: Path = WORK_DIR, source: Path = SOURCE) -> Path:
    """Returns the path of the scaled taxi CSV for (rows, seed), writing it if not cached.

    Args:
        rows: Rows in the file (header not counted).
        seed: Seed of the draw; the same (rows, seed) always gives the same bytes.
        work_dir: Cache directory.
        source: The taxi file to scale.

    Returns:
        Path of the CSV file.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"taxi_{rows}_seed{seed}.csv"
    if path.exists():
        return path
    data = to_csv_bytes(scale(read_source(source), rows, seed))
    # Written beside and renamed so a killed run never leaves a truncated file in the cache.
    fd, tmp = tempfile.mkstemp(dir=work_dir, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.data --rows 150000 --seed 0``."""
    parser = argparse.ArgumentParser(description="Generate scaled taxi CSV files.")
    parser.add_argument("--rows", type=int, nargs="+", default=[150_000, 1_500_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR)
    args = parser.parse_args(argv)
    for rows in args.rows:
        print(generate(rows, args.seed, args.work_dir))


if __name__ == "__main__":
    main()
