"""What the terminal shows while a ``beamforge`` run goes, and how it stops on a signal.

A heartbeat line while a long run is silent; Beam's error logs and worker processes' stderr
held until the run's outcome is known (a user error is reported in one line, by
:func:`beam_pipelines.failures.failure_of`, not with Beam's tracebacks); Ctrl-C and SIGTERM stop
the command with one line and exit code 130.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from beam_pipelines.exit_codes import ExitCode
from beam_pipelines.failures import failure_of


class Heartbeat:
    """Prints elapsed time while a long run is going, so a silent terminal means stuck."""

    def __init__(self, out: TextIO, every: float = 15.0) -> None:
        self._out = out
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._start = time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            print(
                f"  ... running, {time.monotonic() - self._start:.0f} s elapsed",
                file=self._out,
                flush=True,
            )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class HeldBeamErrors(logging.Filter):
    """Holds Beam's error log records while a run goes, until its outcome is known.

    Beam logs an exception raised inside a DoFn, with its traceback, before the run fails
    with it. For a user error the CLI prints one line instead, so the records are dropped;
    for anything else (success, a bug) they are emitted as they would have been.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []
        self._handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("apache_beam") and record.levelno >= logging.ERROR:
            self.held.append(record)
            return False
        return True

    def __enter__(self) -> HeldBeamErrors:
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        user_error = exc is not None and failure_of(exc) is not None
        if not user_error:
            for record in self.held:
                for handler in self._handlers:
                    if record.levelno >= handler.level:
                        handler.handle(record)
        self.held.clear()


class HeldWorkerStderr:
    """Holds what worker processes write to stderr while a run goes (multi-process runs).

    Beam's SDK workers print the traceback of an exception raised in a DoFn straight to
    their stderr, which they inherit from this process. While the run goes, file descriptor
    2 points at a temporary file (this process's own messages still reach the terminal);
    afterwards the held text is written out, unless the run failed with a user error, which
    the CLI reports in one line.
    """

    # Where this process's own messages go while fd 2 is held (a signal handler writes here).
    terminal_fd = 2

    def __init__(self, active: bool) -> None:
        self._active = active
        self._saved = -1
        self._held: Any = None
        self._stream: TextIO | None = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []

    def __enter__(self) -> TextIO:
        if not self._active:
            return sys.stderr
        sys.stderr.flush()
        self._held = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._held.fileno(), 2)
        HeldWorkerStderr.terminal_fd = self._saved
        self._stream = os.fdopen(os.dup(self._saved), "w", buffering=1)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                self._handlers.append((handler, handler.setStream(self._stream)))
        return self._stream

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._active:
            return
        for handler, stream in self._handlers:
            handler.setStream(stream)
        assert self._stream is not None
        self._stream.close()
        os.dup2(self._saved, 2)
        HeldWorkerStderr.terminal_fd = 2
        os.close(self._saved)
        self._held.seek(0)
        text = self._held.read().decode("utf-8", "replace")
        self._held.close()
        if text and not (exc is not None and failure_of(exc) is not None):
            sys.stderr.write(text)
            sys.stderr.flush()


def stop_on_signals() -> dict[int, Any]:
    """Makes Ctrl-C and SIGTERM (what schedulers and Kubernetes send first) stop the command
    cleanly: a run's folder is deleted and the output's lock released
    (:func:`transforms.io.commit.abort_held`), one line is printed and the process exits 130.

    Exiting from the handler, rather than raising into whatever frame is running, is what
    makes this reliable: the local runner's code would catch or re-wrap an exception raised
    at an arbitrary point.

    Returns:
        The handlers replaced, to put back.
    """

    def stop(signum: int, frame: Any) -> None:
        # Imported when a signal comes: the commit module loads Beam's file systems.
        from transforms.io.commit import abort_held

        abort_held()
        line = f"error: stopped by {signal.Signals(signum).name}\n".encode()
        os.write(HeldWorkerStderr.terminal_fd, line)
        os._exit(ExitCode.INTERRUPTED)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(previous: dict[int, Any]) -> None:
    """Puts back the handlers :func:`stop_on_signals` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


__all__ = [
    "Heartbeat",
    "HeldBeamErrors",
    "HeldWorkerStderr",
    "restore_signals",
    "stop_on_signals",
]
