"""How the ``python -m`` entry points of beam_pipelines end: a user's mistake is one line.

``python -m beam_pipelines.dataset``, ``python -m beam_pipelines.streaming`` and the Flex
Template launcher (``beam_pipelines/flex_main.py``) end as the ``beamforge`` command does: a
spec, input, output or artifact that cannot be used is printed as ``error: <message>`` on
stderr with exit code 2, counts that do not balance with exit code 1; any other exception is
a bug and keeps its traceback. Failures are recognised as the command recognises them
(:func:`beam_pipelines.failures.failure_of`), with the same :class:`ExitCode`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from beam_pipelines.exit_codes import ExitCode
from beam_pipelines.failures import failure_of


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``error: <message>``, exit code 2.

    For the Flex Template launcher: Dataflow shows its stderr in the job's log, where the usage
    text argparse prints first would only hide the line that matters.
    """

    def error(self, message: str) -> NoReturn:
        """Prints ``error: <message>`` on stderr and exits with code 2."""
        self.exit(ExitCode.USER_ERROR, f"error: {message}\n")


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
        return ExitCode.INTERRUPTED
    except Exception as exc:
        found = failure_of(exc)
        if found is None:
            raise
        print(f"error: {found.message}", file=sys.stderr)
        return found.code
    return ExitCode.OK


__all__ = ["OneLineParser", "main"]
