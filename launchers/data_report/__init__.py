"""``beamforge report RUN [--baseline RUN] -o report.html``: a run's data, shown to people.

One self-contained HTML file (plotly.js inline, nothing fetched when it is viewed) with, per
column, this run's distribution beside the baseline's, missing shares, drift coloured
against thresholds, the anomalies, the row ledger and the dead letters' top reasons.

- :mod:`~launchers.data_report.load` reads a finished run (manifest, statistics,
  validation, error records) into :class:`RunData`;
- :mod:`~launchers.data_report.ledger` counts rows by step and reason and error records by
  reason;
- :mod:`~launchers.data_report.columns` picks the columns shown and their drift;
- :mod:`~launchers.data_report.charts` draws the plotly figures;
- :mod:`~launchers.data_report.page` writes the HTML document.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import secrets
from importlib import metadata

from launchers.data_report.columns import ColumnSet, Drift, columns_of, drift_of
from launchers.data_report.load import (
    Baseline,
    NoStatisticsError,
    RunData,
    RunNotFinishedError,
    given_baseline,
    load_run,
    recorded_baseline,
)
from launchers.data_report.page import render_page
from transforms.core import files
from transforms.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class Report:
    """A report made, not yet written.

    Attributes:
        html: The HTML document.
        run: The run reported on.
        baseline: The baseline's statistics, or None.
        columns: The columns shown.
        drift: The drift values shown.
        charts: How many charts the page draws.
    """

    html: str
    run: RunData
    baseline: Baseline | None
    columns: ColumnSet
    drift: Drift
    charts: int


def _version() -> str:
    try:
        return metadata.version("beamforge")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def build_report(
    run: str, *, baseline: str | None = None, threshold: float | None = None
) -> Report:
    """Reads ``run`` (and ``baseline``) and makes the report.

    Args:
        run: An output folder or run folder of a finished dataset run.
        baseline: The run to compare with; by default the baseline the run's
            ``validation.json`` names (none when it names none).
        threshold: The threshold of drift values computed here (those of the run's
            ``validation.json`` keep their own).

    Raises:
        RunNotFinishedError: when a run has no manifest naming it.
        NoStatisticsError: when a run has no statistics.
        InputError: when a file a manifest lists is missing or malformed.
    """
    data = load_run(run, role="run")
    if baseline is not None:
        base: Baseline | None = given_baseline(load_run(baseline, role="baseline"))
    else:
        # Without --baseline, the one the run was validated against, when it was.
        base = recorded_baseline(data)
    columns = columns_of(data.stats, base.stats if base else None)
    drift = drift_of(
        data.validation,
        columns,
        baseline_run=base.run_id if base else None,
        threshold=threshold,
    )
    page = render_page(
        data,
        columns,
        drift,
        baseline=base,
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        version=_version(),
    )
    return Report(
        html=page.html, run=data, baseline=base, columns=columns, drift=drift, charts=page.charts
    )


def check_report_path(output: str) -> None:
    """Checks that the report can be written to ``output`` before anything is read.

    Raises:
        InputError: when ``output`` is empty, a directory or not a local path.
    """
    if not output:
        # An empty name would make the temporary file's name from the folder's.
        raise InputError("-o/--output", "expected the report's file name, e.g. report.html")
    if files.is_remote(output):
        raise InputError(output, "write the report to a local file (e.g. report.html)")
    if os.path.isdir(output):
        raise InputError(
            output,
            f"is a directory; give the report's file name, e.g. {os.path.join(output, 'report.html')}",
        )


def check_outside_runs(output: str, folders: list[str]) -> None:
    """Refuses a report inside a run's output folder, which the next run there rewrites.

    Args:
        output: The report's path.
        folders: The output folders of the runs read.

    Raises:
        InputError: naming the output folder.
    """
    target = os.path.abspath(output)
    for folder in folders:
        if files.is_remote(folder):
            continue
        folder = os.path.abspath(folder)
        if target.startswith(folder.rstrip(os.sep) + os.sep):
            raise InputError(
                output,
                f"is inside the dataset folder {folder}, which its runs rewrite; write the "
                "report elsewhere",
            )


def write_report(output: str, text: str) -> None:
    """Writes the report in one step: a reader sees the previous file or the whole new one.

    A symbolic link is followed: the report goes to the link's target and the link stays.
    A target that exists and is not a regular file (``/dev/stdout``, a pipe) is written
    in place, as renaming over it would replace it.
    """
    target = os.path.realpath(output)
    if os.path.exists(target) and not os.path.isfile(target):
        with open(target, "w", encoding="utf-8") as out:
            out.write(text)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.tmp-{secrets.token_hex(4)}"
    try:
        # Created new ("x"), with the permissions of any file the user writes.
        with open(temporary, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


__all__ = [
    "Baseline",
    "NoStatisticsError",
    "Report",
    "RunData",
    "RunNotFinishedError",
    "build_report",
    "check_outside_runs",
    "check_report_path",
    "load_run",
    "write_report",
]
