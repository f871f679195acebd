"""The run's dead letters: every error record written to the errors folder (and a table).

:class:`WriteDeadLetters` consumes what the run's
:class:`~transforms.beam.error_handling.ErrorCollector` collected. One record shape
(:class:`~transforms.core.errors.ErrorRecord`), one JSON line each.
"""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.dataset.plan import Plan
from transforms.beam.error_handling import ErrorCollector
from transforms.io import bigquery as bq_lib
from transforms.io import inventory

__all__ = ["WriteDeadLetters"]


class WriteDeadLetters(
    beam.PTransform[Mapping[str, beam.PCollection], dict[str, beam.PCollection]]
):
    """Writes the error records to ``{errors}/errors-*.jsonl`` and to the dead-letter table.

    Input: a dict of PCollections of error records: ``errors`` (all of them) and ``counted``
    (those the counts count as rejected). Output: a dict of PCollections: ``files`` (a
    description of each error file) and ``count`` (one int: the number of counted records).
    Bounded (the files are written once all records are in).
    """

    def __init__(self, *, plan: Plan, collector: ErrorCollector) -> None:
        super().__init__()
        self._plan = plan
        self._collector = collector

    def expand(self, records: Mapping[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        spec = self._plan.spec
        if spec.errors.bigquery_table:
            table = (
                records["errors"]
                | "BatchErrors" >> beam.BatchElements(min_batch_size=1, max_batch_size=500)
                | "ErrorBatches" >> beam.Map(bq_lib.errors_to_batch)
                | "ErrorsToBigQuery"
                >> bq_lib.WriteToBigQuery(
                    table=spec.errors.bigquery_table,
                    schema=bq_lib.error_arrow_schema(),
                    method="STREAMING_INSERTS",
                    pipeline=spec.name,
                    step="dead_letter",
                )
            )
            self._collector.discard(
                table.errors, reason="every record the table refuses is in the error files"
            )
        files = (
            records["errors"]
            | "ErrorJson" >> beam.Map(lambda e: e.to_json())
            | "WriteErrors"
            >> beam.io.WriteToText(
                FileSystems.join(self._plan.layout.errors, "errors"),
                file_name_suffix=".jsonl",
                num_shards=1,
            )
            | "DescribeErrors" >> beam.Map(inventory.describe, "jsonl")
        )
        count = records["counted"] | "CountErrors" >> beam.combiners.Count.Globally()
        return {"files": files, "count": count}
