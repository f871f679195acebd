"""The exit codes of the ``beamforge`` command, in one place (standard library only)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit codes of the ``beamforge`` command.

    Attributes:
        OK: Done.
        FAILED: The work failed: a run's counts do not balance or it rejected more than
            ``errors.max_fraction``, a Dataflow job or a chain step failed.
        USER_ERROR: The spec, an argument, an input, the output or an artifact cannot be
            used as given; nothing was written.
        STOPPED: Stopped on purpose: the chain's evaluation gate refused the model
            (``launchers.chain.GateFailedError``) or the Dataflow job was cancelled.
        DRAINED: The Dataflow job was drained.
        UPDATED: The Dataflow job was replaced by an update.
        TIMED_OUT: Waiting for the Dataflow job timed out.
        INTERRUPTED: Stopped by Ctrl-C or SIGTERM; a run cleaned up after itself first.
    """

    OK = 0
    FAILED = 1
    USER_ERROR = 2
    STOPPED = 3
    DRAINED = 4
    UPDATED = 5
    TIMED_OUT = 6
    INTERRUPTED = 130


__all__ = ["ExitCode"]
