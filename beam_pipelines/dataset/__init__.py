"""The training-dataset pipeline: read -> clean -> fit/apply features -> split -> write.

- :mod:`.plan`: the run's plan and layout, resolved from the spec and the command line before
  any work (:func:`plan`).
- :mod:`.build`: the pipeline's stages as composite transforms, wired by :func:`build`.
- :mod:`.splits`: rows tagged with their split as read, routed to their split at the end.
- :mod:`.dead_letters`: the error records written to the errors folder.
- :mod:`.manifest`: the commit: counts checked, stats and ``manifest.json`` written.
- :mod:`.bigquery`: the BigQuery sink's staging tables around a run.
- :mod:`.run`: :func:`run_job` (what the CLI, the chain and the launchers call) and :func:`run`.
"""

from beam_pipelines.dataset.build import (
    ReadInput,
    TransformBatches,
    WriteArtifact,
    WriteSplits,
    build,
)
from beam_pipelines.dataset.dead_letters import WriteDeadLetters
from beam_pipelines.dataset.manifest import MANIFEST_VERSION, CommitRun
from beam_pipelines.dataset.plan import EXTENSIONS, SPLIT_COLUMN, SPLIT_STEP, Layout, Plan, plan
from beam_pipelines.dataset.run import RunResult, run, run_job
from beam_pipelines.dataset.splits import AssignSplits, PartitionSplits

__all__ = [
    "EXTENSIONS",
    "MANIFEST_VERSION",
    "SPLIT_COLUMN",
    "SPLIT_STEP",
    "AssignSplits",
    "CommitRun",
    "Layout",
    "PartitionSplits",
    "Plan",
    "ReadInput",
    "RunResult",
    "TransformBatches",
    "WriteArtifact",
    "WriteDeadLetters",
    "WriteSplits",
    "build",
    "plan",
    "run",
    "run_job",
]
