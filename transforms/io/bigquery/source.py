"""BigQuery as a source: a table or a query, optionally filtered by date, read into batches.

:class:`BigQuerySource` is the spec's ``source.bigquery``; :func:`source_query` its SQL (pure),
:func:`source_schema` its Arrow schema (asks BigQuery) and :class:`ReadFromBigQuery` the
bounded read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms.core import schema as schema_lib
from transforms.core.errors import ErrorRecord, row_payload
from transforms.core.values import convert_batch, describe, rejected_mask
from transforms.io.bigquery.client import default_retry, make_client, run_query
from transforms.io.bigquery.rows import ERRORS
from transforms.io.bigquery.schema import arrow_schema
from transforms.io.bigquery.tables import parse_table

__all__ = ["BigQuerySource", "ReadFromBigQuery", "source_query", "source_schema"]


@dataclasses.dataclass
class BigQuerySource:
    """The spec's ``source.bigquery``: a table or a query, optionally filtered by date.

    Attributes:
        table: ``project.dataset.table`` to read.
        query: Standard SQL to read instead of a table.
        project: Project that runs the query jobs (default: the table's project).
        date_column: Column of the incremental filter (DATE or TIMESTAMP).
        start: First date read (inclusive, ISO-8601).
        end: End of the range (exclusive, ISO-8601).
    """

    table: str | None = None
    query: str | None = None
    project: str | None = None
    date_column: str | None = None
    start: str | None = None
    end: str | None = None

    def validate(self) -> None:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of bigquery.table or bigquery.query")
        if self.table is not None:
            parse_table(self.table, self.project)
        elif not self.project:
            raise ValueError("bigquery.project is needed to run a query")
        if (self.start is not None or self.end is not None) and self.date_column is None:
            raise ValueError("bigquery.start/end need bigquery.date_column")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise ValueError(
                        f"bigquery.{name} must be an ISO date like 2024-01-31, got {value!r}"
                    ) from None
        if self.start and self.end and self.start >= self.end:
            raise ValueError(f"bigquery.start {self.start} must be before end {self.end}")

    @property
    def billing_project(self) -> str:
        if self.project:
            return self.project
        return parse_table(str(self.table)).project

    @property
    def name(self) -> str:
        """What the source is called in error records and the manifest."""
        return str(parse_table(self.table, self.project)) if self.table else "query"


def source_query(source: BigQuerySource) -> tuple[str, dict[str, str]]:
    """The SQL that reads a source, and its date parameters.

    The range is half-open, ``start <= date_column < end``, so consecutive incremental runs
    neither overlap nor leave gaps. Dates are passed as query parameters, never pasted in.
    """
    base = (
        f"SELECT * FROM `{parse_table(source.table, source.project)}`"
        if source.table
        else f"SELECT * FROM ({source.query})"
    )
    where, params = [], {}
    if source.date_column is not None:
        col = f"`{source.date_column}`"
        if source.start is not None:
            where.append(f"DATE({col}) >= @start")
            params["start"] = source.start
        if source.end is not None:
            where.append(f"DATE({col}) < @end")
            params["end"] = source.end
    if where:
        base += " WHERE " + " AND ".join(where)
    return base, params


def source_schema(source: BigQuerySource) -> pa.Schema:
    """The Arrow schema of a source, from the table's schema or the query's result.

    Raises:
        ValueError: if the table or the date column does not exist, naming them.
    """
    from google.api_core import exceptions

    client = make_client(source.billing_project)
    try:
        if source.table:
            ref = parse_table(source.table, source.project)
            fields = [
                f.to_api_repr() for f in client.get_table(str(ref), retry=default_retry()).schema
            ]
        else:
            sql, params = source_query(dataclasses.replace(source, start=None, end=None))
            result = run_query(client, sql + " LIMIT 0", params)
            fields = [f.to_api_repr() for f in result.schema]
    except exceptions.NotFound as exc:
        raise ValueError(f"BigQuery source {source.name} not found: {exc.message}") from None
    schema = arrow_schema(fields)
    if source.date_column is not None and source.date_column not in schema.names:
        raise ValueError(
            f"bigquery.date_column {source.date_column!r} is not a column of {source.name}; "
            f"columns are {', '.join(schema.names)}"
        )
    return schema


class _QueryFn(beam.DoFn):
    """Runs the source's query and emits its result as record batches, and error records.

    Values are converted as every reader converts them (:mod:`transforms.core.values`): a value
    the schema cannot take, or a non-finite float outside ``allow_non_finite``, rejects its
    row.
    """

    def __init__(
        self,
        source: BigQuerySource,
        schema: pa.Schema,
        batch_size: int,
        allow_non_finite: Sequence[str] = (),
        pipeline: str = "",
    ) -> None:
        self._source = source
        self._schema = schema
        self._batch_size = batch_size
        self._allowed = frozenset(allow_non_finite)
        self._pipeline = pipeline
        self._rows = Metrics.counter("beamforge", "rows_read")
        self._errors = Metrics.counter("beamforge", "read_errors")

    def process(self, _: Any) -> Iterator[Any]:
        client = make_client(self._source.billing_project)
        sql, params = source_query(self._source)
        result = run_query(client, sql, params)
        target = schema_lib.visible(self._schema)
        where = f"bigquery:{self._source.name}"
        line = 0
        for chunk in result.to_arrow_iterable():
            for raw in pa.Table.from_batches([chunk]).to_batches(max_chunksize=self._batch_size):
                table, problems = convert_batch(raw, target, allow_non_finite=self._allowed)
                for row in sorted(problems):
                    reason, message = describe(problems[row])
                    self._errors.inc()
                    yield beam.pvalue.TaggedOutput(
                        ERRORS,
                        ErrorRecord(
                            pipeline=self._pipeline,
                            step="read",
                            reason=reason,
                            message=message,
                            payload=row_payload(raw.slice(row, 1).to_pylist()[0]),
                            source=f"{where}:{line + row + 1}",
                        ),
                    )
                numbers = pa.array(range(line + 1, line + raw.num_rows + 1), pa.int64())
                line += raw.num_rows
                if problems:
                    keep = pa.array(~rejected_mask(raw.num_rows, problems))
                    table, numbers = table.filter(keep), numbers.filter(keep)
                n = table.num_rows
                if not n:
                    continue
                batch = table.combine_chunks().to_batches()[0]
                batch = batch.append_column(
                    schema_lib.FILE_COLUMN, pa.array([where] * n)
                ).append_column(schema_lib.LINE_COLUMN, numbers)
                self._rows.inc(n)
                yield batch


class ReadFromBigQuery(beam.PTransform):
    """Reads a BigQuery table or query into Arrow record batches. Bounded.

    The query runs once (one worker pages through its result); for very large tables on
    Dataflow prefer exporting them to Parquet. ``__file`` is ``bigquery:TABLE`` and
    ``__line`` the 1-based row index in the result.

    Returns:
        A ``DoOutputsTuple`` like :class:`transforms.io.read.ReadRecords`: ``batches`` and
        ``errors``: one record per row holding a value the schema cannot take or a
        non-finite float outside ``allow_non_finite`` (source ``bigquery:TABLE:row``).
    """

    def __init__(
        self,
        *,
        source: BigQuerySource,
        schema: pa.Schema,
        batch_size: int = 8192,
        allow_non_finite: Sequence[str] = (),
        pipeline: str = "",
    ) -> None:
        super().__init__()
        source.validate()
        self._source = source
        self._schema = schema_lib.visible(schema)
        self._batch_size = batch_size
        self._allow_non_finite = list(allow_non_finite)
        self._pipeline = pipeline

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "Query"
            >> beam.ParDo(
                _QueryFn(
                    self._source,
                    self._schema,
                    self._batch_size,
                    self._allow_non_finite,
                    self._pipeline,
                )
            ).with_outputs(ERRORS, main="batches")
        )
