"""What a streaming job decides before it starts: the artifact, the schemas, the sinks.

:func:`plan` reads the fitted artifact, checks the aggregations against its columns, and
prepares the BigQuery table; the :class:`StreamPlan` it returns is what
:func:`beam_pipelines.streaming.build.build` wires.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import pyarrow as pa

from beam_pipelines.streaming.settings import StreamingSpec, check_aggregation_columns
from transforms.core.artifact import read_artifact
from transforms.core.config import SpecError
from transforms.core.schema import arrow_schema
from transforms.io.bigquery import make_client, parse_table, prepare_table
from transforms.io.read import resolve_schema
from transforms.ops.registry import build_step
from transforms.streaming.threaded_source import LiveSource

if TYPE_CHECKING:
    # Only for annotations: the spec module imports this package's settings.
    from beam_pipelines.spec import JobSpec


def streaming_spec(spec: JobSpec) -> StreamingSpec:
    """The spec's ``streaming:`` section, typed and validated when the spec was parsed.

    Raises:
        SpecError: if the spec has no ``streaming:`` section (naming the spec's file).
    """
    if spec.streaming is None:
        raise SpecError(
            "streaming", "a streaming run needs a 'streaming:' section", source=spec.origin
        )
    return spec.streaming


@dataclasses.dataclass
class StreamPlan:
    """Everything decided before a streaming job starts."""

    spec: JobSpec
    stream: StreamingSpec
    input_schema: pa.Schema
    output_columns: list[str]
    output_schema: pa.Schema
    started: float
    # Local Pub/Sub runs: the subscription read (one made for the run when given a topic).
    subscription: str | None = None
    # Local runs: the live source, which tells whether it ran to a limit.
    live: LiveSource | None = None


def plan(
    spec: JobSpec,
    *,
    artifact_dir: str | None = None,
    output: str | None = None,
    prepare_sinks: bool = True,
) -> StreamPlan:
    """Reads the artifact and checks the aggregations against its columns.

    Args:
        spec: The job spec, with its ``streaming:`` section.
        artifact_dir: Apply this artifact instead of ``streaming.artifact``.
        output: Write under this path instead of ``streaming.output.path``.
        prepare_sinks: Create or check the BigQuery table now (not in a dry run).
    """
    stream = streaming_spec(spec)
    if artifact_dir:
        stream = dataclasses.replace(stream, artifact=artifact_dir)
    if output:
        stream = dataclasses.replace(stream, output=dataclasses.replace(stream.output, path=output))
    artifact = read_artifact(stream.artifact, build_step)
    input_schema = arrow_schema(artifact.input_schema)
    if spec.source.schema is not None:
        input_schema = resolve_schema(spec.source, [])
    available = [*input_schema.names, *artifact.output_columns]
    try:
        # Also checked when the spec was parsed, if it declares source.schema.
        check_aggregation_columns(stream, available)
    except SpecError as exc:
        raise exc.located(spec.origin) from None
    out_schema = arrow_schema(artifact.output_schema)
    output_schema = pa.schema([out_schema.field(c) for c in artifact.output_columns])
    sink = stream.output.bigquery
    if sink is not None and prepare_sinks:
        # As the batch pipeline does: create or check the table before the job starts.
        ref = parse_table(sink.table)
        try:
            prepare_table(make_client(ref.project), ref, sink, output_schema)
        except ValueError as exc:
            raise SpecError("streaming.output.bigquery", str(exc), source=spec.origin) from None
    return StreamPlan(
        spec=spec,
        stream=stream,
        input_schema=input_schema,
        output_columns=list(artifact.output_columns),
        output_schema=output_schema,
        started=time.time(),
    )


__all__ = ["StreamPlan", "plan", "streaming_spec"]
