"""Which columns the report shows, and their drift against the baseline.

The statistics of a run hold the output (transformed) columns under ``all`` and, since
validation came in, the raw input columns under ``input.all``. The report shows the input
columns when the run (and the baseline, if any) has them, else the output columns, and says
which. Drift values are MEASUREMENT dicts (``measure``, ``value``, ``threshold``, ``over``,
``max_difference_value``: the shape of ``validation.json``'s ``drift``), read from the run's
``validation.json`` or computed here against ``--baseline``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

INPUT = "input"
OUTPUT = "output"

Measurement = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ColumnSet:
    """The columns the report shows, with this run's and the baseline's statistics.

    Attributes:
        section: ``input`` (raw columns as read) or ``output`` (the dataset's columns).
        note: Why this section, when it is not the input columns; else ''.
        names: The columns in the run's order, then those only the baseline has.
        run: COLSTATS by column for this run.
        baseline: COLSTATS by column for the baseline, or None without one.
    """

    section: str
    note: str
    names: tuple[str, ...]
    run: dict[str, dict[str, Any]]
    baseline: dict[str, dict[str, Any]] | None

    @property
    def label(self) -> str:
        """What the columns are, for a heading."""
        if self.section == INPUT:
            return "input columns (raw, as read)"
        return "output columns (the dataset's, after cleaning and features)"


def _input_columns(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    section = stats.get(INPUT)
    if isinstance(section, dict) and isinstance(section.get("all"), dict):
        return dict(section["all"])
    return None


def columns_of(
    stats: Mapping[str, Any], baseline_stats: Mapping[str, Any] | None = None
) -> ColumnSet:
    """Picks the columns to show: the input columns when both runs have them, else the output.

    Args:
        stats: This run's ``stats.json``.
        baseline_stats: The baseline's ``stats.json`` (or validation's copy of its input
            section), or None.
    """
    run = _input_columns(stats)
    baseline = _input_columns(baseline_stats) if baseline_stats is not None else None
    note = ""
    if run is not None and (baseline_stats is None or baseline is not None):
        section = INPUT
    else:
        section = OUTPUT
        if run is None:
            note = "this run's statistics have no input section"
        else:
            note = "the baseline's statistics have no input section"
        run = dict(stats["all"])
        baseline = None
        if baseline_stats is not None:
            if isinstance(baseline_stats.get("all"), dict):
                baseline = dict(baseline_stats["all"])
            else:
                # Validation's copy of a baseline keeps its input columns only.
                note += "; the baseline's statistics hold no output columns"
    names = list(run)
    if baseline is not None:
        names += [name for name in baseline if name not in run]
    return ColumnSet(section=section, note=note, names=tuple(names), run=run, baseline=baseline)


def missing_fraction(col: Mapping[str, Any] | None) -> float | None:
    """Missing values over all rows of a column, or None when the column has no rows."""
    if not col:
        return None
    missing = int(col.get("missing") or 0)
    rows = int(col.get("count") or 0) + missing
    return missing / rows if rows else None


def measure_name(measurement: Mapping[str, Any]) -> str:
    """The measure, with the histogram compared when it is not the standard one."""
    name = str(measurement.get("measure", ""))
    source = measurement.get("source")
    return f"{name} ({source})" if source else name


OVER = "over"
WITHIN = "within"
NO_THRESHOLD = "no threshold"
NOT_MEASURED = "not measured"


def status_of(measurement: Mapping[str, Any]) -> str:
    """How a MEASUREMENT compares with its threshold: over, within, no threshold, not measured."""
    if measurement.get("value") is None:
        return NOT_MEASURED
    if measurement.get("over"):
        return OVER
    if measurement.get("threshold") is None:
        return NO_THRESHOLD
    return WITHIN


@dataclasses.dataclass(frozen=True)
class Drift:
    """The drift values the report shows.

    Attributes:
        measurements: MEASUREMENT by column (every column compared).
        origin: Where the values come from, for the page.
        skew: MEASUREMENT by column, by compared pair (``train_vs_eval``, ...).
    """

    measurements: dict[str, Measurement]
    origin: str
    skew: dict[str, dict[str, Measurement]]

    @property
    def drifted(self) -> list[str]:
        """The columns over their threshold, in column order."""
        return [c for c, m in self.measurements.items() if status_of(m) == OVER]


def drift_of(
    validation: Mapping[str, Any] | None,
    columns: ColumnSet,
    *,
    baseline_run: str | None = None,
    threshold: float | None = None,
) -> Drift:
    """The drift to show: the run's ``validation.json``'s, else computed against the baseline.

    Computed values use each column type's default measure (L-infinity for strings,
    booleans, dates and times, Jensen-Shannon for numbers) as validation does; columns of
    other types (binary, lists) have none and are left out.

    Args:
        validation: The run's ``validation.json``, or None.
        columns: The columns shown, with the baseline's statistics when there is one.
        baseline_run: The baseline's run id, for the page.
        threshold: The threshold of values computed here; by default validation's default
            per measure (:data:`transforms.validation.schema.DEFAULT_THRESHOLDS`).
    """
    from transforms.validation.distances import column_distance
    from transforms.validation.schema import DEFAULT_THRESHOLDS, default_measure

    skew: dict[str, dict[str, Measurement]] = {}
    if validation:
        skew = {
            pair: dict(by_column)
            for pair, by_column in (validation.get("skew") or {}).items()
            if isinstance(by_column, dict)
        }
        recorded = validation.get("drift") or {}
        if recorded:
            against = (validation.get("baseline") or {}).get("run")
            origin = "validation.json" + (f", against run {against}" if against else "")
            if baseline_run and against and baseline_run != against:
                origin += f" (the distributions show run {baseline_run})"
            return Drift(measurements=dict(recorded), origin=origin, skew=skew)
    if columns.baseline is None:
        return Drift(measurements={}, origin="", skew=skew)
    measurements: dict[str, Measurement] = {}
    for name in columns.names:
        col, base = columns.run.get(name), columns.baseline.get(name)
        if col is None or base is None:
            continue
        measure = default_measure(str(col.get("type", ""))) or default_measure(
            str(base.get("type", ""))
        )
        if measure is None:
            continue
        limit = threshold if threshold is not None else DEFAULT_THRESHOLDS[measure]
        measurements[name] = column_distance(col, base, measure, limit)
    origin = f"computed against run {baseline_run}" if baseline_run else "computed"
    return Drift(measurements=measurements, origin=origin, skew=skew)


__all__ = [
    "INPUT",
    "NOT_MEASURED",
    "NO_THRESHOLD",
    "OUTPUT",
    "OVER",
    "WITHIN",
    "ColumnSet",
    "Drift",
    "Measurement",
    "columns_of",
    "drift_of",
    "measure_name",
    "missing_fraction",
    "status_of",
]
