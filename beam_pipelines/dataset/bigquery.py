"""The BigQuery sink around a run: staging tables prepared before it, published at its commit.

A run writes its rows to staging tables (:func:`prepare_tables` creates them once the run holds
its output's lock); the commit moves them into the sink tables in one transaction
(:func:`publish_tables`), so a failed run changes no sink table; :func:`drop_staging` removes
the staging tables after the commit or a failure.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import apache_beam as beam

from beam_pipelines.dataset.plan import Plan, sink_tables
from transforms.io import bigquery as bq_lib

__all__ = ["drop_staging", "prepare_tables", "publish_tables", "write_splits"]


def prepare_tables(plan: Plan) -> None:
    """Creates missing sink tables, this run's staging tables and the dead-letter table.

    The run writes its rows to staging tables; its commit moves them into the sink tables in
    one transaction (:func:`publish_tables`), so a failed run changes no sink table.
    """
    spec = plan.spec
    sink = spec.output.bigquery
    if sink is not None:
        table_schema = bq_lib.sink_schema(sink, plan.output_schema)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=bq_lib.STAGING_DAYS)
        for ref in sink_tables(spec):
            client = bq_lib.make_client(ref.project)
            if not bq_lib.check_table(client, ref, sink, table_schema):
                bq_lib.create_table(client, ref, sink, table_schema)
            staging = bq_lib.staging_table(ref, plan.layout.run_id)
            bq_lib.create_table(client, staging, sink, table_schema, expires=expires)
    if spec.errors.bigquery_table:
        ref = bq_lib.parse_table(spec.errors.bigquery_table)
        errors_sink = bq_lib.BigQuerySink(table=str(ref))
        bq_lib.prepare_table(
            bq_lib.make_client(ref.project), ref, errors_sink, bq_lib.error_arrow_schema()
        )


def write_splits(plan: Plan, parts: Any, streaming: bool = False) -> list[beam.PCollection]:
    """Writes every split to its BigQuery table; returns the rejected rows' error records."""
    sink = plan.spec.output.bigquery
    if sink is None:
        return []
    out = []
    schema = bq_lib.sink_schema(sink, plan.output_schema)
    options = bq_lib.table_options(sink, schema)
    for name in plan.spec.split.names:
        target = sink.table_for(name) if sink.per_split else bq_lib.parse_table(sink.table)
        written = parts[name] | f"BigQuery_{name}" >> bq_lib.WriteToBigQuery(
            table=str(bq_lib.staging_table(target, plan.layout.run_id)),
            schema=schema,
            method=sink.resolved_method(streaming),
            pipeline=plan.spec.name,
            step=f"bigquery_{name}",
            extra_columns=None if sink.per_split else {sink.split_column: name},
            table_options=options,
        )
        out.append(written.errors)
    return out


def publish_tables(plan: Plan) -> dict[str, Any]:
    """Moves the staging tables' rows into the sink tables (one transaction)."""
    sink = plan.spec.output.bigquery
    if sink is None:
        return {}
    refs = sink_tables(plan.spec)
    pairs = [(ref, bq_lib.staging_table(ref, plan.layout.run_id)) for ref in refs]
    bq_lib.publish_tables(bq_lib.make_client(refs[0].project), pairs, sink.write == "truncate")
    return {"tables": [str(ref) for ref in refs], "write": sink.write}


def drop_staging(plan: Plan) -> None:
    """Drops this run's staging tables (left alone, they expire after STAGING_DAYS)."""
    refs = [bq_lib.staging_table(ref, plan.layout.run_id) for ref in sink_tables(plan.spec)]
    if refs:
        bq_lib.drop_tables(bq_lib.make_client(refs[0].project), refs)
