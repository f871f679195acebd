"""The errors a chain stops with, each carrying the CLI's exit code for its outcome."""

from __future__ import annotations

from typing import ClassVar

from beam_pipelines.exit_codes import ExitCode


class ChainError(RuntimeError):
    """A chain stopped at a step.

    Attributes:
        step: The step's name.
        exit_code: The CLI's exit code for this outcome.
    """

    exit_code: ClassVar[int] = ExitCode.FAILED

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"step {step}: {message}")


class GateFailedError(ChainError):
    """The evaluation gate stopped the chain."""

    exit_code = ExitCode.STOPPED


class CanaryRolledBackError(ChainError):
    """A canary was judged worse than its limits and rolled back; the previous model serves."""

    exit_code = ExitCode.STOPPED
