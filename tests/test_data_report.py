"""``beamforge report``: a run's data as one self-contained HTML page.

Unit tests build small run folders by hand (manifest, stats.json, error files,
validation.json) and check the loaded model and the page's pieces with exact values. The
slow tests run the taxi pipeline on the sample and on a shifted copy (fares x1.5, a new
payment type, five malformed rows), make the report, and open it in Debian's Chromium
through Playwright: no console or page error, every chart drawn, no request leaving the
file, a full-page screenshot kept in test-artifacts/.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from launchers import report_commands
from launchers.data_report import build_report, load_run
from launchers.data_report.charts import (
    HISTOGRAM,
    QUANTILES,
    VALUES,
    chart_kind,
    distribution_figure,
    drift_figure,
)
from launchers.data_report.columns import (
    INPUT,
    NO_THRESHOLD,
    NOT_MEASURED,
    OUTPUT,
    OVER,
    WITHIN,
    columns_of,
    drift_of,
    measure_name,
    missing_fraction,
    status_of,
)
from launchers.data_report.ledger import (
    ErrorExample,
    ErrorReason,
    ErrorSummary,
    Ledger,
    ReasonRow,
    StepRow,
    ledger_of,
    summarize_errors,
)
from launchers.data_report.load import Baseline, NoStatisticsError, RunNotFinishedError
from launchers.data_report.page import (
    anomalies_html,
    errors_html,
    ledger_html,
    ledger_rows,
    script_json,
    status_html,
)
from tests.conftest import REPO, TAXI_SAMPLE, beamforge
from transforms.core.errors import InputError
from transforms.validation.distances import column_distance

RUN_A = "run-20260101T000000Z-0000000a"
RUN_B = "run-20260102T000000Z-0000000b"
ARTIFACTS = REPO / "test-artifacts"


# --- run folders made by hand ---------------------------------------------------------------


def _city(counts: dict[str, int], missing: int = 0) -> dict[str, Any]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "type": "string",
        "count": sum(counts.values()),
        "missing": missing,
        "empty": 0,
        "rank_histogram": [{"value": v, "count": n} for v, n in ranked],
        "top_values": [{"value": v, "count": n} for v, n in ranked],
    }


def _price(bounds: list[float], counts: list[float], missing: int = 0) -> dict[str, Any]:
    return {
        "type": "float64",
        "count": int(sum(counts)),
        "missing": missing,
        "non_finite": 0,
        "mean": 1.0,
        "std": 1.0,
        "min": bounds[0],
        "max": bounds[-1],
        "quantiles": [bounds[0], bounds[-1]],
        "histogram": {"boundaries": bounds, "counts": counts},
    }


EMPTY = {
    "type": "float64",
    "count": 0,
    "missing": 7,
    "non_finite": 0,
    "mean": None,
    "std": None,
    "min": None,
    "max": None,
    "quantiles": [],
}

COUNTS = {
    "read": 10,
    "written": {"train": 6, "eval": 1},
    "rejected": {"clean_price": {"out_of_range": 1}, "read": {"bad_row": 1}},
    "dropped": {"dedupe": {"duplicate": 1}},
    "total_rejected": 2,
    "total_dropped": 1,
    "total_written": 7,
}
STEPS = [
    {"step": "read", "rows_in": 10, "rejected": 1, "dropped": 0, "rows_out": 9},
    {"step": "clean_price", "rows_in": 9, "rejected": 1, "dropped": 0, "rows_out": 8},
    {"step": "dedupe", "rows_in": 8, "rejected": 0, "dropped": 1, "rows_out": 7},
]


def _record(step: str, reason: str, line: int, payload: str = "") -> dict[str, Any]:
    return {
        "pipeline": "toy",
        "step": step,
        "reason": reason,
        "message": f"{reason} at line {line}",
        "payload": payload or f"row {line}",
        "source": f"in.csv:{line}",
        "event_time": None,
        "processing_time": "2026-01-01T00:00:00.000000Z",
    }


def write_run(
    output: pathlib.Path,
    run_id: str = RUN_A,
    *,
    stats: dict[str, Any] | None,
    errors: Sequence[dict[str, Any]] = (),
    validation: dict[str, Any] | None = None,
) -> pathlib.Path:
    """An output folder holding one finished run, as a dataset run leaves it."""
    root = output / run_id
    (root / "errors").mkdir(parents=True)
    error_file = root / "errors" / "errors-00000-of-00001.jsonl"
    error_file.write_text("".join(json.dumps(r) + "\n" for r in errors), encoding="utf-8")
    manifest: dict[str, Any] = {
        "format_version": 2,
        "run": {"id": run_id, "output": str(output), "root": str(root)},
        "pipeline": "toy",
        "created_at": "2026-01-01T00:00:00+00:00",
        "counts": COUNTS,
        "steps": STEPS,
        "errors": {
            "path": str(root / "errors"),
            "files": [{"path": str(error_file), "size": 0, "rows": len(errors)}],
            "count": len(errors),
        },
    }
    if stats is not None:
        (root / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
        manifest["stats"] = str(root / "stats.json")
    if validation is not None:
        (root / "validation.json").write_text(json.dumps(validation), encoding="utf-8")
        # As a dataset run lists it: the file, and its summary.
        path = str(root / "validation.json")
        manifest["validation_file"] = {"path": path, "size": 1}
        manifest["validation"] = {"path": path, **validation["summary"]}
    (output / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return output


def toy_stats(*, shifted: bool = False, with_input: bool = True) -> dict[str, Any]:
    """Output columns under "all"; the raw columns under "input" (unless told otherwise)."""
    city = {"Oslo": 3, "Rome": 1} if shifted else {"Oslo": 1, "Rome": 1}
    columns = {
        "city": _city(city, missing=1),
        "price": _price([0.0, 1.0, 2.0, 4.0], [1.0, 1.0, 2.0]),
        "empty": EMPTY,
    }
    stats: dict[str, Any] = {"all": {"city_xf": _city({"0": 4})}, "splits": {}}
    if with_input:
        stats["input"] = {"all": columns, "splits": {}}
    return stats


VALIDATION: dict[str, Any] = {
    "format_version": 1,
    "run": RUN_A,
    "columns": "input",
    "schema": None,
    "baseline": {"run": RUN_B, "stats": "/b/stats.json"},
    "anomalies": [
        {
            "column": "city",
            "kind": "drift",
            "observed": 0.25,
            "expected": 0.1,
            "message": "city: L-infinity 0.25 over 0.1 (<Rome>)",
        }
    ],
    "drift": {
        "city": {
            "measure": "l_infinity",
            "value": 0.25,
            "threshold": 0.1,
            "over": True,
            "max_difference_value": "Rome",
        },
        "price": {
            "measure": "jensen_shannon",
            "value": 0.0,
            "threshold": 0.1,
            "over": False,
            "max_difference_value": None,
        },
    },
    "skew": {},
    "summary": {"anomalies": 1, "drifted_columns": ["city"], "skewed_columns": [], "ok": False},
}


# --- the ledger and the error records ------------------------------------------------------


def test_ledger_of_a_manifest_lists_steps_and_reasons_in_run_order() -> None:
    ledger = ledger_of({"counts": COUNTS, "steps": STEPS})
    assert ledger == Ledger(
        read=10,
        written={"train": 6, "eval": 1},
        rejected=2,
        dropped=1,
        steps=(
            StepRow("read", 10, 1, 0, 9),
            StepRow("clean_price", 9, 1, 0, 8),
            StepRow("dedupe", 8, 0, 1, 7),
        ),
        reasons=(
            ReasonRow("read", "rejected", "bad_row", 1),
            ReasonRow("clean_price", "rejected", "out_of_range", 1),
            ReasonRow("dedupe", "dropped", "duplicate", 1),
        ),
    )
    assert ledger.total_written == 7
    assert ledger.balanced
    assert not ledger_of({"counts": {**COUNTS, "read": 11}, "steps": STEPS}).balanced
    assert ledger_rows(ledger) == [
        ["read", "10", "1", "0", "9"],
        ["clean_price", "9", "1", "0", "8"],
        ["dedupe", "8", "0", "1", "7"],
    ]


def test_ledger_section_checks_the_balance_and_lists_reasons() -> None:
    page = ledger_html(ledger_of({"counts": COUNTS, "steps": STEPS}))
    assert page.startswith(
        '<p class="ledger-balance">read 10 = written 7 (train 6 + eval 1) + rejected 2 + '
        'dropped 1: <span class="ok">balanced</span></p>'
    )
    # Steps that took rows out are highlighted.
    assert page.count('<tr class="active">') == 3
    assert (
        '<tr><td>read</td><td>rejected</td><td>bad_row</td><td class="num">1</td></tr>'
        '<tr><td>clean_price</td><td>rejected</td><td>out_of_range</td><td class="num">1</td></tr>'
        '<tr><td>dedupe</td><td>dropped</td><td>duplicate</td><td class="num">1</td></tr>'
    ) in page
    unbalanced = ledger_html(ledger_of({"counts": {**COUNTS, "read": 11}, "steps": []}))
    assert '<span class="bad">does not balance</span>' in unbalanced
    clean = {"read": 3, "written": {"train": 3}, "total_rejected": 0, "total_dropped": 0}
    assert ledger_html(ledger_of({"counts": clean, "steps": []})).endswith(
        '<h3>By reason</h3><p class="note">No row was rejected or dropped.</p>'
    )


def test_error_reasons_are_counted_most_frequent_first_with_the_first_examples() -> None:
    records = (
        [_record("read", "wrong_field_count", n) for n in (2, 3)]
        + [_record("clean", "out_of_range", n) for n in (4, 5, 6, 7, 8)]
        + [_record("read", "bad_encoding", n) for n in (9, 10)]
    )
    summary = summarize_errors(records)
    assert summary == ErrorSummary(
        total=9,
        reasons=(
            ErrorReason(
                "clean",
                "out_of_range",
                5,
                tuple(
                    ErrorExample(f"in.csv:{n}", f"out_of_range at line {n}", f"row {n}")
                    for n in (4, 5, 6)
                ),
            ),
            # A tie: by step, then reason.
            ErrorReason(
                "read",
                "bad_encoding",
                2,
                tuple(
                    ErrorExample(f"in.csv:{n}", f"bad_encoding at line {n}", f"row {n}")
                    for n in (9, 10)
                ),
            ),
            ErrorReason(
                "read",
                "wrong_field_count",
                2,
                tuple(
                    ErrorExample(f"in.csv:{n}", f"wrong_field_count at line {n}", f"row {n}")
                    for n in (2, 3)
                ),
            ),
        ),
    )
    assert summarize_errors([]) == ErrorSummary(total=0, reasons=())


def test_errors_section_escapes_payloads_and_shares_each_reason() -> None:
    summary = summarize_errors(
        [_record("read", "bad_row", 1, payload="<script>alert(1)</script>")]
        + [_record("read", "other", n) for n in (2, 3, 4)]
    )
    page = errors_html(summary)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<td>read</td><td>other</td><td class="num">3</td><td class="num">75.0%</td>' in page
    assert '<td>read</td><td>bad_row</td><td class="num">1</td><td class="num">25.0%</td>' in page
    assert errors_html(ErrorSummary(0, ())) == (
        '<p class="note">The run wrote no error record.</p>'
    )


# --- loading a run ------------------------------------------------------------------------


def test_a_run_loads_from_its_output_folder_or_its_run_folder(tmp_path: pathlib.Path) -> None:
    errors = [_record("read", "bad_row", 4), _record("clean_price", "out_of_range", 6)]
    output = write_run(tmp_path / "out", stats=toy_stats(), errors=errors, validation=VALIDATION)
    run = load_run(str(output))
    assert (run.run_id, run.pipeline, run.root) == (RUN_A, "toy", str(output / RUN_A))
    assert run.manifest_path == str(output / "manifest.json")
    assert run.validation == VALIDATION
    assert run.errors.total == 2
    assert [(r.step, r.reason, r.count) for r in run.errors.reasons] == [
        ("clean_price", "out_of_range", 1),
        ("read", "bad_row", 1),
    ]
    assert run.ledger == ledger_of({"counts": COUNTS, "steps": STEPS})
    for other in (output / RUN_A, output / "manifest.json"):
        assert load_run(str(other)) == dataclasses.replace(run, location=str(other))


def test_a_listed_validation_file_that_is_gone_is_named(tmp_path: pathlib.Path) -> None:
    output = write_run(tmp_path / "out", stats=toy_stats(), validation=VALIDATION)
    (output / RUN_A / "validation.json").unlink()
    with pytest.raises(InputError) as caught:
        load_run(str(output))
    assert str(caught.value) == (
        f"{output / RUN_A / 'validation.json'}: is listed in the manifest but missing"
    )


def test_a_missing_folder_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InputError) as caught:
        load_run(str(tmp_path / "nothing"))
    assert str(caught.value) == f"{tmp_path / 'nothing'}: no such run or output folder"


def test_a_run_that_did_not_finish_is_named_with_the_missing_manifest(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "half" / RUN_A).mkdir(parents=True)
    with pytest.raises(RunNotFinishedError) as caught:
        load_run(str(tmp_path / "half"))
    assert str(caught.value) == (
        f"{tmp_path / 'half'}: no manifest.json at {tmp_path / 'half' / 'manifest.json'}: the "
        "run did not finish, or this is not a run's output folder"
    )
    with pytest.raises(RunNotFinishedError) as caught:
        load_run(str(tmp_path / "half" / RUN_A))
    assert str(caught.value) == (
        f"{tmp_path / 'half' / RUN_A}: the run did not finish: no manifest.json at "
        f"{tmp_path / 'half' / 'manifest.json'}"
    )
    # A run folder beside the one the manifest names: killed, or failed.
    output = write_run(tmp_path / "out", stats=toy_stats())
    (output / RUN_B).mkdir()
    with pytest.raises(RunNotFinishedError) as caught:
        load_run(str(output / RUN_B))
    assert str(caught.value) == (
        f"{output / RUN_B}: the run did not finish: {output / 'manifest.json'} names run "
        f"{RUN_A}, not this one"
    )


def test_a_run_without_statistics_is_refused(tmp_path: pathlib.Path) -> None:
    output = write_run(tmp_path / "out", stats=None)
    with pytest.raises(NoStatisticsError) as caught:
        load_run(str(output), role="baseline")
    assert str(caught.value) == (
        f"{output / 'manifest.json'}: the baseline run {RUN_A} has no statistics (no stats key)"
    )
    listed = write_run(tmp_path / "gone", stats=toy_stats())
    (listed / RUN_A / "stats.json").unlink()
    with pytest.raises(NoStatisticsError) as caught:
        load_run(str(listed), role="baseline")
    assert str(caught.value) == (
        f"{listed / RUN_A / 'stats.json'}: the baseline run {RUN_A} has no statistics: the file "
        "is missing"
    )


# --- columns and drift ----------------------------------------------------------------------


def test_input_columns_are_shown_when_both_runs_have_them() -> None:
    both = columns_of(toy_stats(), toy_stats(shifted=True))
    assert (both.section, both.note, both.names) == (INPUT, "", ("city", "price", "empty"))
    assert both.label == "input columns (raw, as read)"
    alone = columns_of(toy_stats())
    assert (alone.section, alone.baseline) == (INPUT, None)
    old_baseline = columns_of(toy_stats(), toy_stats(with_input=False))
    assert (old_baseline.section, old_baseline.note, old_baseline.names) == (
        OUTPUT,
        "the baseline's statistics have no input section",
        ("city_xf",),
    )
    old_run = columns_of(toy_stats(with_input=False))
    assert (old_run.section, old_run.note) == (
        OUTPUT,
        "this run's statistics have no input section",
    )
    # Columns only the baseline has come after this run's.
    gone = columns_of({"all": {"a": EMPTY}}, {"all": {"b": EMPTY, "a": EMPTY}})
    assert gone.names == ("a", "b")
    # A baseline known only by validation's copy of its input columns.
    copied = columns_of(toy_stats(with_input=False), {"input": toy_stats()["input"]})
    assert (copied.section, copied.note, copied.baseline) == (
        OUTPUT,
        "this run's statistics have no input section; the baseline's statistics hold no "
        "output columns",
        None,
    )


def test_measure_names_the_histogram_when_it_is_not_the_standard_one() -> None:
    assert measure_name({"measure": "l_infinity"}) == "l_infinity"
    assert measure_name({"measure": "jensen_shannon", "source": "quantiles"}) == (
        "jensen_shannon (quantiles)"
    )


def test_missing_fraction_and_status() -> None:
    assert missing_fraction(_city({"Oslo": 3}, missing=1)) == 0.25
    assert missing_fraction(EMPTY) == 1.0
    assert missing_fraction({"count": 0, "missing": 0}) is None
    assert missing_fraction(None) is None
    measured = {"measure": "l_infinity", "max_difference_value": None}
    assert status_of({**measured, "value": 0.3, "threshold": 0.1, "over": True}) == OVER
    assert status_of({**measured, "value": 0.05, "threshold": 0.1, "over": False}) == WITHIN
    assert status_of({**measured, "value": 0.3, "threshold": None, "over": False}) == NO_THRESHOLD
    assert status_of({**measured, "value": None, "threshold": 0.1, "over": False}) == NOT_MEASURED
    assert status_html({**measured, "value": 0.3, "threshold": 0.1, "over": True}) == (
        '<span class="status status-over">over</span>'
    )


def test_drift_comes_from_validation_json_else_is_computed_against_the_baseline() -> None:
    columns = columns_of(toy_stats(shifted=True), toy_stats())
    recorded = drift_of(VALIDATION, columns, baseline_run=RUN_B)
    assert recorded.measurements == VALIDATION["drift"]
    assert recorded.origin == f"validation.json, against run {RUN_B}"
    assert recorded.drifted == ["city"]
    other = drift_of(VALIDATION, columns, baseline_run=RUN_A)
    assert other.origin == (
        f"validation.json, against run {RUN_B} (the distributions show run {RUN_A})"
    )
    computed = drift_of(None, columns, baseline_run=RUN_B, threshold=0.2)
    assert computed.origin == f"computed against run {RUN_B}"
    # city: Oslo 3/4 against 1/2, Rome 1/4 against 1/2; a tie names the later value.
    assert computed.measurements == {
        "city": {
            "measure": "l_infinity",
            "value": 0.25,
            "threshold": 0.2,
            "over": True,
            "max_difference_value": "Rome",
        },
        "price": {
            "measure": "jensen_shannon",
            "value": 0.0,
            "threshold": 0.2,
            "over": False,
            "max_difference_value": None,
        },
        "empty": {
            "measure": "jensen_shannon",
            "value": None,
            "threshold": 0.2,
            "over": False,
            "max_difference_value": None,
        },
    }
    assert computed.drifted == ["city"]
    # Validation's default threshold, 0.3 for both measures, when none is given.
    by_default = drift_of(None, columns).measurements
    assert [(m["threshold"], m["over"]) for m in by_default.values()] == [(0.3, False)] * 3
    assert drift_of(None, columns_of(toy_stats())).measurements == {}
    # Binary columns have no measure.
    blob = {"all": {"blob": {"type": "binary", "count": 1, "missing": 0}}}
    assert drift_of(None, columns_of(blob, blob)).measurements == {}


# --- charts ---------------------------------------------------------------------------------


def test_each_kind_of_column_gets_its_chart() -> None:
    stats = toy_stats()["input"]["all"]
    assert chart_kind(stats["price"]) == HISTOGRAM
    assert chart_kind(stats["city"]) == VALUES
    assert chart_kind(stats["empty"]) == ""
    deciles = {"type": "float64", "count": 3, "missing": 0, "quantiles": [1.0, 2.0, 4.0]}
    assert chart_kind(deciles) == QUANTILES
    # Drawn alike: the kind the baseline has too.
    assert chart_kind(stats["price"], deciles) == QUANTILES
    assert distribution_figure(stats["empty"], None) is None

    histogram = distribution_figure(stats["price"], stats["price"])
    assert histogram is not None
    # The buckets, then the deciles beside them.
    run, baseline, run_deciles, baseline_deciles = histogram.data
    assert (run_deciles.x, run_deciles.y, run_deciles.xaxis) == ((0.0, 4.0), (0.0, 1.0), "x2")
    assert (baseline_deciles.line.dash, baseline_deciles.showlegend) == ("dash", False)
    # Too few deciles for a 10th to 90th percentile window: the whole range shows.
    assert histogram.layout.xaxis2.range is None
    outlier = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0]
    wide = distribution_figure({**stats["price"], "quantiles": outlier})
    assert wide is not None
    assert wide.layout.xaxis2.range == (1.0 - 0.64, 9.0 + 0.64)
    assert (run.name, list(run.x), list(run.y), list(run.width)) == (
        "this run",
        [0.5, 1.5, 3.0],
        [0.25, 0.25, 0.5],
        [1.0, 1.0, 2.0],
    )
    assert (baseline.name, baseline.marker.color) == ("baseline", "rgba(0,0,0,0)")

    values = distribution_figure(_city({"Oslo": 3, "Rome": 1}), _city({"Rome": 1, "Bern": 1}))
    assert values is not None
    run, baseline = values.data
    # This run's values by share, then the baseline's others.
    assert list(run.x) == ["Oslo", "Rome", "Bern"]
    assert list(run.y) == [0.75, 0.25, 0.0]
    assert list(baseline.y) == [0.0, 0.5, 0.5]
    assert values.layout.xaxis.title.text == "top 3 values"


def test_drift_chart_draws_measured_columns_coloured_by_status() -> None:
    figure = drift_figure(VALIDATION["drift"] | {"gone": {"measure": "l_infinity", "value": None}})
    assert figure is not None
    bars, thresholds = figure.data
    assert list(bars.y) == ["city: l_infinity", "price: jensen_shannon"]
    assert list(bars.marker.color) == ["#dc2626", "#16a34a"]
    assert list(thresholds.x) == [0.1, 0.1]
    assert drift_figure({}) is None
    assert drift_figure({"gone": {"measure": "l_infinity", "value": None}}) is None


# --- the page -------------------------------------------------------------------------------


def test_script_json_cannot_close_the_script_element() -> None:
    text = script_json({"name": "</script><b>&"})
    assert "</script>" not in text and "<" not in text and "&" not in text[1:]
    assert json.loads(text) == {"name": "</script><b>&"}


def test_anomalies_are_listed_or_said_to_be_unchecked() -> None:
    assert anomalies_html(None) == (
        '<p class="note">This run has no validation.json: its statistics were not checked '
        "against a schema.</p>"
    )
    assert anomalies_html({**VALIDATION, "anomalies": []}) == '<p class="note ok">No anomaly.</p>'
    listed = anomalies_html(VALIDATION)
    assert (
        "<td>city</td><td>drift</td><td><code>0.25</code></td><td><code>0.1</code></td>"
        "<td>city: L-infinity 0.25 over 0.1 (&lt;Rome&gt;)</td>"
    ) in listed


def test_report_of_a_run_against_its_baseline(tmp_path: pathlib.Path) -> None:
    run = write_run(
        tmp_path / "new",
        stats=toy_stats(shifted=True),
        errors=[_record("read", "bad_row", 4)],
        validation=VALIDATION,
    )
    baseline = write_run(tmp_path / "old", RUN_B, stats=toy_stats())
    report = build_report(str(run), baseline=str(baseline))
    assert report.columns.names == ("city", "price", "empty")
    # city and price drawn, "empty" has no value; one drift chart.
    assert report.charts == 3
    assert report.html.count('data-chart="') == 3
    assert report.drift.drifted == ["city"]
    assert "Showing the input columns (raw, as read)." in report.html
    assert '<span class="status status-over">over</span>' in report.html
    assert "No value to draw." in report.html


def test_skew_between_splits_is_shown_without_a_baseline(tmp_path: pathlib.Path) -> None:
    skewed = {
        "measure": "jensen_shannon",
        "value": 0.5,
        "threshold": 0.3,
        "over": True,
        "max_difference_value": None,
    }
    validation = {
        **VALIDATION,
        "baseline": None,
        "drift": {},
        "skew": {"train_vs_eval": {"price": skewed}},
    }
    run = write_run(tmp_path / "new", stats=toy_stats(), validation=validation)
    made = build_report(str(run))
    assert (made.baseline, made.drift.measurements) == (None, {})
    assert made.drift.skew == {"train_vs_eval": {"price": skewed}}
    assert '<p class="note">No drift values: no baseline was given.</p>' in made.html
    assert (
        "<h3>Skew: train_vs_eval</h3><table><thead><tr><th>column</th><th>measure</th>"
        '<th class="num">value</th><th class="num">threshold</th><th>most different value</th>'
        "<th>status</th></tr></thead><tbody><tr><td>price</td><td>jensen_shannon</td>"
        '<td class="num">0.5000</td><td class="num">0.3000</td><td></td><td>'
        '<span class="status status-over">over</span></td></tr></tbody></table>'
    ) in made.html
    # Two columns drawn, no drift chart.
    assert made.charts == 2


def test_without_baseline_the_report_compares_with_the_one_validation_recorded(
    tmp_path: pathlib.Path,
) -> None:
    # Validation keeps the baseline's input statistics only.
    kept = tmp_path / "baseline_stats.json"
    kept.write_text(json.dumps({"input": toy_stats()["input"]}), encoding="utf-8")
    recorded = {**VALIDATION, "baseline": {"run": RUN_B, "source": "old", "stats": str(kept)}}
    run = write_run(tmp_path / "new", stats=toy_stats(shifted=True), validation=recorded)
    made = build_report(str(run))
    assert made.baseline == Baseline(
        run_id=RUN_B,
        location="old",
        stats={"input": toy_stats()["input"]},
        origin="validation.json",
    )
    assert made.columns.baseline == toy_stats()["input"]["all"]
    assert made.drift.origin == f"validation.json, against run {RUN_B}"
    assert (
        f'Compared with <span class="legend-baseline">baseline {RUN_B}</span> (old), the run '
        "its validation.json was measured against."
    ) in made.html
    # A baseline of "previous": the run this output held before.
    previous = {**VALIDATION, "baseline": {"run": RUN_B, "stats": str(kept)}}
    again = write_run(tmp_path / "again", stats=toy_stats(shifted=True), validation=previous)
    found = build_report(str(again)).baseline
    assert found is not None and found.location == str(again)
    kept.unlink()
    with pytest.raises(NoStatisticsError) as caught:
        build_report(str(run))
    assert str(caught.value) == (
        f"{kept}: {run / RUN_A / 'validation.json'} names these baseline statistics, which are "
        "missing; give the baseline with --baseline RUN"
    )


@pytest.mark.emulator
def test_a_run_on_gcs_is_read_through_its_manifest(
    gcs_emulator: Any, tmp_path: pathlib.Path
) -> None:
    errors = [_record("read", "bad_row", 4), _record("read", "bad_row", 5)]
    local = write_run(tmp_path / "new", stats=toy_stats(), errors=errors, validation=VALIDATION)
    bucket = gcs_emulator.new_bucket("report-runs")
    prefix = f"gs://{bucket}/runs/new"
    # The same run, as a Dataflow job leaves it in a bucket: every path in it gs://.
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8").replace(str(local), prefix)
        name = f"runs/new/{path.relative_to(local)}"
        gcs_emulator.client().bucket(bucket).blob(name).upload_from_string(text)
    for location in (prefix, f"{prefix}/{RUN_A}", f"{prefix}/manifest.json"):
        run = load_run(location)
        assert (run.run_id, run.root, run.manifest_path) == (
            RUN_A,
            f"{prefix}/{RUN_A}",
            f"{prefix}/manifest.json",
        )
        assert run.validation == VALIDATION
        assert [(r.step, r.reason, r.count) for r in run.errors.reasons] == [("read", "bad_row", 2)]
    with pytest.raises(RunNotFinishedError) as caught:
        load_run(f"gs://{bucket}/runs/{RUN_B}")
    assert str(caught.value) == (
        f"gs://{bucket}/runs/{RUN_B}: the run did not finish: no manifest.json at "
        f"gs://{bucket}/runs/manifest.json"
    )


# --- the command ------------------------------------------------------------------------------


def report(*argv: str) -> int:
    """``beamforge report ARGV`` through the subcommand's own parser."""
    parser = argparse.ArgumentParser(prog="beamforge")
    report_commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    return report_commands.command(parser.parse_args(["report", *argv]))


def test_command_writes_the_report_and_names_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "new", stats=toy_stats(shifted=True))
    baseline = write_run(tmp_path / "old", RUN_B, stats=toy_stats())
    target = tmp_path / "pages" / "report.html"
    assert (
        report(str(run), "--baseline", str(baseline), "-o", str(target), "--threshold", "0.2") == 0
    )
    out = capsys.readouterr().out
    assert out == (
        f"{target}: report of run {RUN_A} against {RUN_B} (3 input columns, 3 charts, "
        "drifted: city)\n"
    )
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_command_writes_through_a_symlink_to_its_target(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "new", stats=toy_stats())
    pages = tmp_path / "pages"
    pages.mkdir()
    real = pages / "real.html"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "report.html"
    link.symlink_to(real)
    assert report(str(run), "-o", str(link)) == 0
    capsys.readouterr()
    assert (link.is_symlink(), os.readlink(link)) == (True, str(real))
    assert real.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in pages.iterdir()) == ["real.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "pages", "report.html"]


def test_command_without_plotly_names_the_extra(tmp_path: pathlib.Path) -> None:
    script = (
        "import argparse, sys\n"
        "sys.modules['plotly'] = None\n"
        "from launchers import report_commands\n"
        "parser = argparse.ArgumentParser()\n"
        "report_commands.add_parsers(parser.add_subparsers(dest='command'))\n"
        f"argv = ['report', {str(tmp_path)!r}, '-o', {str(tmp_path / 'r.html')!r}]\n"
        "sys.exit(report_commands.command(parser.parse_args(argv)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: beamforge report draws with plotly: pip install 'beamforge[report]'\n"
    )


@pytest.mark.parametrize(
    "case",
    [
        "unfinished",
        "baseline without statistics",
        "output is a directory",
        "output is empty",
        "inside the dataset",
    ],
)
def test_command_refusals_are_one_line_and_write_nothing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    run = write_run(tmp_path / "new", stats=toy_stats())
    target = tmp_path / "report.html"
    if case == "unfinished":
        (tmp_path / "killed" / RUN_B).mkdir(parents=True)
        argv = [str(tmp_path / "killed" / RUN_B), "-o", str(target)]
        expected = (
            f"{tmp_path / 'killed' / RUN_B}: the run did not finish: no manifest.json at "
            f"{tmp_path / 'killed' / 'manifest.json'}"
        )
    elif case == "baseline without statistics":
        old = write_run(tmp_path / "old", RUN_B, stats=None)
        argv = [str(run), "--baseline", str(old), "-o", str(target)]
        expected = (
            f"{old / 'manifest.json'}: the baseline run {RUN_B} has no statistics (no stats key)"
        )
    elif case == "output is a directory":
        target = tmp_path / "pages"
        target.mkdir()
        argv = [str(run), "-o", str(target)]
        expected = (
            f"{target}: is a directory; give the report's file name, e.g. {target / 'report.html'}"
        )
    elif case == "output is empty":
        argv = [str(run), "-o", ""]
        expected = "-o/--output: expected the report's file name, e.g. report.html"
    else:
        target = run / "report.html"
        argv = [str(run), "-o", str(target)]
        expected = (
            f"{target}: is inside the dataset folder {run}, which its runs rewrite; write the "
            "report elsewhere"
        )
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert report(*argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"error: {expected}\n")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# --- real runs, a real browser ------------------------------------------------------------------

# The shifted copy: every fare x1.5, every fifth trip paid "Mobile" (a new payment type),
# then three rows whose fare does not parse and two rows missing their last field.
NEW_PAYMENT = "Mobile"
BAD_FARES = 3
SHORT_ROWS = 2


def shift_sample(target: pathlib.Path) -> pathlib.Path:
    with TAXI_SAMPLE.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    fare, payment = header.index("fare"), header.index("payment_type")
    shifted = []
    for index, row in enumerate(rows):
        row = list(row)
        if row[fare]:
            row[fare] = f"{float(row[fare]) * 1.5:.2f}"
        if index % 5 == 0:
            row[payment] = NEW_PAYMENT
        shifted.append(row)
    bad = [[*shifted[k][:fare], "n/a", *shifted[k][fare + 1 :]] for k in range(BAD_FARES)]
    short = [shifted[k][:-1] for k in range(SHORT_ROWS)]
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(shifted + bad + short)
    return target


@pytest.fixture(scope="session")
def taxi_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The taxi pipeline's runs on the sample ("base") and on its shifted copy ("shifted").

    The shifted run is validated against the base run (``--baseline``), so its
    validation.json holds the drift of every input column.
    """
    folder = tmp_path_factory.mktemp("report-runs")
    runs = {"base": folder / "base", "shifted": folder / "shifted"}
    for name, source, extra in (
        ("base", TAXI_SAMPLE, []),
        ("shifted", shift_sample(folder / "shifted.csv"), ["--baseline", str(runs["base"])]),
    ):
        done = beamforge(
            "run",
            "examples/chicago_taxi/pipeline.yaml",
            "--input",
            str(source),
            "--output",
            str(runs[name]),
            "--quiet",
            *extra,
        )
        assert done.returncode == 0, done.stderr
    return runs


# The taxi spec's input columns, in its order.
TAXI_COLUMNS = (
    "pickup_community_area",
    "fare",
    "trip_start_month",
    "trip_start_hour",
    "trip_start_day",
    "trip_start_timestamp",
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
    "trip_miles",
    "pickup_census_tract",
    "dropoff_census_tract",
    "payment_type",
    "company",
    "trip_seconds",
    "dropoff_community_area",
    "tips",
)
# pickup_census_tract is empty in the sample: no histogram, no chart, no drift value.
TAXI_EMPTY = "pickup_census_tract"
# Over their threshold (the taxi schema's) in the shifted run: the two columns it shifts.
TAXI_DRIFTED = ["fare", "payment_type"]


@pytest.mark.slow
def test_report_of_the_shifted_taxi_run(taxi_runs: dict[str, pathlib.Path]) -> None:
    made = build_report(str(taxi_runs["shifted"]), baseline=str(taxi_runs["base"]))
    ledger = made.run.ledger
    assert (ledger.read, ledger.total_written, ledger.rejected, ledger.dropped) == (
        3006,
        3001,
        5,
        0,
    )
    assert ledger.reasons == (
        ReasonRow("read", "rejected", "unparseable_value", BAD_FARES),
        ReasonRow("read", "rejected", "wrong_field_count", SHORT_ROWS),
    )
    assert ledger.steps[0] == StepRow("read", 3006, 5, 0, 3001)
    assert [(r.step, r.reason, r.count) for r in made.run.errors.reasons] == [
        ("read", "unparseable_value", BAD_FARES),
        ("read", "wrong_field_count", SHORT_ROWS),
    ]
    first = made.run.errors.reasons[0].examples[0]
    assert first.message == "column 'fare': 'n/a' is not a valid float32"
    assert first.source == f"{taxi_runs['shifted'].parent / 'shifted.csv'}:3003"

    assert (made.columns.section, made.columns.names) == (INPUT, TAXI_COLUMNS)
    assert made.baseline is not None and made.run.validation is not None
    assert made.drift.origin == f"validation.json, against run {made.baseline.run_id}"
    assert made.drift.drifted == TAXI_DRIFTED
    assert made.drift.measurements["payment_type"]["max_difference_value"] == NEW_PAYMENT
    assert status_of(made.drift.measurements[TAXI_EMPTY]) == NOT_MEASURED

    # Without --baseline, the report compares with the run validation measured against.
    recorded = build_report(str(taxi_runs["shifted"]))
    assert recorded.baseline is not None
    assert (recorded.baseline.run_id, recorded.baseline.origin) == (
        made.baseline.run_id,
        "validation.json",
    )
    assert recorded.baseline.stats == {"input": made.baseline.stats["input"]}
    assert recorded.charts == made.charts

    # The base run has no baseline, so no drift of its own: the report measures it, with
    # the same code and so the same values (both measures are symmetric).
    backwards = build_report(str(taxi_runs["base"]), baseline=str(taxi_runs["shifted"]))
    assert backwards.drift.origin == f"computed against run {made.run.run_id}"
    # L-infinity has one way to measure; the taxi schema asks validation to compare the
    # numeric columns' quantiles histograms, where the report measures the standard ones
    # (TFDV's default), with validation's default threshold.
    computed = backwards.drift.measurements
    for column in ("payment_type", "company"):
        assert computed[column]["value"] == pytest.approx(
            made.drift.measurements[column]["value"], abs=1e-12
        )
    base_fare = backwards.columns.run["fare"]
    assert computed["fare"] == column_distance(
        base_fare, made.columns.run["fare"], "jensen_shannon", 0.3
    )
    assert list(computed) == list(TAXI_COLUMNS)
    assert backwards.drift.drifted == []


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.slow
def test_beamforge_report_refuses_a_run_that_did_not_finish(
    taxi_runs: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    killed = taxi_runs["base"].parent / "killed" / RUN_A
    killed.mkdir(parents=True)
    done = beamforge("report", str(killed), "-o", str(tmp_path / "report.html"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: {killed}: the run did not finish: no manifest.json at "
        f"{killed.parent / 'manifest.json'}\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_report_renders_in_chromium_without_errors_or_network(
    taxi_runs: dict[str, pathlib.Path],
) -> None:
    from playwright.sync_api import Request, Route, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    page_file = ARTIFACTS / "report.html"
    made = build_report(str(taxi_runs["shifted"]), baseline=str(taxi_runs["base"]))
    # One chart per column with values, and the drift chart.
    assert made.charts == len(TAXI_COLUMNS) - 1 + 1
    assert made.baseline is not None
    done = beamforge(
        "report",
        str(taxi_runs["shifted"]),
        "--baseline",
        str(taxi_runs["base"]),
        "-o",
        str(page_file),
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        f"{page_file}: report of run {made.run.run_id} against {made.baseline.run_id} "
        f"({len(TAXI_COLUMNS)} input columns, {made.charts} charts, drifted: fare, payment_type)\n"
    )

    problems: list[str] = []
    requests: list[str] = []

    def only_files(route: Route, request: Request) -> None:
        requests.append(request.url)
        if request.url.startswith("file://"):
            route.continue_()
        else:
            problems.append(f"network request: {request.url}")
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", only_files)
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(page_file.as_uri(), wait_until="load")
            plots = page.locator(".js-plotly-plot")
            assert plots.count() == made.charts
            # Each chart's SVG holds a trace that drew a mark (a bar or a line).
            drawn_charts = page.evaluate(
                """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(
                    p => Array.from(p.querySelectorAll('svg.main-svg .cartesianlayer .trace path'))
                        .some(path => (path.getAttribute('d') || '').length > 0)).length"""
            )
            assert drawn_charts == made.charts
            over = page.locator("#columns td .status-over")
            assert over.count() == len(TAXI_DRIFTED)
            flagged = page.locator("#columns tr:has(.status-over) td:first-child").all_inner_texts()
            assert flagged == TAXI_DRIFTED
            anomalies = page.locator("#anomalies tbody tr").count()
            assert made.run.validation is not None
            assert anomalies == len(made.run.validation["anomalies"]) > 0
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert requests == [page_file.as_uri()]
