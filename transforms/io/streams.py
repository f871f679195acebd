"""Opening input files for the readers, and the error for a file that cannot be read.

Files are opened through Beam's file systems (local or ``gs://``); gzip is recognised by its
magic bytes, whatever the file's name.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.errors import InputError

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = [
    "BROKEN_STREAM",
    "ReadError",
    "check_readable",
    "open_raw",
    "open_stream",
    "truncated_error",
]

_GZIP_MAGIC = b"\x1f\x8b"


class ReadError(InputError):
    """An input file cannot be read as the source says; the message names the file."""


def open_raw(path: str) -> IO[bytes]:
    """Opens a file through Beam's file systems.

    Raises:
        ReadError: if the file is missing, a directory or not readable (permissions);
            other failures (a network error) are raised as they are, to be retried.
    """
    try:
        stream: IO[bytes] = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:
        why = _user_fault(exc)
        if why is None:
            raise
        raise ReadError(path, f"cannot be opened: {why}") from exc
    return stream


def _user_fault(exc: BaseException) -> str | None:
    """Why opening failed, when the user can fix it (Beam wraps the cause), else None."""
    try:
        from google.api_core import exceptions as google
    except ImportError:  # without the gcp extra there is no gs:// either
        google = None  # type: ignore[assignment]
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PermissionError) or (
            google is not None and isinstance(seen, google.Forbidden)
        ):
            return "permission denied (check the file's permissions or your credentials)"
        if isinstance(seen, IsADirectoryError):
            return "it is a directory, not a file"
        if isinstance(seen, FileNotFoundError) or (
            google is not None and isinstance(seen, google.NotFound)
        ):
            return "no such file"
        seen = seen.__cause__ or seen.__context__
    return None


def open_stream(path: str) -> IO[bytes]:
    """Opens a file through Beam's file systems, decompressing gzip transparently."""
    raw = open_raw(path)
    stream: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[type-var]
    try:
        magic = stream.peek(2)[:2]
    except OSError as exc:
        why = _user_fault(exc)
        if why is None:
            raise
        raise ReadError(path, f"cannot be read: {why}") from exc
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream  # type: ignore[return-value]


# Exceptions a truncated or corrupt compressed stream raises while it is read.
BROKEN_STREAM = (EOFError, zlib.error, gzip.BadGzipFile)


def truncated_error(path: str, exc: BaseException) -> ReadError:
    """The error for a compressed file that breaks off; counts its whole lines again."""
    lines = 0
    try:
        with open_stream(path) as stream:
            while True:
                piece = stream.read(1 << 16)
                if not piece:
                    break
                lines += piece.count(b"\n")
    except BROKEN_STREAM:
        pass
    return ReadError(
        path,
        f"is a truncated or corrupt gzip file ({exc}): its last whole line is line {lines};"
        " write or upload it again",
    )


def check_readable(path: str, source: Source, target: pa.Schema) -> None:
    """Checks that a file opens and its first byte reads (raises ReadError if not)."""
    with open_stream(path) as stream:
        stream.read(1)
