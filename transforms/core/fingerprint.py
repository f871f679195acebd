"""FarmHash Fingerprint64 of string arrays, the hash TensorFlow buckets strings with.

``tf.strings.to_hash_bucket_fast`` and the out-of-vocabulary buckets of tf.Transform's
vocabularies are ``Fingerprint64(utf8 bytes) % num_buckets``; pyfarmhash's
``fingerprint64`` computes the same 64-bit value. The hash runs once per distinct value of a
batch, not once per row.
"""

from __future__ import annotations

import farmhash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def fingerprint64(values: pa.Array) -> np.ndarray:
    """Returns the Fingerprint64 of each string as uint64; nulls hash like the empty string.

    Args:
        values: A string array.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values.fill_null(""))
    hashes = np.fromiter(
        (farmhash.fingerprint64(v) for v in encoded.dictionary.to_pylist()),
        dtype=np.uint64,
        count=len(encoded.dictionary),
    )
    return hashes[encoded.indices.to_numpy(zero_copy_only=False)]


def hash_buckets(values: pa.Array, num_buckets: int) -> pa.Array:
    """Returns ``Fingerprint64(value) % num_buckets`` as int64 (``to_hash_bucket_fast``)."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
    buckets = fingerprint64(values) % np.uint64(num_buckets)
    return pa.array(buckets.astype(np.int64), pa.int64())
