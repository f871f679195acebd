"""The streaming pipeline: arriving files or Pub/Sub -> clean + features -> sinks.

``build(p, plan)`` wires it for a validated :class:`StreamingSpec` (the spec's
``streaming:`` section, typed in :mod:`~beam_pipelines.streaming.settings`);
``run_streaming(spec, ...)`` runs it. The artifact fitted by a batch run is applied by the
same engine (:func:`transforms.core.batch_steps.apply_steps`), reloaded when a newer one is
published; windowed aggregates are computed per key (:mod:`transforms.streaming.windows`),
with rows too late for their windows sent to the errors.

Output layout under ``streaming.output.path`` (local or gs://)::

    rows/part-*.{jsonl,parquet}          transformed rows (artifact output columns)
    aggregates/{name}/part-*.jsonl       one line per key, window and pane
    errors/part-*.jsonl                  every rejected, undecodable or late row
    counts/part-*.jsonl                  the ledger: [kind, step, reason, n] per bundle
    summary.json                         counts, written when a bounded local run ends

and, with ``streaming.output.bigquery``, the rows streamed into one BigQuery table.

``run_streaming`` refuses, before any work, an output folder that already holds these files
(:mod:`~beam_pipelines.streaming.output_folder`): they are appended to, and an earlier run's
ledger would add to this one's.

Local runs (the streaming local runner, fed from a thread:
:mod:`transforms.streaming.threaded_source`): the folder is watched until ``max_files``
files or its deadline; Pub/Sub is pulled (:mod:`transforms.streaming.pubsub_pull`) until
``max_messages``, ``idle_seconds`` or ``deadline_seconds``. Windows fire as the watermark
moves; when the source stops it drains: every window fires, and the run ends with everything
written. On Dataflow the job keeps running (the splittable file watcher, Beam's
``ReadFromPubSub``) until drained or cancelled.

Modules: ``settings`` (the typed section), ``stream_plan`` (what is decided before a job
starts), ``sources`` (the stream read), ``build`` (the graph), ``bundle_files`` (per-bundle
output files), ``ledger`` (counts, summary and balance), ``output_folder`` (a fresh folder per
run) and ``run``.
"""

from beam_pipelines.streaming.build import build
from beam_pipelines.streaming.ledger import balance_problems, summarize
from beam_pipelines.streaming.output_folder import check_fresh_output, earlier_run_files
from beam_pipelines.streaming.run import run, run_streaming
from beam_pipelines.streaming.settings import (
    FilesSource,
    PubsubSource,
    StreamingSpec,
    StreamOutput,
    check_aggregation_columns,
    check_streaming_columns,
    describe,
)
from beam_pipelines.streaming.stream_plan import StreamPlan, plan, streaming_spec

__all__ = [
    "FilesSource",
    "PubsubSource",
    "StreamOutput",
    "StreamPlan",
    "StreamingSpec",
    "balance_problems",
    "build",
    "check_aggregation_columns",
    "check_fresh_output",
    "check_streaming_columns",
    "describe",
    "earlier_run_files",
    "plan",
    "run",
    "run_streaming",
    "streaming_spec",
    "summarize",
]
