"""Kubernetes resource quantities (``500m`` CPU, ``1Gi`` memory), read to compare them.

The API server refuses a container whose request is above its limit; comparing here makes
that an error at ``beamforge serve build`` time instead of at ``kubectl apply``.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["cpu_cores", "memory_bytes"]

_NUMBER = r"(?P<number>\d+(?:\.\d+)?|\.\d+)"
# Kubernetes' decimal exponent suffix (1e9, 5E-1), tried before the exa suffix E.
_EXPONENT = r"[eE](?P<exponent>[-+]?\d+)"
_CPU = re.compile(_NUMBER + rf"(?:{_EXPONENT}|(?P<unit>m?))")
_MEMORY = re.compile(_NUMBER + rf"(?:{_EXPONENT}|(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|))")
_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def cpu_cores(quantity: str) -> Decimal:
    """The cores a CPU quantity stands for (``500m`` -> 0.5, ``2`` -> 2, ``5e-1`` -> 0.5).

    Raises:
        ValueError: if it is not a CPU quantity.
    """
    match = _CPU.fullmatch(quantity)
    if match is None:
        raise ValueError(
            f"{quantity!r} is not a CPU quantity; expected cores (1, 0.5) or millicores (500m)"
        )
    cores = Decimal(match["number"])
    if match["exponent"] is not None:
        return cores.scaleb(int(match["exponent"]))
    return cores / 1000 if match["unit"] else cores


def memory_bytes(quantity: str) -> Decimal:
    """The bytes a memory quantity stands for (``1Gi`` -> 1073741824, ``500M``, ``5e8``).

    Raises:
        ValueError: if it is not a memory quantity.
    """
    match = _MEMORY.fullmatch(quantity)
    if match is None:
        raise ValueError(
            f"{quantity!r} is not a memory quantity; expected bytes with a unit (512Mi, 2Gi, 500M)"
        )
    if match["exponent"] is not None:
        return Decimal(match["number"]).scaleb(int(match["exponent"]))
    return Decimal(match["number"]) * _MEMORY_UNITS[match["unit"]]
