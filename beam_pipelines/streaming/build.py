"""The streaming pipeline's graph: the source, the artifact applied, windows, and every sink.

:func:`build` wires a :class:`~beam_pipelines.streaming.stream_plan.StreamPlan` onto a
pipeline. Transform names at the top of the graph (``ReadPubSub``, ``Decode``, ``Apply``,
``Aggregate_{name}``, ``WriteRows``, ``WriteErrors``, ``WriteCounts``, ...) are what a
Dataflow job lists and what a job update matches stages by: they stay stable.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.streaming.bundle_files import (
    WriteBundles,
    batch_sources,
    batches_encoder,
    bundle_id,
    jsonl_errors,
    jsonl_rows,
)
from beam_pipelines.streaming.ledger import (
    BIGQUERY_STEP,
    jsonl_counts,
    read_counts,
    read_error_counts,
    written_counts,
)
from beam_pipelines.streaming.sources import read_stream
from beam_pipelines.streaming.stream_plan import StreamPlan
from transforms.beam.artifact_reload import ApplyLatestArtifact
from transforms.beam.error_handling import ErrorCollector
from transforms.io.bigquery import WriteToBigQuery
from transforms.io.write import conform, encode_jsonl
from transforms.streaming.aggregate_windows import AggregateWindows


def build(p: beam.Pipeline, plan: StreamPlan) -> dict[str, beam.PCollection]:
    """Wires the streaming pipeline onto ``p``.

    Every stage hands its error records and counts to one
    :class:`~transforms.beam.error_handling.ErrorCollector`, so a stage whose error output
    reaches no sink fails the pipeline before it runs.

    Returns:
        The transformed row batches (``rows``), every error record (``errors``), the ledger's
        counters (``counts``), and the aggregate rows of each aggregation (by its name).
    """
    stream, name = plan.stream, plan.spec.name
    # The ledger: every record read is written, rejected or dropped, and every row written
    # is aggregated or rejected by each aggregation (counts/, checked when a local run ends).
    collector = ErrorCollector(p, label="All")
    read = read_stream(p, plan)
    for dropped in read.counts:
        collector.add(counts=dropped)
    collector.add(
        errors=read.errors,
        counts=read.batches | "CountRead" >> beam.Map(lambda b: read_counts(b.num_rows)),
    )
    collector.add(counts=read.errors | "CountReadErrors" >> beam.Map(read_error_counts))
    applied = read.batches | "Apply" >> ApplyLatestArtifact(
        directory=stream.artifact, pipeline=name, refresh_seconds=stream.artifact_refresh_seconds
    )
    collector.add(errors=applied.errors, counts=applied.counts)
    collector.add(
        counts=applied.batches | "CountWritten" >> beam.Map(lambda b: written_counts(b.num_rows))
    )
    _write_rows(applied.batches, plan, collector)
    aggregates = {}
    for agg in stream.aggregations:
        out = applied.batches | f"Aggregate_{agg.name}" >> AggregateWindows(
            aggregation=agg, pipeline=name
        )
        out.rows | f"WriteAggregates_{agg.name}" >> WriteBundles(
            _under(plan, "aggregates", agg.name, "part"), jsonl_rows, ".jsonl"
        )
        collector.add(errors=out.errors, counts=out.counts)
        aggregates[agg.name] = out.rows
    collected = collector.close()
    _write_errors(collected.errors, plan)
    collected.counts | "WriteCounts" >> WriteBundles(
        _under(plan, "counts", "part"), jsonl_counts, ".jsonl", identity=bundle_id
    )
    return {
        "rows": applied.batches,
        "errors": collected.errors,
        "counts": collected.counts,
        **aggregates,
    }


def _under(plan: StreamPlan, *parts: str) -> str:
    return FileSystems.join(plan.stream.output.path, *parts)


def _write_rows(batches: beam.PCollection, plan: StreamPlan, collector: ErrorCollector) -> None:
    """Writes the rows to their files, and to the topic and BigQuery if asked."""
    output, schema = plan.stream.output, plan.output_schema
    suffix = ".jsonl" if output.format == "jsonl" else ".parquet"
    batches | "WriteRows" >> WriteBundles(
        _under(plan, "rows", "part"),
        batches_encoder(schema, output.format),
        suffix,
        identity=batch_sources,
    )
    if output.topic:
        (
            batches
            | "RowsJson"
            >> beam.FlatMap(lambda b, s=schema: encode_jsonl(conform(b, s)).splitlines())
            | "PublishRows" >> beam.io.WriteToPubSub(output.topic)
        )
    if output.bigquery is None:
        return
    written: Any = batches | "WriteBigQuery" >> WriteToBigQuery(
        table=output.bigquery.table,
        schema=schema,
        method="STREAMING_INSERTS",
        pipeline=plan.spec.name,
        step=BIGQUERY_STEP,
    )
    # Rows BigQuery rejects were counted as written (they are in the row files): their
    # records are dead letters only, not rejections of the ledger.
    collector.add(errors=written.errors, in_counts=False)


def _write_errors(errors: beam.PCollection, plan: StreamPlan) -> None:
    """Writes every error record to its files, and to the errors topic if asked."""
    errors | "WriteErrors" >> WriteBundles(_under(plan, "errors", "part"), jsonl_errors, ".jsonl")
    topic = plan.stream.output.errors_topic
    if topic:
        (
            errors
            | "ErrorsJson" >> beam.Map(lambda e: e.to_json().encode("utf-8"))
            | "PublishErrors" >> beam.io.WriteToPubSub(topic)
        )


__all__ = ["build"]
