"""Training on this machine: the training script as a subprocess, with Vertex's environment.

A Vertex AI CustomJob hands a training container its data and output locations as
``AIP_*`` environment variables; the local target runs the same script with the same
variables and a local model directory, so the script cannot tell the difference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

_LOG = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
LOG_TAIL_LINES = 30


class TrainingError(RuntimeError):
    """A training run did not succeed.

    Attributes:
        log_tail: The last lines of the trainer's output.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        tail = f"\n--- last lines of the trainer's log ---\n{log_tail}" if log_tail else ""
        super().__init__(message + tail)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished training run left behind.

    Attributes:
        model_dir: The model directory (``AIP_MODEL_DIR``).
        metrics: The trainer's ``metrics.json`` (empty if it wrote none).
        log: The trainer's log file.
        seconds: Wall time.
    """

    model_dir: str
    metrics: dict[str, Any]
    log: str
    seconds: float


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip("\n")
    except OSError:
        return ""


def read_metrics(model_dir: str) -> dict[str, Any]:
    """The trainer's ``metrics.json`` under ``model_dir`` (local or gs://); {} if absent."""
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(model_dir, METRICS_FILE)
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as f:
        data = json.loads(f.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise TrainingError(f"{path} holds {type(data).__name__}, expected a JSON object")
    return data


def run_training(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log: str,
    timeout: float | None = None,
    cwd: str | None = None,
) -> TrainResult:
    """Runs a training command to completion with the given ``AIP_*`` environment.

    Args:
        command: The command, e.g. ``[sys.executable, "-m", "trainer.task", "--model", "x"]``.
        env: ``AIP_*`` variables (``AIP_MODEL_DIR`` required); added to this process's own.
        log: File for the trainer's stdout and stderr.
        timeout: Seconds before the trainer is killed (None: no limit).
        cwd: Working directory (default: this process's).

    Returns:
        The model directory, the metrics the trainer wrote, the log path and the wall time.

    Raises:
        TrainingError: if the trainer exits non-zero or runs past ``timeout``, with the tail
            of its log.
    """
    if "AIP_MODEL_DIR" not in env:
        raise ValueError("env must hold AIP_MODEL_DIR")
    model_dir = env["AIP_MODEL_DIR"]
    if "://" not in model_dir:
        os.makedirs(model_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env)
    # Trainers that live in the working tree import as modules from it.
    here = cwd or os.getcwd()
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (here, full_env.get("PYTHONPATH")) if p)
    start = time.monotonic()
    _LOG.info("training: %s (model dir %s, log %s)", " ".join(command), model_dir, log)
    with open(log, "wb") as out:
        try:
            code = subprocess.run(
                list(command),
                env=full_env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            raise TrainingError(
                f"trainer still running after {timeout:g} s; killed", log_tail(log)
            ) from None
    seconds = time.monotonic() - start
    if code != 0:
        raise TrainingError(f"trainer exited with code {code}", log_tail(log))
    _LOG.info("training finished in %.1f s", seconds)
    return TrainResult(
        model_dir=model_dir, metrics=read_metrics(model_dir), log=log, seconds=seconds
    )


def python_command(module: str | None, script: str | None, args: Sequence[str]) -> list[str]:
    """``python -m MODULE ARGS`` or ``python SCRIPT ARGS`` with this interpreter."""
    if module:
        return [sys.executable, "-m", module, *args]
    if script:
        return [sys.executable, script, *args]
    raise ValueError("give a module or a script")
