"""The limit: TFX's taxi features in one process with pyarrow and NumPy, no Beam.

Reads the whole file at once with Arrow's multithreaded CSV parser, computes the same
statistics tf.Transform computes (population z-score, vocabulary in tf.Transform's order with
FarmHash OOV buckets, quantile buckets) with vectorised kernels and writes one Parquet file.
Nothing distributes or streams here, so this is how fast the math alone can go on this
machine; the memory it needs grows with the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import farmhash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

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
    parse_args,
    xf,
)

_ARROW_TYPES = {"int64": pa.int64(), "float32": pa.float32(), "string": pa.string()}


def read_taxi(path: str) -> pa.Table:
    """Reads the taxi CSV with TFX's raw types; empty fields are null."""
    return pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types={name: _ARROW_TYPES[tp] for name, tp in RAW_TYPES.items()},
            strings_can_be_null=True,
        ),
    )


def fill(column: pa.ChunkedArray) -> np.ndarray:
    """TFX's ``_fill_in_missing``: null becomes 0 or ''."""
    default: object = "" if pa.types.is_string(column.type) else 0
    return column.fill_null(default).to_numpy()


def z_score(values: np.ndarray) -> np.ndarray:
    """``tft.scale_to_z_score``: (x - mean) / sqrt(population variance), float32 out."""
    x = values.astype(np.float64)
    mean = x.mean() if len(x) else 0.0
    var = (x * x).mean() - mean * mean if len(x) else 0.0
    # tf.Transform leaves the values centred but unscaled when the variance is 0.
    scaled = (x - mean) / np.sqrt(var) if var > 0 else x - mean
    return scaled.astype(np.float32)


def vocabulary(values: pa.Array, top_k: int) -> list[str]:
    """tf.Transform's vocabulary: no '', by descending count, ties by descending bytes."""
    counts = pc.value_counts(values)
    pairs = [
        (c, v.encode("utf-8"))
        for v, c in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
        if v != ""
    ]
    pairs.sort(reverse=True)
    return [v.decode("utf-8") for _, v in pairs[:top_k]]


def apply_vocabulary(values: pa.Array, vocab: list[str], num_oov_buckets: int) -> np.ndarray:
    """Index in ``vocab``; otherwise ``len(vocab) + Fingerprint64(value) % num_oov_buckets``."""
    encoded = values.dictionary_encode()
    uniques = encoded.dictionary.to_pylist()
    position = {v: i for i, v in enumerate(vocab)}
    # One Python call per distinct value, then a vectorised take over the rows.
    ids = np.array(
        [
            position[v]
            if v in position
            else len(vocab) + farmhash.fingerprint64(v) % num_oov_buckets
            for v in uniques
        ],
        dtype=np.int64,
    )
    return ids[encoded.indices.to_numpy()] if len(ids) else np.zeros(0, dtype=np.int64)


def bucketize(values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Quantile buckets: ``num_buckets - 1`` boundaries, bucket i below boundary i."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    qs = np.arange(1, num_buckets) / num_buckets
    boundaries = np.unique(np.quantile(values.astype(np.float64), qs).astype(np.float32))
    return np.searchsorted(boundaries, values, side="right").astype(np.int64)


def label(tips: np.ndarray, fare: np.ndarray) -> np.ndarray:
    """``tips > fare * 0.2`` in float32, as int64 (fare is never NaN after the fill)."""
    tips32 = tips.astype(np.float32)
    fare32 = fare.astype(np.float32)
    return (tips32 > fare32 * np.float32(0.2)).astype(np.int64)


def preprocess(table: pa.Table) -> pa.Table:
    """The 17 taxi features of a raw table."""
    out: dict[str, np.ndarray] = {}
    for key in Z_SCORE_KEYS:
        out[xf(key)] = z_score(fill(table.column(key)))
    for key in VOCAB_KEYS:
        values = table.column(key).fill_null("").combine_chunks()
        out[xf(key)] = apply_vocabulary(values, vocabulary(values, VOCAB_SIZE), OOV_SIZE)
    for key in BUCKET_KEYS:
        out[xf(key)] = bucketize(fill(table.column(key)), BUCKET_COUNT)
    for key in PASSTHROUGH_KEYS:
        out[xf(key)] = fill(table.column(key)).astype(np.int64)
    out[xf(LABEL_KEY)] = label(fill(table.column(LABEL_KEY)), fill(table.column(FARE_KEY)))
    return pa.table({name: out[name] for name in OUTPUT_NAMES})


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``--input CSV --output DIR``; writes DIR/part-00000.parquet."""
    args = parse_args(__doc__ or "", argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    pq.write_table(preprocess(read_taxi(args.input)), output / "part-00000.parquet")


if __name__ == "__main__":
    main()
