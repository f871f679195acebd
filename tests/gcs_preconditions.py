"""Runs gcp-storage-emulator with GCS's generation preconditions.

``python -m tests.gcs_preconditions -d DIR start --host 127.0.0.1 --port PORT``

The PyPI emulator ignores ``ifGenerationMatch`` on uploads and deletes, which is what the
output commit protocol (:mod:`transforms.io.commit`) relies on for its lock and its manifest.
This wraps the emulator's object insert and delete handlers to honour it as GCS does: the
write or delete happens only if the object's current generation (0: absent) is the one
given, else the answer is 412 Precondition Failed. Check and write run under one lock, so
two clients racing for the same object cannot both win.
"""

from __future__ import annotations

import sys
import threading
from http import HTTPStatus
from typing import Any

from gcp_storage_emulator import __main__ as emulator_main
from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_LOCK = threading.Lock()


def _object_name(request: Any) -> str | None:
    params = request.params or {}
    if params.get("object_id"):
        return str(params["object_id"])
    if "name" in request.query:
        return str(request.query["name"][0])
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else data
        name = meta.get("name")
        return str(name) if name else None
    return None


def _with_precondition(handler: Any) -> Any:
    def wrapped(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        wanted = request.query.get("ifGenerationMatch")
        if not wanted:
            return handler(request, response, storage, *args, **kwargs)
        with _LOCK:
            name = _object_name(request)
            try:
                current = str(
                    storage.get_file_obj(request.params["bucket_name"], name)["generation"]
                )
            except NotFound:
                current = "0"
            if current != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json(
                    {
                        "error": {
                            "code": 412,
                            "message": "At least one of the pre-conditions you specified did not hold.",
                            "errors": [{"reason": "conditionNotMet"}],
                        }
                    }
                )
                return None
            return handler(request, response, storage, *args, **kwargs)

    return wrapped


def install() -> None:
    """Wraps the emulator's insert and delete handlers (idempotent)."""
    if getattr(objects, "_preconditions", False):
        return
    wrapped = {
        objects.insert: _with_precondition(objects.insert),
        objects.delete: _with_precondition(objects.delete),
    }
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                handlers[method] = wrapped[handler]
    # The server falls back to objects.insert by name for some upload paths.
    objects.insert = wrapped[objects.insert]
    objects._preconditions = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    install()
    sys.exit(emulator_main.main())
