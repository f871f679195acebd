"""Whole CSV records to typed Arrow tables, with Arrow's parser, bad records as errors.

:func:`parse_records` takes records found by :mod:`transforms.io.csv_records` (so every row's
line is known), decodes them, lets Arrow parse and convert them in one go, and falls back to
the text rule of :mod:`transforms.core.values` value by value when Arrow refuses one. A record
with the wrong number of fields, bytes that do not decode, or a value its column cannot take
is one error record; the other rows are read.
"""

from __future__ import annotations

import codecs
import io
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from transforms.core import errors
from transforms.core.errors import ErrorRecord
from transforms.core.values import Rejection, describe, non_finite_rows, parse_strings
from transforms.io.batches import line_of, with_source
from transforms.io.csv_options import CsvOptions, Dialect
from transforms.io.csv_records import Records
from transforms.io.csv_scan import scan

if TYPE_CHECKING:
    from transforms.io.read import Source

__all__ = ["arrow_parse_options", "parse_header", "parse_one_by_one", "parse_records"]

# Logged under the readers' one name, the one users see in the launcher's log lines.
_LOG = logging.getLogger("transforms.io.read")


def arrow_parse_options(
    opts: CsvOptions, handler: Callable[[Any], str] | None, multiline: bool
) -> pa_csv.ParseOptions:
    """Arrow's parse options for ``opts``; ``multiline`` lets quoted values hold newlines."""
    return pa_csv.ParseOptions(
        delimiter=opts.delimiter,
        quote_char=opts.quote_char if opts.quote_char is not None else False,
        escape_char=opts.escape_char if opts.escape_char is not None else False,
        newlines_in_values=multiline,
        ignore_empty_lines=True,
        invalid_row_handler=handler,
    )


def parse_header(line: bytes, opts: CsvOptions) -> list[str]:
    """The column names in a header record (UTF-8, with its newline)."""
    table = pa_csv.read_csv(
        io.BytesIO(line),
        read_options=pa_csv.ReadOptions(
            autogenerate_column_names=True,
            use_threads=False,
            block_size=max(1 << 20, 2 * len(line)),
        ),
        parse_options=arrow_parse_options(opts, None, True),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                f"f{i}": pa.string() for i in range(line.count(opts.delimiter.encode()) + 1)
            },
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return [str(v) for v in table.to_pylist()[0].values()]


def _decoded(
    records: Records, encoding: str, dialect: Dialect, path: str, pipeline: str
) -> tuple[Records, list[ErrorRecord]]:
    """The records as UTF-8, without those that do not decode (one error each)."""
    data = records.data
    if data.isascii():
        return records, []
    utf8 = codecs.lookup(encoding).name == "utf-8"
    found: list[ErrorRecord] = []
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        first = int(np.searchsorted(records.stops, exc.start, side="right"))
        keep = np.ones(len(records), dtype=bool)
        for k in range(first, len(records)):
            raw = data[int(records.starts[k]) : int(records.stops[k])]
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as bad:
                keep[k] = False
                found.append(
                    ErrorRecord(
                        pipeline=pipeline,
                        step="read",
                        reason=errors.BAD_ENCODING,
                        message=f"line is not valid {encoding}: {bad.reason} at byte {bad.start}",
                        payload=raw.decode(encoding, errors="replace").rstrip("\r\n"),
                        source=f"{path}:{int(records.lines[k])}",
                    )
                )
        records = records.select(keep)
        if not len(records):
            return records, found
        text = records.data.decode(encoding)
    if utf8:
        return records, found
    # Transcoding keeps every ASCII byte, so the records are the same, at new offsets.
    data = text.encode("utf-8")
    ends = scan(data, dialect, final=True).ends
    if not len(ends) or ends[-1] != len(data):
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1]))
    head = np.frombuffer(data, dtype=np.uint8)[np.minimum(starts, len(data) - 1)]
    keep = (head != 10) & (head != 13)
    assert int(keep.sum()) == len(records), f"{path}: transcoding changed the records"
    return Records(data, records.offset, starts[keep], ends[keep], records.lines), found


def _read_options(names: list[str], records: Records, threads: bool) -> pa_csv.ReadOptions:
    # A block must hold the longest record whole (Arrow cannot parse a row across blocks).
    longest = int((records.stops - records.starts).max()) if len(records) else 0
    block = max(1 << 20, 1 << (longest + 1).bit_length())
    return pa_csv.ReadOptions(column_names=names, use_threads=threads, block_size=block)


def parse_records(
    records: Records,
    names: list[str],
    source: Source,
    target: pa.Schema,
    path: str,
    pipeline: str,
) -> tuple[pa.Table | None, list[ErrorRecord]]:
    """Parses whole records into a table with source columns, plus their errors."""
    opts = source.csv
    dialect = Dialect.of(opts)
    records, found = _decoded(records, opts.encoding, dialect, path, pipeline)
    if not len(records):
        return None, found
    data = records.data
    specials = [c.encode() for c in (opts.quote_char, opts.escape_char) if c]
    multiline = any(c in data for c in specials)
    allowed = set(source.allow_non_finite)

    def convert_options(typed: bool) -> pa_csv.ConvertOptions:
        types = {name: pa.string() for name in names}
        if typed:
            types.update({f.name: f.type for f in target if _csv_parses(f.type)})
        return pa_csv.ConvertOptions(
            column_types=types,
            include_columns=list(target.names),
            null_values=list(opts.null_values),
            strings_can_be_null=True,
            # A quoted empty field ("") is an empty string, not a null: writers quote it.
            quoted_strings_can_be_null=False,
            check_utf8=False,
        )

    def parse(handler: Callable[[Any], str], threads: bool, typed: bool) -> pa.Table:
        return pa_csv.read_csv(
            io.BytesIO(data),
            read_options=_read_options(names, records, threads),
            parse_options=arrow_parse_options(opts, handler, multiline),
            convert_options=convert_options(typed),
        )

    invalid = 0

    def count_invalid(row: Any) -> str:
        nonlocal invalid
        invalid += 1
        return "skip"

    # Fast path: Arrow's parser converts numbers itself (the same parser as the text rule
    # of transforms.core.values). A value it refuses, or a non-finite float where none is
    # allowed, sends the block down the text path, which reports the bad values one by one.
    typed = True
    table: pa.Table | None
    try:
        table = parse(count_invalid, True, typed)
        if any(
            len(non_finite_rows(table.column(f.name)))
            for f in target
            if f.name not in allowed and pa.types.is_floating(f.type)
        ):
            raise pa.ArrowInvalid("non-finite values")
    except pa.ArrowInvalid:
        invalid, typed = 0, False
        table = _or_none(lambda: parse(count_invalid, True, typed))
    keep = np.ones(len(records), dtype=bool)
    wrong: list[tuple[int, int]] = []
    if invalid and table is not None:
        # Record numbers are only known to the serial parser; reparse this block with it.
        def record_invalid(row: Any) -> str:
            wrong.append((row.number - 1, row.actual_columns))
            return "skip"

        table = _or_none(lambda: parse(record_invalid, False, typed))
        for k, _ in wrong:
            if 0 <= k < len(keep):
                keep[k] = False
    if table is None or table.num_rows != int(keep.sum()) or len(wrong) != invalid:
        # Arrow and transforms.io.csv_records disagree on the records (never seen): parse them
        # one by one rather than misnumber rows or fail the file.
        _LOG.warning("%s: records parsed one by one after a parser disagreement", path)
        table, keep, wrong = parse_one_by_one(records, names, source, target)
    for k, actual in wrong:
        found.append(
            ErrorRecord(
                pipeline=pipeline,
                step="read",
                reason=errors.WRONG_FIELD_COUNT,
                message=f"expected {len(names)} fields, got {actual}",
                payload=records.text(k),
                source=f"{path}:{int(records.lines[k])}",
            )
        )
    kept = np.flatnonzero(keep)
    if table.num_rows == 0:
        found.sort(key=line_of)
        return None, found
    lines = records.lines[kept]
    columns: list[pa.Array] = []
    problems: dict[int, list[tuple[str, Rejection]]] = {}
    for field in target:
        values = table.column(field.name).combine_chunks()
        if values.type == field.type:
            columns.append(values)
            continue
        converted = parse_strings(values, field.type, allow_non_finite=field.name in allowed)
        columns.append(converted.array)
        for row, rejection in converted.rejected.items():
            problems.setdefault(row, []).append((field.name, rejection))
    table_out = with_source(pa.Table.from_arrays(columns, schema=target), path, lines)
    if problems:
        for row in sorted(problems):
            reason, message = describe(problems[row])
            found.append(
                ErrorRecord(
                    pipeline=pipeline,
                    step="read",
                    reason=reason,
                    message=message,
                    payload=records.text(int(kept[row])),
                    source=f"{path}:{int(lines[row])}",
                )
            )
        bad = np.zeros(table.num_rows, dtype=bool)
        bad[list(problems)] = True
        table_out = table_out.filter(pa.array(~bad))
    found.sort(key=line_of)
    return table_out, found


def _or_none(parse: Callable[[], pa.Table]) -> pa.Table | None:
    try:
        return parse()
    except pa.ArrowInvalid:
        return None


def parse_one_by_one(
    records: Records, names: list[str], source: Source, target: pa.Schema
) -> tuple[pa.Table, np.ndarray, list[tuple[int, int]]]:
    """Slow, sure path: each record parsed on its own, as strings."""
    opts = source.csv
    strings = pa.schema([pa.field(n, pa.string()) for n in target.names])
    tables: list[pa.Table] = []
    keep = np.zeros(len(records), dtype=bool)
    wrong: list[tuple[int, int]] = []
    for k in range(len(records)):
        one = records.select(np.arange(len(records)) == k)
        fields: list[int] = []

        def count(row: Any, fields: list[int] = fields) -> str:
            fields.append(row.actual_columns)
            return "skip"

        try:
            table = pa_csv.read_csv(
                io.BytesIO(one.data),
                read_options=_read_options(names, one, False),
                parse_options=arrow_parse_options(opts, count, True),
                convert_options=pa_csv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    include_columns=list(target.names),
                    null_values=list(opts.null_values),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:
            table = strings.empty_table()
        if table.num_rows == 1:
            keep[k] = True
            tables.append(table.select(target.names))
        else:
            wrong.append((k, fields[0] if fields else 0))
    table = pa.concat_tables(tables) if tables else strings.empty_table()
    return table, keep, wrong


def _csv_parses(tp: pa.DataType) -> bool:
    """Types Arrow's CSV parser converts exactly as :func:`parse_strings` would."""
    return pa.types.is_integer(tp) or pa.types.is_floating(tp)
