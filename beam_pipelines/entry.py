"""How the ``python -m`` entry points of beam_pipelines end: a user's mistake is one line.

``python -m beam_pipelines.dataset``, ``python -m beam_pipelines.streaming`` and the Flex
Template launcher (``beam_pipelines/flex_main.py``) end as the ``beamforge`` command does: a
spec, input, output or artifact that cannot be used is printed as ``error: <message>`` on
stderr with exit code 2, counts that do not balance with exit code 1; any other exception is
a bug and keeps its traceback. Errors are recognised by their type, never by their message.
The codes are those of ``launchers.exit_codes.ExitCode`` (this package does not import
launchers).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

OK = 0
FAILED = 1
USER_ERROR = 2
INTERRUPTED = 130


def _code_for(exc: BaseException) -> int | None:
    # Imported here: the Flex Template launcher parses its flags before anything heavy loads.
    from transforms.core.artifact import ArtifactError
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError
    from transforms.core.manifest import CountsMismatchError

    if isinstance(exc, CountsMismatchError):
        return FAILED
    if isinstance(exc, InputError | SpecError | ArtifactError):
        return USER_ERROR
    return None


# Beam appends this to the message of an exception raised inside a DoFn.
_STEP_SUFFIX = re.compile(r" \[while running '[^\n]*'\]$")


def _one_line(text: str) -> str:
    return " ".join(_STEP_SUFFIX.sub("", text.strip()).split())


def _in_pipeline(exc: BaseException) -> bool:
    # Beam's copy of an exception raised inside a DoFn (its original is the __context__).
    return bool(getattr(exc, "_tagged_with_step", False))


def failure(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and one-line message for ``exc``, or None for a bug.

    Typed user errors and :class:`~transforms.core.manifest.CountsMismatchError` are found
    also behind Beam's copies of an exception raised inside a DoFn. A plain ValueError raised
    before the pipeline runs (a planning check without a typed error yet) is a user error;
    raised inside the pipeline it is a bug.
    """
    found: tuple[int, str] | None = None
    current: BaseException | None = exc
    seen: set[int] = set()
    # From Beam's copies and wrappers to the exception the code raised; anything else stops
    # the walk, so a bug raised while handling a user error stays a bug.
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = _code_for(current)
        if code is not None:
            found = code, _one_line(str(current))
            if not _in_pipeline(current):
                return found  # the original
        elif not (type(current) is RuntimeError and _in_pipeline(current)):
            break
        current = current.__cause__ or current.__context__
    if found is not None:
        return found
    if isinstance(exc, ValueError) and not _in_pipeline(exc):
        return USER_ERROR, _one_line(str(exc))
    return None


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``error: <message>``, exit code 2.

    For the Flex Template launcher: Dataflow shows its stderr in the job's log, where the usage
    text argparse prints first would only hide the line that matters.
    """

    def error(self, message: str) -> NoReturn:
        """Prints ``error: <message>`` on stderr and exits with code 2."""
        self.exit(USER_ERROR, f"error: {message}\n")


def main(run: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Calls ``run(argv)``; returns the exit code, printing a recognised failure as one line.

    Args:
        run: The entry point's argument parser and runner.
        argv: The arguments (None: ``sys.argv[1:]``).

    Returns:
        0, or the failure's exit code after ``error: <message>`` on stderr.
    """
    try:
        run(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        found = failure(exc)
        if found is None:
            raise
        code, message = found
        print(f"error: {message}", file=sys.stderr)
        return code
    return OK


__all__ = ["FAILED", "INTERRUPTED", "OK", "USER_ERROR", "OneLineParser", "failure", "main"]
