"""The streaming pipeline: arriving files or Pub/Sub -> clean + features -> sinks.

:func:`run_streaming` plans, builds and runs a streaming job; :func:`run` is the command line
(``python -m beam_pipelines.streaming SPEC [--artifact DIR] [--output DIR]``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

from beam_pipelines.runner import is_local, make_options, make_pipeline
from beam_pipelines.streaming.build import build
from beam_pipelines.streaming.ledger import summarize
from beam_pipelines.streaming.output_folder import check_fresh_output
from beam_pipelines.streaming.stream_plan import plan, streaming_spec
from transforms.core.manifest import CountsMismatchError
from transforms.streaming.pubsub_pull import create_subscription, delete_subscription

if TYPE_CHECKING:
    # Only for annotations: the spec module imports this package's settings.
    from beam_pipelines.spec import JobSpec


def run_streaming(
    spec: JobSpec,
    *,
    artifact_dir: str | None = None,
    output: str | None = None,
    beam_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Plans, builds and runs a streaming job; on the local runner waits until it is bounded.

    Returns:
        The summary of what was written (also written as ``summary.json``), or ``{}`` when
        the job was submitted to a remote runner.

    Raises:
        InputError: before any work, if the output folder holds an earlier streaming run's
            files (its counts would add to this run's).
    """
    check_fresh_output(output or streaming_spec(spec).output.path)
    the_plan = plan(spec, artifact_dir=artifact_dir, output=output)
    sub = the_plan.stream.pubsub if the_plan.stream.source == "pubsub" else None
    options = make_options(beam_args)
    local = is_local(options)
    # Locally both sources run in a thread feeding the streaming local runner.
    options.view_as(StandardOptions).streaming = True
    p = make_pipeline(options)
    made = None
    if local and sub is not None:
        if sub.subscription is None:
            assert sub.topic is not None
            made = create_subscription(sub.topic)
        the_plan.subscription = sub.subscription or made
    try:
        build(p, the_plan)
        result = p.run()
        if not local:
            return {}
        # Local sources end at their limits and drain: every window fires before this returns.
        result.wait_until_finish()
        if the_plan.live is not None:
            the_plan.live.check_completed()
    finally:
        if made is not None:
            delete_subscription(made)
    summary = summarize(the_plan.stream.output.path, the_plan.stream.output.format)
    summary["pipeline"] = spec.name
    summary["run_id"] = uuid.uuid4().hex
    with FileSystems.create(FileSystems.join(the_plan.stream.output.path, "summary.json")) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    if not summary["balanced"]:
        raise CountsMismatchError(
            "the streaming run's counts do not balance: " + "; ".join(summary["problems"])
        )
    return summary


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: ``python -m beam_pipelines.streaming SPEC [--artifact DIR] [--output DIR]``."""
    import argparse

    from beam_pipelines.spec import load_spec

    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.streaming",
        description=__doc__.splitlines()[0]
        + " Other --flags are Beam pipeline options (the local runner by default).",
    )
    parser.add_argument("spec", help="the job spec YAML file, with a streaming: section")
    parser.add_argument(
        "--artifact",
        metavar="DIR",
        help="the fitted transform artifact (or the dataset folder of a batch run) to apply; "
        "overrides streaming.artifact of the spec",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="where rows, windows, errors and summary.json go; overrides "
        "streaming.output.path of the spec",
    )
    args, beam_args = parser.parse_known_args(argv)
    return run_streaming(
        load_spec(args.spec), artifact_dir=args.artifact, output=args.output, beam_args=beam_args
    )


__all__ = ["run", "run_streaming"]
