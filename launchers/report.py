"""What the ``beamforge`` command reports: the run summary and error lines.

Shared by :mod:`launchers.cli` and :mod:`launchers.cloud_commands`. A failure the CLI
recognises (:func:`beam_pipelines.failures.failure_of`, by its type, never by its message)
is printed as one line, ``error: <message>``, and returns its :class:`ExitCode`.
"""

from __future__ import annotations

import sys
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from beam_pipelines.failures import Failure, failure_of


def error(message: object, code: ExitCode = ExitCode.USER_ERROR) -> ExitCode:
    """Prints ``error: <message>`` on stderr; returns ``code``."""
    print(f"error: {message}", file=sys.stderr)
    return code


def format_summary(manifest: dict[str, Any], seconds: float) -> str:
    """The end-of-run summary: rows per split, rejections by step and reason, paths."""
    counts = manifest["counts"]
    read = counts["read"]
    rate = read / seconds if seconds > 0 else 0.0
    lines = [f"{manifest['pipeline']}: {read:,} rows read in {seconds:.1f} s ({rate:,.0f} rows/s)"]
    for name, split in manifest["splits"].items():
        files = [p for paths in split["files"].values() for p in paths]
        lines.append(f"  {name:<8} {split['rows']:>10,} rows  {len(files)} file(s)")
    lines.append(f"  rejected {counts['total_rejected']:>9,} rows")
    for step, reasons in counts["rejected"].items():
        for reason, n in reasons.items():
            lines.append(f"    {step}: {reason}: {n:,}")
    lines.append(f"  dropped  {counts['total_dropped']:>9,} rows")
    for step, reasons in counts["dropped"].items():
        for reason, n in reasons.items():
            lines.append(f"    {step}: {reason}: {n:,}")
    output = manifest["run"]["output"]
    lines.append(f"  dataset   {output} (run {manifest['run']['id']})")
    lines.append(
        f"  artifact  {manifest['artifact']['path']} (sha256 {manifest['artifact']['sha256'][:12]})"
    )
    lines.append(
        f"  errors    {manifest['errors']['path']} ({manifest['errors']['count']:,} records)"
    )
    lines.append(f"  stats     {manifest['stats']}")
    validation = manifest.get("validation")
    if isinstance(validation, dict):
        lines.append(f"  validation {validation['path']}: {_verdict(validation)}")
    lines.append(f"  manifest  {output.rstrip('/')}/manifest.json")
    return "\n".join(lines)


def _verdict(summary: dict[str, Any]) -> str:
    if summary["ok"]:
        return "no anomalies"
    parts = [f"{summary['anomalies']} anomalies"]
    if summary["drifted_columns"]:
        parts.append(f"drift in {', '.join(summary['drifted_columns'])}")
    if summary["skewed_columns"]:
        parts.append(f"skew in {', '.join(summary['skewed_columns'])}")
    return "; ".join(parts)


__all__ = ["Failure", "error", "failure_of", "format_summary"]
