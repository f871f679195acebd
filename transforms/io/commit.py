"""The commit protocol of a run's output: a run owns its output folder.

An output folder (a local path or ``gs://``) holds::

    manifest.json             the commit marker: names the run whose files are the dataset
    _lock.json                present while a run writes: which run, where, until when
    run-YYYYMMDDTHHMMSSZ-XXXXXXXX/
                              one folder per run; only the one manifest.json names is a dataset

A run:

1. takes the lock (:func:`acquire`): the lock file is created only if it does not exist
   (``O_EXCL`` locally, ``ifGenerationMatch=0`` on GCS). A lock whose holder is gone (a dead
   process on this host, or a lease that ran out) is broken (on GCS with a precondition on
   its generation, so two runs cannot both break it); a live one refuses the run with
   :class:`OutputLockedError` naming the run that holds it. It records which manifest it saw.
2. writes only under its own run folder, which no reader looks at until it is committed;
3. commits (:meth:`OutputCommit.publish`): files under its folder that the manifest does not
   list (temporary shards of a retried bundle, ...) are deleted, then ``manifest.json`` is
   replaced in one atomic step (locally a rename; on GCS a single object write with a
   precondition on the generation seen in step 1), so a reader sees the previous dataset or
   the new one, never a mix, and a commit over a manifest written meanwhile fails;
4. deletes the other run folders and releases the lock.

A failed run deletes its own folder (all but its dead-letter files, which its failure
message names) and releases the lock: the previous manifest and its folder are untouched. A
killed run leaves its folder and its lock; the next run breaks the lock and deletes every run
folder the manifest does not name. Only names this module makes (``run-…``, and the ``.tmp``
file of a cut-short manifest or lock write) are ever deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import json
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from transforms.core.errors import InputError

MANIFEST = "manifest.json"
LOCK = "_lock.json"
RUN_PREFIX = "run-"
RUN_DIR = re.compile(r"run-\d{8}T\d{6}Z-[0-9a-f]{8}")
# What a killed write of the manifest or the lock leaves (see _LocalStore._write_new).
_PARTIAL = re.compile(r"(manifest\.json|_lock\.json)\.tmp-[0-9a-f]{8}")
_GLOB_CHARS = set("*?[]{}")
# How long a lock outlives its last refresh. A local run refreshes it every third of this; a
# run on a remote runner cannot, so its lock carries the longer lease.
LEASE_SECONDS = 120.0
REMOTE_LEASE_SECONDS = 24 * 3600.0


# The outputs this process holds (acquired, not yet released): what a signal handler
# cleans up before the process exits (abort_held).
_HELD: list[OutputCommit] = []


class OutputLockedError(InputError):
    """Another run is writing the same output."""


class CommitConflictError(InputError):
    """The output's manifest changed while this run was writing (its lock was broken)."""


def new_run_id(now: dt.datetime | None = None) -> str:
    """A run id: the UTC start time and 32 random bits, sortable by time."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{RUN_PREFIX}{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def join(root: str, *parts: str) -> str:
    """Joins path parts with ``/`` for gs:// and the OS separator locally."""
    if _is_gcs(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def _is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------------------------
# Storage: the few operations the protocol needs, with generations for compare-and-swap.


class _Store(Protocol):
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


def store_for(path: str) -> _Store:
    """The store for a local or gs:// path.

    Raises:
        InputError: for any other scheme (the protocol needs atomic renames or preconditions).
    """
    if _is_gcs(path):
        return _GcsStore()
    if "://" in path:
        raise InputError(path, "outputs must be local paths or gs:// locations")
    return _LocalStore()


# ---------------------------------------------------------------------------------------------
# The lock


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """What a lock file says about the run that holds it."""

    run: str
    host: str
    pid: int
    started: str
    expires: str
    runner: str = "local"

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}" if self.runner == "local" else self.runner
        return f"run {self.run} ({where}, started {self.started}, lease until {self.expires})"

    def expired(self, now: dt.datetime) -> bool:
        return _instant(self.expires) < now

    def holder_dead(self) -> bool:
        """True when the holder is a process of this host that no longer runs."""
        if self.runner != "local" or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _is_zombie(self.pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _lock_text(info: LockInfo) -> bytes:
    return (json.dumps(dataclasses.asdict(info), indent=2) + "\n").encode("utf-8")


def _parse_lock(data: bytes) -> LockInfo | None:
    try:
        raw = json.loads(data.decode("utf-8"))
        info = LockInfo(
            **{f.name: raw[f.name] for f in dataclasses.fields(LockInfo) if f.name in raw}
        )
        _instant(info.expires)
        int(info.pid)
    except (ValueError, KeyError, TypeError, AttributeError):
        # A foreign or damaged lock file holds nobody: it is broken like a stale one.
        return None
    return info


def _instant(text: str) -> dt.datetime:
    # A time without a zone is UTC (as this module writes them).
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def manifest_run(data: bytes | None) -> str | None:
    """The run id a manifest's bytes name (None for no manifest or one without a run)."""
    if data is None:
        return None
    try:
        run = json.loads(data.decode("utf-8")).get("run", {})
    except (ValueError, AttributeError):
        return None
    found = run.get("id") if isinstance(run, dict) else None
    # Only a name this module makes: a manifest naming anything else (a path, "..") must
    # never lead a run to delete it.
    return found if isinstance(found, str) and RUN_DIR.fullmatch(found) else None


@dataclasses.dataclass
class OutputCommit:
    """A run's hold on an output folder, from :func:`acquire` to publish or abort.

    It is picklable: the pipeline's last step carries it to the worker that commits.

    Attributes:
        root: The output folder.
        run_id: This run's id; its files go under ``{root}/{run_id}``.
        manifest_generation: The generation of ``manifest.json`` when the lock was taken
            (None: there was none); the commit replaces only that one.
        previous_run: The run id the previous manifest named, if any.
        lease_seconds: How long the lock lasts without a refresh.
        runner: ``local``, or the remote runner that will commit.
    """

    root: str
    run_id: str
    manifest_generation: str | None
    previous_run: str | None
    lease_seconds: float = LEASE_SECONDS
    runner: str = "local"
    extra_trees: tuple[str, ...] = ()
    # Whether acquire() created the output folder (a failed first run removes it again).
    created: bool = False
    # What abort() keeps when it is called for this run from a signal (the dead letters).
    keep_on_abort: str | None = None
    _lock_generation: str | None = None
    _heartbeat: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_heartbeat"] = None
        return state

    @property
    def run_root(self) -> str:
        return join(self.root, self.run_id)

    @property
    def manifest_path(self) -> str:
        return join(self.root, MANIFEST)

    @property
    def lock_path(self) -> str:
        return join(self.root, LOCK)

    def _info(self) -> LockInfo:
        now = _now()
        return LockInfo(
            run=self.run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=now.isoformat(timespec="seconds"),
            expires=(now + dt.timedelta(seconds=self.lease_seconds)).isoformat(),
            runner=self.runner,
        )

    def refresh(self) -> bool:
        """Extends the lease; False if the lock is no longer this run's."""
        store = store_for(self.root)
        current = store.read(self.lock_path)
        if current is None:
            return False
        info = _parse_lock(current[0])
        if info is None or info.run != self.run_id:
            return False
        renewed = dataclasses.replace(
            info,
            expires=(_now() + dt.timedelta(seconds=self.lease_seconds)).isoformat(),
        )
        generation = store.replace(self.lock_path, _lock_text(renewed), current[1])
        if generation is not None:
            self._lock_generation = generation
        return generation is not None

    def start_heartbeat(self) -> None:
        """Refreshes the lease from a daemon thread until :meth:`release`."""
        if self._heartbeat is not None:
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / 3):
                with contextlib.suppress(Exception):
                    # A failed refresh is retried at the next beat; the lease has slack.
                    self.refresh()

        thread = threading.Thread(target=beat, name=f"lock-{self.run_id}", daemon=True)
        thread.start()
        self._heartbeat = stop

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()
            self._heartbeat = None

    def sweep(self, keep: Iterable[str]) -> list[str]:
        """Deletes every file under the run folder that ``keep`` does not list.

        Returns:
            The paths deleted (temporary shards, leftovers of retried bundles).
        """
        store = store_for(self.root)
        wanted = {_normal(p) for p in keep}
        extra = [p for p in store.list_files(self.run_root) if _normal(p) not in wanted]
        store.delete_files(extra)
        return extra

    def committed(self) -> bool:
        """Whether the output's manifest names this run (a retried commit finds it so)."""
        current = store_for(self.root).read(self.manifest_path)
        return manifest_run(current[0] if current else None) == self.run_id

    def publish(self, manifest: dict[str, Any], text: str) -> None:
        """Commits the run: replaces ``manifest.json``, deletes other runs, releases the lock.

        Idempotent: a retried commit of the same run succeeds.

        Raises:
            CommitConflictError: if another run committed to the output meanwhile.
        """
        store = store_for(self.root)
        data = text.encode("utf-8")
        if store.replace(self.manifest_path, data, self.manifest_generation) is None:
            current = store.read(self.manifest_path)
            if manifest_run(current[0] if current else None) != self.run_id:
                holder = manifest_run(current[0] if current else None) or "another run"
                raise CommitConflictError(
                    self.manifest_path,
                    f"{holder} committed to this output while run {self.run_id} was writing "
                    "(its lock was broken); this run's files were not published",
                )
        self.collect_garbage()
        self.release()

    def collect_garbage(self) -> None:
        """Deletes the run folders of this output other than this run's."""
        store = store_for(self.root)
        for name in store.list_dir(self.root):
            if RUN_DIR.fullmatch(name) and name != self.run_id:
                store.delete_tree(join(self.root, name))
        for tree in self.extra_trees:
            store.delete_tree(tree)

    def release(self) -> None:
        """Deletes the lock if this run still holds it."""
        self._stop_heartbeat()
        with contextlib.suppress(ValueError):
            _HELD.remove(self)
        store = store_for(self.root)
        current = store.read(self.lock_path)
        if current is None:
            return
        info = _parse_lock(current[0])
        if info is not None and info.run == self.run_id:
            store.delete(self.lock_path, current[1])

    def abort(self, keep: str | None = None) -> None:
        """After a failure: deletes this run's folder (unless committed) and releases.

        Args:
            keep: A folder under the run's folder to leave in place (the dead-letter files
                a failure message points at); the next run into the output deletes it.
        """
        store = store_for(self.root)
        current = store.read(self.manifest_path)
        if manifest_run(current[0] if current else None) != self.run_id:
            with contextlib.suppress(Exception):
                kept = _normal(keep) if keep else None
                for path in store.list_files(self.run_root):
                    if kept is None or not _normal(path).startswith(kept.rstrip("/") + "/"):
                        store.delete_files([path])
                if not store.list_files(self.run_root):
                    store.delete_tree(self.run_root)
                elif not _is_gcs(self.run_root):
                    # Folders left empty (GCS has none).
                    for folder, _, _ in sorted(os.walk(self.run_root), reverse=True):
                        with contextlib.suppress(OSError):
                            os.rmdir(folder)
        self.release()
        if self.created and not _is_gcs(self.root):
            with contextlib.suppress(OSError):
                os.rmdir(self.root)  # only if empty: a first run that failed leaves nothing


def _normal(path: str) -> str:
    return path if _is_gcs(path) else os.path.abspath(path)


def _enclosing_dataset(path: str) -> str | None:
    """The nearest folder above ``path`` that holds a dataset (a manifest or a lock)."""
    store = store_for(path)
    if _is_gcs(path):
        from transforms.io.gcs import split_gcs_path

        bucket, name = split_gcs_path(path)
        parts = [p for p in name.split("/") if p]
        parents = [f"gs://{bucket}/" + "/".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)]
    else:
        here = os.path.abspath(path)
        parents = []
        while os.path.dirname(here) != here:
            here = os.path.dirname(here)
            parents.append(here)
    for parent in parents:
        manifest = store.read(join(parent, MANIFEST))
        lock = store.read(join(parent, LOCK))
        # Only beamforge's own files count: a manifest.json of anything else is not a dataset.
        if (manifest is not None and manifest_run(manifest[0]) is not None) or (
            lock is not None and _parse_lock(lock[0]) is not None
        ):
            return parent
    return None


def check_errors_folder(errors: str, output: str) -> None:
    """Checks a dead-letter folder given apart from the output (the spec's ``errors.path``).

    Raises:
        InputError: if it is a file, lies inside the output or another dataset folder,
            holds a dataset itself, or cannot be created.
    """
    store = store_for(errors)
    if not _is_gcs(errors):
        errors, output = os.path.abspath(errors), os.path.abspath(output)
        if os.path.exists(errors) and not os.path.isdir(errors):
            raise InputError(errors, "errors.path is a file; give a folder for the dead letters")
    inside = errors.rstrip("/") + "/"
    if inside.startswith(output.rstrip("/") + "/") or output.startswith(inside):
        raise InputError(
            errors,
            f"errors.path overlaps the output {output}; give a folder outside it (the default, "
            "a run's own errors/ folder, needs no errors.path)",
        )
    holder = _enclosing_dataset(errors) or (
        errors if store.read(join(errors, MANIFEST)) or store.read(join(errors, LOCK)) else None
    )
    if holder is not None:
        raise InputError(errors, f"errors.path is inside the dataset folder {holder}")
    if not _is_gcs(errors):
        try:
            os.makedirs(errors, exist_ok=True)
        except OSError as exc:
            raise InputError(errors, f"cannot create the errors folder: {exc.strerror}") from None
        if not os.access(errors, os.W_OK | os.X_OK):
            raise InputError(errors, "cannot write the errors folder (no permission)")


def check_output(root: str) -> None:
    """Checks that ``root`` can be a run's output folder before anything is written.

    Raises:
        InputError: if it is a file, or a folder holding anything but beamforge datasets.
    """
    store = store_for(root)
    if not _is_gcs(root) and os.path.exists(root) and not os.path.isdir(root):
        raise InputError(root, "--output is a file; give a folder for the dataset")
    if _GLOB_CHARS & set(root):
        raise InputError(root, "an output path cannot hold any of * ? [ ] { }")
    holder = _enclosing_dataset(root)
    if holder is not None:
        raise InputError(
            root,
            f"is inside the dataset folder {holder}, which its runs rewrite; give a folder "
            "outside it",
        )
    names = store.list_dir(root)
    foreign = [
        n
        for n in names
        if n not in (MANIFEST, LOCK) and not RUN_DIR.fullmatch(n) and not _PARTIAL.fullmatch(n)
    ]
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(
            root,
            f"the output folder holds files that are not a beamforge dataset ({listed}); "
            "give an empty or new folder, or one a previous run wrote",
        )
    if MANIFEST in names:
        current = store.read(join(root, MANIFEST))
        if current is not None and manifest_run(current[0]) is None:
            raise InputError(
                join(root, MANIFEST),
                "is not a manifest this version of beamforge wrote (it names no run); "
                "remove the folder or give a new one",
            )


def acquire(
    root: str,
    *,
    run_id: str | None = None,
    runner: str = "local",
    lease_seconds: float | None = None,
) -> OutputCommit:
    """Takes the output's lock for a new run.

    Args:
        root: The output folder (local or gs://); created if missing.
        run_id: The run's id (default: a new one).
        runner: ``local`` when this process runs the job and refreshes the lock; otherwise
            the remote runner's name, and the lock gets the remote lease.
        lease_seconds: Override of the lease.

    Returns:
        The run's :class:`OutputCommit`, holding the lock.

    Raises:
        OutputLockedError: if a live run holds the lock.
        InputError: if ``root`` cannot be an output folder (see :func:`check_output`).
    """
    check_output(root)
    store = store_for(root)
    created = False
    if not _is_gcs(root) and not os.path.isdir(root):
        try:
            os.makedirs(root)
            created = True
        except OSError as exc:
            raise InputError(root, f"cannot create the output folder: {exc.strerror}") from None
    lease = lease_seconds or (LEASE_SECONDS if runner == "local" else REMOTE_LEASE_SECONDS)
    commit = OutputCommit(
        root=root,
        run_id=run_id or new_run_id(),
        manifest_generation=None,
        previous_run=None,
        lease_seconds=lease,
        runner=runner,
        created=created,
    )
    lock_path = commit.lock_path
    for _ in range(5):
        try:
            generation = store.create(lock_path, _lock_text(commit._info()))
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise InputError(root, f"cannot write the output folder: {exc.strerror}") from None
            raise
        if generation is not None:
            commit._lock_generation = generation
            break
        current = store.read(lock_path)
        if current is None:
            continue
        holder = _parse_lock(current[0])
        if holder is not None and not holder.expired(_now()) and not holder.holder_dead():
            raise OutputLockedError(
                root,
                f"another run is writing this output: {holder.describe()}; wait for it to "
                f"finish, or delete {lock_path} if it is known to be dead",
            )
        # The holder is gone: break its lock, and only if nobody broke it first.
        store.delete(lock_path, current[1])
    else:
        raise OutputLockedError(root, f"could not take the lock {lock_path}; try again")
    manifest = store.read(commit.manifest_path)
    commit.manifest_generation = manifest[1] if manifest else None
    commit.previous_run = manifest_run(manifest[0] if manifest else None)
    _HELD.append(commit)
    # Leftovers of killed runs: every run folder the manifest does not name, and the
    # temporary file of a manifest or lock write that was cut short.
    for name in store.list_dir(root):
        if (
            RUN_DIR.fullmatch(name) and name not in (commit.previous_run, commit.run_id)
        ) or _PARTIAL.fullmatch(name):
            store.delete_tree(join(root, name))
    return commit


def abort_held() -> None:
    """Aborts every run this process holds an output for (from a signal handler, before the
    process exits): their folders go, their locks are released, previous datasets stay."""
    for held in list(_HELD):
        with contextlib.suppress(Exception):
            held.abort(keep=held.keep_on_abort)


def resolve_dataset(path: str) -> tuple[str, dict[str, Any]] | None:
    """The manifest of the dataset in folder ``path``, or None if it holds none.

    Returns:
        ``(manifest path, manifest)``.
    """
    store = store_for(path)
    manifest_path = join(path, MANIFEST)
    found = store.read(manifest_path)
    if found is None:
        return None
    try:
        manifest = json.loads(found[0].decode("utf-8"))
    except ValueError as exc:
        raise InputError(manifest_path, f"is not valid JSON ({exc})") from None
    return manifest_path, manifest


def resolve_artifact_dir(path: str) -> str:
    """The artifact folder ``path`` stands for.

    A dataset folder (one holding ``manifest.json``) stands for the artifact its manifest
    lists; any other path is an artifact folder itself.
    """
    if "://" in path and not _is_gcs(path):
        return path
    found = resolve_dataset(path)
    if found is None:
        return path
    manifest_path, manifest = found
    artifact = manifest.get("artifact") if isinstance(manifest, dict) else None
    if not isinstance(artifact, dict) or not isinstance(artifact.get("path"), str):
        raise InputError(manifest_path, "names no artifact (key artifact.path is missing)")
    return str(artifact["path"])


__all__ = [
    "LOCK",
    "MANIFEST",
    "CommitConflictError",
    "LockInfo",
    "OutputCommit",
    "OutputLockedError",
    "abort_held",
    "acquire",
    "check_errors_folder",
    "check_output",
    "join",
    "manifest_run",
    "new_run_id",
    "resolve_artifact_dir",
    "resolve_dataset",
    "store_for",
]
