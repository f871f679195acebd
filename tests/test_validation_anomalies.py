"""Anomalies of statistics against a schema: each kind, with exact values and messages."""

from __future__ import annotations

from typing import Any

from transforms.validation.anomalies import Anomaly, find_anomalies, percentage
from transforms.validation.schema import ColumnSchema, DataSchema


def _stats(**columns: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return columns


def test_clean_statistics_have_no_anomaly() -> None:
    schema = DataSchema(
        {
            "fare": ColumnSchema("float32", presence=0.9, min=0.0, max=100.0),
            "pay": ColumnSchema("string", presence=1.0, values=("Cash", "Card")),
        }
    )
    stats = _stats(
        fare={"type": "float32", "count": 9, "missing": 1, "min": 0.0, "max": 100.0},
        pay={
            "type": "string",
            "count": 4,
            "missing": 0,
            "rank_histogram": [{"value": "Cash", "count": 4}],
        },
    )
    assert find_anomalies(stats, schema) == []


def test_missing_new_and_retyped_columns() -> None:
    schema = DataSchema(
        {
            "fare": ColumnSchema("float32", min=0.0),
            "gone": ColumnSchema("int64"),
        }
    )
    stats = _stats(
        fare={"type": "string", "count": 3, "missing": 0, "rank_histogram": []},
        tip={"type": "float64", "count": 3, "missing": 0},
    )
    assert find_anomalies(stats, schema) == [
        Anomaly(
            "fare",
            "type_change",
            "string",
            "float32",
            "fare: type string, the schema expects float32",
        ),
        Anomaly(
            "gone",
            "missing_column",
            None,
            "int64",
            "gone: in the schema (int64) but not in the data",
        ),
        Anomaly(
            "tip", "new_column", "float64", None, "tip: in the data (float64) but not in the schema"
        ),
    ]


def test_low_presence() -> None:
    schema = DataSchema(
        {"a": ColumnSchema("int64", presence=0.75), "b": ColumnSchema("int64", presence=0.5)}
    )
    stats = _stats(
        a={"type": "int64", "count": 7, "missing": 3},
        b={"type": "int64", "count": 5, "missing": 5},
    )
    assert find_anomalies(stats, schema) == [
        Anomaly(
            "a",
            "low_presence",
            0.7,
            0.75,
            "a: present in 70.00% of rows (3 of 10 null), the schema expects at least 75.00%",
        )
    ]


def test_presence_one_refuses_any_null_even_when_the_share_rounds_to_one() -> None:
    schema = DataSchema({"a": ColumnSchema("int64", presence=1.0)})
    count = 2**60
    (anomaly,) = find_anomalies(_stats(a={"type": "int64", "count": count, "missing": 1}), schema)
    # count / (count + 1) is 1.0 in float64: the null is still an anomaly (as in TFDV).
    assert (anomaly.kind, anomaly.observed, anomaly.expected) == ("low_presence", 1.0, 1.0)


def test_no_rows_at_all_break_any_presence_above_zero() -> None:
    schema = DataSchema(
        {
            "a": ColumnSchema("int64", presence=1.0),
            "b": ColumnSchema("string", presence=0.25),
            "c": ColumnSchema("int64", presence=0.0),
            "d": ColumnSchema("int64"),
        }
    )
    empty = {"count": 0, "missing": 0}
    stats = _stats(
        a={"type": "int64", **empty},
        b={"type": "string", **empty, "rank_histogram": []},
        c={"type": "int64", **empty},
        d={"type": "int64", **empty},
    )
    assert find_anomalies(stats, schema) == [
        Anomaly(
            "a",
            "low_presence",
            0.0,
            1.0,
            "a: present in 0 of 0 rows: the data is empty, the schema expects at least 100.00%",
        ),
        Anomaly(
            "b",
            "low_presence",
            0.0,
            0.25,
            "b: present in 0 of 0 rows: the data is empty, the schema expects at least 25.00%",
        ),
    ]


def test_presence_is_checked_also_after_a_type_change() -> None:
    schema = DataSchema({"a": ColumnSchema("int64", presence=1.0, min=0.0)})
    stats = _stats(a={"type": "float64", "count": 1, "missing": 1, "min": -5.0, "max": 1.0})
    assert [a.kind for a in find_anomalies(stats, schema)] == ["type_change", "low_presence"]


def test_out_of_range_on_either_side() -> None:
    schema = DataSchema(
        {
            "low": ColumnSchema("float64", min=0.0, max=10.0),
            "both": ColumnSchema("float64", min=0.0, max=10.0),
            "high": ColumnSchema("int64", max=10.0),
            "empty": ColumnSchema("int64", min=0.0, max=1.0),
        }
    )
    stats = _stats(
        low={"type": "float64", "count": 2, "missing": 0, "min": -0.5, "max": 10.0},
        both={"type": "float64", "count": 2, "missing": 0, "min": -1.0, "max": 12.5},
        high={"type": "int64", "count": 2, "missing": 0, "min": -100, "max": 11},
        empty={"type": "int64", "count": 0, "missing": 3, "min": None, "max": None},
    )
    assert find_anomalies(stats, schema) == [
        Anomaly(
            "low",
            "out_of_range",
            {"min": -0.5, "max": 10.0},
            {"min": 0.0, "max": 10.0},
            "low: min -0.5 is below 0, outside the schema's range",
        ),
        Anomaly(
            "both",
            "out_of_range",
            {"min": -1.0, "max": 12.5},
            {"min": 0.0, "max": 10.0},
            "both: min -1 is below 0 and max 12.5 is above 10, outside the schema's range",
        ),
        Anomaly(
            "high",
            "out_of_range",
            {"min": -100, "max": 11},
            {"min": None, "max": 10.0},
            "high: max 11 is above 10, outside the schema's range",
        ),
    ]


RANKED = [
    {"value": "Cash", "count": 150},
    {"value": "Card", "count": 40},
    {"value": "Dispute", "count": 8},
    {"value": "Mobile", "count": 1},
    {"value": "Prcard", "count": 1},
]


def test_unexpected_values_with_their_share() -> None:
    schema = DataSchema(
        {"pay": ColumnSchema("string", values=("Cash", "Card"), max_unexpected_share=0.0)}
    )
    stats = _stats(pay={"type": "string", "count": 200, "missing": 0, "rank_histogram": RANKED})
    assert find_anomalies(stats, schema) == [
        Anomaly(
            "pay",
            "unexpected_values",
            {
                "share": 0.05,
                "values": [
                    {"value": "Dispute", "count": 8},
                    {"value": "Mobile", "count": 1},
                    {"value": "Prcard", "count": 1},
                ],
            },
            {"values": ["Cash", "Card"], "max_unexpected_share": 0.0},
            "pay: values outside the schema's: 'Dispute' (~4%), 'Mobile' (<1%), 'Prcard' (<1%);"
            " 5.00% of values, the schema tolerates 0.00%",
        )
    ]


def test_unexpected_share_up_to_the_tolerance_passes() -> None:
    stats = _stats(pay={"type": "string", "count": 200, "missing": 0, "rank_histogram": RANKED})
    tolerant = DataSchema(
        {"pay": ColumnSchema("string", values=("Cash", "Card"), max_unexpected_share=0.05)}
    )
    assert find_anomalies(stats, tolerant) == []
    strict = DataSchema(
        {"pay": ColumnSchema("string", values=("Cash", "Card"), max_unexpected_share=0.049)}
    )
    assert [a.observed["share"] for a in find_anomalies(stats, strict)] == [0.05]


def test_many_unexpected_values_are_summarised_in_the_message() -> None:
    ranked = [{"value": f"v{i}", "count": 1} for i in range(8)]
    schema = DataSchema({"s": ColumnSchema("string", values=())})
    (anomaly,) = find_anomalies(
        _stats(s={"type": "string", "count": 8, "missing": 0, "rank_histogram": ranked}), schema
    )
    assert anomaly.message == (
        "s: values outside the schema's: 'v0' (~12%), 'v1' (~12%), 'v2' (~12%), 'v3' (~12%),"
        " 'v4' (~12%) and 3 more; 100.00% of values, the schema tolerates 0.00%"
    )
    assert len(anomaly.observed["values"]) == 8


def test_to_dict_and_percentages() -> None:
    anomaly = Anomaly("a", "new_column", "int64", None, "a: new")
    assert anomaly.to_dict() == {
        "column": "a",
        "kind": "new_column",
        "observed": "int64",
        "expected": None,
        "message": "a: new",
    }
    assert [percentage(c, 200) for c in (1, 2, 3, 199, 200)] == [
        "<1%",
        "~1%",
        "~1%",
        "~99%",
        "~100%",
    ]
    assert percentage(1, 0) == "?"
