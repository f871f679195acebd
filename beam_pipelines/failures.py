"""Failures a user can act on, recognised by type wherever Beam put them: one line each.

A spec, input, output or artifact that cannot be used (exit code 2), counts that do not
balance (exit code 1) and Google Cloud's own errors before a run are reported as one line,
``error: <message>``, by the ``beamforge`` command and by the ``python -m`` entry points of
this package alike. They are found before the run, inside a DoFn in this process (behind
Beam's copies of the exception) or in a worker process (from the traceback text Beam sends
back), and always by their type, never by their message. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any

from beam_pipelines.exit_codes import ExitCode


@dataclasses.dataclass(frozen=True)
class Failure:
    """What the CLI prints and returns for an exception it recognises.

    Attributes:
        code: The exit code.
        message: One line, printed as ``error: <message>``.
    """

    code: ExitCode
    message: str


def _typed_codes() -> dict[type[BaseException], ExitCode]:
    # Imported here: the CLI's own start-up stays light. A new user-error type only has to
    # subclass InputError (or one of these) to be reported as one.
    from transforms.core.artifact import ArtifactError
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError
    from transforms.core.manifest import CountsMismatchError

    return {
        InputError: ExitCode.USER_ERROR,
        SpecError: ExitCode.USER_ERROR,
        ArtifactError: ExitCode.USER_ERROR,
        CountsMismatchError: ExitCode.FAILED,
    }


def _code_for(cls: type[BaseException]) -> ExitCode | None:
    for base, code in _typed_codes().items():
        if issubclass(cls, base):
            return code
    return None


# Beam appends this to the message of an exception raised inside a DoFn.
_STEP_SUFFIX = re.compile(r" \[while running '[^\n]*'\]$")


def _one_line(text: str) -> str:
    return " ".join(_STEP_SUFFIX.sub("", text.strip()).split())


def _in_pipeline(exc: BaseException) -> bool:
    """Whether Beam re-raised ``exc`` on its way out of a DoFn.

    On the in-process FnApiRunner, ``DoFnRunner._reraise_augmented`` raises a copy of an
    exception raised inside a DoFn, its message suffixed with ``[while running 'step']``:
    of the same type when the type can be built from one message, else a RuntimeError. The
    original is the copy's ``__context__``; the copy carries ``_tagged_with_step``.
    """
    return bool(getattr(exc, "_tagged_with_step", False))


def _typed_failure(exc: BaseException) -> Failure | None:
    # Walk from Beam's copies and wrappers to the exception the code raised; stop at
    # anything else, so a bug raised while handling a user error stays a bug.
    found: Failure | None = None
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = _code_for(type(current))
        if code is not None:
            found = Failure(code, _one_line(str(current)))
            if not _in_pipeline(current):
                return found  # the original
        elif not (type(current) is RuntimeError and _in_pipeline(current)):
            break
        current = current.__cause__ or current.__context__
    return found


# An exception line of a formatted traceback: ``module.Type: message`` at column 0.
_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?")
_OWN_PACKAGES = ("transforms", "beam_pipelines", "launchers")


def _resolve(name: str) -> type[BaseException] | None:
    """The exception class a traceback names, if it is one of this project's."""
    parts = name.split(".")
    if parts[0] not in _OWN_PACKAGES:
        return None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
        return None
    return None


def _remote_failure(exc: BaseException) -> Failure | None:
    """A typed error raised in another process, from the traceback Beam sends back.

    With ``--direct_running_mode=multi_processing`` a DoFn runs in a worker process and the
    FnApiRunner raises ``RuntimeError(traceback text)`` in the launcher: the exception object
    is gone and only its formatted traceback crosses the process boundary. The exception
    lines of that text (``transforms.core.errors.InputError: message``, outermost last) are
    walked as :func:`_typed_failure` walks ``__context__``: the type each names is resolved
    to a class of this project and looked up by type, never by message.
    """
    if type(exc) is not RuntimeError or not exc.args or not isinstance(exc.args[0], str):
        return None
    text = exc.args[0]
    if "Traceback (most recent call last):" not in text:
        return None
    lines = [
        m.groups()
        for line in text.splitlines()
        if line and not line[0].isspace() and (m := _EXCEPTION_LINE.fullmatch(line))
    ]
    found: Failure | None = None
    for name, message in reversed(lines):
        tagged = bool(_STEP_SUFFIX.search(message or ""))
        cls = _resolve(name)
        code = _code_for(cls) if cls is not None else None
        if code is not None:
            found = Failure(code, _one_line(message or name))
            if not tagged:
                return found
        elif not (name == "RuntimeError" and tagged):
            break
    return found


def _cloud_failure(exc: BaseException) -> Failure | None:
    """Google Cloud's own errors before the run: no credentials, a service out of reach.

    They say what the environment lacks, not where the code is wrong: one line each. Missing
    credentials are the user's to give (exit code 2); a request that failed or kept failing
    until its retry deadline is a failed run (exit code 1).
    """
    if _in_pipeline(exc):
        return None
    module = type(exc).__module__
    if module.startswith("google.auth"):
        return Failure(ExitCode.USER_ERROR, _one_line(f"Google Cloud credentials: {exc}"))
    if module.startswith("google.api_core"):
        return Failure(ExitCode.FAILED, _one_line(f"Google Cloud request failed: {exc}"))
    return None


def failure_of(exc: BaseException) -> Failure | None:
    """The failure the CLI reports for ``exc``, or None for a code error (re-raised).

    Recognised, wherever they were raised (before the run, inside a DoFn in this process or
    in a worker process): :class:`transforms.core.errors.InputError` and its subclasses,
    :class:`transforms.core.config.SpecError`, :class:`transforms.core.artifact.ArtifactError` (exit
    code 2) and :class:`transforms.core.manifest.CountsMismatchError` (exit code 1). A plain
    ValueError raised before the pipeline runs (planning checks that do not raise a typed
    error yet) is taken as a user error too; raised inside the pipeline it is a bug. Errors
    of Google's client libraries raised before the run (credentials, a request that failed)
    are one line too.
    """
    failure = _typed_failure(exc) or _remote_failure(exc) or _cloud_failure(exc)
    if failure is not None:
        return failure
    if isinstance(exc, ValueError) and not _in_pipeline(exc):
        return Failure(ExitCode.USER_ERROR, _one_line(str(exc)))
    return None


__all__ = ["Failure", "failure_of"]
