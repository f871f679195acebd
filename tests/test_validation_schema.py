"""The YAML data schema: strict parsing with exact errors, writing, inference from stats."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from transforms.core.config import SpecError
from transforms.validation.schema import (
    DEFAULT_THRESHOLDS,
    ColumnSchema,
    DataSchema,
    infer_schema,
    parse_schema,
    schema_to_yaml,
)

KEYS = "type, presence, min, max, values, max_unexpected_share, drift, skew"

GOOD = """
columns:
  fare: {type: float32, presence: 1.0, min: 0.0, max: 3000.0,
         drift: {jensen_shannon: 0.1}, skew: {source: quantiles, jensen_shannon: 0.1}}
  payment_type: {type: string, presence: 1.0, values: [Cash, Credit Card],
                 max_unexpected_share: 0.0, drift: {l_infinity: 0.1}}
  tips: {type: double, presence: 0.5}
  company: {type: str, values: ['1', 'yes'], skew: {jensen_shannon: 1}}
  hour: {type: int8}
"""


def test_parse_a_schema() -> None:
    assert parse_schema(yaml.safe_load(GOOD), origin="schema.yaml") == DataSchema(
        {
            "fare": ColumnSchema(
                "float32",
                presence=1.0,
                min=0.0,
                max=3000.0,
                drift=("jensen_shannon", 0.1),
                skew=("jensen_shannon", 0.1),
                skew_source="quantiles",
            ),
            "payment_type": ColumnSchema(
                "string",
                presence=1.0,
                values=("Cash", "Credit Card"),
                max_unexpected_share=0.0,
                drift=("l_infinity", 0.1),
            ),
            # Aliases resolve to the names stats.json uses.
            "tips": ColumnSchema("float64", presence=0.5),
            # Values without a share tolerate none (TFDV's default).
            "company": ColumnSchema(
                "string",
                values=("1", "yes"),
                max_unexpected_share=0.0,
                skew=("jensen_shannon", 1.0),
            ),
            # Arrow's own names are kept.
            "hour": ColumnSchema("int8"),
        }
    )


def test_empty_columns_and_null_keys_mean_no_expectation() -> None:
    assert parse_schema({"columns": None}, origin="s") == DataSchema({})
    assert parse_schema(
        {"columns": {"a": {"type": "int64", "presence": None, "drift": None}}}, origin="s"
    ) == DataSchema({"a": ColumnSchema("int64")})
    # The default source may be written out.
    assert parse_schema(
        {"columns": {"a": {"type": "int64", "drift": {"jensen_shannon": 0, "source": "standard"}}}},
        origin="s",
    ) == DataSchema({"a": ColumnSchema("int64", drift=("jensen_shannon", 0.0))})


def _column(**keys: Any) -> dict[str, Any]:
    return {"columns": {"fare": {"type": "float32", **keys}}}


def _string(**keys: Any) -> dict[str, Any]:
    return {"columns": {"pay": {"type": "string", **keys}}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "<root>: got a list; expected a mapping with key columns"),
        ({"colums": {}}, "colums: unknown key; valid keys are columns"),
        ({}, "columns: required key 'columns' is missing"),
        ({"columns": ["fare"]}, "columns: got a list; expected a mapping of column name to keys"),
        ({"columns": {1: {"type": "int64"}}}, "columns: got column name 1; expected text"),
        ({"columns": {"fare": 3}}, f"columns.fare: got 3; expected a mapping with keys {KEYS}"),
        (_column(presense=1.0), f"columns.fare.presense: unknown key; valid keys are {KEYS}"),
        (
            {"columns": {"fare": {"presence": 1.0}}},
            "columns.fare.type: required key 'type' is missing",
        ),
        (
            _column(type="flaot"),
            "columns.fare.type: unknown type 'flaot'; valid types are string, bool, int32, int64,"
            " float32, float64, binary, date, timestamp and list<TYPE>",
        ),
        (_column(type=3), "columns.fare.type: got 3; expected a type name such as float32"),
        (_column(presence=1.5), "columns.fare.presence: got 1.5; expected a number from 0 to 1"),
        (_column(presence=-0.5), "columns.fare.presence: got -0.5; expected a number from 0 to 1"),
        (
            _column(presence="high"),
            "columns.fare.presence: got 'high'; expected a number from 0 to 1",
        ),
        (
            _column(presence=True),
            "columns.fare.presence: got true or false; expected a number from 0 to 1",
        ),
        (_column(min=10, max=5), "columns.fare: min 10 is greater than max 5"),
        (_column(min=float("nan")), "columns.fare.min: got nan; expected a finite number"),
        (_column(max=float("inf")), "columns.fare.max: got inf; expected a finite number"),
        (_column(max="big"), "columns.fare.max: got 'big'; expected a number"),
        (_string(min=1), "columns.pay.min: only numeric columns have a range; pay is string"),
        (
            _column(values=["a"]),
            "columns.fare.values: only string columns have values; fare is float32",
        ),
        (_string(values="Cash"), "columns.pay.values: got 'Cash'; expected a list of values"),
        (
            _string(values=["Cash", 1]),
            "columns.pay.values[1]: got 1; expected text (quote numbers: '1')",
        ),
        (_string(values=["Cash", "Cash"]), "columns.pay.values[1]: 'Cash' is listed twice"),
        (
            _string(max_unexpected_share=0.1),
            "columns.pay.max_unexpected_share: needs values: the share is of values outside them",
        ),
        (
            _string(values=["a"], max_unexpected_share=-0.1),
            "columns.pay.max_unexpected_share: got -0.1; expected a number from 0 to 1",
        ),
        (
            _column(drift=0.1),
            "columns.fare.drift: got 0.1; expected a measure and its threshold,"
            " e.g. {jensen_shannon: 0.3}",
        ),
        (
            _string(drift={"l_infinity": 0.1, "jensen_shannon": 0.1}),
            "columns.pay.drift: got 2 measures; expected one measure and its threshold,"
            " e.g. {l_infinity: 0.3}",
        ),
        (
            _column(drift={"psi": 0.1}),
            "columns.fare.drift.psi: unknown measure; valid measures are l_infinity, jensen_shannon",
        ),
        (
            _column(drift={"l_infinity": 0.1}),
            "columns.fare.drift.l_infinity: not a measure of float32 columns; numeric columns"
            " use jensen_shannon",
        ),
        (
            _column(skew={"jensen_shannon": -0.1}),
            "columns.fare.skew.jensen_shannon: got -0.1; expected a number from 0 to 1",
        ),
        (
            _string(skew={"l_infinity": 1.2}),
            "columns.pay.skew.l_infinity: got 1.2; expected a number from 0 to 1",
        ),
        (
            {"columns": {"b": {"type": "binary", "skew": {"jensen_shannon": 0.1}}}},
            "columns.b.skew: binary columns have no skew measure",
        ),
        (
            _column(drift={"source": "quantiles"}),
            "columns.fare.drift: got 0 measures; expected one measure and its threshold,"
            " e.g. {jensen_shannon: 0.3}",
        ),
        (
            _column(drift={"jensen_shannon": 0.1, "source": "deciles"}),
            "columns.fare.drift.source: got 'deciles'; expected one of standard, quantiles",
        ),
        (
            _string(drift={"jensen_shannon": 0.1, "source": "quantiles"}),
            "columns.pay.drift.source: only jensen_shannon of a numeric column compares histograms",
        ),
    ],
)
def test_schema_errors_name_the_file_and_the_yaml_path(data: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_schema(data, origin="schema.yaml")
    assert str(caught.value) == f"schema.yaml: {message}"
    assert caught.value.source == "schema.yaml"


EXPECTED_YAML = """\
# Inferred from run-1.
#
# One entry per column. Edit a value to change what is accepted; delete a key to stop
# checking it (drift and skew then use the run's default thresholds).
#   type      the column's type; data of another type is a type_change anomaly.
#   presence  least share of rows (0 to 1) where the column is not null; 1.0 = never
#             null. Below it: low_presence.
#   min, max  the range values must stay in; outside it: out_of_range. Inferred as the
#             observed range (TFDV infers none): widen them to what is plausible.
#   values    the expected values of a string column; others are unexpected_values.
#   max_unexpected_share
#             share of values (0 to 1) outside `values` tolerated; 0.0 = none.
#   drift     {measure: threshold}: largest distance between this run and the baseline
#             run before the column counts as drifted. l_infinity (categorical columns):
#             the largest difference in any value's share, 0 to 1. jensen_shannon
#             (numeric columns): the Jensen-Shannon divergence of the two histograms,
#             0 (same) to 1 (disjoint). A threshold of 1 never fires. Add
#             `source: quantiles` to compare 10 equal-count buckets instead of 10
#             equal-width ones, which a few extreme values stretch (TFDV's
#             source QUANTILES).
#   skew      {measure: threshold}: the same between splits (train vs eval) or between
#             training data and logged serving requests.
columns:
  fare:
    type: float32
    presence: 1.0
    min: 0.0
    max: 3000.0
    drift: {jensen_shannon: 0.1}
    skew: {jensen_shannon: 0.1, source: quantiles}
  payment_type:
    type: string
    presence: 1.0
    values:
      - Cash
      - Credit Card
    max_unexpected_share: 0.0
    drift: {l_infinity: 0.1}
  tips:
    type: float64
    presence: 0.5
  company:
    type: string
    values:
      - '1'
      - 'yes'
    max_unexpected_share: 0.0
    skew: {jensen_shannon: 1.0}
  hour:
    type: int8
"""


def test_schema_to_yaml_is_commented_and_reads_back() -> None:
    schema = parse_schema(yaml.safe_load(GOOD), origin="schema.yaml")
    text = schema_to_yaml(schema, header="Inferred from run-1.")
    assert text == EXPECTED_YAML
    assert parse_schema(yaml.safe_load(text), origin="back") == schema


def test_awkward_names_and_values_are_quoted() -> None:
    schema = DataSchema(
        {
            "a: b": ColumnSchema(
                "string", values=("", "#x", "null", "é"), max_unexpected_share=0.25
            ),
            "empty": ColumnSchema("string", values=(), max_unexpected_share=0.0),
        }
    )
    text = schema_to_yaml(schema, header="")
    assert text.splitlines()[0].startswith("# One entry per column.")
    assert parse_schema(yaml.safe_load(text), origin="back") == schema
    assert schema_to_yaml(DataSchema({}), header="h").endswith("columns: {}\n")


STATS = {
    "fare": {
        "type": "float32",
        "count": 9,
        "missing": 0,
        "min": 0.5,
        "max": 120.25,
        "histogram": {"boundaries": [0.5, 120.25], "counts": [9.0]},
    },
    "tips": {"type": "float64", "count": 2, "missing": 1, "min": 0.0, "max": 3.0},
    "trip_miles": {"type": "float64", "count": 0, "missing": 4, "min": None, "max": None},
    "payment_type": {
        "type": "string",
        "count": 7,
        "missing": 0,
        "empty": 0,
        "rank_histogram": [
            {"value": "Credit Card", "count": 4},
            {"value": "Cash", "count": 3},
        ],
    },
    "company": {
        "type": "string",
        "count": 101,
        "missing": 0,
        "empty": 0,
        "rank_histogram": [{"value": f"c{i:03d}", "count": 1} for i in range(101)],
    },
    "flag": {
        "type": "bool",
        "count": 3,
        "missing": 99997,
        "rank_histogram": [{"value": True, "count": 3}],
    },
    "blob": {"type": "binary", "count": 0, "missing": 0},
}


def test_infer_schema_follows_tfdv_where_it_makes_sense() -> None:
    assert infer_schema(STATS) == DataSchema(
        {
            "fare": ColumnSchema(
                "float32",
                presence=1.0,
                min=0.5,
                max=120.25,
                drift=("jensen_shannon", 0.3),
                skew=("jensen_shannon", 0.3),
            ),
            # 2 of 3 present: the share rounded down to 4 decimals.
            "tips": ColumnSchema(
                "float64",
                presence=0.6666,
                min=0.0,
                max=3.0,
                drift=("jensen_shannon", 0.3),
                skew=("jensen_shannon", 0.3),
            ),
            "trip_miles": ColumnSchema(
                "float64",
                presence=0.0,
                drift=("jensen_shannon", 0.3),
                skew=("jensen_shannon", 0.3),
            ),
            # A domain for at most 100 distinct values, sorted.
            "payment_type": ColumnSchema(
                "string",
                presence=1.0,
                values=("Cash", "Credit Card"),
                max_unexpected_share=0.0,
                drift=("l_infinity", 0.3),
                skew=("l_infinity", 0.3),
            ),
            "company": ColumnSchema(
                "string", presence=1.0, drift=("l_infinity", 0.3), skew=("l_infinity", 0.3)
            ),
            "flag": ColumnSchema(
                "bool", presence=0.0, drift=("l_infinity", 0.3), skew=("l_infinity", 0.3)
            ),
            # No rows at all: nothing to say about presence; no measure for binary columns.
            "blob": ColumnSchema("binary"),
        }
    )
    assert DEFAULT_THRESHOLDS == {"l_infinity": 0.3, "jensen_shannon": 0.3}


def test_infer_schema_with_other_thresholds_reads_back() -> None:
    schema = infer_schema(STATS, thresholds={"l_infinity": 0.05})
    assert schema.columns["payment_type"].drift == ("l_infinity", 0.05)
    assert schema.columns["fare"].drift == ("jensen_shannon", 0.3)
    text = schema_to_yaml(schema, header="Inferred from run-2\nby beamforge schema infer")
    assert text.startswith("# Inferred from run-2\n# by beamforge schema infer\n#\n")
    assert parse_schema(yaml.safe_load(text), origin="back") == schema
