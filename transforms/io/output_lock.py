"""The lock file of an output folder: which run holds it, where, and until when.

A run writing an output holds ``_lock.json`` (:mod:`transforms.io.commit` takes, refreshes and
releases it). This module says what the file holds (:class:`LockInfo`), how it is written and
read back, and when its holder is gone: a lease that ran out, or a process of this host that
no longer runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket

__all__ = ["LEASE_SECONDS", "REMOTE_LEASE_SECONDS", "LockInfo", "lock_text", "parse_lock"]

# How long a lock outlives its last refresh. A local run refreshes it every third of this; a
# run on a remote runner cannot, so its lock carries the longer lease.
LEASE_SECONDS = 120.0
REMOTE_LEASE_SECONDS = 24 * 3600.0


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


def lock_text(info: LockInfo) -> bytes:
    """The bytes of a lock file."""
    return (json.dumps(dataclasses.asdict(info), indent=2) + "\n").encode("utf-8")


def parse_lock(data: bytes) -> LockInfo | None:
    """The lock a file's bytes hold, or None for a foreign or damaged file."""
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
