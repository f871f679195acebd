"""The report's HTML document: one file, its CSS, plotly.js and the figures' data inline.

Nothing is fetched when the page is viewed: plotly.js is embedded once, each figure is a
``<script type="application/json">`` its ``<div>`` is drawn from, and the page names no
font, image or style sheet elsewhere. Every text taken from a run (column names, values,
error payloads) is escaped.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io
import plotly.offline

from launchers.data_report.charts import distribution_figure, drift_figure
from launchers.data_report.columns import (
    NO_THRESHOLD,
    NOT_MEASURED,
    OVER,
    WITHIN,
    ColumnSet,
    Drift,
    Measurement,
    measure_name,
    missing_fraction,
    status_of,
)
from launchers.data_report.ledger import ErrorSummary, Ledger
from launchers.data_report.load import Baseline, RunData

# Reasons listed in the errors section; the rest are counted in one line.
MAX_ERROR_REASONS = 20
# Characters of an error's payload shown; the dead-letter file holds all of it.
MAX_PAYLOAD = 400

STATUS_CLASSES = {
    OVER: "status-over",
    WITHIN: "status-within",
    NO_THRESHOLD: "status-none",
    NOT_MEASURED: "status-unmeasured",
}

CSS = """
:root { --ink: #111827; --muted: #6b7280; --line: #e5e7eb; --panel: #f9fafb;
  --over: #dc2626; --over-bg: #fee2e2; --within: #15803d; --within-bg: #dcfce7;
  --run: #2563eb; --baseline: #f97316; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--panel); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 2px 0; color: var(--muted); }
main { padding: 8px 32px 32px; max-width: 1400px; }
section { margin-top: 28px; }
h2 { font-size: 18px; margin: 0 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0; }
.note { color: var(--muted); margin: 4px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px;
  background: #fff; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; }
.card .detail { color: var(--muted); font-size: 12px; }
.card.bad { border-color: var(--over); background: var(--over-bg); }
.card.good { border-color: var(--within); background: var(--within-bg); }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.active td { background: #fffbeb; }
.status { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; }
.status-over { background: var(--over-bg); color: var(--over); }
.status-within { background: var(--within-bg); color: var(--within); }
.status-none { background: #f3f4f6; color: var(--muted); }
.status-unmeasured { background: #f3f4f6; color: #9ca3af; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.column { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.column .meta { color: var(--muted); font-size: 12px; margin: 2px 0 4px; }
.column .empty { color: var(--muted); padding: 24px 0; }
.type { font-family: ui-monospace, monospace; font-size: 12px; color: var(--muted); }
.legend-run { color: var(--run); font-weight: 600; }
.legend-baseline { color: var(--baseline); font-weight: 600; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
pre { background: var(--panel); padding: 6px 8px; margin: 4px 0; white-space: pre-wrap;
  word-break: break-all; }
details summary { cursor: pointer; color: var(--run); }
.ok { color: var(--within); font-weight: 600; }
.bad { color: var(--over); font-weight: 600; }
footer { padding: 16px 32px; color: var(--muted); border-top: 1px solid var(--line); font-size: 12px; }
"""

# Draws every figure from its JSON once plotly.js is loaded; nothing else runs on the page.
BOOT = """
(function () {
  var config = {displaylogo: false, responsive: true};
  var figures = document.querySelectorAll('script[type="application/json"][data-chart]');
  for (var i = 0; i < figures.length; i++) {
    var figure = JSON.parse(figures[i].textContent);
    Plotly.newPlot(figures[i].getAttribute('data-chart'), figure.data, figure.layout, config);
  }
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _count(n: int) -> str:
    return f"{n:,}"


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction:.2%}"


def _number(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as JSON escapes."""
    text = data if isinstance(data, str) else json.dumps(data)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def figure_html(figure: go.Figure, chart_id: str) -> str:
    """A figure's ``<div>`` and the JSON it is drawn from."""
    data = plotly.io.to_json(figure, validate=False)
    return (
        f'<div class="chart" id="{_e(chart_id)}"></div>'
        f'<script type="application/json" data-chart="{_e(chart_id)}">{script_json(data)}</script>'
    )


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: set[int],
    active: Sequence[bool] = (),
) -> str:
    # Cells arrive escaped (or built from escaped parts); ``active`` marks rows to highlight.
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        marked = index < len(active) and active[index]
        body.append(f'<tr class="active">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def status_html(measurement: Mapping[str, Any] | None) -> str:
    """A MEASUREMENT's status as a coloured badge ('' without a measurement)."""
    if measurement is None:
        return ""
    status = status_of(measurement)
    return f'<span class="status {STATUS_CLASSES[status]}">{_e(status)}</span>'


def ledger_rows(ledger: Ledger) -> list[list[str]]:
    """The steps table: step, rows in, rejected, dropped, rows out (counts formatted)."""
    return [
        [_e(s.step), _count(s.rows_in), _count(s.rejected), _count(s.dropped), _count(s.rows_out)]
        for s in ledger.steps
    ]


def ledger_html(ledger: Ledger) -> str:
    """The row ledger: the balance, each step's counts, and the reasons rows were taken out."""
    written = " + ".join(f"{_e(split)} {_count(n)}" for split, n in ledger.written.items())
    balance = (
        '<span class="ok">balanced</span>'
        if ledger.balanced
        else '<span class="bad">does not balance</span>'
    )
    parts = [
        f'<p class="ledger-balance">read {_count(ledger.read)} = written '
        f"{_count(ledger.total_written)} ({written or 'no split'}) + rejected "
        f"{_count(ledger.rejected)} + dropped {_count(ledger.dropped)}: {balance}</p>",
        "<h3>By step</h3>",
        _table(
            ["step", "rows in", "rejected", "dropped", "rows out"],
            ledger_rows(ledger),
            numeric={1, 2, 3, 4},
            active=[bool(s.rejected or s.dropped) for s in ledger.steps],
        ),
        "<h3>By reason</h3>",
    ]
    if ledger.reasons:
        parts.append(
            _table(
                ["step", "outcome", "reason", "rows"],
                [[_e(r.step), _e(r.outcome), _e(r.reason), _count(r.rows)] for r in ledger.reasons],
                numeric={3},
            )
        )
    else:
        parts.append('<p class="note">No row was rejected or dropped.</p>')
    return "".join(parts)


def errors_html(summary: ErrorSummary) -> str:
    """The dead-letter records' reasons, most frequent first, each with its first examples."""
    if not summary.total:
        return '<p class="note">The run wrote no error record.</p>'
    rows = []
    for reason in summary.reasons[:MAX_ERROR_REASONS]:
        examples = "".join(
            f"<li><code>{_e(x.source)}</code>: {_e(x.message)}"
            f"<pre>{_e(x.payload[:MAX_PAYLOAD])}{'…' if len(x.payload) > MAX_PAYLOAD else ''}"
            "</pre></li>"
            for x in reason.examples
        )
        rows.append(
            [
                _e(reason.step),
                _e(reason.reason),
                _count(reason.count),
                f"{reason.count / summary.total:.1%}",
                f"<details><summary>{len(reason.examples)} example(s)</summary>"
                f"<ul>{examples}</ul></details>",
            ]
        )
    more = len(summary.reasons) - MAX_ERROR_REASONS
    tail = f'<p class="note">{more} more reason(s) not listed.</p>' if more > 0 else ""
    return (
        f'<p class="note">{_count(summary.total)} error record(s) in the run\'s dead-letter '
        "files.</p>"
        + _table(["step", "reason", "records", "share", "examples"], rows, numeric={2, 3})
        + tail
    )


def _observed(value: Any) -> str:
    # Distances and shares to six significant digits, as validation's messages give them.
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, default=str)


def anomalies_html(validation: Mapping[str, Any] | None) -> str:
    """The anomalies of ``validation.json``, or why there are none to show."""
    if validation is None:
        return (
            '<p class="note">This run has no validation.json: its statistics were not '
            "checked against a schema.</p>"
        )
    anomalies = validation.get("anomalies") or []
    if not anomalies:
        return '<p class="note ok">No anomaly.</p>'
    rows = [
        [
            _e(a.get("column", "")),
            _e(a.get("kind", "")),
            f"<code>{_e(_observed(a.get('observed')))}</code>",
            f"<code>{_e(_observed(a.get('expected')))}</code>",
            _e(a.get("message", "")),
        ]
        for a in anomalies
    ]
    return _table(["column", "kind", "observed", "expected", "message"], rows, numeric=set())


def drift_table_html(measurements: Mapping[str, Measurement]) -> str:
    """Each column's drift: measure, value, threshold, the value that differs most, status."""
    rows = [
        [
            _e(column),
            _e(measure_name(m)),
            _number(m.get("value")),
            _number(m.get("threshold")),
            _e(m.get("max_difference_value") or ""),
            status_html(m),
        ]
        for column, m in measurements.items()
    ]
    return _table(
        ["column", "measure", "value", "threshold", "most different value", "status"],
        rows,
        numeric={2, 3},
    )


def columns_table_html(columns: ColumnSet, drift: Drift) -> str:
    """One row per column: type, present values, missing share here and in the baseline, drift."""
    has_baseline = columns.baseline is not None
    headers = ["column", "type", "values", "missing"]
    if has_baseline:
        headers.append("missing (baseline)")
    if drift.measurements:
        headers += ["drift", "status"]
    rows = []
    for name in columns.names:
        col = columns.run.get(name)
        base = columns.baseline.get(name) if columns.baseline is not None else None
        kind = _e(col.get("type", "")) if col else "<em>absent</em>"
        if col and base and base.get("type") != col.get("type"):
            kind += f" <em>(baseline: {_e(base.get('type', ''))})</em>"
        row = [
            _e(name),
            f'<span class="type">{kind}</span>',
            _count(int(col.get("count") or 0)) if col else "—",
            _percent(missing_fraction(col)),
        ]
        if has_baseline:
            row.append(_percent(missing_fraction(base)))
        if drift.measurements:
            m = drift.measurements.get(name)
            row += [_number(m.get("value")) if m else "—", status_html(m)]
        rows.append(row)
    numeric = {2, 3, 4} if has_baseline else {2, 3}
    if drift.measurements:
        numeric.add(len(headers) - 2)
    return _table(headers, rows, numeric=numeric)


def _card(label: str, value: str, tone: str = "", detail: str = "") -> str:
    more = f'<div class="detail">{detail}</div>' if detail else ""
    return (
        f'<div class="card {tone}"><div class="value">{value}</div>'
        f'<div class="label">{_e(label)}</div>{more}</div>'
    )


def _summary(run: RunData, drift: Drift) -> str:
    ledger = run.ledger
    written = " · ".join(f"{_e(k)} {_count(v)}" for k, v in ledger.written.items())
    cards = [
        _card("rows read", _count(ledger.read)),
        _card("rows written", _count(ledger.total_written), detail=written),
        _card("rows rejected", _count(ledger.rejected), "bad" if ledger.rejected else ""),
        _card("rows dropped", _count(ledger.dropped)),
        _card("error records", _count(run.errors.total), "bad" if run.errors.total else ""),
    ]
    if run.validation is not None:
        found = len(run.validation.get("anomalies") or [])
        cards.append(_card("anomalies", _count(found), "bad" if found else "good"))
    if drift.measurements:
        drifted = len(drift.drifted)
        cards.append(
            _card(
                "drifted columns",
                f"{drifted} of {len(drift.measurements)}",
                "bad" if drifted else "good",
            )
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _distributions(columns: ColumnSet, drift: Drift) -> tuple[str, int]:
    cards = []
    drawn = 0
    for index, name in enumerate(columns.names):
        col = columns.run.get(name)
        base = columns.baseline.get(name) if columns.baseline is not None else None
        figure = distribution_figure(col, base)
        meta = [f'<span class="type">{_e(col.get("type", "")) if col else "absent here"}</span>']
        meta.append(f"missing {_percent(missing_fraction(col))}")
        if columns.baseline is not None:
            meta.append(f"baseline missing {_percent(missing_fraction(base))}")
        m = drift.measurements.get(name)
        if m is not None:
            meta.append(f"{_e(measure_name(m))} {_number(m.get('value'))} {status_html(m)}")
        if figure is not None:
            body = figure_html(figure, f"chart-column-{index}")
            drawn += 1
        else:
            body = '<p class="empty">No value to draw.</p>'
        cards.append(
            f'<div class="column"><h3>{_e(name)}</h3>'
            f'<div class="meta">{" · ".join(meta)}</div>{body}</div>'
        )
    return f'<div class="grid">{"".join(cards)}</div>', drawn


@dataclasses.dataclass(frozen=True)
class Page:
    """The HTML document and how many charts it draws."""

    html: str
    charts: int


def render_page(
    run: RunData,
    columns: ColumnSet,
    drift: Drift,
    *,
    baseline: Baseline | None = None,
    generated_at: str = "",
    version: str = "",
) -> Page:
    """The whole report as one HTML document.

    Args:
        run: The run reported on.
        columns: The columns shown, with this run's and the baseline's statistics.
        drift: The drift values shown.
        baseline: The baseline's statistics, or None.
        generated_at: When the report was made (ISO-8601), for the footer.
        version: beamforge's version, for the footer.
    """
    title = f"{run.pipeline or 'dataset'}: {run.run_id}"
    against = (
        f'<p>Compared with <span class="legend-baseline">baseline {_e(baseline.run_id)}</span> '
        f"({_e(baseline.location)})"
        + (
            ", the run its validation.json was measured against"
            if baseline.origin == "validation.json"
            else ""
        )
        + ".</p>"
        if baseline
        else "<p>No baseline: pass <code>--baseline RUN</code> to compare.</p>"
    )
    shown = f"Showing the {_e(columns.label)}" + (f": {_e(columns.note)}." if columns.note else ".")
    drift_parts: list[str] = []
    charts = 0
    if drift.measurements:
        figure = drift_figure(drift.measurements)
        if figure is not None:
            drift_parts.append(figure_html(figure, "chart-drift"))
            charts += 1
        drift_parts.insert(0, f'<p class="note">Drift values: {_e(drift.origin)}.</p>')
        drift_parts.append(drift_table_html(drift.measurements))
    else:
        why = "no baseline was given" if baseline is None else "no column could be compared"
        drift_parts.append(f'<p class="note">No drift values: {why}.</p>')
    for pair, measurements in drift.skew.items():
        drift_parts.append(f"<h3>Skew: {_e(pair)}</h3>{drift_table_html(measurements)}")
    distributions, drawn = _distributions(columns, drift)
    charts += drawn
    legend = '<span class="legend-run">this run</span>' + (
        ' and <span class="legend-baseline">the baseline</span>' if baseline else ""
    )
    sources = [f"manifest {_e(run.manifest_path)}", f"statistics {_e(run.stats_path)}"]
    if run.validation_path:
        sources.append(f"validation {_e(run.validation_path)}")
    text = f"""<!DOCTYPE html>
<html lang="en" data-charts="{charts}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>beamforge report: {_e(title)}</title>
<style>{CSS}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>Data report: {_e(title)}</h1>
<p>Run <span class="legend-run">{_e(run.run_id)}</span> of {_e(run.pipeline)}, written
{_e(run.created_at)} to {_e(run.output)}.</p>
{against}
</header>
<main>
<section id="summary">{_summary(run, drift)}</section>
<section id="columns"><h2>Columns</h2><p class="note">{shown}</p>
{columns_table_html(columns, drift)}</section>
<section id="drift"><h2>Drift</h2>{"".join(drift_parts)}</section>
<section id="anomalies"><h2>Anomalies</h2>{anomalies_html(run.validation)}</section>
<section id="ledger"><h2>Row ledger</h2>{ledger_html(run.ledger)}</section>
<section id="errors"><h2>Error records: top reasons</h2>{errors_html(run.errors)}</section>
<section id="distributions"><h2>Distributions</h2>
<p class="note">{shown} Heights are shares of each column's present values: {legend}.</p>
{distributions}</section>
</main>
<footer>Made by beamforge {_e(version)} at {_e(generated_at)} from {"; ".join(sources)}.</footer>
<script>{BOOT}</script>
</body>
</html>
"""
    return Page(html=text, charts=charts)


__all__ = [
    "MAX_ERROR_REASONS",
    "MAX_PAYLOAD",
    "Page",
    "anomalies_html",
    "columns_table_html",
    "drift_table_html",
    "errors_html",
    "figure_html",
    "ledger_html",
    "ledger_rows",
    "render_page",
    "script_json",
    "status_html",
]
