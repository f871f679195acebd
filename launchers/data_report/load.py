"""A finished run read for the report: its manifest, statistics, validation and dead letters.

``RUN`` is an output folder (it holds ``manifest.json``), that manifest, or one of its run
folders (``run-YYYYMMDDTHHMMSSZ-XXXXXXXX``, which the manifest of the folder above names). A run
folder the manifest does not name, or a folder without a manifest, is a run that did not
finish: :class:`RunNotFinishedError`. Files are read by path, local or ``gs://``
(:mod:`transforms.core.files`), always through what the manifest lists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from collections.abc import Iterator
from typing import Any

from launchers.data_report.ledger import ErrorSummary, Ledger, ledger_of, summarize_errors
from transforms.core import files
from transforms.core.errors import InputError
from transforms.io.output_folder import MANIFEST, RUN_DIR, resolve_dataset

VALIDATION = "validation.json"


class RunNotFinishedError(InputError):
    """The folder holds no manifest naming the run: it did not finish (or is no run at all)."""


class NoStatisticsError(InputError):
    """The run's manifest names no statistics, or the statistics file is gone."""


@dataclasses.dataclass(frozen=True)
class RunData:
    """What the report shows of one finished run.

    Attributes:
        location: The folder the user named (an output folder or a run folder).
        manifest_path: The ``manifest.json`` that names the run.
        run_id: The run's id, ``run-...``.
        root: The run's own folder (``manifest["run"]["root"]``).
        output: The output folder the run published to.
        pipeline: The job's name.
        created_at: When the manifest was written (ISO-8601), or ''.
        stats: The run's ``stats.json``.
        stats_path: Where ``stats`` was read from.
        validation: The run's ``validation.json``, or None when it has none.
        validation_path: Where ``validation`` was read from, or None.
        ledger: Rows read, written, rejected and dropped, by step and reason.
        errors: The dead-letter records' reasons, counted, with examples.
    """

    location: str
    manifest_path: str
    run_id: str
    root: str
    output: str
    pipeline: str
    created_at: str
    stats: dict[str, Any]
    stats_path: str
    validation: dict[str, Any] | None
    validation_path: str | None
    ledger: Ledger
    errors: ErrorSummary


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The statistics a run is compared with.

    Attributes:
        run_id: The baseline run's id.
        location: Its output folder: ``--baseline``'s, the one validation names, or (a
            baseline of ``previous``) the run's own.
        stats: Its ``stats.json``.
        origin: ``--baseline``, or ``validation.json`` when the run's validation recorded it.
    """

    run_id: str
    location: str
    stats: dict[str, Any]
    origin: str


def given_baseline(run: RunData) -> Baseline:
    """A run named by ``--baseline`` as the baseline."""
    return Baseline(run_id=run.run_id, location=run.output, stats=run.stats, origin="--baseline")


def recorded_baseline(run: RunData) -> Baseline | None:
    """The baseline the run's ``validation.json`` was measured against, or None without one.

    Validation keeps a copy of the baseline's statistics beside the run (its ``baseline.stats``).

    Raises:
        InputError: when that copy is missing or malformed.
    """
    recorded = (run.validation or {}).get("baseline")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("stats"), str):
        return None
    path = recorded["stats"]
    stats = _read_json(path, "the baseline's statistics")
    if stats is None:
        raise NoStatisticsError(
            path,
            f"{run.validation_path} names these baseline statistics, which are missing; "
            "give the baseline with --baseline RUN",
        )
    if not isinstance(stats, dict) or not (
        isinstance(stats.get("all"), dict)
        or isinstance((stats.get("input") or {}).get("all"), dict)
    ):
        raise NoStatisticsError(path, "holds no column statistics (no 'all' or 'input' section)")
    return Baseline(
        run_id=str(recorded.get("run") or ""),
        # No source: the baseline was "previous", the run this output held before.
        location=str(recorded.get("source") or run.output),
        stats=stats,
        origin="validation.json",
    )


def _parent(path: str) -> str:
    trimmed = path.rstrip("/")
    if files.is_remote(trimmed):
        return posixpath.dirname(trimmed)
    return os.path.dirname(os.path.abspath(trimmed))


def _name(path: str) -> str:
    return (
        posixpath.basename(path.rstrip("/"))
        if files.is_remote(path)
        else os.path.basename(os.path.abspath(path))
    )


def find_manifest(location: str) -> tuple[str, dict[str, Any]]:
    """The manifest that names the run at ``location``: an output folder, its manifest, or a
    run folder.

    Returns:
        ``(manifest path, manifest)``.

    Raises:
        InputError: when ``location`` does not exist or the manifest is not valid JSON.
        RunNotFinishedError: when no manifest names the run.
    """
    if not files.is_remote(location) and not os.path.exists(location):
        raise InputError(location, "no such run or output folder")
    if _name(location) == MANIFEST:
        # The manifest itself names the output folder it sits in.
        location = _parent(location)
    found = resolve_dataset(location)
    if found is not None:
        return found
    name = _name(location)
    if RUN_DIR.fullmatch(name):
        parent = _parent(location)
        above = resolve_dataset(parent)
        if above is not None:
            manifest_path, manifest = above
            named = _run_section(manifest, manifest_path).get("id")
            if named == name:
                return above
            raise RunNotFinishedError(
                location,
                f"the run did not finish: {manifest_path} names run {named}, not this one",
            )
        raise RunNotFinishedError(
            location,
            f"the run did not finish: no manifest.json at {files.join(parent, MANIFEST)}",
        )
    raise RunNotFinishedError(
        location,
        f"no manifest.json at {files.join(location, MANIFEST)}: the run did not finish, or "
        "this is not a run's output folder",
    )


def _run_section(manifest: Any, manifest_path: str) -> dict[str, Any]:
    run = manifest.get("run") if isinstance(manifest, dict) else None
    if not isinstance(run, dict) or not isinstance(run.get("id"), str):
        raise InputError(manifest_path, "is not a dataset run's manifest (no run.id)")
    return run


def _read_json(path: str, what: str) -> Any | None:
    data = files.read_bytes(path)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise InputError(path, f"{what} is not valid JSON ({exc})") from None


def load_run(location: str, *, role: str = "run") -> RunData:
    """Reads the finished run at ``location`` for the report.

    Args:
        location: An output folder or one of its run folders, local or ``gs://``.
        role: How error messages name the run: ``run`` or ``baseline``.

    Raises:
        RunNotFinishedError: when no manifest names the run.
        NoStatisticsError: when the run has no statistics.
        InputError: when a file the manifest lists is missing or malformed.
    """
    manifest_path, manifest = find_manifest(location)
    run = _run_section(manifest, manifest_path)
    stats_path = manifest.get("stats")
    if not isinstance(stats_path, str):
        raise NoStatisticsError(
            manifest_path, f"the {role} run {run['id']} has no statistics (no stats key)"
        )
    stats = _read_json(stats_path, "the statistics file")
    if stats is None:
        raise NoStatisticsError(
            stats_path, f"the {role} run {run['id']} has no statistics: the file is missing"
        )
    if not isinstance(stats, dict) or not isinstance(stats.get("all"), dict):
        raise NoStatisticsError(stats_path, "holds no column statistics (no 'all' section)")
    root = str(run.get("root") or _parent(manifest_path))
    validation_path, validation = _validation(manifest, root)
    return RunData(
        location=location,
        manifest_path=manifest_path,
        run_id=str(run["id"]),
        root=root,
        output=str(run.get("output") or _parent(manifest_path)),
        pipeline=str(manifest.get("pipeline", "")),
        created_at=str(manifest.get("created_at", "")),
        stats=stats,
        stats_path=stats_path,
        validation=validation,
        validation_path=validation_path,
        ledger=ledger_of(manifest),
        errors=summarize_errors(_error_records(manifest, manifest_path)),
    )


def _validation(manifest: dict[str, Any], root: str) -> tuple[str | None, dict[str, Any] | None]:
    # The file entry (validation_file: path, size), else the summary's path.
    listed = [
        entry["path"]
        for entry in (manifest.get("validation_file"), manifest.get("validation"))
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    ]
    # A validation.json written beside the run's files without being listed is read too.
    path = listed[0] if listed else files.join(root, VALIDATION)
    data = _read_json(path, "the validation file")
    if data is None:
        if listed:
            raise InputError(path, "is listed in the manifest but missing")
        return None, None
    if not isinstance(data, dict) or data.get("format_version") != 1:
        raise InputError(path, "is not a validation.json of format_version 1")
    return path, data


def _error_records(manifest: dict[str, Any], manifest_path: str) -> Iterator[dict[str, Any]]:
    section = manifest.get("errors")
    listed = section.get("files", []) if isinstance(section, dict) else []
    for entry in listed:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            raise InputError(manifest_path, f"lists an errors file without a path: {entry!r}")
        yield from _records_of(path)


def _lines(path: str) -> Iterator[str]:
    if files.is_remote(path):
        data = files.read_bytes(path)
        if data is None:
            raise InputError(path, "is listed in the manifest's errors but missing")
        yield from data.decode("utf-8").splitlines()
        return
    try:
        with open(path, encoding="utf-8") as f:
            # Line by line: a run's dead letters can be many more than fit in memory.
            yield from f
    except FileNotFoundError:
        raise InputError(path, "is listed in the manifest's errors but missing") from None


def _records_of(path: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{number}", "is not an error record (a JSON object)")
        yield record


__all__ = [
    "Baseline",
    "NoStatisticsError",
    "RunData",
    "RunNotFinishedError",
    "find_manifest",
    "given_baseline",
    "load_run",
    "recorded_baseline",
]
