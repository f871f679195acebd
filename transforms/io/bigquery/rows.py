"""Rows as BigQuery takes them, and the error records of rows it rejects.

Pure: no client, no Beam. Rows for insertion (:func:`json_rows`), the error records of an
insertAll request's rejected rows (:func:`rejected_records`, reason ``bigquery_rejected``)
and the schema of a dead-letter table of error records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from transforms.core import schema as schema_lib
from transforms.core.errors import ErrorRecord, row_payload
from transforms.io.bigquery.schema import arrow_schema

__all__ = [
    "ERRORS",
    "REJECTED",
    "error_arrow_schema",
    "error_schema",
    "errors_to_batch",
    "json_rows",
    "rejected_records",
]

REJECTED = "bigquery_rejected"
# The tag of the error output of the read and the write transforms.
ERRORS = "errors"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None  # BigQuery's JSON rows have no NaN; a null keeps the row.
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def json_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows of a batch's visible columns as BigQuery JSON rows.

    Timestamps and dates are ISO-8601 strings, bytes base64, NaN null.
    """
    visible = schema_lib.drop_hidden(batch)
    return [{k: _json_value(v) for k, v in row.items()} for row in visible.to_pylist()]


def rejected_records(
    rows: Sequence[Mapping[str, Any]],
    insert_errors: Sequence[Mapping[str, Any]],
    *,
    table: str,
    pipeline: str,
    step: str,
) -> list[ErrorRecord]:
    """Error records for the rows of an insertAll request that BigQuery rejected.

    Args:
        rows: The rows sent, in order.
        insert_errors: BigQuery's ``insertErrors`` (``{index, errors: [{reason, location,
            message}]}``).
        table: The table written, recorded as the source.
        pipeline: Job name.
        step: The writing step's name.
    """
    out = []
    for item in insert_errors:
        index = int(item["index"])
        details = item.get("errors") or [{}]
        message = "; ".join(
            f"{d.get('reason', 'invalid')}"
            + (f" at {d['location']}" if d.get("location") else "")
            + (f": {d['message']}" if d.get("message") else "")
            for d in details
        )
        out.append(
            ErrorRecord(
                pipeline=pipeline,
                step=step,
                reason=REJECTED,
                message=f"BigQuery rejected the row for {table}: {message}",
                payload=row_payload(rows[index]),
                source=f"bigquery:{table}",
            )
        )
    return out


def error_schema() -> list[dict[str, Any]]:
    """BigQuery fields of a dead-letter table of :class:`ErrorRecord`s."""
    names = [f.name for f in dataclasses.fields(ErrorRecord)]
    required = {"pipeline", "step", "reason", "message", "payload", "source"}
    return [
        {"name": n, "type": "STRING", "mode": "REQUIRED" if n in required else "NULLABLE"}
        for n in names
    ]


def error_arrow_schema() -> pa.Schema:
    """The Arrow schema of :func:`error_schema`."""
    return arrow_schema(error_schema())


def errors_to_batch(records: Sequence[ErrorRecord]) -> pa.RecordBatch:
    """Error records as a record batch for the dead-letter table."""
    return pa.RecordBatch.from_pylist([r.to_dict() for r in records], schema=error_arrow_schema())
