"""``beamforge report RUN [--baseline RUN] -o report.html``: a run's data as one HTML file.

RUN (and the baseline) is an output folder, its manifest.json or its run folder, of a run
that finished. The report (:mod:`launchers.data_report`) shows, per column, this run's
distribution beside the baseline's, missing shares, drift against thresholds, the anomalies,
the row ledger and the dead letters' top reasons; it needs no network to be viewed. A run
that did not finish, a baseline without statistics or an output that is a directory is one
line on stderr, exit code 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error

COMMANDS = ("report",)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_parsers(sub: Any) -> None:
    """Adds the report subcommand to ``beamforge``'s parser."""
    report = sub.add_parser(
        "report",
        help="one self-contained HTML page of a run's data: distributions, drift, anomalies, "
        "row ledger, error reasons",
        description="Write one HTML file showing a finished run's data, compared with a baseline run.",
    )
    report.add_argument(
        "run",
        metavar="RUN",
        help="the run: its output folder, that folder's manifest.json or its run folder",
    )
    report.add_argument(
        "--baseline",
        metavar="RUN",
        help="a finished run to compare with (output or run folder); default: the one the "
        "run's validation.json was measured against, if any",
    )
    report.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the HTML file to write"
    )
    report.add_argument(
        "--threshold",
        type=_threshold,
        metavar="X",
        help="drift threshold (0 to 1) of the values computed against --baseline when the "
        "run's validation.json has none (default: validation's, 0.3 for both measures)",
    )


def command(args: argparse.Namespace) -> int:
    """Runs ``beamforge report``; returns the exit code."""
    from transforms.core.errors import InputError

    try:
        from launchers.data_report import (
            build_report,
            check_outside_runs,
            check_report_path,
            write_report,
        )
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "plotly":
            raise
        return error("beamforge report draws with plotly: pip install 'beamforge[report]'")

    try:
        check_report_path(args.output)
        report = build_report(args.run, baseline=args.baseline, threshold=args.threshold)
        folders = [report.run.output] + ([report.baseline.location] if report.baseline else [])
        check_outside_runs(args.output, folders)
        write_report(args.output, report.html)
    except InputError as exc:
        return error(exc)
    except BrokenPipeError:
        raise  # the reader went away: the CLI ends quietly
    except OSError as exc:
        return error(f"{exc.filename or args.output}: {exc.strerror or exc}")
    against = f" against {report.baseline.run_id}" if report.baseline else ""
    drifted = report.drift.drifted
    print(
        f"{args.output}: report of run {report.run.run_id}{against} "
        f"({len(report.columns.names)} {report.columns.section} columns, {report.charts} charts"
        + (f", drifted: {', '.join(drifted)}" if drifted else "")
        + ")"
    )
    return ExitCode.OK


__all__ = ["COMMANDS", "add_parsers", "command"]
