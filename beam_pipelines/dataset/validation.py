"""A run's data validation: what its input statistics are judged against, and the verdict.

Everything that can be wrong with the ``validation:`` section (a schema file that does not
parse, a baseline that is not a finished run or has no input statistics) is found by
:func:`prepare`, before any data is read. The baseline's statistics are read then too: a
baseline of ``previous`` is the run the output's manifest names when the run starts, and
that run's folder is deleted when this run commits. They are kept beside the run as
``baseline_stats.json`` so the report can draw both distributions later.

:func:`judge` runs in the commit, once the statistics are known; its result is
``validation.json`` (the shape is :func:`transforms.validation.result.validate`'s).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from beam_pipelines.spec import JobSpec, load_yaml, skew_pairs
from transforms.core import files
from transforms.core.config import SpecError
from transforms.core.dataset_folder import MANIFEST, resolve_dataset, resolve_run
from transforms.core.errors import InputError
from transforms.validation.result import validate
from transforms.validation.schema import DataSchema, parse_schema

_LOG = logging.getLogger(__name__)

__all__ = ["PREVIOUS", "RunValidation", "baseline_stats", "judge", "prepare"]

PREVIOUS = "previous"


@dataclasses.dataclass
class RunValidation:
    """What a run's input statistics are compared with (all of it read before the run).

    Attributes:
        schema: The data schema, if the spec names one.
        schema_ref: ``{"path", "sha256"}`` of the schema file.
        baseline: The baseline run's input statistics (``{"all", "splits"}``), if any.
        baseline_ref: ``{"run", "source"}``: the baseline run's id and the path it came from.
        thresholds: Default drift and skew thresholds by measure.
        skew: Pairs of splits to compare.
    """

    schema: DataSchema | None
    schema_ref: dict[str, str] | None
    baseline: dict[str, Any] | None
    baseline_ref: dict[str, str] | None
    thresholds: dict[str, float]
    skew: list[tuple[str, str]]


def prepare(
    spec: JobSpec, output: str, baseline: str | None = None, *, offline: bool = False
) -> RunValidation:
    """Reads the schema and the baseline's statistics a run of ``spec`` is judged against.

    Args:
        spec: The job spec (its ``validation:`` section).
        output: The run's output folder (where ``previous`` looks).
        baseline: ``--baseline``: overrides ``validation.baseline``.
        offline: Read nothing remote (a dry run): no baseline, and a ``gs://`` schema is
            not read.

    Raises:
        SpecError: for a schema file that is not a valid data schema (naming its key).
        InputError: for a schema file or baseline that cannot be read, a baseline that is
            not a finished run, or one without input statistics.
    """
    section = spec.validation
    schema = schema_ref = None
    path = section.schema
    if path is not None and not (offline and files.is_remote(path)):
        data = load_yaml(path, what="data schema")
        try:
            schema = parse_schema(data, origin=path)
        except SpecError as exc:
            raise exc.located(path) from None
        raw = files.read_bytes(path) or b""
        schema_ref = {"path": path, "sha256": hashlib.sha256(raw).hexdigest()}
    named = "--baseline" if baseline is not None else "validation.baseline"
    where = None if offline else (baseline if baseline is not None else section.baseline)
    if where is not None and not where.strip():
        raise InputError(named, "is empty; expected a run, an output folder or 'previous'")
    stats = ref = None
    if where == PREVIOUS:
        found = resolve_dataset(output)
        if found is not None:
            try:
                stats, ref = _previous(found[0], found[1])
            except InputError as exc:
                # The run before may predate input statistics: this run becomes the first
                # baseline instead of failing (a baseline named explicitly must have them).
                _LOG.warning("no drift measured: %s", exc)
    elif where is not None:
        try:
            stats, ref = baseline_stats(*resolve_run(where))
        except InputError as exc:
            # The run's own inputs and outputs fail with the same kinds of message: say
            # that this one is about the baseline, and where it was named.
            raise InputError(f"{named} {exc.location}", exc.problem) from None
        ref["source"] = where
    return RunValidation(
        schema=schema,
        schema_ref=schema_ref,
        baseline=stats,
        baseline_ref=ref,
        thresholds=dataclasses.asdict(section.thresholds),
        skew=skew_pairs(spec),
    )


def _previous(manifest_path: str, manifest: dict[str, Any]) -> tuple[dict, dict[str, str]]:
    # The run the output holds, unless its own validation found anomalies against a
    # baseline: data that failed does not become the norm, the baseline it failed against
    # is carried forward (kept beside it as baseline_stats.json) until a run passes, or
    # until a run is given --baseline explicitly.
    summary = manifest.get("validation")
    kept = manifest.get("baseline_stats_file")
    if not (isinstance(summary, dict) and summary.get("ok") is False and isinstance(kept, dict)):
        return baseline_stats(manifest_path, manifest)
    verdict = _read_json(str(summary["path"]))
    carried = _read_json(str(kept["path"]))
    ref = verdict.get("baseline") or {}
    return carried["input"], {"run": str(ref.get("run", "")), "source": str(ref.get("source", ""))}


def _read_json(path: str) -> Any:
    raw = files.read_bytes(path)
    if raw is None:
        raise InputError(path, "does not exist, though the manifest lists it")
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None


def baseline_stats(manifest_path: str, manifest: dict[str, Any]) -> tuple[dict, dict[str, str]]:
    """A finished run's input statistics and a reference to the run.

    Raises:
        InputError: if the run lists no statistics, they cannot be read, or they hold no
            input statistics (a run made before beamforge recorded them).
    """
    stats_path = manifest.get("stats")
    run = manifest.get("run") or {}
    if not isinstance(stats_path, str):
        raise InputError(manifest_path, "lists no statistics (key stats is missing)")
    raw = files.read_bytes(stats_path)
    if raw is None:
        raise InputError(stats_path, "does not exist: the baseline run has no statistics")
    try:
        stats = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise InputError(stats_path, f"is not valid JSON ({exc})") from None
    if not isinstance(stats, dict) or not isinstance(stats.get("input"), dict):
        raise InputError(
            stats_path,
            "holds no input statistics (key input): the baseline was made by a beamforge "
            "that did not record them; run it again to use it as a baseline",
        )
    root = manifest_path[: -len(MANIFEST)].rstrip("/") or "."
    return stats["input"], {"run": str(run.get("id", "")), "source": root}


def judge(
    check: RunValidation, stats: dict[str, Any], run_id: str, baseline_copy: str | None
) -> dict[str, Any]:
    """The content of ``validation.json`` for a run's statistics.

    Args:
        check: What :func:`prepare` read.
        stats: The run's ``stats.json`` content (its ``input`` section is judged).
        run_id: The run's id.
        baseline_copy: Where the baseline's statistics are kept beside the run.
    """
    columns = stats["input"]
    skew = {
        f"{a}_vs_{b}": (columns["splits"][a], columns["splits"][b])
        for a, b in check.skew
        if a in columns["splits"] and b in columns["splits"]
    }
    baseline_ref = None
    if check.baseline_ref is not None:
        baseline_ref = {**check.baseline_ref, "stats": baseline_copy or ""}
    return validate(
        columns["all"],
        schema=check.schema,
        baseline=check.baseline["all"] if check.baseline is not None else None,
        skew=skew,
        thresholds=check.thresholds,
        run=run_id,
        schema_ref=check.schema_ref,
        baseline_ref=baseline_ref,
    )
