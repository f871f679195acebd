"""Whole small files (artifacts, manifests) read and written by path, local or remote.

Local paths use the standard library, so loading an artifact from disk (the serving
:class:`~transforms.serving.preprocessor.Preprocessor`) imports neither Beam nor a cloud
client. Any other path (``gs://...``) goes through Beam's ``FileSystems``, imported on first
use: the one place where ``transforms.core`` reaches Beam, and only for remote paths.
"""

from __future__ import annotations

import os
from typing import Any


def is_remote(path: str) -> bool:
    """Whether ``path`` names a file system other than the local one (``gs://``, ...)."""
    return "://" in path


def _beam() -> Any:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with the separator of ``base``'s file system."""
    if is_remote(base):
        return str(_beam().join(base, *parts))
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    """Whether a file (or folder) exists at ``path``."""
    if is_remote(path):
        return bool(_beam().exists(path))
    return os.path.exists(path)


def read_bytes(path: str) -> bytes | None:
    """The bytes of the file at ``path``, or None when there is no such file."""
    if is_remote(path):
        file_systems = _beam()
        if not file_systems.exists(path):
            return None
        with file_systems.open(path, compression_type="uncompressed") as f:
            data: bytes = f.read()
        return data
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """Writes ``data`` to ``path`` in one go, creating local parent folders."""
    if is_remote(path):
        with _beam().create(path, mime_type=mime_type, compression_type="uncompressed") as f:
            f.write(data)
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
