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
import socket
import threading
from collections.abc import Iterable
from typing import Any

from transforms.core.errors import InputError
from transforms.io.output_folder import (
    LOCK,
    MANIFEST,
    PARTIAL_WRITE,
    RUN_DIR,
    check_errors_folder,
    check_output,
    manifest_run,
    new_run_id,
    resolve_artifact_dir,
    resolve_dataset,
)
from transforms.io.output_lock import (
    LEASE_SECONDS,
    REMOTE_LEASE_SECONDS,
    LockInfo,
    lock_text,
    parse_lock,
)
from transforms.io.output_stores import is_gcs, join, store_for

# The outputs this process holds (acquired, not yet released): what a signal handler
# cleans up before the process exits (abort_held).
_HELD: list[OutputCommit] = []


class OutputLockedError(InputError):
    """Another run is writing the same output."""


class CommitConflictError(InputError):
    """The output's manifest changed while this run was writing (its lock was broken)."""


class OutputKindError(InputError):
    """The output folder holds another kind of output (a dataset where predictions go)."""


# What a manifest's "kind" names; dataset manifests carry no kind (they came first).
DATASET = "dataset"
PREDICTIONS = "predictions"
_KIND_NAMES = {DATASET: "a dataset", PREDICTIONS: "predictions"}


def manifest_kind(data: bytes | None) -> str | None:
    """The kind of output a beamforge manifest's bytes describe.

    Returns:
        The manifest's ``kind`` (``predictions``), ``dataset`` for a manifest without one,
        or None for no manifest or one beamforge did not write (it names no run).
    """
    if manifest_run(data) is None:
        return None
    assert data is not None
    kind = json.loads(data.decode("utf-8")).get("kind", DATASET)
    return kind if isinstance(kind, str) else DATASET


def check_output_kind(root: str, kind: str) -> None:
    """Refuses an output folder whose committed manifest describes another kind of output.

    A dataset run into a folder of predictions (or the reverse) would replace them at its
    commit; one read of the manifest (local or gs://) tells before anything is written.

    Args:
        root: The output folder.
        kind: What the run writes: ``dataset`` or ``predictions``.

    Raises:
        OutputKindError: if the folder's manifest is of another kind.
    """
    current = store_for(root).read(join(root, MANIFEST))
    found = manifest_kind(current[0] if current else None)
    if found is None or found == kind:
        return
    raise OutputKindError(
        root,
        f"holds {_KIND_NAMES.get(found, found)} ({MANIFEST}), not "
        f"{_KIND_NAMES.get(kind, kind)}; choose another --output",
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
        info = parse_lock(current[0])
        if info is None or info.run != self.run_id:
            return False
        renewed = dataclasses.replace(
            info,
            expires=(_now() + dt.timedelta(seconds=self.lease_seconds)).isoformat(),
        )
        generation = store.replace(self.lock_path, lock_text(renewed), current[1])
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
        info = parse_lock(current[0])
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
                elif not is_gcs(self.run_root):
                    # Folders left empty (GCS has none).
                    for folder, _, _ in sorted(os.walk(self.run_root), reverse=True):
                        with contextlib.suppress(OSError):
                            os.rmdir(folder)
        self.release()
        if self.created and not is_gcs(self.root):
            with contextlib.suppress(OSError):
                os.rmdir(self.root)  # only if empty: a first run that failed leaves nothing


def _normal(path: str) -> str:
    return path if is_gcs(path) else os.path.abspath(path)


def acquire(
    root: str,
    *,
    run_id: str | None = None,
    runner: str = "local",
    lease_seconds: float | None = None,
    kind: str | None = None,
) -> OutputCommit:
    """Takes the output's lock for a new run.

    Args:
        root: The output folder (local or gs://); created if missing.
        run_id: The run's id (default: a new one).
        runner: ``local`` when this process runs the job and refreshes the lock; otherwise
            the remote runner's name, and the lock gets the remote lease.
        lease_seconds: Override of the lease.
        kind: What the run writes (``dataset`` or ``predictions``): a folder whose manifest
            is of another kind is refused (see :func:`check_output_kind`). None: not checked.

    Returns:
        The run's :class:`OutputCommit`, holding the lock.

    Raises:
        OutputLockedError: if a live run holds the lock.
        OutputKindError: if ``kind`` is given and the folder holds another kind of output.
        InputError: if ``root`` cannot be an output folder (see :func:`check_output`).
    """
    check_output(root)
    if kind is not None:
        check_output_kind(root, kind)
    store = store_for(root)
    created = False
    if not is_gcs(root) and not os.path.isdir(root):
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
            generation = store.create(lock_path, lock_text(commit._info()))
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
        holder = parse_lock(current[0])
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
        ) or PARTIAL_WRITE.fullmatch(name):
            store.delete_tree(join(root, name))
    return commit


def abort_held() -> None:
    """Aborts every run this process holds an output for (from a signal handler, before the
    process exits): their folders go, their locks are released, previous datasets stay."""
    for held in list(_HELD):
        with contextlib.suppress(Exception):
            held.abort(keep=held.keep_on_abort)


__all__ = [
    "DATASET",
    "LOCK",
    "MANIFEST",
    "PREDICTIONS",
    "CommitConflictError",
    "LockInfo",
    "OutputCommit",
    "OutputKindError",
    "OutputLockedError",
    "abort_held",
    "acquire",
    "check_errors_folder",
    "check_output",
    "check_output_kind",
    "join",
    "manifest_kind",
    "manifest_run",
    "new_run_id",
    "resolve_artifact_dir",
    "resolve_dataset",
    "store_for",
]
