"""``validate``: a run's statistics judged against its schema, a baseline and its splits.

The result is the content of ``validation.json`` (format version 1)::

    {"format_version": 1, "run": "run-...", "columns": "input",
     "schema": {"path", "sha256"} | null, "baseline": {"run", "stats"} | null,
     "anomalies": [{"column", "kind", "observed", "expected", "message"}, ...],
     "drift": {COLUMN: MEASUREMENT},
     "skew": {"train_vs_eval": {COLUMN: MEASUREMENT}, ...},
     "summary": {"anomalies": n, "drifted_columns": [...], "skewed_columns": [...],
                 "ok": true when there is no anomaly}}

    MEASUREMENT = {"measure": "l_infinity" | "jensen_shannon", "value": float | null,
                   "threshold": float | null, "over": bool, "max_difference_value": str | null}

Every column present on both sides of a comparison gets a measurement, also when it is
under its threshold (TFDV only reports those over it, inside anomalies:
tensorflow/data-validation#181); a measurement over its threshold is also an anomaly of
kind ``drift`` or ``skew`` (TFDV's ``COMPARATOR_L_INFTY_HIGH`` and
``COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH``). A column's measure and threshold come from
its schema entry (``drift`` / ``skew``), else from the defaults per measure. Columns of
types without a measure (binary, lists) are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transforms.validation.anomalies import Anomaly, find_anomalies
from transforms.validation.distances import (
    JENSEN_SHANNON,
    L_INFINITY,
    STANDARD,
    column_distance,
)
from transforms.validation.schema import DEFAULT_THRESHOLDS, DataSchema, default_measure

__all__ = ["FORMAT_VERSION", "validate"]

FORMAT_VERSION = 1
_MEASURE_NAMES = {L_INFINITY: "L-infinity distance", JENSEN_SHANNON: "Jensen-Shannon divergence"}

ColumnsStats = Mapping[str, Mapping[str, Any]]


def _compare(
    stats: ColumnsStats,
    other: ColumnsStats,
    schema: DataSchema | None,
    comparator: str,
    defaults: Mapping[str, float],
) -> dict[str, dict[str, Any]]:
    """One measurement per column present in both, in ``stats``' order."""
    out: dict[str, dict[str, Any]] = {}
    for name, col_stats in stats.items():
        if name not in other:
            continue
        column = schema.columns.get(name) if schema is not None else None
        configured = getattr(column, comparator) if column is not None else None
        source = getattr(column, f"{comparator}_source") if column is not None else STANDARD
        if configured is not None:
            measure, threshold = configured
        else:
            default = default_measure(str(col_stats.get("type")))
            if default is None:
                continue
            measure, threshold = default, defaults[default]
        out[name] = column_distance(col_stats, other[name], measure, threshold, source=source)
    return out


def _over(kind: str, measurements: Mapping[str, Mapping[str, Any]], between: str) -> list[Anomaly]:
    found = []
    for name, m in measurements.items():
        if not m["over"]:
            continue
        message = (
            f"{name}: {_MEASURE_NAMES[m['measure']]} {m['value']:.6g} {between},"
            f" above the threshold {m['threshold']:.6g}"
        )
        if m["max_difference_value"] is not None:
            message += f"; the value whose share changed most is {m['max_difference_value']!r}"
        found.append(Anomaly(name, kind, m["value"], m["threshold"], message))
    return found


def _pair_names(pair: str) -> str:
    first, sep, second = pair.partition("_vs_")
    return f"between {first} and {second}" if sep else f"in {pair}"


def validate(
    columns_stats: ColumnsStats,
    *,
    schema: DataSchema | None = None,
    baseline: ColumnsStats | None = None,
    skew: Mapping[str, tuple[ColumnsStats, ColumnsStats]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    run: str = "",
    schema_ref: Mapping[str, Any] | None = None,
    baseline_ref: Mapping[str, Any] | None = None,
    columns: str = "input",
) -> dict[str, Any]:
    """Validates a run's column statistics; returns ``validation.json``'s content.

    Args:
        columns_stats: Column -> ``stats.json`` entry of this run (e.g.
            ``stats["input"]["all"]``).
        schema: Expectations to check (anomalies) and per-column thresholds; without it
            only drift and skew are measured.
        baseline: The baseline run's column statistics, at the same level as
            ``columns_stats``; each column is measured against it (``drift``).
        skew: Pair name -> (statistics, other statistics), e.g.
            ``{"train_vs_eval": (train, eval)}`` or ``{"training_vs_serving": ...}``.
        thresholds: Default threshold per measure (``{"l_infinity": x,
            "jensen_shannon": y}``) for columns the schema gives none;
            :data:`~transforms.validation.schema.DEFAULT_THRESHOLDS` fill the gaps.
        run: The run's id.
        schema_ref: ``{"path", "sha256"}`` of the schema file.
        baseline_ref: ``{"run", "stats"}`` of the baseline.
        columns: Which columns were validated (``"input"``: the raw input columns).

    Returns:
        The ``validation.json`` mapping (see the module docstring); ``summary.ok`` is
        false when there is any anomaly, drift and skew over a threshold included.

    Raises:
        ValueError: for a threshold default naming an unknown measure.
    """
    unknown = sorted(set(thresholds or {}) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"unknown measure {unknown[0]!r} in thresholds;"
            f" valid measures are {', '.join(DEFAULT_THRESHOLDS)}"
        )
    defaults = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    anomalies = find_anomalies(columns_stats, schema) if schema is not None else []
    drift: dict[str, dict[str, Any]] = {}
    if baseline is not None:
        drift = _compare(columns_stats, baseline, schema, "drift", defaults)
        anomalies += _over("drift", drift, "from the baseline")
    skew_out: dict[str, dict[str, dict[str, Any]]] = {}
    for pair, (first, second) in (skew or {}).items():
        skew_out[pair] = _compare(first, second, schema, "skew", defaults)
        anomalies += _over("skew", skew_out[pair], _pair_names(pair))
    skewed = [
        name
        for name in dict.fromkeys(n for m in skew_out.values() for n in m)
        if any(m.get(name, {}).get("over") for m in skew_out.values())
    ]
    return {
        "format_version": FORMAT_VERSION,
        "run": run,
        "columns": columns,
        "schema": dict(schema_ref) if schema_ref is not None else None,
        "baseline": dict(baseline_ref) if baseline_ref is not None else None,
        "anomalies": [a.to_dict() for a in anomalies],
        "drift": drift,
        "skew": skew_out,
        "summary": {
            "anomalies": len(anomalies),
            "drifted_columns": [name for name, m in drift.items() if m["over"]],
            "skewed_columns": skewed,
            "ok": not anomalies,
        },
    }
