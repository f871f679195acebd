"""Shared by the malformed-input reader tests: the trips schema, one file's rows and errors."""

from __future__ import annotations

import pathlib

from transforms.core.errors import ErrorRecord
from transforms.io.read import Source, read_file, resolve_schema

TRIPS = {"id": "int64", "company": "string", "fare": "float64"}


def read_all(path: pathlib.Path, source: Source, **kwargs) -> tuple[list[dict], list[tuple]]:
    """Rows (without __file) and errors (line, reason, message, payload) of one file."""
    schema = resolve_schema(source, [str(path)])
    rows: list[dict] = []
    found: list[ErrorRecord] = []
    for batch, errs in read_file(str(path), source, schema, pipeline="job", **kwargs):
        if batch is not None:
            rows += batch.drop_columns(["__file"]).to_pylist()
        found += errs
    for e in found:
        assert e.source.rsplit(":", 1)[0] == str(path)
    return rows, [(int(e.source.rsplit(":", 1)[1]), e.reason, e.message, e.payload) for e in found]


def trips(**options) -> Source:
    return Source(format="csv", schema=dict(TRIPS), **options)
