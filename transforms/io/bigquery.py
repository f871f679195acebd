"""BigQuery as a source and a sink of Arrow record batches.

Pure parts (tested without BigQuery): table references, the Arrow <-> BigQuery schema
mapping, rows for insertion, the date-filtered query of a source and the error records of
rows BigQuery rejects. Client parts: checks done before a run (table exists, schema fits,
create or truncate) and two transforms, :class:`ReadFromBigQuery` and
:class:`WriteToBigQuery`.

Write methods: ``STREAMING_INSERTS`` goes through the google-cloud-bigquery client (insertAll
with ``skipInvalidRows``), so each row BigQuery rejects comes back with BigQuery's error and
becomes an :class:`~transforms.core.errors.ErrorRecord` (reason ``bigquery_rejected``).
``FILE_LOADS`` (the batch default) and ``STORAGE_WRITE_API`` use Beam's own connector, meant
for Dataflow; a load job fails as a whole rather than per row.

Clients honour ``BIGQUERY_EMULATOR_HOST`` (REST) and ``BIGQUERY_EMULATOR_GRPC_HOST`` as the
Google client libraries do for emulators: anonymous credentials, plain HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms.core import schema as schema_lib
from transforms.core.errors import ErrorRecord, row_payload
from transforms.core.values import convert_batch, describe, rejected_mask

REJECTED = "bigquery_rejected"
ERRORS = "errors"
WriteMethod = Literal["FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API"]
METHODS = ("FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API")
Disposition = Literal["append", "truncate", "empty"]

# project ids: 6-30 chars, lowercase letters, digits, hyphens (older ones may hold a domain
# prefix "example.com:"); dataset and table ids: letters, digits and underscores.
_PROJECT = r"(?:[a-z][a-z0-9.\-]*:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_TABLE = r"[A-Za-z0-9_\-{}$]{1,1024}"
_TABLE_REF = re.compile(
    rf"(?:(?P<project>{_PROJECT})[.:])?(?P<dataset>{_DATASET})\.(?P<table>{_TABLE})"
)

_TO_BQ: list[tuple[Any, str]] = [
    (pa.types.is_boolean, "BOOL"),
    (pa.types.is_integer, "INT64"),
    (pa.types.is_floating, "FLOAT64"),
    (pa.types.is_string, "STRING"),
    (pa.types.is_large_string, "STRING"),
    (pa.types.is_binary, "BYTES"),
    (pa.types.is_large_binary, "BYTES"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_timestamp, "TIMESTAMP"),
]
_FROM_BQ: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "INT64": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT64": pa.float64(),
    "FLOAT": pa.float64(),
    "NUMERIC": pa.float64(),
    "BIGNUMERIC": pa.float64(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
}
# Types BigQuery stores the same way, for comparing a wanted schema with an existing table.
_SAME = {"BOOLEAN": "BOOL", "INTEGER": "INT64", "FLOAT": "FLOAT64", "STRUCT": "RECORD"}


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A fully qualified BigQuery table."""

    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    def with_table(self, table: str) -> TableRef:
        return dataclasses.replace(self, table=table)


def parse_table(text: str, default_project: str | None = None) -> TableRef:
    """Parses ``project.dataset.table``, ``project:dataset.table`` or ``dataset.table``.

    Raises:
        ValueError: for a malformed reference, or one without a project when no default is
            given; the message shows the expected form.
    """
    match = _TABLE_REF.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"malformed BigQuery table {text!r}: expected 'project.dataset.table' (project: "
            "6-30 lowercase letters, digits or hyphens; dataset and table: letters, digits, "
            "underscores)"
        )
    project = match["project"] or default_project
    if not project:
        raise ValueError(f"BigQuery table {text!r} names no project: use 'project.dataset.table'")
    return TableRef(project=project, dataset=match["dataset"], table=match["table"])


def bq_field(field: pa.Field) -> dict[str, Any]:
    """The BigQuery field (REST ``TableFieldSchema`` JSON) for an Arrow field.

    Lists become ``REPEATED`` fields of their value type, structs ``RECORD``s; a
    non-nullable field is ``REQUIRED``.

    Raises:
        ValueError: for a type BigQuery cannot hold (nested lists, maps, ...).
    """
    tp = field.type
    mode = "NULLABLE" if field.nullable else "REQUIRED"
    if pa.types.is_list(tp) or pa.types.is_large_list(tp):
        if pa.types.is_list(tp.value_type) or pa.types.is_large_list(tp.value_type):
            raise ValueError(f"column {field.name!r}: BigQuery has no list of lists ({tp})")
        inner = bq_field(pa.field(field.name, tp.value_type))
        return {**inner, "mode": "REPEATED"}
    if pa.types.is_struct(tp):
        return {
            "name": field.name,
            "type": "RECORD",
            "mode": mode,
            "fields": [bq_field(tp.field(i)) for i in range(tp.num_fields)],
        }
    for test, name in _TO_BQ:
        if test(tp):
            return {"name": field.name, "type": name, "mode": mode}
    raise ValueError(f"column {field.name!r}: type {tp} has no BigQuery equivalent")


def bq_schema(schema: pa.Schema) -> list[dict[str, Any]]:
    """BigQuery fields for the visible columns of an Arrow schema."""
    return [bq_field(f) for f in schema_lib.visible(schema)]


def arrow_field(field: Mapping[str, Any]) -> pa.Field:
    """The Arrow field for a BigQuery field (inverse of :func:`bq_field`).

    Integers come back as int64 and floats as float64 (BigQuery has one width of each).

    Raises:
        ValueError: for a type not mapped (GEOGRAPHY, JSON, INTERVAL, ...).
    """
    kind = str(field["type"]).upper()
    mode = str(field.get("mode") or "NULLABLE").upper()
    if kind in ("RECORD", "STRUCT"):
        tp: pa.DataType = pa.struct([arrow_field(f) for f in field.get("fields", [])])
    elif kind in _FROM_BQ:
        tp = _FROM_BQ[kind]
    else:
        raise ValueError(f"column {field['name']!r}: BigQuery type {kind} is not supported")
    if mode == "REPEATED":
        return pa.field(field["name"], pa.list_(tp))
    return pa.field(field["name"], tp, nullable=mode != "REQUIRED")


def arrow_schema(fields: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """The Arrow schema of a BigQuery table's fields."""
    return pa.schema([arrow_field(f) for f in fields])


def _normal(field: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = str(field["type"]).upper()
    sub = tuple(_normal(f) for f in field.get("fields", []) or [])
    return (field["name"], _SAME.get(kind, kind), str(field.get("mode") or "NULLABLE"), sub)


def schema_problems(
    existing: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]
) -> list[str]:
    """What stops rows of ``wanted`` from being appended to a table with ``existing`` fields.

    A wanted NULLABLE column may go into a REQUIRED one only if it has no nulls, which is
    not known before the run: it is reported too. Extra NULLABLE columns of the table are
    fine (they stay null).

    Returns:
        One sentence per problem; empty when the schemas fit.
    """
    have = {f["name"]: _normal(f) for f in existing}
    problems = []
    for field in wanted:
        want = _normal(field)
        name = field["name"]
        if name not in have:
            problems.append(f"column {name!r} ({want[1]}) is not in the table")
        elif have[name][1:] != want[1:]:
            got = have[name]
            problems.append(
                f"column {name!r} is {got[1]} {got[2]} in the table but {want[1]} {want[2]} in "
                "the dataset"
            )
    names = {f["name"] for f in wanted}
    for field in existing:
        if field["name"] not in names and str(field.get("mode") or "NULLABLE") == "REQUIRED":
            problems.append(f"the table's REQUIRED column {field['name']!r} is not in the dataset")
    return problems


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


# --- Sources -----------------------------------------------------------------------------


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


def make_client(project: str) -> Any:
    """A google-cloud-bigquery client; anonymous against ``BIGQUERY_EMULATOR_HOST``."""
    from google.cloud import bigquery

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=host),
        )
    return bigquery.Client(project=project)


# Bounded waits: a client retries some failures for up to 10 minutes by default.
_TIMEOUT = 60.0


def _retry() -> Any:
    from google.cloud import bigquery

    return bigquery.DEFAULT_RETRY.with_deadline(_TIMEOUT)


def _run_query(client: Any, sql: str, params: Mapping[str, str]) -> Any:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(k, "DATE", v) for k, v in params.items()]
    )
    job = client.query(sql, job_config=config, retry=_retry(), timeout=_TIMEOUT)
    return job.result(timeout=_TIMEOUT * 10)


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
            fields = [f.to_api_repr() for f in client.get_table(str(ref), retry=_retry()).schema]
        else:
            sql, params = source_query(dataclasses.replace(source, start=None, end=None))
            result = _run_query(client, sql + " LIMIT 0", params)
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
        result = _run_query(client, sql, params)
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


# --- Sinks -------------------------------------------------------------------------------


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
        client.get_dataset(f"{ref.project}.{ref.dataset}", retry=_retry())
    except exceptions.NotFound:
        raise ValueError(f"BigQuery dataset {ref.project}.{ref.dataset} does not exist") from None
    try:
        table = client.get_table(str(ref), retry=_retry())
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
    client.create_table(table, exists_ok=True, retry=_retry())


def prepare_table(client: Any, ref: TableRef, sink: BigQuerySink, schema: pa.Schema) -> None:
    """Checks a sink table and creates or truncates it as the sink says (streaming sinks).

    Raises:
        ValueError: as :func:`check_table`.
    """
    if not check_table(client, ref, sink, schema):
        create_table(client, ref, sink, schema)
    elif sink.write == "truncate":
        # Replace the rows but keep the table (and its partitioning, clustering, grants).
        _run_query(client, f"DELETE FROM `{ref}` WHERE TRUE", {})


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
    _run_query(client, "\n".join(statements), {})


def drop_tables(client: Any, refs: Sequence[TableRef]) -> None:
    """Deletes tables (missing ones are ignored)."""
    for ref in refs:
        client.delete_table(str(ref), not_found_ok=True, retry=_retry())


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
            self._table, rows, skip_invalid_rows=True, retry=_retry(), timeout=_TIMEOUT
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


def error_schema() -> list[dict[str, Any]]:
    """BigQuery fields of a dead-letter table of :class:`ErrorRecord`s."""
    names = [f.name for f in dataclasses.fields(ErrorRecord)]
    required = {"pipeline", "step", "reason", "message", "payload", "source"}
    return [
        {"name": n, "type": "STRING", "mode": "REQUIRED" if n in required else "NULLABLE"}
        for n in names
    ]


def error_arrow_schema() -> pa.Schema:
    return arrow_schema(error_schema())


def errors_to_batch(records: Sequence[ErrorRecord]) -> pa.RecordBatch:
    """Error records as a record batch for the dead-letter table."""
    return pa.RecordBatch.from_pylist([r.to_dict() for r in records], schema=error_arrow_schema())


__all__ = [
    "REJECTED",
    "STAGING_DAYS",
    "BigQuerySink",
    "BigQuerySource",
    "Partitioning",
    "ReadFromBigQuery",
    "TableRef",
    "WriteResult",
    "WriteToBigQuery",
    "arrow_field",
    "arrow_schema",
    "bq_field",
    "bq_schema",
    "check_table",
    "create_table",
    "drop_tables",
    "error_schema",
    "errors_to_batch",
    "json_rows",
    "make_client",
    "parse_table",
    "prepare_table",
    "publish_tables",
    "rejected_records",
    "schema_problems",
    "sink_schema",
    "source_query",
    "source_schema",
    "staging_table",
    "table_options",
]
