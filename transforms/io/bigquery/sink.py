"""BigQuery as a sink: tables checked and created before a run, staged, published, written.

:class:`BigQuerySink` is the spec's ``output.bigquery``. Before a run, :func:`check_table`,
:func:`create_table` and :func:`prepare_table` check a table (exists, schema fits, empty if it
must be) and create or truncate it. A batch run writes to staging tables
(:func:`staging_table`) and :func:`publish_tables` moves their rows into the targets in one
transaction. :class:`WriteToBigQuery` writes record batches.

Write methods: ``STREAMING_INSERTS`` goes through the google-cloud-bigquery client (insertAll
with ``skipInvalidRows``), so each row BigQuery rejects comes back with BigQuery's error and
becomes an :class:`~transforms.core.errors.ErrorRecord` (reason ``bigquery_rejected``).
``FILE_LOADS`` (the batch default) and ``STORAGE_WRITE_API`` use Beam's own connector, meant
for Dataflow; a load job fails as a whole rather than per row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms.core import schema as schema_lib
from transforms.core.errors import ErrorRecord
from transforms.io.bigquery.client import TIMEOUT, default_retry, make_client, run_query
from transforms.io.bigquery.rows import ERRORS, json_rows, rejected_records
from transforms.io.bigquery.schema import bq_schema, schema_problems
from transforms.io.bigquery.tables import TableRef, parse_table

__all__ = [
    "METHODS",
    "STAGING_DAYS",
    "BigQuerySink",
    "Disposition",
    "Partitioning",
    "WriteMethod",
    "WriteResult",
    "WriteToBigQuery",
    "check_table",
    "create_table",
    "drop_tables",
    "prepare_table",
    "publish_tables",
    "sink_schema",
    "staging_table",
    "table_options",
]

WriteMethod = Literal["FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API"]
METHODS = ("FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API")
Disposition = Literal["append", "truncate", "empty"]


@dataclasses.dataclass
class Partitioning:
    """Time partitioning of a sink table.

    Attributes:
        field: DATE or TIMESTAMP column; None partitions by ingestion time.
        type: DAY, HOUR, MONTH or YEAR.
    """

    field: str | None = None
    type: Literal["DAY", "HOUR", "MONTH", "YEAR"] = "DAY"


@dataclasses.dataclass
class BigQuerySink:
    """The spec's ``output.bigquery``.

    Attributes:
        table: ``project.dataset.table``; with ``{split}`` in it, one table per split,
            else one table with a ``split_column``.
        split_column: Column holding the split name in a single table.
        write: ``append``, ``truncate`` (replace the rows) or ``empty`` (fail unless empty).
        create: Create the table if it is missing (else a missing table fails the plan).
        method: Write method; default FILE_LOADS for batch (Beam's connector).
        partitioning: Time partitioning of created tables.
        clustering: Clustering columns of created tables (at most 4).
    """

    table: str
    split_column: str = "split"
    write: Disposition = "append"
    create: bool = True
    method: WriteMethod | None = None
    partitioning: Partitioning | None = None
    clustering: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        parse_table(self.table.replace("{split}", "split"))
        if len(self.clustering) > 4:
            raise ValueError(f"bigquery.clustering takes at most 4 columns, got {self.clustering}")

    @property
    def per_split(self) -> bool:
        return "{split}" in self.table

    def table_for(self, split: str) -> TableRef:
        return parse_table(self.table.replace("{split}", split))

    def resolved_method(self, streaming: bool = False) -> str:
        if self.method is not None:
            return self.method
        return "STREAMING_INSERTS" if streaming else "FILE_LOADS"


def sink_schema(sink: BigQuerySink, schema: pa.Schema) -> pa.Schema:
    """The Arrow schema written to the sink's tables (a split column added if shared)."""
    visible = schema_lib.visible(schema)
    if sink.per_split:
        return visible
    if sink.split_column in visible.names:
        raise ValueError(
            f"bigquery.split_column {sink.split_column!r} is already a dataset column; "
            "choose another name"
        )
    return visible.append(pa.field(sink.split_column, pa.string()))


def table_options(sink: BigQuerySink, schema: pa.Schema) -> dict[str, Any]:
    """``timePartitioning`` and ``clustering`` of a created table (REST JSON).

    Raises:
        ValueError: if a partitioning or clustering column is not in the schema, or the
            partitioning column is not a DATE or TIMESTAMP.
    """
    out: dict[str, Any] = {}
    fields = {f["name"]: f for f in bq_schema(schema)}
    if sink.partitioning is not None:
        part: dict[str, Any] = {"type": sink.partitioning.type}
        name = sink.partitioning.field
        if name is not None:
            if name not in fields or fields[name]["type"] not in ("DATE", "TIMESTAMP"):
                raise ValueError(
                    f"bigquery.partitioning.field {name!r} must be a DATE or TIMESTAMP column"
                )
            part["field"] = name
        out["timePartitioning"] = part
    if sink.clustering:
        missing = [c for c in sink.clustering if c not in fields]
        if missing:
            raise ValueError(f"bigquery.clustering columns {missing} are not dataset columns")
        out["clustering"] = {"fields": list(sink.clustering)}
    return out


def check_table(client: Any, ref: TableRef, sink: BigQuerySink, schema: pa.Schema) -> bool:
    """Checks a sink table before the run, changing nothing.

    Returns:
        Whether the table exists (else the sink may create it).

    Raises:
        ValueError: for a missing dataset, a missing table with ``create: false``, a table
            whose schema does not fit, or a non-empty table with ``write: empty``.
    """
    from google.api_core import exceptions

    wanted = bq_schema(schema)
    try:
        client.get_dataset(f"{ref.project}.{ref.dataset}", retry=default_retry())
    except exceptions.NotFound:
        raise ValueError(f"BigQuery dataset {ref.project}.{ref.dataset} does not exist") from None
    try:
        table = client.get_table(str(ref), retry=default_retry())
    except exceptions.NotFound:
        if not sink.create:
            raise ValueError(
                f"BigQuery table {ref} does not exist; create it or set bigquery.create: true"
            ) from None
        return False
    problems = schema_problems([f.to_api_repr() for f in table.schema], wanted)
    if problems:
        raise ValueError(
            f"the dataset does not fit the existing BigQuery table {ref}: " + "; ".join(problems)
        )
    if sink.write == "empty" and table.num_rows:
        raise ValueError(f"BigQuery table {ref} is not empty ({table.num_rows} rows; write: empty)")
    return True


def create_table(
    client: Any,
    ref: TableRef,
    sink: BigQuerySink,
    schema: pa.Schema,
    *,
    expires: dt.datetime | None = None,
) -> None:
    """Creates a table with the sink's schema, partitioning and clustering (if missing)."""
    from google.cloud import bigquery

    options = table_options(sink, schema)
    table = bigquery.Table(
        str(ref), schema=[bigquery.SchemaField.from_api_repr(f) for f in bq_schema(schema)]
    )
    if "timePartitioning" in options:
        table.time_partitioning = bigquery.TimePartitioning.from_api_repr(
            options["timePartitioning"]
        )
    if "clustering" in options:
        table.clustering_fields = options["clustering"]["fields"]
    if expires is not None:
        table.expires = expires
    client.create_table(table, exists_ok=True, retry=default_retry())


def prepare_table(client: Any, ref: TableRef, sink: BigQuerySink, schema: pa.Schema) -> None:
    """Checks a sink table and creates or truncates it as the sink says (streaming sinks).

    Raises:
        ValueError: as :func:`check_table`.
    """
    if not check_table(client, ref, sink, schema):
        create_table(client, ref, sink, schema)
    elif sink.write == "truncate":
        # Replace the rows but keep the table (and its partitioning, clustering, grants).
        run_query(client, f"DELETE FROM `{ref}` WHERE TRUE", {})


# Staging tables outlive a killed run by this much, then BigQuery deletes them itself.
STAGING_DAYS = 7


def staging_table(ref: TableRef, run_id: str) -> TableRef:
    """The table a run writes a sink table's rows to before its commit."""
    return ref.with_table(f"{ref.table}__{run_id.replace('-', '_')}")


def publish_tables(client: Any, pairs: Sequence[tuple[TableRef, TableRef]], truncate: bool) -> None:
    """Moves the rows of staging tables into their targets in one transaction.

    All targets change together or none does: a multi-statement transaction replaces
    (``truncate``) or appends to every target.

    Args:
        client: A google-cloud-bigquery client.
        pairs: ``(target, staging)`` tables.
        truncate: Replace the targets' rows instead of appending.
    """
    statements = ["BEGIN TRANSACTION;"]
    for target, staging in pairs:
        if truncate:
            statements.append(f"DELETE FROM `{target}` WHERE TRUE;")
        statements.append(f"INSERT INTO `{target}` SELECT * FROM `{staging}`;")
    statements.append("COMMIT TRANSACTION;")
    run_query(client, "\n".join(statements), {})


def drop_tables(client: Any, refs: Sequence[TableRef]) -> None:
    """Deletes tables (missing ones are ignored)."""
    for ref in refs:
        client.delete_table(str(ref), not_found_ok=True, retry=default_retry())


class _InsertRowsFn(beam.DoFn):
    """Streams batches into a table with insertAll; rejected rows become error records."""

    def __init__(
        self, table: str, pipeline: str, step: str, extra: Mapping[str, Any] | None
    ) -> None:
        self._table = table
        self._pipeline = pipeline
        self._step = step
        self._extra = dict(extra or {})
        self._client: Any = None
        self._rejected = Metrics.counter("beamforge", "bigquery_rejected")
        self._written = Metrics.counter("beamforge", "bigquery_rows")

    def setup(self) -> None:
        self._client = make_client(parse_table(self._table).project)

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        rows = [{**r, **self._extra} for r in json_rows(batch)]
        if not rows:
            return
        insert_errors = self._client.insert_rows_json(
            self._table, rows, skip_invalid_rows=True, retry=default_retry(), timeout=TIMEOUT
        )
        records = rejected_records(
            rows, insert_errors, table=self._table, pipeline=self._pipeline, step=self._step
        )
        self._written.inc(len(rows) - len(records))
        self._rejected.inc(len(records))
        for record in records:
            yield beam.pvalue.TaggedOutput(ERRORS, record)
        yield len(rows) - len(records)


def _beam_errors(failed: Any, table: str, pipeline: str, step: str) -> ErrorRecord:
    # Beam's failed_rows_with_errors: (destination, row, errors).
    _, row, errs = failed
    return rejected_records(
        [row], [{"index": 0, "errors": errs}], table=table, pipeline=pipeline, step=step
    )[0]


class WriteToBigQuery(beam.PTransform):
    """Writes record batches to one BigQuery table (created and checked before the run).

    Input: ``PCollection[pa.RecordBatch]`` with the schema's columns (hidden ones dropped).
    Bounded or unbounded (STREAMING_INSERTS).

    Returns:
        A :class:`WriteResult`: ``rows`` (rows accepted per insert request, STREAMING_INSERTS
        only) and ``errors``: ``ErrorRecord``s of rows BigQuery rejected (reason
        ``bigquery_rejected``, BigQuery's error in the message, the row as payload).

    Metrics:
        ``beamforge/bigquery_rows`` and ``beamforge/bigquery_rejected``.
    """

    def __init__(
        self,
        *,
        table: str,
        schema: pa.Schema,
        method: str,
        pipeline: str,
        step: str = "bigquery",
        extra_columns: Mapping[str, Any] | None = None,
        table_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown BigQuery write method {method!r}; valid: {METHODS}")
        self._table = str(parse_table(table))
        self._schema = schema
        self._method = method
        self._pipeline = pipeline
        self._step = step
        self._extra = dict(extra_columns or {})
        self._options = dict(table_options or {})

    def expand(self, batches: beam.PCollection) -> WriteResult:  # type: ignore[override]
        if self._method == "STREAMING_INSERTS":
            out = batches | "InsertRows" >> beam.ParDo(
                _InsertRowsFn(self._table, self._pipeline, self._step, self._extra)
            ).with_outputs(ERRORS, main="rows")
            return WriteResult(rows=out.rows, errors=out[ERRORS])
        # Beam's connector (Dataflow): the table was created or checked before the run.
        extra = self._extra
        rows = batches | "ToRows" >> beam.FlatMap(lambda b: [{**r, **extra} for r in json_rows(b)])
        result = rows | "Write" >> beam.io.WriteToBigQuery(
            self._table.replace(".", ":", 1),
            schema={"fields": bq_schema(self._schema)},
            method=self._method,
            create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=self._options,
        )
        errors = result.failed_rows_with_errors | "Rejected" >> beam.Map(
            _beam_errors, self._table, self._pipeline, self._step
        )
        counts = batches.pipeline | "NoRowCounts" >> beam.Create([])
        return WriteResult(rows=counts, errors=errors)


@dataclasses.dataclass
class WriteResult:
    """What :class:`WriteToBigQuery` returns.

    Attributes:
        rows: ``PCollection[int]``: rows accepted per insert request (STREAMING_INSERTS).
        errors: ``PCollection[ErrorRecord]`` of rows BigQuery rejected.
    """

    rows: beam.PCollection
    errors: beam.PCollection
