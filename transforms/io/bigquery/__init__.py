"""BigQuery as a source and a sink of Arrow record batches.

Pure parts (tested without BigQuery): table references (:mod:`.tables`), the Arrow <-> BigQuery
schema mapping (:mod:`.schema`), rows for insertion and the error records of rows BigQuery
rejects (:mod:`.rows`), and the date-filtered query of a source. Client parts
(:mod:`.client`): checks done before a run (table exists, schema fits, create or truncate), the
staging tables of a batch run and their publish transaction (:mod:`.sink`), and two
transforms, :class:`ReadFromBigQuery` (:mod:`.source`) and :class:`WriteToBigQuery`
(:mod:`.sink`).

Clients honour ``BIGQUERY_EMULATOR_HOST`` (REST) and ``BIGQUERY_EMULATOR_GRPC_HOST`` as the
Google client libraries do for emulators: anonymous credentials, plain HTTP.
"""

from transforms.io.bigquery.client import make_client
from transforms.io.bigquery.rows import (
    ERRORS,
    REJECTED,
    error_arrow_schema,
    error_schema,
    errors_to_batch,
    json_rows,
    rejected_records,
)
from transforms.io.bigquery.schema import (
    arrow_field,
    arrow_schema,
    bq_field,
    bq_schema,
    schema_problems,
)
from transforms.io.bigquery.sink import (
    METHODS,
    STAGING_DAYS,
    BigQuerySink,
    Disposition,
    Partitioning,
    WriteMethod,
    WriteResult,
    WriteToBigQuery,
    check_table,
    create_table,
    drop_tables,
    prepare_table,
    publish_tables,
    sink_schema,
    staging_table,
    table_options,
)
from transforms.io.bigquery.source import (
    BigQuerySource,
    ReadFromBigQuery,
    source_query,
    source_schema,
)
from transforms.io.bigquery.tables import TableRef, parse_table

__all__ = [
    "ERRORS",
    "METHODS",
    "REJECTED",
    "STAGING_DAYS",
    "BigQuerySink",
    "BigQuerySource",
    "Disposition",
    "Partitioning",
    "ReadFromBigQuery",
    "TableRef",
    "WriteMethod",
    "WriteResult",
    "WriteToBigQuery",
    "arrow_field",
    "arrow_schema",
    "bq_field",
    "bq_schema",
    "check_table",
    "create_table",
    "drop_tables",
    "error_arrow_schema",
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
