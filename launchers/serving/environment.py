"""The environment of a prediction server: what Vertex AI gives a Custom Prediction Routine.

The local server is configured exactly as a Vertex endpoint configures its container
(``AIP_HTTP_PORT``, ``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``, ``AIP_STORAGE_URI``, CPR's
``HANDLER_*`` and ``PREDICTOR_*``), plus this project's request size limit
(``BEAMFORGE_MAX_REQUEST_BYTES``) and request log (``BEAMFORGE_REQUEST_LOG*``, read by
:mod:`launchers.serving.request_log`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "HANDLER_CLASS",
    "HANDLER_MODULE",
    "HEALTH_ROUTE",
    "MAX_REQUEST_BYTES_ENV",
    "PREDICT_ROUTE",
    "ServerSetupError",
    "max_request_bytes",
    "port_setting",
    "predictor_class",
    "predictor_setting",
    "server_env",
    "setting",
]

PREDICT_ROUTE = "/predict"
HEALTH_ROUTE = "/health"
# CPR's PredictionHandler, answering a request the predictor refuses with 400
# (launchers.serving.app builds it; the package hands it to CPR by this name).
HANDLER_MODULE = "launchers.serving"
HANDLER_CLASS = "ClientErrorHandler"
MAX_REQUEST_BYTES_ENV = "BEAMFORGE_MAX_REQUEST_BYTES"
# Far above a real request (3,001 raw taxi trips are about 1.3 MB) and small enough that a
# runaway client cannot make the server buffer much.
DEFAULT_MAX_REQUEST_BYTES = 4 << 20


class ServerSetupError(ValueError):
    """The server cannot start as configured: a setting is missing or unusable.

    The message is one line naming the flag or variable at fault; ``python -m
    launchers.serving`` prints it as ``error: <message>`` and exits with code 2.
    """


def setting(value: str | None, flag: str, variable: str) -> str:
    """A server setting: the flag's ``value`` if given, else the environment ``variable``.

    Raises:
        ServerSetupError: if neither is set.
    """
    if value is not None:
        return value
    found = os.environ.get(variable)
    if not found:
        raise ServerSetupError(f"{flag} or {variable} is required")
    return found


def port_setting(port: int | None) -> int:
    """The port to listen on: ``--port`` if given (0 picks a free one), else ``AIP_HTTP_PORT``.

    Raises:
        ServerSetupError: if neither is set, or the value is not a port number.
    """
    source = "--port" if port is not None else "AIP_HTTP_PORT"
    raw: Any = port if port is not None else setting(None, "--port", "AIP_HTTP_PORT")
    try:
        number = int(raw)
    except ValueError:
        raise ServerSetupError(f"{source} must be a port number, got {raw!r}") from None
    if not 0 <= number <= 65535:
        raise ServerSetupError(f"{source} must be a port number in [0, 65535], got {number}")
    return number


def predictor_setting(predictor: str | None) -> tuple[str, str]:
    """``module:Class`` of the predictor: ``--predictor``, else ``PREDICTOR_MODULE`` and ``_CLASS``.

    Returns:
        The predictor and where it came from (the flag or the variables), for messages.

    Raises:
        ServerSetupError: if neither is set, or ``--predictor`` is not ``module:Class``.
    """
    if predictor is None:
        module = setting(None, "--predictor", "PREDICTOR_MODULE")
        cls = setting(None, "--predictor", "PREDICTOR_CLASS")
        return f"{module}:{cls}", "PREDICTOR_MODULE and PREDICTOR_CLASS"
    module, _, cls = predictor.partition(":")
    if not module or not cls:
        raise ServerSetupError(f"--predictor must be 'module:Class', got {predictor!r}")
    return predictor, "--predictor"


def predictor_class(predictor: str, source: str = "--predictor") -> type:
    """Imports the :class:`Predictor` class ``module:Class`` names.

    Args:
        predictor: ``module:Class``.
        source: The flag or variables it came from, for the error message.

    Raises:
        ServerSetupError: if the module does not exist or has no such class. An import error
            inside the module (a missing dependency) propagates.
    """
    module_name, _, cls = predictor.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the module exists; something it imports does not
        raise ServerSetupError(f"{source} {predictor}: no module named {exc.name!r}") from None
    found = getattr(module, cls, None)
    if not isinstance(found, type):
        raise ServerSetupError(f"{source} {predictor}: module {module_name} has no class {cls!r}")
    return found


def server_env(
    model_dir: str,
    predictor: str,
    port: int,
    *,
    predict_route: str = PREDICT_ROUTE,
    health_route: str = HEALTH_ROUTE,
    max_request_bytes: int | None = None,
) -> dict[str, str]:
    """The environment Vertex gives a CPR container, for ``model_dir`` and ``predictor``.

    Args:
        model_dir: The model directory (``AIP_STORAGE_URI``).
        predictor: ``module:Class`` of the :class:`Predictor`.
        port: ``AIP_HTTP_PORT``.
        predict_route: ``AIP_PREDICT_ROUTE``.
        health_route: ``AIP_HEALTH_ROUTE``.
        max_request_bytes: Largest request body accepted (``BEAMFORGE_MAX_REQUEST_BYTES``);
            None leaves the server's default.
    """
    module, _, cls = predictor.partition(":")
    if not module or not cls:
        raise ValueError(f"predictor must be 'module:Class', got {predictor!r}")
    env = {
        "AIP_STORAGE_URI": model_dir,
        "AIP_HTTP_PORT": str(port),
        "AIP_PREDICT_ROUTE": predict_route,
        "AIP_HEALTH_ROUTE": health_route,
        "HANDLER_MODULE": HANDLER_MODULE,
        "HANDLER_CLASS": HANDLER_CLASS,
        "PREDICTOR_MODULE": module,
        "PREDICTOR_CLASS": cls,
    }
    if max_request_bytes is not None:
        env[MAX_REQUEST_BYTES_ENV] = str(_positive(max_request_bytes, "max_request_bytes"))
    return env


def _positive(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ServerSetupError(f"{what} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ServerSetupError(f"{what} must be a positive integer, got {value!r}")
    return number


def max_request_bytes() -> int:
    """The request size limit from the environment (``BEAMFORGE_MAX_REQUEST_BYTES``).

    Raises:
        ServerSetupError: if the variable is set to anything but a positive integer.
    """
    raw = os.environ.get(MAX_REQUEST_BYTES_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_REQUEST_BYTES
    return _positive(raw, MAX_REQUEST_BYTES_ENV)
