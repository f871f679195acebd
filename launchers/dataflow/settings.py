"""Dataflow settings at run time: the spec's section merged with command-line flags.

The settings themselves (:class:`DataflowSettings`, their checks and Beam arguments) live in
:mod:`beam_pipelines.dataflow_settings`, so that loading a spec checks its ``dataflow:``
section. Here the section meets Beam-style flags (``--project``, ``--region``,
``--labels k=v`` ...), the flags winning, and the merged settings are checked whole; also the
job name, console URLs and the Flex Template launch environment.

    settings, rest = resolve_settings(spec.dataflow, argv)
    beam_args = settings.beam_args() + rest
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from beam_pipelines.dataflow_settings import (
    DATAFLOW_RUNNER,
    FLAGS,
    REPO_SETUP_FILE,
    DataflowSection,
    DataflowSettings,
    SettingsError,
)
from transforms.core.config import SpecError, from_mapping

__all__ = [
    "DATAFLOW_RUNNER",
    "FLAGS",
    "REPO_SETUP_FILE",
    "DataflowSection",
    "DataflowSettings",
    "FlexLaunchSettings",
    "SettingsError",
    "console_url",
    "default_job_name",
    "flex_environment",
    "resolve_settings",
]


def _overrides_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a Beam flag such as --project_id must not be taken for --project.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for key, flag in FLAGS.items():
        if key in ("no_public_ips", "labels", "experiments", "image_has_beamforge"):
            continue
        parser.add_argument(flag, dest=key, type=int if key.endswith("workers") else str)
    parser.add_argument("--worker_machine_type", dest="machine_type")
    parser.add_argument("--service_account", dest="service_account")
    parser.add_argument(
        "--no_use_public_ips", dest="no_public_ips", action="store_const", const=True
    )
    parser.add_argument("--use_public_ips", dest="no_public_ips", action="store_const", const=False)
    parser.add_argument("--labels", dest="labels", action="append")
    parser.add_argument("--experiments", "--experiment", dest="experiments", action="append")
    parser.add_argument(
        "--image_has_beamforge",
        dest="image_has_beamforge",
        choices=["true", "false"],
    )
    parser.add_argument("--runner", dest="runner")
    return parser


@dataclasses.dataclass
class FlexLaunchSettings(DataflowSettings):
    """Settings of a Flex Template launch: as for a job, but the temp location is optional."""

    temp_location_required: ClassVar[bool] = False


S = TypeVar("S", bound=DataflowSettings)


def resolve_settings(
    section: DataflowSettings | Mapping[str, Any] | None,
    argv: Sequence[str] = (),
    cls: type[S] = DataflowSettings,  # type: ignore[assignment]
) -> tuple[S, list[str]]:
    """Merges the spec's ``dataflow:`` section with command-line flags and validates them.

    Flags override keys of the section; ``--labels k=v`` overrides one label, and
    ``--experiments`` adds to the section's experiments.

    Args:
        section: The spec's ``dataflow:`` section (``JobSpec.dataflow``), or a mapping of
            the same keys; None if there is none.
        argv: Beam-style arguments; those that are not Dataflow settings are returned.
        cls: The settings class (:class:`FlexLaunchSettings` for a template launch).

    Returns:
        The validated settings and the arguments left over for Beam.

    Raises:
        transforms.core.config.SpecError: with the ``dataflow.KEY`` path of the first problem.
    """
    parsed, rest = _overrides_parser().parse_known_args(list(argv))
    if parsed.runner not in (None, DATAFLOW_RUNNER):
        raise SpecError("dataflow", f"--runner={parsed.runner} is not {DATAFLOW_RUNNER}")
    merged: dict[str, Any]
    if isinstance(section, DataflowSettings):
        merged = dataclasses.asdict(section)
    else:
        merged = dict(section or {})
    for key in FLAGS:
        value = getattr(parsed, key)
        if value is None:
            continue
        if key == "labels":
            known_labels = merged.get("labels")
            labels = dict(known_labels) if isinstance(known_labels, Mapping) else {}
            for item in value:
                name, sep, label = item.partition("=")
                if not sep:
                    raise SettingsError("labels", f"{item!r} is not KEY=VALUE")
                labels[name] = label
            merged["labels"] = labels
        elif key == "experiments":
            known = list(merged.get("experiments") or [])
            merged["experiments"] = known + [e for e in value if e not in known]
        elif key == "image_has_beamforge":
            merged[key] = value == "true"
        else:
            merged[key] = value
    return from_mapping(cls, merged, "dataflow"), rest


def default_job_name(spec_name: str, now: Callable[[], dt.datetime] | None = None) -> str:
    """A valid Dataflow job name from the spec name and the UTC time, e.g. ``chicago-taxi-20240101-120000``."""
    stamp = (now or (lambda: dt.datetime.now(dt.UTC)))().strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^a-z0-9-]+", "-", spec_name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"beamforge-{base}".rstrip("-")
    base = base[: 63 - len(stamp) - 1].rstrip("-")
    return f"{base}-{stamp}"


def console_url(project: str, region: str, job_id: str) -> str:
    """The Cloud Console page of a Dataflow job."""
    return f"https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


def flex_environment(settings: DataflowSettings) -> dict[str, Any]:
    """The settings as a Flex Template launch ``environment`` (FlexTemplateRuntimeEnvironment).

    ``setup_file`` has no place here: a Flex Template's image has beamforge installed.
    """
    env: dict[str, Any] = {
        "temp_location": settings.temp_location,
        "staging_location": settings.staging_location,
        "service_account_email": settings.service_account,
        "network": settings.network,
        "subnetwork": settings.subnetwork,
        "kms_key_name": settings.kms_key,
        "machine_type": settings.machine_type,
        "num_workers": settings.num_workers,
        "max_workers": settings.max_workers,
        "sdk_container_image": settings.sdk_container_image,
    }
    env = {k: v for k, v in env.items() if v is not None}
    if settings.labels:
        env["additional_user_labels"] = dict(settings.labels)
    if settings.experiments:
        env["additional_experiments"] = list(settings.experiments)
    if settings.no_public_ips:
        env["ip_configuration"] = "WORKER_IP_PRIVATE"
    return env
