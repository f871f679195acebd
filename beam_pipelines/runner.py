"""Pipeline options and the local runner, pinned.

In Beam 2.77 ``DirectRunner`` first tries the Prism runner, which downloads a binary at run
time; offline that fails and falls back after a delay. beamforge pins the local runner
instead: the FnApiRunner for batch pipelines (it honours ``--direct_num_workers`` and
``--direct_running_mode``), the BundleBasedDirectRunner for streaming ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

LOCAL_NAMES = {None, "", "DirectRunner", "directrunner", "direct"}


def make_options(beam_args: Sequence[str], *, streaming: bool = False) -> PipelineOptions:
    """Builds PipelineOptions from command-line style arguments.

    Raises:
        ValueError: naming arguments Beam does not know (a typo would otherwise be ignored).
    """
    options = PipelineOptions(list(beam_args))
    unknown = (
        options.get_all_options(retain_unknown_options=True).keys()
        - options.get_all_options().keys()
    )
    if unknown:
        raise ValueError(f"unknown pipeline options: {', '.join(sorted(unknown))}")
    if streaming:
        options.view_as(StandardOptions).streaming = True
    return options


def local_runner(options: PipelineOptions) -> beam.runners.PipelineRunner:
    """The pinned local runner for these options."""
    if options.view_as(StandardOptions).streaming:
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        return BundleBasedDirectRunner()
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # As DirectRunner does: workers (also multi-process ones) see the pipeline options.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=info)


def is_local(options: PipelineOptions) -> bool:
    """Whether these options run on the pinned local runner (no runner, or Direct, named)."""
    return options.view_as(StandardOptions).runner in LOCAL_NAMES


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the requested runner; the pinned local runner if none (or Direct) is named."""
    if is_local(options):
        return beam.Pipeline(runner=local_runner(options), options=options)
    return beam.Pipeline(options=options)
