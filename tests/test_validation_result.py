"""validate(): validation.json's content from statistics, a schema, a baseline and splits."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from transforms.validation.result import validate
from transforms.validation.schema import ColumnSchema, DataSchema


def _numeric(boundaries: list[float], counts: list[float]) -> dict[str, Any]:
    return {
        "type": "float64",
        "count": int(sum(counts)),
        "missing": 0,
        "min": boundaries[0],
        "max": boundaries[-1],
        "histogram": {"boundaries": boundaries, "counts": counts},
    }


def _strings(counts: dict[str, int]) -> dict[str, Any]:
    return {
        "type": "string",
        "count": sum(counts.values()),
        "missing": 0,
        "rank_histogram": [{"value": v, "count": n} for v, n in counts.items()],
    }


# fare moved from [0, 2] to [1, 3]: JSD 0.5 (test_validation_distances). pay: shares 0.6,
# 0.4 against 0.5, 0.5: L-infinity 0.1, the tie naming "Credit Card".
CURRENT = {
    "fare": _numeric([0.0, 2.0], [4.0]),
    "pay": _strings({"Cash": 6, "Credit Card": 4}),
    "blob": {"type": "binary", "count": 1, "missing": 0},
    "new": _strings({"x": 1}),
}
BASELINE = {
    "fare": _numeric([1.0, 3.0], [2.0]),
    "pay": _strings({"Cash": 5, "Credit Card": 5}),
    "blob": {"type": "binary", "count": 1, "missing": 0},
}


def test_drift_records_every_column_and_flags_those_over_threshold() -> None:
    out = validate(
        CURRENT,
        baseline=BASELINE,
        run="run-2",
        baseline_ref={"run": "run-1", "stats": "/runs/run-1/stats.json"},
    )
    assert out == {
        "format_version": 1,
        "run": "run-2",
        "columns": "input",
        "schema": None,
        "baseline": {"run": "run-1", "stats": "/runs/run-1/stats.json"},
        "anomalies": [
            {
                "column": "fare",
                "kind": "drift",
                "observed": 0.5,
                "expected": 0.3,
                "message": "fare: Jensen-Shannon divergence 0.5 from the baseline, above the"
                " threshold 0.3",
            }
        ],
        "drift": {
            "fare": {
                "measure": "jensen_shannon",
                "value": 0.5,
                "threshold": 0.3,
                "over": True,
                "max_difference_value": None,
            },
            # Under the threshold, and recorded all the same.
            "pay": {
                "measure": "l_infinity",
                "value": pytest.approx(0.1),
                "threshold": 0.3,
                "over": False,
                "max_difference_value": "Credit Card",
            },
        },
        "skew": {},
        "summary": {"anomalies": 1, "drifted_columns": ["fare"], "skewed_columns": [], "ok": False},
    }
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_schema_thresholds_and_default_thresholds() -> None:
    schema = DataSchema(
        {
            "fare": ColumnSchema("float64", drift=("jensen_shannon", 0.6)),
            "pay": ColumnSchema(
                "string", values=("Cash", "Credit Card"), drift=("l_infinity", 0.05)
            ),
            "blob": ColumnSchema("binary"),
            "new": ColumnSchema("string"),
        }
    )
    out = validate(
        CURRENT,
        schema=schema,
        baseline=BASELINE,
        thresholds={"jensen_shannon": 0.01},
        schema_ref={"path": "schema.yaml", "sha256": "ab" * 32},
    )
    assert out["schema"] == {"path": "schema.yaml", "sha256": "ab" * 32}
    assert {name: (m["threshold"], m["over"]) for name, m in out["drift"].items()} == {
        "fare": (0.6, False),
        "pay": (0.05, True),
    }
    assert out["anomalies"] == [
        {
            "column": "pay",
            "kind": "drift",
            "observed": pytest.approx(0.1),
            "expected": 0.05,
            "message": "pay: L-infinity distance 0.1 from the baseline, above the threshold"
            " 0.05; the value whose share changed most is 'Credit Card'",
        }
    ]
    assert out["summary"] == {
        "anomalies": 1,
        "drifted_columns": ["pay"],
        "skewed_columns": [],
        "ok": False,
    }
    # Without a schema threshold the defaults given apply (0.01 for Jensen-Shannon).
    fare_default = validate(CURRENT, baseline=BASELINE, thresholds={"jensen_shannon": 0.01})
    assert fare_default["drift"]["fare"]["threshold"] == 0.01


def test_anomalies_from_the_schema_come_first() -> None:
    schema = DataSchema(
        {
            "fare": ColumnSchema("float64", max=1.0),
            "pay": ColumnSchema("string", values=("Cash",), max_unexpected_share=0.5),
        }
    )
    out = validate(CURRENT, schema=schema, run="run-3")
    assert [(a["column"], a["kind"]) for a in out["anomalies"]] == [
        ("fare", "out_of_range"),
        ("blob", "new_column"),
        ("new", "new_column"),
    ]
    assert (out["drift"], out["skew"], out["baseline"]) == ({}, {}, None)
    assert out["summary"] == {
        "anomalies": 3,
        "drifted_columns": [],
        "skewed_columns": [],
        "ok": False,
    }


def test_skew_per_pair_of_splits() -> None:
    train = {"fare": _numeric([0.0, 1.0, 2.0], [1.0, 1.0]), "pay": _strings({"Cash": 1})}
    eval_ = {"fare": _numeric([0.0, 1.0, 2.0], [3.0, 1.0]), "pay": _strings({"Cash": 3})}
    serving_fare_stats = _numeric([0.0, 1.0, 2.0], [1.0, 1.0])
    serving_fare_stats["histogram"]["nan"] = 2
    serving = {"fare": serving_fare_stats, "pay": _strings({"Card": 1})}
    out = validate(
        train,
        skew={"train_vs_eval": (train, eval_), "training_vs_serving": (train, serving)},
        thresholds={"jensen_shannon": 0.1, "l_infinity": 0.5},
    )
    jsd = 0.5 * (0.5 * math.log2(0.5 / 0.625) + 0.5 * math.log2(0.5 / 0.375)) + 0.5 * (
        0.75 * math.log2(0.75 / 0.625) + 0.25 * math.log2(0.25 / 0.375)
    )
    assert out["skew"]["train_vs_eval"] == {
        "fare": {
            "measure": "jensen_shannon",
            "value": pytest.approx(jsd, abs=1e-15),
            "threshold": 0.1,
            "over": False,
            "max_difference_value": None,
        },
        "pay": {
            "measure": "l_infinity",
            "value": 0.0,
            "threshold": 0.5,
            "over": False,
            "max_difference_value": "Cash",
        },
    }
    # NaN in serving only: (1, 1, 0, 0) against (1, 1, 2, 0) after the NaN buckets
    # (0, nan_1) and (nan_2, 0): P = (1/2, 1/2, 0, 0), Q = (1/4, 1/4, 1/2, 0).
    serving_fare = 0.5 * (2 * 0.5 * math.log2(0.5 / 0.375)) + 0.5 * (
        2 * 0.25 * math.log2(0.25 / 0.375) + 0.5 * math.log2(0.5 / 0.25)
    )
    assert out["skew"]["training_vs_serving"]["fare"]["value"] == pytest.approx(
        serving_fare, abs=1e-15
    )
    assert out["skew"]["training_vs_serving"]["pay"]["max_difference_value"] == "Cash"
    assert [(a["column"], a["kind"], a["message"]) for a in out["anomalies"]] == [
        (
            "fare",
            "skew",
            f"fare: Jensen-Shannon divergence {serving_fare:.6g} between training and serving,"
            " above the threshold 0.1",
        ),
        (
            "pay",
            "skew",
            "pay: L-infinity distance 1 between training and serving, above the threshold 0.5;"
            " the value whose share changed most is 'Cash'",
        ),
    ]
    assert out["summary"]["skewed_columns"] == ["fare", "pay"]
    assert out["drift"] == {}


def test_a_column_null_in_every_row_has_drifted_fully() -> None:
    current = {"fare": {"type": "float64", "count": 0, "missing": 2}}
    out = validate(current, baseline={"fare": _numeric([0.0, 1.0], [1.0])})
    assert out["drift"] == {
        "fare": {
            "measure": "jensen_shannon",
            "value": 1.0,
            "threshold": 0.3,
            "over": True,
            "max_difference_value": None,
        }
    }
    assert [(a["column"], a["kind"], a["message"]) for a in out["anomalies"]] == [
        (
            "fare",
            "drift",
            "fare: Jensen-Shannon divergence 1 from the baseline, above the threshold 0.3",
        )
    ]
    assert (out["summary"]["drifted_columns"], out["summary"]["ok"]) == (["fare"], False)


def test_columns_without_values_on_both_sides_are_measured_as_null() -> None:
    current = {"fare": {"type": "float64", "count": 0, "missing": 2}}
    out = validate(current, baseline={"fare": {"type": "float64", "count": 0, "missing": 5}})
    assert out["drift"] == {
        "fare": {
            "measure": "jensen_shannon",
            "value": None,
            "threshold": 0.3,
            "over": False,
            "max_difference_value": None,
        }
    }
    assert out["summary"]["ok"] is True


def test_unknown_default_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown measure 'psi' in thresholds; valid measures are"):
        validate({}, thresholds={"psi": 0.1})


def test_a_schema_source_compares_the_quantiles_histograms() -> None:
    now = {**CURRENT["fare"], "quantiles_histogram": {"boundaries": [0.0, 1.0], "counts": [1.0]}}
    before = {
        **BASELINE["fare"],
        "quantiles_histogram": {"boundaries": [0.0, 1.0], "counts": [5.0]},
    }
    schema = DataSchema(
        {"fare": ColumnSchema("float64", drift=("jensen_shannon", 0.3), drift_source="quantiles")}
    )
    out = validate({"fare": now}, schema=schema, baseline={"fare": before})
    assert out["drift"] == {
        "fare": {
            "measure": "jensen_shannon",
            "value": 0.0,
            "threshold": 0.3,
            "over": False,
            "max_difference_value": None,
            "source": "quantiles",
        }
    }
    assert out["summary"]["ok"] is True
