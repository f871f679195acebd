"""Backends: how each kind of step is done on one target; the chain decides the order."""

from __future__ import annotations

from typing import Any

from launchers.chain.backends.gcp import GcpBackend
from launchers.chain.backends.interface import Backend, StepContext
from launchers.chain.backends.local import LocalBackend
from launchers.chain.spec import ChainSpec, check_target

__all__ = ["Backend", "GcpBackend", "LocalBackend", "StepContext", "backend_for"]


def backend_for(spec: ChainSpec, target: str, *, credentials: Any = None) -> Backend:
    """The backend of a target (``gcp`` needs the spec's gcp section)."""
    check_target(spec, target)
    if target == "gcp":
        assert spec.gcp is not None
        return GcpBackend(spec.gcp, credentials=credentials)
    return LocalBackend()
