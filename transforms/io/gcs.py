"""Checks of ``gs://`` locations made before a run, so a typo fails in seconds, not on workers."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Bucket names: 3-63 characters of lowercase letters, digits, '-', '_' and '.', starting and
# ending with a letter or digit (names with dots may reach 222, in 63-character parts).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]")


def split_gcs_path(path: str) -> tuple[str, str]:
    """Splits ``gs://bucket/object`` into ``(bucket, object)``.

    Raises:
        ValueError: for a path without a bucket or with an invalid bucket name, saying what
            a valid one looks like.
    """
    if not path.startswith("gs://"):
        raise ValueError(f"not a gs:// path: {path!r}")
    bucket, _, name = path[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"malformed gs:// path {path!r}: no bucket (expected gs://BUCKET/PATH)")
    if (
        not _BUCKET.fullmatch(bucket)
        or any(len(part) > 63 for part in bucket.split("."))
        or ".." in bucket
        or bucket.startswith("goog")
    ):
        raise ValueError(
            f"malformed gs:// path {path!r}: {bucket!r} is not a valid bucket name (3-63 "
            "lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or "
            "digit)"
        )
    return bucket, name


def check_gcs_paths(paths: Iterable[str]) -> None:
    """Checks that every gs:// path is well formed (no network); local paths pass.

    Raises:
        ValueError: naming the malformed path.
    """
    for path in paths:
        if path and path.startswith("gs://"):
            split_gcs_path(path)


def check_buckets(paths: Iterable[str]) -> None:
    """Checks that every gs:// path is well formed and its bucket exists; local paths pass.

    Raises:
        ValueError: naming the malformed path or the missing bucket.
    """
    from apache_beam.io.gcp import gcsio

    buckets: dict[str, str] = {}
    for path in paths:
        if path and path.startswith("gs://"):
            bucket, _ = split_gcs_path(path)
            buckets.setdefault(bucket, path)
    if not buckets:
        return
    client = gcsio.GcsIO()
    for bucket, path in buckets.items():
        if client.get_bucket(bucket) is None:
            raise ValueError(f"GCS bucket {bucket!r} does not exist (for {path})")
