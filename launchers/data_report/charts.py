"""The report's plotly figures: a column's distribution beside the baseline's, and drift.

Each function returns a :class:`plotly.graph_objects.Figure` (or None when there is nothing
to draw); :mod:`launchers.data_report.page` embeds them with plotly.js itself. A numeric
column is drawn from its ``histogram`` (TFDV's 10 equal-width buckets) beside its deciles
(``quantiles``, as a cumulative curve), a column of values from its ``rank_histogram`` or
``top_values``, and a numeric column without a histogram from its deciles alone. Heights are shares of the column's present
values, so runs of different sizes compare.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from launchers.data_report.columns import (
    NO_THRESHOLD,
    NOT_MEASURED,
    OVER,
    WITHIN,
    Measurement,
    measure_name,
    status_of,
)

RUN_COLOUR = "#2563eb"
BASELINE_COLOUR = "#f97316"
STATUS_COLOURS = {
    OVER: "#dc2626",
    WITHIN: "#16a34a",
    NO_THRESHOLD: "#6b7280",
    NOT_MEASURED: "#d1d5db",
}
# Bars of a column of values: the most frequent ones; the rest are named in the title.
MAX_VALUES = 15

HISTOGRAM = "histogram"
VALUES = "values"
QUANTILES = "quantiles"
KINDS = (HISTOGRAM, VALUES, QUANTILES)


def _histogram(col: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    found = col.get("histogram")
    if not isinstance(found, dict):
        return None
    bounds, counts = found.get("boundaries") or [], found.get("counts") or []
    if len(bounds) != len(counts) + 1 or not counts or not sum(counts):
        return None
    return [float(b) for b in bounds], [float(c) for c in counts]


def _values(col: Mapping[str, Any]) -> list[tuple[Any, int]] | None:
    found = col.get("rank_histogram") or col.get("top_values")
    if not found:
        return None
    return [(entry.get("value"), int(entry.get("count") or 0)) for entry in found]


def _quantiles(col: Mapping[str, Any]) -> list[float] | None:
    found = col.get("quantiles")
    if not found or any(q is None for q in found) or len(found) < 2:
        return None
    return [float(q) for q in found]


_READERS = {HISTOGRAM: _histogram, VALUES: _values, QUANTILES: _quantiles}


def chart_kind(col: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None = None) -> str:
    """How a column is drawn: histogram, values or quantiles ('' when it has no values).

    The first kind this run's statistics allow, preferring one the baseline's allow too so
    both are drawn alike.
    """
    if not col:
        return ""
    kinds = [kind for kind in KINDS if _READERS[kind](col) is not None]
    if baseline:
        both = [kind for kind in kinds if _READERS[kind](baseline) is not None]
        kinds = both or kinds
    return kinds[0] if kinds else ""


def _label(value: Any) -> str:
    if value is None:
        return "(null)"
    if value == "":
        return "(empty)"
    return str(value)


def _layout(figure: go.Figure, *, x_title: str, y_title: str, categorical: bool = False) -> None:
    figure.update_layout(
        template="plotly_white",
        height=300,
        margin={"l": 56, "r": 16, "t": 36, "b": 48},
        legend={"orientation": "h", "y": 1.12, "x": 0},
        barmode="overlay" if not categorical else "group",
        bargap=0.15 if categorical else 0.02,
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
    )
    figure.update_xaxes(title_text=x_title, type="category" if categorical else "-")
    figure.update_yaxes(title_text=y_title, tickformat=".0%", rangemode="tozero")


class _Series(NamedTuple):
    name: str
    col: Mapping[str, Any]
    colour: str
    # The baseline is drawn as outlines over this run's filled bars.
    outline: bool


def distribution_figure(
    col: Mapping[str, Any] | None,
    baseline: Mapping[str, Any] | None = None,
    *,
    run_name: str = "this run",
    baseline_name: str = "baseline",
) -> go.Figure | None:
    """A column's distribution in this run, overlaid on (or beside) the baseline's.

    Args:
        col: This run's COLSTATS of the column (None when only the baseline has it).
        baseline: The baseline's COLSTATS of the column, or None.
        run_name: The legend's name for this run.
        baseline_name: The legend's name for the baseline.

    Returns:
        The figure, or None when neither run has a value to draw.
    """
    kind = chart_kind(col, baseline) or chart_kind(baseline)
    if not kind:
        return None
    series = [
        _Series(name, found, colour, outline)
        for name, found, colour, outline in (
            (run_name, col, RUN_COLOUR, False),
            (baseline_name, baseline, BASELINE_COLOUR, True),
        )
        if found
    ]
    if kind == HISTOGRAM:
        return _histogram_figure(series)
    if kind == VALUES:
        return _values_figure(series)
    return _quantiles_figure(series)


def _histogram_bars(series: Sequence[_Series]) -> list[go.Bar]:
    bars = []
    for name, col, colour, outline in series:
        found = _histogram(col)
        if found is None:
            continue
        bounds, counts = found
        total = sum(counts)
        widths = [hi - lo for lo, hi in itertools.pairwise(bounds)]
        if not any(widths):
            # One distinct value: TFDV's buckets all start and end at it.
            widths = [max(abs(bounds[0]) * 0.02, 0.5)] * len(counts)
        centres = [lo + w / 2 for lo, w in zip(bounds, widths, strict=False)]
        # This run filled, the baseline as outlines over it: both stay readable where they
        # overlap (two translucent fills would mix into a third colour).
        bars.append(
            go.Bar(
                name=name,
                legendgroup=name,
                x=centres,
                y=[c / total for c in counts],
                width=widths,
                marker={
                    "color": "rgba(0,0,0,0)" if outline else colour,
                    "line": {"color": colour, "width": 2 if outline else 0},
                },
                opacity=1.0 if outline else 0.75,
                customdata=[
                    [lo, lo + w, c] for lo, w, c in zip(bounds, widths, counts, strict=False)
                ],
                hovertemplate="%{customdata[0]:.4g} to %{customdata[1]:.4g}<br>"
                "%{customdata[2]:,.0f} rows (%{y:.1%})<extra>" + name + "</extra>",
            )
        )
    return bars


def _decile_lines(series: Sequence[_Series], *, legend: bool) -> list[go.Scatter]:
    lines = []
    for name, col, colour, outline in series:
        found = _quantiles(col)
        if found is None:
            continue
        lines.append(
            go.Scatter(
                name=name,
                legendgroup=name,
                showlegend=legend,
                x=found,
                y=[i / (len(found) - 1) for i in range(len(found))],
                mode="lines+markers",
                line={"color": colour, "dash": "dash" if outline else "solid"},
                hovertemplate="%{y:.0%} of values at most %{x:.4g}<extra>" + name + "</extra>",
            )
        )
    return lines


def _histogram_figure(series: Sequence[_Series]) -> go.Figure:
    bars = _histogram_bars(series)
    if not all(_quantiles(s.col) for s in series):
        figure = go.Figure(data=bars)
        _layout(figure, x_title="value (10 equal-width buckets)", y_title="share of values")
        return figure
    # Beside the buckets, the deciles: a few outliers can put nearly every value in one
    # equal-width bucket, where a shift of the bulk only shows in the deciles.
    figure = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.56, 0.44],
        horizontal_spacing=0.12,
        subplot_titles=("10 equal-width buckets", "cumulative share at each decile"),
    )
    for bar in bars:
        figure.add_trace(bar, row=1, col=1)
    for line in _decile_lines(series, legend=False):
        figure.add_trace(line, row=1, col=2)
    _layout(figure, x_title="value", y_title="share of values")
    figure.update_layout(margin={"t": 56}, legend={"y": 1.25})
    figure.update_yaxes(title_text="", row=1, col=2)
    figure.update_annotations(font={"size": 11, "color": "#6b7280"})
    window = _bulk(series)
    if window is not None:
        # The 10th to 90th percentiles fill the panel; min and max run off its edges.
        figure.update_xaxes(range=window, row=1, col=2)
    return figure


def _bulk(series: Sequence[_Series]) -> list[float] | None:
    """The x range from the lowest 10th to the highest 90th percentile, padded; None if flat."""
    deciles = [q for q in (_quantiles(s.col) for s in series) if q is not None and len(q) > 2]
    if not deciles:
        return None
    low, high = min(q[1] for q in deciles), max(q[-2] for q in deciles)
    if high <= low:
        return None
    pad = (high - low) * 0.08
    return [low - pad, high + pad]


def _values_figure(series: Sequence[_Series]) -> go.Figure:
    shares: list[dict[str, float]] = []
    counts: list[dict[str, int]] = []
    for _, col, _, _ in series:
        found = _values(col) or []
        present = int(col.get("count") or 0) or sum(n for _, n in found) or 1
        counts.append({_label(v): n for v, n in found})
        shares.append({_label(v): n / present for v, n in found})
    # This run's most frequent values first; values only the baseline has after them.
    order: list[str] = []
    for by_value in shares:
        order += [v for v in sorted(by_value, key=lambda v: -by_value[v]) if v not in order]
    shown = order[:MAX_VALUES]
    figure = go.Figure()
    for (name, _, colour, _), share, count in zip(series, shares, counts, strict=True):
        figure.add_bar(
            name=name,
            x=shown,
            y=[share.get(v, 0.0) for v in shown],
            marker={"color": colour},
            customdata=[count.get(v, 0) for v in shown],
            hovertemplate="%{x}<br>%{customdata:,} rows (%{y:.1%})<extra>" + name + "</extra>",
        )
    more = len(order) - len(shown)
    title = f"top {len(shown)} values" + (f" ({more} more not shown)" if more > 0 else "")
    _layout(figure, x_title=title, y_title="share of values", categorical=True)
    return figure


def _quantiles_figure(series: Sequence[_Series]) -> go.Figure:
    figure = go.Figure(data=_decile_lines(series, legend=True))
    _layout(figure, x_title="value (deciles)", y_title="cumulative share")
    return figure


def drift_figure(measurements: Mapping[str, Measurement]) -> go.Figure | None:
    """Each measured column's drift value as a bar coloured by its status, threshold marked.

    Returns:
        The figure, or None when no column has a value.
    """
    measured = {c: m for c, m in measurements.items() if m.get("value") is not None}
    if not measured:
        return None
    labels = [f"{c}: {measure_name(m)}" for c, m in measured.items()]
    statuses = [status_of(m) for m in measured.values()]
    figure = go.Figure()
    figure.add_bar(
        name="drift",
        orientation="h",
        x=[m["value"] for m in measured.values()],
        y=labels,
        marker={"color": [STATUS_COLOURS[s] for s in statuses]},
        customdata=statuses,
        hovertemplate="%{y}: %{x:.4f} (%{customdata})<extra></extra>",
        showlegend=False,
    )
    marked = [(label, m["threshold"]) for label, m in zip(labels, measured.values(), strict=True)]
    marked = [(label, t) for label, t in marked if t is not None]
    if marked:
        figure.add_scatter(
            name="threshold",
            x=[t for _, t in marked],
            y=[label for label, _ in marked],
            mode="markers",
            marker={"symbol": "line-ns-open", "size": 18, "color": "#111827", "line": {"width": 2}},
            hovertemplate="threshold %{x}<extra></extra>",
        )
    figure.update_layout(
        template="plotly_white",
        height=max(160, 26 * len(measured) + 80),
        margin={"l": 16, "r": 16, "t": 24, "b": 40},
        legend={"orientation": "h", "y": 1.06, "x": 0},
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
    )
    figure.update_xaxes(title_text="distance (L-infinity or Jensen-Shannon)", rangemode="tozero")
    figure.update_yaxes(autorange="reversed", automargin=True)
    return figure


__all__ = [
    "BASELINE_COLOUR",
    "HISTOGRAM",
    "KINDS",
    "MAX_VALUES",
    "QUANTILES",
    "RUN_COLOUR",
    "STATUS_COLOURS",
    "VALUES",
    "chart_kind",
    "distribution_figure",
    "drift_figure",
]
