"""JSON Lines reader: one JSON object per line, a malformed line to one error record."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from transforms.core import errors
from transforms.core.values import Decimal
from transforms.io.batches import RowBuilder, Yielded, drain
from transforms.io.streams import BROKEN_STREAM, open_stream, truncated_error

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = ["read_jsonl_file"]


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


def read_jsonl_file(
    path: str, source: Source, target: pa.Schema, pipeline: str, chunk_bytes: int
) -> Iterator[Yielded]:
    """Streams one JSON Lines file as ``(batch, errors)`` pairs.

    See :func:`transforms.io.read.read_file`.

    Raises:
        ReadError: if the file cannot be read at all; the message names it.
    """
    builder = RowBuilder(target, path, pipeline, binary_base64=True, source=source)
    with open_stream(path) as stream:
        try:
            for number, raw in enumerate(stream, start=1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    builder.error(
                        number,
                        errors.BAD_ENCODING,
                        f"line is not valid utf-8: {exc.reason} at byte {exc.start}",
                        raw.decode("utf-8", errors="replace"),
                    )
                    continue
                try:
                    # Bare NaN/Infinity literals parse (Python's json does); the non-finite
                    # rule then rejects them like any other non-finite float.
                    record = json.loads(text, parse_float=Decimal)
                except ValueError as exc:
                    builder.error(number, errors.MALFORMED_RECORD, f"not valid JSON: {exc}", text)
                    continue
                if not isinstance(record, dict):
                    builder.error(
                        number,
                        errors.MALFORMED_RECORD,
                        f"expected a JSON object, got {type(record).__name__}",
                        text,
                    )
                    continue
                builder.add(record, number, _constant(text))
                yield from drain(builder, source.batch_size, final=False)
        except BROKEN_STREAM as exc:
            raise truncated_error(path, exc) from None
    yield from drain(builder, source.batch_size, final=True)
