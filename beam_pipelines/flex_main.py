"""Flex Template entry point: the dataset pipeline, configured by template parameters.

The template launcher runs this file (``FLEX_TEMPLATE_PYTHON_PY_FILE``) with the launch
parameters as ``--name=value`` flags, followed by the pipeline options Dataflow adds
(``--runner``, ``--project``, ``--temp_location``, ``--sdk_container_image`` ...).

:data:`PARAMETERS` is the one list of template parameters: the argument parser here and the
template's ``metadata.json`` (``launchers.dataflow.templates``) are both generated from it.
A bad parameter or spec ends as one line on stderr, ``error: <message>``, with exit code 2
(:mod:`beam_pipelines.entry`): Dataflow shows it in the job's log.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

GCS_PATH = r"^gs:\/\/[^\n\r]+$"
GCS_PATHS = r"^gs:\/\/[^\n\r,]+(,gs:\/\/[^\n\r,]+)*$"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One template parameter.

    Attributes:
        name: Flag name (``--name``) and parameter key at launch.
        label: Short label shown in the console's template form.
        help_text: What the parameter does.
        param_type: Dataflow ``ParameterType`` name (drives the console's picker).
        regexes: Patterns the value must match (checked by Dataflow at launch).
        optional: Whether it may be left out.
    """

    name: str
    label: str
    help_text: str
    param_type: str = "TEXT"
    regexes: tuple[str, ...] = ()
    optional: bool = True

    def metadata(self) -> dict[str, Any]:
        """The parameter as a ``ParameterMetadata`` JSON object."""
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "helpText": self.help_text,
            "paramType": self.param_type,
            "isOptional": self.optional,
        }
        if self.regexes:
            out["regexes"] = list(self.regexes)
        return out


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        name="spec",
        label="Job spec",
        help_text="gs:// path of the beamforge job spec YAML, e.g. gs://my-bucket/specs/taxi.yaml.",
        param_type="GCS_READ_FILE",
        regexes=(GCS_PATH,),
        optional=False,
    ),
    Parameter(
        name="input",
        label="Input files",
        help_text=(
            "Comma-separated gs:// files or glob patterns to read; overrides source.path of "
            "the spec."
        ),
        param_type="GCS_READ_FILE",
        regexes=(GCS_PATHS,),
    ),
    Parameter(
        name="output",
        label="Output prefix",
        help_text=(
            "gs:// prefix the dataset, artifact, stats, errors and manifest are written under; "
            "overrides output.path of the spec."
        ),
        param_type="GCS_WRITE_FOLDER",
        regexes=(GCS_PATH,),
    ),
    Parameter(
        name="artifact",
        label="Fitted artifact",
        help_text=(
            "gs:// folder of a fitted transform artifact to apply instead of fitting; "
            "overrides transform.artifact of the spec."
        ),
        param_type="GCS_READ_FOLDER",
        regexes=(GCS_PATH,),
    ),
)


def parser() -> argparse.ArgumentParser:
    """The argument parser for :data:`PARAMETERS` (everything else goes to Beam)."""
    from beam_pipelines.entry import OneLineParser

    parser = OneLineParser(
        prog="flex_main", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    for param in PARAMETERS:
        parser.add_argument(f"--{param.name}", required=not param.optional, help=param.help_text)
    return parser


def metadata(name: str, description: str) -> dict[str, Any]:
    """The template's ``metadata.json`` content (``TemplateMetadata`` JSON)."""
    return {
        "name": name,
        "description": description,
        "parameters": [p.metadata() for p in PARAMETERS],
    }


def run(argv: Sequence[str] | None = None) -> Any:
    """Parses the template parameters, then plans and submits the dataset job.

    The launcher only submits: it returns once Dataflow has the job (the dataset is done when
    the job is, and its manifest is written last).
    """
    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec

    args, beam_args = parser().parse_known_args(argv)
    inputs = [p for p in args.input.split(",") if p] if args.input else None
    return run_job(
        load_spec(args.spec),
        output=args.output,
        inputs=inputs,
        artifact_dir=args.artifact,
        beam_args=beam_args,
    )


if __name__ == "__main__":
    from beam_pipelines.entry import main

    logging.basicConfig(level=logging.INFO)
    sys.exit(main(run))
