"""Where an output folder lives: small-object operations with compare-and-swap.

The commit protocol (:mod:`transforms.io.commit`) needs a few operations on a local folder or a
``gs://`` prefix, with generations so that a write can be made conditional on what was read:
:class:`Store` names them, :func:`store_for` picks the local or the GCS implementation.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from transforms.core.errors import InputError

__all__ = ["Store", "is_gcs", "join", "store_for"]


def join(root: str, *parts: str) -> str:
    """Joins path parts with ``/`` for gs:// and the OS separator locally."""
    if is_gcs(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def is_gcs(path: str) -> bool:
    """Whether a path is a ``gs://`` location."""
    return path.startswith("gs://")


class Store(Protocol):
    """Small-object operations with compare-and-swap, locally or on GCS.

    ``read`` returns the bytes and generation (None: absent); ``create`` writes a new object
    and returns its generation (None: one exists); ``replace`` writes only if the generation
    is still the given one (None: absent) and ``delete`` removes only that generation;
    ``list_dir`` names the entries directly under a folder, ``list_files`` every file under
    it; ``delete_tree`` and ``delete_files`` ignore what is already gone.
    """

    def read(self, path: str) -> tuple[bytes, str] | None: ...
    def create(self, path: str, data: bytes) -> str | None: ...
    def replace(self, path: str, data: bytes, generation: str | None) -> str | None: ...
    def delete(self, path: str, generation: str) -> bool: ...
    def list_dir(self, root: str) -> list[str]: ...
    def delete_tree(self, path: str) -> None: ...
    def list_files(self, root: str) -> list[str]: ...
    def delete_files(self, paths: Iterable[str]) -> None: ...


class _LocalStore:
    """Local files. Compare-and-swap runs under an exclusive ``flock`` of the folder."""

    @staticmethod
    def _generation(st: os.stat_result) -> str:
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    @contextlib.contextmanager
    def _folder_lock(self, path: str) -> Iterator[None]:
        import fcntl

        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self, path: str) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), self._generation(st)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise InputError(path, "is a folder; expected the file beamforge writes") from None

    def _write_new(self, path: str, data: bytes) -> str:
        # Write beside, then rename: a reader never sees half a file.
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return self._generation(os.stat(path))

    def create(self, path: str, data: bytes) -> str | None:
        with self._folder_lock(path):
            if os.path.lexists(path):
                return None
            return self._write_new(path, data)

    def replace(self, path: str, data: bytes, generation: str | None) -> str | None:
        with self._folder_lock(path):
            current = self.read(path)
            if (current[1] if current else None) != generation:
                return None
            return self._write_new(path, data)

    def delete(self, path: str, generation: str) -> bool:
        with self._folder_lock(path):
            current = self.read(path)
            if current is None or current[1] != generation:
                return False
            os.remove(path)
            return True

    def list_dir(self, root: str) -> list[str]:
        try:
            return sorted(os.listdir(root))
        except FileNotFoundError:
            return []

    def delete_tree(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def list_files(self, root: str) -> list[str]:
        out: list[str] = []
        for folder, _, files in os.walk(root):
            out.extend(os.path.join(folder, f) for f in files)
        return sorted(out)

    def delete_files(self, paths: Iterable[str]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


class _GcsStore:
    """Objects on GCS through google-cloud-storage, with generation preconditions."""

    def __init__(self) -> None:
        self._client: Any = None

    def _bucket(self, path: str) -> tuple[Any, str]:
        from transforms.io.gcs import split_gcs_path

        if self._client is None:
            from google.cloud.storage import Client

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self._client = Client(project="emulator", credentials=AnonymousCredentials())
            else:
                self._client = Client()
        bucket, name = split_gcs_path(path)
        return self._client.bucket(bucket), name

    def read(self, path: str) -> tuple[bytes, str] | None:
        from google.api_core import exceptions

        bucket, name = self._bucket(path)
        blob = bucket.get_blob(name)
        if blob is None:
            return None
        # Taken before the download, which refreshes the blob's properties from headers.
        generation = blob.generation
        try:
            data = blob.download_as_bytes(if_generation_match=generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            # Replaced or deleted between the two calls: read the new one.
            return self.read(path)
        return data, str(generation)

    def _upload(self, path: str, data: bytes, generation: int) -> str | None:
        from google.api_core import exceptions

        bucket, name = self._bucket(path)
        blob = bucket.blob(name)
        try:
            blob.upload_from_string(
                data, content_type="application/json", if_generation_match=generation
            )
        except exceptions.PreconditionFailed:
            return None
        return str(blob.generation)

    def create(self, path: str, data: bytes) -> str | None:
        return self._upload(path, data, 0)

    def replace(self, path: str, data: bytes, generation: str | None) -> str | None:
        return self._upload(path, data, int(generation) if generation else 0)

    def delete(self, path: str, generation: str) -> bool:
        from google.api_core import exceptions

        bucket, name = self._bucket(path)
        try:
            bucket.blob(name).delete(if_generation_match=int(generation))
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return False
        return True

    def _prefix(self, root: str) -> tuple[Any, str]:
        bucket, name = self._bucket(root)
        return bucket, (name.rstrip("/") + "/") if name else ""

    def list_dir(self, root: str) -> list[str]:
        bucket, prefix = self._prefix(root)
        names = set()
        for blob in self._client.list_blobs(bucket, prefix=prefix):
            rest = blob.name[len(prefix) :]
            if rest:
                names.add(rest.split("/", 1)[0])
        return sorted(names)

    def list_files(self, root: str) -> list[str]:
        bucket, prefix = self._prefix(root)
        return sorted(
            f"gs://{bucket.name}/{blob.name}"
            for blob in self._client.list_blobs(bucket, prefix=prefix)
        )

    def delete_files(self, paths: Iterable[str]) -> None:
        from google.api_core import exceptions

        for path in paths:
            bucket, name = self._bucket(path)
            with contextlib.suppress(exceptions.NotFound):
                bucket.blob(name).delete()

    def delete_tree(self, path: str) -> None:
        self.delete_files(self.list_files(path))


def store_for(path: str) -> Store:
    """The store for a local or gs:// path.

    Raises:
        InputError: for any other scheme (the protocol needs atomic renames or preconditions).
    """
    if is_gcs(path):
        return _GcsStore()
    if "://" in path:
        raise InputError(path, "outputs must be local paths or gs:// locations")
    return _LocalStore()
