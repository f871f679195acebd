"""The data schema: what each column of a data set is expected to look like, in YAML.

A schema is a file people read and edit. ``beamforge schema infer`` writes one from a run's
statistics (:func:`infer_schema`, :func:`schema_to_yaml`); a job names it to have every
run checked against it (:mod:`transforms.validation.anomalies`). The format::

    columns:
      fare:
        type: float32          # the column's type (a spec type name)
        presence: 1.0          # least share of rows where it is not null, 0 to 1
        min: 0.0               # range the values stay in (numeric columns)
        max: 3000.0
        drift: {jensen_shannon: 0.3}   # largest distance to the baseline run
        skew: {jensen_shannon: 0.3}    # largest distance between splits / serving
      payment_type:
        type: string
        presence: 1.0
        values: [Cash, Credit Card]    # expected values (string columns)
        max_unexpected_share: 0.0      # share of other values tolerated, 0 to 1
        drift: {l_infinity: 0.3}

Every key but ``type`` may be left out, and a key left out is not checked (``drift`` and
``skew`` then take the defaults given to :func:`~transforms.validation.result.validate`).
``drift`` and ``skew`` name one measure with its threshold, from 0 to 1: ``l_infinity``
(string, boolean, date and time columns) or ``jensen_shannon`` (any of these and numeric
columns); a threshold of 1 never fires. For ``jensen_shannon`` of a numeric column,
``source: quantiles`` (e.g. ``drift: {jensen_shannon: 0.1, source: quantiles}``) compares
the 10 equal-count buckets of the QUANTILES histogram instead of the 10 equal-width
buckets of the STANDARD one (TFDV's ``HistogramSelection``; STANDARD is its default). The
equal-width buckets span min to max, so on heavy-tailed columns a different maximum alone
moves them: two random halves of the Chicago taxi sample differ by 0.31 (fare) and 0.70
(trip_miles) on STANDARD histograms and by 0.06 and 0.08 on QUANTILES ones, while fares
times 1.5 differ by about 0.2 on either. The same rules as TFDV's schema, in TFDV's terms:
``presence`` is ``presence.min_fraction``, ``values`` a ``string_domain``,
``max_unexpected_share`` is ``1 - distribution_constraints.min_domain_mass``, ``drift`` and
``skew`` are ``drift_comparator`` and ``skew_comparator``.

Inference follows TFDV's ``infer_schema`` where it makes sense, and says where it does not:

- ``presence`` is 1.0 for a column never null (TFDV's ``min_fraction: 1.0``); otherwise the
  observed share rounded down to 4 decimals, where TFDV leaves it unset.
- ``values`` is the list of observed values of a string column with at most 100 distinct
  values (TFDV's ``max_string_domain_size``), with ``max_unexpected_share: 0.0`` (TFDV adds
  no distribution constraint, so any other value is an anomaly).
- ``min`` and ``max`` are the observed range of a numeric column. TFDV infers no numeric
  range; they are written as expectations to edit (widen them, or delete them).
- ``drift`` and ``skew`` get the default thresholds (:data:`DEFAULT_THRESHOLDS`, 0.3 for both
  measures, Vertex AI Model Monitoring's default); TFDV sets none.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import yaml

from transforms.core.config import SpecError
from transforms.core.schema import parse_type, type_name
from transforms.validation.distances import (
    JENSEN_SHANNON,
    L_INFINITY,
    MEASURES,
    SOURCES,
    STANDARD,
    column_kind,
)

__all__ = [
    "COLUMN_KEYS",
    "DEFAULT_THRESHOLDS",
    "MAX_STRING_DOMAIN_SIZE",
    "ColumnSchema",
    "DataSchema",
    "default_measure",
    "infer_schema",
    "parse_schema",
    "schema_to_yaml",
]

# Vertex AI Model Monitoring's default threshold for both measures; TFDV has none.
DEFAULT_THRESHOLDS: dict[str, float] = {L_INFINITY: 0.3, JENSEN_SHANNON: 0.3}
# TFDV's infer_schema default: string columns with more distinct values get no domain.
MAX_STRING_DOMAIN_SIZE = 100
COLUMN_KEYS = (
    "type",
    "presence",
    "min",
    "max",
    "values",
    "max_unexpected_share",
    "drift",
    "skew",
)
# Presence inferred from data with missing values is rounded down to this many decimals,
# so the data it was inferred from passes.
_PRESENCE_DECIMALS = 4


@dataclasses.dataclass(frozen=True)
class ColumnSchema:
    """Expectations of one column; None means "not checked".

    Attributes:
        type: Spec type name (``float32``, ``string``, ...), aliases resolved.
        presence: Least share of rows where the column is not null, 0 to 1.
        min: Smallest value allowed (numeric columns).
        max: Largest value allowed (numeric columns).
        values: Expected values (string columns).
        max_unexpected_share: Largest share of values outside ``values`` tolerated.
        drift: ``(measure, threshold)`` against the baseline run.
        skew: ``(measure, threshold)`` between splits, or training and serving data.
        drift_source: Histogram compared by ``jensen_shannon`` drift of a numeric column:
            ``"standard"`` or ``"quantiles"`` (see
            :func:`~transforms.validation.distances.column_distance`).
        skew_source: The same for skew.
    """

    type: str
    presence: float | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None
    max_unexpected_share: float | None = None
    drift: tuple[str, float] | None = None
    skew: tuple[str, float] | None = None
    drift_source: str = STANDARD
    skew_source: str = STANDARD


@dataclasses.dataclass(frozen=True)
class DataSchema:
    """A data set's schema: expectations per column, in file order."""

    columns: dict[str, ColumnSchema] = dataclasses.field(default_factory=dict)


def default_measure(type_name: str) -> str | None:
    """The measure a column of this type is compared with by default (None: none)."""
    kind = column_kind(type_name)
    if kind == "numeric":
        return JENSEN_SHANNON
    if kind == "categorical":
        return L_INFINITY
    return None


# --- parsing ---------------------------------------------------------------------------------


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Parser:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, path: str, problem: str) -> SpecError:
        return SpecError(path, problem, source=self.origin)

    def number(self, value: Any, path: str, *, share: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            expected = "a number from 0 to 1" if share else "a number"
            return self._raise(path, f"got {_what(value)}; expected {expected}")
        if not math.isfinite(value):
            return self._raise(path, f"got {value!r}; expected a finite number")
        if share and not 0 <= value <= 1:
            return self._raise(path, f"got {value!r}; expected a number from 0 to 1")
        return float(value)

    def _raise(self, path: str, problem: str) -> Any:
        raise self.error(path, problem)

    def column_type(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            return self._raise(path, f"got {_what(value)}; expected a type name such as float32")
        try:
            return type_name(parse_type(value))
        except ValueError as exc:
            # Arrow's own names (int8, time64[us], ...) are what stats.json holds for
            # types specs do not name.
            if column_kind(value) is not None:
                return value
            return self._raise(path, str(exc))

    def comparator(
        self, value: Any, path: str, name: str, column_type: str
    ) -> tuple[tuple[str, float], str]:
        example = f"e.g. {{{default_measure(column_type) or JENSEN_SHANNON}: 0.3}}"
        if not isinstance(value, Mapping):
            return self._raise(
                path, f"got {_what(value)}; expected a measure and its threshold, {example}"
            )
        measures = {k: v for k, v in value.items() if k != "source"}
        if len(measures) != 1:
            return self._raise(
                path,
                f"got {len(measures)} measures; expected one measure and its threshold, {example}",
            )
        ((measure, threshold),) = measures.items()
        where = f"{path}.{measure}"
        if measure not in MEASURES:
            return self._raise(where, f"unknown measure; valid measures are {', '.join(MEASURES)}")
        kind = column_kind(column_type)
        if kind is None:
            return self._raise(path, f"{column_type} columns have no {name} measure")
        if kind == "numeric" and measure == L_INFINITY:
            return self._raise(
                where,
                f"not a measure of {column_type} columns; numeric columns use {JENSEN_SHANNON}",
            )
        limit = self.number(threshold, where, share=True)
        source = value.get("source", STANDARD)
        if source != STANDARD:
            if source not in SOURCES:
                self._raise(
                    f"{path}.source",
                    f"got {_what(source)}; expected one of {', '.join(SOURCES)}",
                )
            if kind != "numeric" or measure != JENSEN_SHANNON:
                self._raise(
                    f"{path}.source",
                    "only jensen_shannon of a numeric column compares histograms",
                )
        return (measure, limit), source

    def column(self, name: str, data: Any, path: str) -> ColumnSchema:
        if not isinstance(data, Mapping):
            return self._raise(
                path, f"got {_what(data)}; expected a mapping with keys {', '.join(COLUMN_KEYS)}"
            )
        for key in data:
            if key not in COLUMN_KEYS:
                self._raise(
                    f"{path}.{key}", f"unknown key; valid keys are {', '.join(COLUMN_KEYS)}"
                )
        if "type" not in data:
            self._raise(f"{path}.type", "required key 'type' is missing")
        column_type = self.column_type(data["type"], f"{path}.type")
        kind = column_kind(column_type)
        fields: dict[str, Any] = {"type": column_type}
        if data.get("presence") is not None:
            fields["presence"] = self.number(data["presence"], f"{path}.presence", share=True)
        for bound in ("min", "max"):
            if data.get(bound) is not None:
                if kind != "numeric":
                    self._raise(
                        f"{path}.{bound}",
                        f"only numeric columns have a range; {name} is {column_type}",
                    )
                fields[bound] = self.number(data[bound], f"{path}.{bound}", share=False)
        if "min" in fields and "max" in fields and fields["min"] > fields["max"]:
            self._raise(path, f"min {fields['min']:g} is greater than max {fields['max']:g}")
        if data.get("values") is not None:
            fields["values"] = self.values(data["values"], f"{path}.values", name, column_type)
        if data.get("max_unexpected_share") is not None:
            where = f"{path}.max_unexpected_share"
            if "values" not in fields:
                self._raise(where, "needs values: the share is of values outside them")
            fields["max_unexpected_share"] = self.number(
                data["max_unexpected_share"], where, share=True
            )
        elif "values" in fields:
            fields["max_unexpected_share"] = 0.0
        for comparator in ("drift", "skew"):
            if data.get(comparator) is not None:
                fields[comparator], fields[f"{comparator}_source"] = self.comparator(
                    data[comparator], f"{path}.{comparator}", comparator, column_type
                )
        return ColumnSchema(**fields)

    def values(self, value: Any, path: str, name: str, column_type: str) -> tuple[str, ...]:
        if column_type != "string":
            self._raise(path, f"only string columns have values; {name} is {column_type}")
        if not isinstance(value, list):
            self._raise(path, f"got {_what(value)}; expected a list of values")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self._raise(
                    f"{path}[{i}]", f"got {_what(item)}; expected text (quote numbers: '1')"
                )
            if item in seen:
                self._raise(f"{path}[{i}]", f"{item!r} is listed twice")
            seen.add(item)
        return tuple(value)

    def schema(self, data: Any) -> DataSchema:
        if not isinstance(data, Mapping):
            self._raise("", f"got {_what(data)}; expected a mapping with key columns")
        for key in data:
            if key != "columns":
                self._raise(str(key), "unknown key; valid keys are columns")
        if "columns" not in data:
            self._raise("columns", "required key 'columns' is missing")
        columns = data["columns"]
        if columns is None:
            columns = {}
        if not isinstance(columns, Mapping):
            self._raise(
                "columns", f"got {_what(columns)}; expected a mapping of column name to keys"
            )
        parsed: dict[str, ColumnSchema] = {}
        for name, column in columns.items():
            if not isinstance(name, str):
                self._raise("columns", f"got column name {name!r}; expected text")
            parsed[name] = self.column(name, column, f"columns.{name}")
        return DataSchema(parsed)


def parse_schema(data: Any, *, origin: str) -> DataSchema:
    """Builds a :class:`DataSchema` from the mapping YAML gave, strictly.

    Args:
        data: ``yaml.safe_load`` of the schema file.
        origin: Where it came from (a file name), named in errors.

    Raises:
        SpecError: naming ``origin`` and the YAML path, on an unknown key (listing the
            valid ones), a missing ``type``, a value of the wrong type, a share (presence,
            max_unexpected_share, threshold) outside 0 to 1, ``min`` above ``max``, a key
            that does not apply to the column's type, or a measure not valid for it.
    """
    return _Parser(origin).schema(data)


# --- writing ---------------------------------------------------------------------------------

_HELP = """\
One entry per column. Edit a value to change what is accepted; delete a key to stop
checking it (drift and skew then use the run's default thresholds).
  type      the column's type; data of another type is a type_change anomaly.
  presence  least share of rows (0 to 1) where the column is not null; 1.0 = never
            null. Below it: low_presence.
  min, max  the range values must stay in; outside it: out_of_range. Inferred as the
            observed range (TFDV infers none): widen them to what is plausible.
  values    the expected values of a string column; others are unexpected_values.
  max_unexpected_share
            share of values (0 to 1) outside `values` tolerated; 0.0 = none.
  drift     {measure: threshold}: largest distance between this run and the baseline
            run before the column counts as drifted. l_infinity (categorical columns):
            the largest difference in any value's share, 0 to 1. jensen_shannon
            (numeric columns): the Jensen-Shannon divergence of the two histograms,
            0 (same) to 1 (disjoint). A threshold of 1 never fires. Add
            `source: quantiles` to compare 10 equal-count buckets instead of 10
            equal-width ones, which a few extreme values stretch (TFDV's
            source QUANTILES).
  skew      {measure: threshold}: the same between splits (train vs eval) or between
            training data and logged serving requests."""


def _scalar(value: Any) -> str:
    """One YAML scalar, quoted where YAML would read it as something else."""
    text = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=1 << 30)
    return text.strip()[1:-1]


def schema_to_yaml(schema: DataSchema, *, header: str) -> str:
    """The schema as commented YAML that :func:`parse_schema` reads back.

    Args:
        schema: The schema to write.
        header: Text for the comment at the top (e.g. where it was inferred from); one
            comment line per line.

    Returns:
        The file's text: the header, a comment explaining each key and threshold, then
        ``columns:`` with one block per column.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("#")
    lines += [f"# {line}".rstrip() for line in _HELP.splitlines()]
    lines.append("columns:" if schema.columns else "columns: {}")
    for name, column in schema.columns.items():
        lines.append(f"  {_scalar(name)}:")
        lines.append(f"    type: {_scalar(column.type)}")
        for key in ("presence", "min", "max"):
            value = getattr(column, key)
            if value is not None:
                lines.append(f"    {key}: {_scalar(value)}")
        if column.values is not None:
            if column.values:
                lines.append("    values:")
                lines += [f"      - {_scalar(v)}" for v in column.values]
            else:
                lines.append("    values: []")
        if column.max_unexpected_share is not None:
            lines.append(f"    max_unexpected_share: {_scalar(column.max_unexpected_share)}")
        for key in ("drift", "skew"):
            comparator = getattr(column, key)
            if comparator is not None:
                measure, threshold = comparator
                source = getattr(column, f"{key}_source")
                extra = f", source: {source}" if source != STANDARD else ""
                lines.append(f"    {key}: {{{measure}: {_scalar(threshold)}{extra}}}")
    return "\n".join(lines) + "\n"


# --- inference -------------------------------------------------------------------------------


def _presence(col_stats: Mapping[str, Any]) -> float | None:
    count, missing = int(col_stats.get("count") or 0), int(col_stats.get("missing") or 0)
    if count + missing == 0:
        return None
    if missing == 0:
        return 1.0
    scale = 10**_PRESENCE_DECIMALS
    return math.floor(count / (count + missing) * scale) / scale


def infer_schema(
    columns_stats: Mapping[str, Mapping[str, Any]],
    *,
    thresholds: Mapping[str, float] | None = None,
) -> DataSchema:
    """A schema describing the statistics of a run's columns (see the module docstring).

    Args:
        columns_stats: Column -> ``stats.json`` entry (e.g. ``stats["input"]["all"]``).
        thresholds: Drift and skew threshold per measure; :data:`DEFAULT_THRESHOLDS` by
            default.

    Returns:
        One :class:`ColumnSchema` per column, in the statistics' order.
    """
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    columns: dict[str, ColumnSchema] = {}
    for name, col_stats in columns_stats.items():
        column_type = str(col_stats.get("type"))
        fields: dict[str, Any] = {"type": column_type, "presence": _presence(col_stats)}
        kind = column_kind(column_type)
        if kind == "numeric":
            for bound in ("min", "max"):
                if col_stats.get(bound) is not None:
                    fields[bound] = float(col_stats[bound])
        ranked = col_stats.get("rank_histogram")
        if column_type == "string" and ranked and len(ranked) <= MAX_STRING_DOMAIN_SIZE:
            fields["values"] = tuple(sorted(str(item["value"]) for item in ranked))
            fields["max_unexpected_share"] = 0.0
        measure = default_measure(column_type)
        if measure is not None:
            fields["drift"] = (measure, float(limits[measure]))
            fields["skew"] = (measure, float(limits[measure]))
        columns[name] = ColumnSchema(**fields)
    return DataSchema(columns)
