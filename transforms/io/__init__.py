"""Reading and writing: files per format, BigQuery, GCS, and the commit of a run's output.

- Readers: :mod:`~transforms.io.read` (Source, ReadRecords, read_file: the entry point), one
  module per format (:mod:`~transforms.io.read_csv`, :mod:`~transforms.io.read_jsonl`,
  :mod:`~transforms.io.read_parquet`, :mod:`~transforms.io.read_avro`,
  :mod:`~transforms.io.read_tfrecord`), CSV's record scanning (:mod:`~transforms.io.csv_options`,
  :mod:`~transforms.io.csv_scan`, :mod:`~transforms.io.csv_records`,
  :mod:`~transforms.io.csv_parse`), :mod:`~transforms.io.infer_schema`,
  :mod:`~transforms.io.streams` and :mod:`~transforms.io.batches`.
- Writers: :mod:`~transforms.io.write` (sharded files), :mod:`~transforms.io.tf_example`,
  :mod:`~transforms.io.spilled_batches` (one read feeding two passes).
- BigQuery: the :mod:`transforms.io.bigquery` package (schema, source, sink).
- Outputs: :mod:`~transforms.io.commit` (a run owns its output folder),
  :mod:`~transforms.io.output_folder`, :mod:`~transforms.io.output_lock`,
  :mod:`~transforms.io.output_stores`, :mod:`~transforms.io.inventory`, and
  :mod:`~transforms.io.gcs` (checks of gs:// locations).

Nothing is imported here: import names from their modules.
"""

__all__ = [
    "batches",
    "bigquery",
    "commit",
    "csv_options",
    "csv_parse",
    "csv_records",
    "csv_scan",
    "gcs",
    "infer_schema",
    "inventory",
    "output_folder",
    "output_lock",
    "output_stores",
    "read",
    "read_avro",
    "read_csv",
    "read_jsonl",
    "read_parquet",
    "read_tfrecord",
    "spilled_batches",
    "streams",
    "tf_example",
    "write",
]
