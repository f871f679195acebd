"""Dataset statistics: exact outputs, NumPy reference, merge equals single pass."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import pathlib
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.ops.stats import DatasetStats, standard_histogram, stats_to_json


def run(stats: DatasetStats, *batches: pa.RecordBatch) -> dict:
    acc = stats.create_accumulator()
    for b in batches:
        acc = stats.add_batch(acc, b)
    return stats.extract_output(acc)


def run_merged(stats: DatasetStats, *batches: pa.RecordBatch) -> dict:
    """One accumulator per batch, pickled (as Beam moves them), then merged."""
    accs = []
    for b in batches:
        acc = stats.add_batch(stats.create_accumulator(), b)
        accs.append(pickle.loads(pickle.dumps(acc)))
    return stats.extract_output(stats.merge_accumulators(accs))


def test_exact_output_for_each_column_kind() -> None:
    b = pa.record_batch(
        {
            "i": pa.array([3, 1, None, 3, 2], pa.int64()),
            "f": pa.array([0.5, math.nan, None, 1.5, 1.0], pa.float32()),
            "s": pa.array(["b", "", None, "a", "b"]),
            "flag": pa.array([True, False, True, None, True]),
            "day": pa.array([dt.date(2020, 1, 2)] * 4 + [None], pa.date32()),
            "__line": pa.array([1, 2, 3, 4, 5], pa.int64()),
        }
    )
    out = run(DatasetStats(b.schema, top_k=2, quantiles=4), b)
    assert list(out) == ["i", "f", "s", "flag", "day"]
    assert out["i"] == {
        "type": "int64",
        "count": 4,
        "missing": 1,
        "mean": 2.25,
        "std": pytest.approx(math.sqrt(0.6875)),
        "min": 1,
        "max": 3,
        "quantiles": [1, 1, 2, 3, 3],
        "top_values": [{"value": 3, "count": 2}, {"value": 1, "count": 1}],
        # Worked out in test_histogram_of_four_integers_by_hand.
        "histogram": {
            "boundaries": pytest.approx([1 + 0.2 * k for k in range(11)]),
            "counts": pytest.approx(
                [1.0008, 0.0008, 0.0008, 0.0008, 0.9968] + [0.4 / 501] * 4 + [1000.4 / 501]
            ),
        },
        # Every 100th of those quantiles: 1 1 1 2 2 3 3 3 3 3 3 (cumulative 1 1 1 2 2 4 ...).
        # (1, 2) and (2, 2) share 1 value, (2, 3) and the five (3, 3) share 2, the two
        # (1, 1) share the minimum's count.
        "quantiles_histogram": {
            "boundaries": [1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
            "counts": pytest.approx([0.5] * 4 + [1 / 3] * 6),
        },
    }
    assert out["f"] == {
        "type": "float32",
        "count": 4,
        "missing": 1,
        "non_finite": 1,
        "mean": 1.0,
        "std": pytest.approx(math.sqrt(1 / 6)),
        "min": 0.5,
        "max": 1.5,
        "quantiles": [0.5, 0.5, 1.0, 1.5, 1.5],
        "top_values": [{"value": 0.5, "count": 1}, {"value": 1.0, "count": 1}],
        # 1000 quantiles of 0.5, 1.0, 1.5: 334 x 0.5, 333 x 1.0, 334 x 1.5. The buckets
        # 0.5-1.0 and 1.0-1.5 hold one value each, spread over the 333 and 334 quantile
        # buckets ending at 1.0 and 1.5; the minimum's count goes to the 333 point buckets
        # at 0.5 (all in the first interval).
        "histogram": {
            "boundaries": pytest.approx([0.5 + 0.1 * k for k in range(11)]),
            "counts": pytest.approx(
                [1 + 0.2 / 333] + [0.2 / 333] * 3 + [332.2 / 333] + [0.2 / 334] * 4 + [333.2 / 334]
            ),
            "nan": 1,
        },
        # Quantiles 0.5 x 4, 1.0 x 3, 1.5 x 4 (cumulative 1, 2, 3).
        "quantiles_histogram": {
            "boundaries": [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5],
            "counts": pytest.approx([1 / 3] * 6 + [0.25] * 4),
            "nan": 1,
        },
    }
    assert out["s"] == {
        "type": "string",
        "count": 4,
        "missing": 1,
        "empty": 1,
        "top_values": [{"value": "b", "count": 2}, {"value": "", "count": 1}],
        "rank_histogram": [
            {"value": "b", "count": 2},
            {"value": "", "count": 1},
            {"value": "a", "count": 1},
        ],
    }
    assert out["flag"] == {
        "type": "bool",
        "count": 4,
        "missing": 1,
        "top_values": [{"value": True, "count": 3}, {"value": False, "count": 1}],
        "rank_histogram": [{"value": True, "count": 3}, {"value": False, "count": 1}],
    }
    assert out["day"] == {
        "type": "date",
        "count": 4,
        "missing": 1,
        "top_values": [{"value": "2020-01-02", "count": 4}],
        "rank_histogram": [{"value": "2020-01-02", "count": 4}],
    }


def _strict_loads(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_are_counted_and_left_out() -> None:
    schema = pa.schema([("x", pa.float64()), ("e", pa.int64())])
    b = pa.record_batch(
        [
            pa.array([math.inf, 1.0, math.nan, -math.inf, 3.0, None]),
            pa.array([None] * 6, pa.int64()),
        ],
        schema=schema,
    )
    out = run(DatasetStats(schema, quantiles=2), b)
    assert out["x"] == {
        "type": "float64",
        "count": 5,
        "missing": 1,
        "non_finite": 3,
        "mean": 2.0,
        "std": 1.0,
        "min": 1.0,
        "max": 3.0,
        "quantiles": [1.0, 1.0, 3.0],
        "top_values": [{"value": 1.0, "count": 1}, {"value": 3.0, "count": 1}],
        # TFDV's sketch holds -inf, 1, 3, inf: quantiles 250 x -inf, 250 x 1, 250 x 3,
        # 251 x inf. The infinities are stripped and counted apart; the bucket 1-3 (one
        # value) is shared by the 251 quantile buckets ending at 3, 0.1 of it per interval.
        "histogram": {
            "boundaries": pytest.approx([1 + 0.2 * k for k in range(11)]),
            "counts": pytest.approx([1 + 0.1 / 251] + [0.1 / 251] * 8 + [250.1 / 251]),
            "nan": 1,
            "neg_inf": 1,
            "pos_inf": 1,
        },
        # Quantiles of the finite values: 1 x 5, 3 x 6 (cumulative 1, then 2). The four
        # point buckets (1, 1) share the minimum's count, the six ending at 3 share the
        # one value above it; the infinities are counted apart, as they are.
        "quantiles_histogram": {
            "boundaries": [1.0] * 5 + [3.0] * 6,
            "counts": pytest.approx([0.25] * 4 + [1 / 6] * 6),
            "nan": 1,
            "neg_inf": 1,
            "pos_inf": 1,
        },
    }
    assert out["e"] == {
        "type": "int64",
        "count": 0,
        "missing": 6,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "quantiles": [],
        "top_values": [],
    }
    text = stats_to_json(out)
    assert _strict_loads(text) == out


def test_statistics_beyond_float64_are_null_and_strict_json() -> None:
    schema = pa.schema([("x", pa.float64())])
    b = pa.record_batch([pa.array([-1e300, 1e300, 1e300])], schema=schema)
    out = run(DatasetStats(schema), b)
    assert out["x"]["std"] is None and out["x"]["mean"] == pytest.approx(1e300 / 3)
    assert _strict_loads(stats_to_json(out)) == out


def test_stats_to_json_replaces_nan_everywhere() -> None:
    assert json.loads(stats_to_json({"a": {"v": [math.nan, 1.0, -math.inf]}})) == {
        "a": {"v": [None, 1.0, None]}
    }


def test_top_values_omitted_for_many_distinct_numbers() -> None:
    schema = pa.schema([("n", pa.int64()), ("s", pa.string())])
    b = pa.record_batch(
        [pa.array(list(range(150))), pa.array([f"v{i % 120}" for i in range(150)])],
        schema=schema,
    )
    out = run_merged(DatasetStats(schema, top_k=3), b.slice(0, 50), b.slice(50))
    assert "top_values" not in out["n"]
    # Strings always keep top values; ties by value.
    assert out["s"]["top_values"] == [
        {"value": "v0", "count": 2},
        {"value": "v1", "count": 2},
        {"value": "v10", "count": 2},
    ]
    small = run(DatasetStats(schema, max_distinct=150), b)
    assert len(small["n"]["top_values"]) == 10


def test_missing_schema_column_is_an_error() -> None:
    stats = DatasetStats(pa.schema([("a", pa.int64())]))
    with pytest.raises(ValueError, match="column 'a' of the stats schema is not in the batch"):
        stats.add_batch(stats.create_accumulator(), pa.record_batch({"b": [1]}))


@pytest.mark.parametrize("kwargs", [{"top_k": -1}, {"quantiles": 0}, {"max_distinct": -2}])
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        DatasetStats(pa.schema([("a", pa.int64())]), **kwargs)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(
    st.lists(st.one_of(st.none(), finite), min_size=0, max_size=300),
    st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", ""])), min_size=0, max_size=300),
    st.integers(1, 4),
)
@settings(max_examples=60, deadline=None)
def test_matches_numpy_and_merge_equals_single_pass(
    floats: list[float | None], strings: list[str | None], pieces: int
) -> None:
    n = min(len(floats), len(strings))
    floats, strings = floats[:n], strings[:n]
    schema = pa.schema([("x", pa.float64()), ("s", pa.string())])
    whole = pa.record_batch([pa.array(floats, pa.float64()), pa.array(strings)], schema=schema)
    stats = DatasetStats(schema, top_k=3, quantiles=4)
    single = run(stats, whole)
    cuts = np.linspace(0, n, pieces + 1).astype(int)
    parts = [whole.slice(a, b - a) for a, b in itertools.pairwise(cuts)]
    merged = run_merged(stats, *parts)

    values = np.array([v for v in floats if v is not None], dtype=np.float64)
    x = single["x"]
    assert (x["count"], x["missing"], x["non_finite"]) == (len(values), n - len(values), 0)
    if len(values):
        assert x["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-6)
        assert x["std"] == pytest.approx(values.std(), rel=1e-6, abs=1e-6)
        assert (x["min"], x["max"]) == (values.min(), values.max())
        # Up to the summary's size every value is kept: quantiles are exact (lower quantile).
        ordered = np.sort(values + 0.0)
        expected_q = [
            float(ordered[max(math.ceil(r * len(values)) - 1, 0)]) for r in (0, 0.25, 0.5, 0.75, 1)
        ]
        assert x["quantiles"] == expected_q
    present = [s for s in strings if s is not None]
    counts = {v: present.count(v) for v in set(present)}
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert single["s"] == {
        "type": "string",
        "count": len(present),
        "missing": n - len(present),
        "empty": present.count(""),
        "top_values": [{"value": v, "count": c} for v, c in top],
        "rank_histogram": [
            {"value": v, "count": c}
            for v, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }

    # Merging partial accumulators gives exactly the single pass's result: exact sums,
    # order-independent summaries.
    assert merged == single


@pytest.mark.slow
def test_taxi_file_against_numpy_and_counter(taxi_csv: pathlib.Path) -> None:
    import collections

    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        taxi_csv,
        convert_options=pacsv.ConvertOptions(
            column_types={"fare": pa.float32(), "company": pa.string()},
            strings_can_be_null=True,
        ),
    )
    assert table.num_rows == 15002
    batches = table.to_batches(max_chunksize=1000)
    names = ["fare", "company", "trip_start_hour"]
    stats = DatasetStats(pa.schema([table.schema.field(n) for n in names]))
    out = run_merged(stats, *batches)
    single = run(stats, *batches)
    backwards = run_merged(stats, *batches[::-1])
    # Deterministic: the same numbers whatever the bundling and merge order.
    assert out == single == backwards
    fare_sorted = np.sort(table.column("fare").drop_null().to_numpy().astype(np.float64))
    quantiles = out["fare"]["quantiles"]
    assert len(quantiles) == 11
    assert (quantiles[0], quantiles[-1]) == (fare_sorted[0], fare_sorted[-1])
    # Few distinct fares: the quantiles are exact lower quantiles.
    n = len(fare_sorted)
    assert quantiles[1:-1] == [fare_sorted[math.ceil(i * n / 10) - 1] for i in range(1, 10)]
    fare = table.column("fare").drop_null().to_numpy().astype(np.float64)
    assert out["fare"]["count"] == len(fare)
    assert out["fare"]["missing"] == table.num_rows - len(fare)
    assert out["fare"]["mean"] == pytest.approx(fare.mean(), rel=1e-12)
    assert out["fare"]["std"] == pytest.approx(fare.std(), rel=1e-9)
    assert (out["fare"]["min"], out["fare"]["max"]) == (fare.min(), fare.max())
    companies = collections.Counter(v for v in table.column("company").to_pylist() if v is not None)
    top = sorted(companies.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert out["company"]["top_values"] == [{"value": v, "count": c} for v, c in top]
    hours = collections.Counter(table.column("trip_start_hour").to_pylist())
    assert sorted((d["value"], d["count"]) for d in out["trip_start_hour"]["top_values"]) == sorted(
        sorted(hours.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    )


@pytest.mark.parametrize("split_at", [0, 30, 60, 90])
def test_top_values_stop_past_max_distinct_without_losing_quantiles(split_at: int) -> None:
    # 120 distinct values: the first accumulator stays under max_distinct, the merge goes
    # over it; quantiles must be those of all the data either way.
    values = np.repeat(np.arange(120, dtype=np.int64), 5)
    rng = np.random.default_rng(split_at)
    rng.shuffle(values)
    schema = pa.schema([("v", pa.int64())])
    stats = DatasetStats(schema, quantiles=4)
    cut = split_at * 5
    left = stats.add_batch(
        stats.create_accumulator(), pa.record_batch([pa.array(values[:cut])], schema=schema)
    )
    right = stats.add_batch(
        stats.create_accumulator(), pa.record_batch([pa.array(values[cut:])], schema=schema)
    )
    out = stats.extract_output(stats.merge_accumulators([left, right]))["v"]
    assert out["count"] == 600
    assert out["quantiles"] == [0, 29, 59, 89, 119]
    assert "top_values" not in out


def test_few_distinct_values_give_exact_quantiles() -> None:
    schema = pa.schema([("v", pa.int64())])
    stats = DatasetStats(schema, quantiles=4)
    acc = stats.add_batch(
        stats.create_accumulator(),
        pa.record_batch([pa.array([1, 1, 1, 2, 3, 3, 9, 9])], schema=schema),
    )
    assert stats.extract_output(acc)["v"]["quantiles"] == [1, 1, 2, 3, 9]


def test_quantiles_past_the_exact_size_are_bounded_and_order_independent() -> None:
    rng = np.random.default_rng(5)
    values = rng.lognormal(size=60_000)
    schema = pa.schema([("v", pa.float64())])
    stats = DatasetStats(schema, quantiles=4)
    batches = [pa.record_batch([pa.array(p)], schema=schema) for p in np.array_split(values, 6)]
    out = run_merged(stats, *batches)
    assert out == run_merged(stats, *batches[::-1]) == run(stats, *batches)
    ordered = np.sort(values)
    quantiles = out["v"]["quantiles"]
    assert (quantiles[0], quantiles[-1]) == (ordered[0], ordered[-1])
    for i, q in enumerate(quantiles[1:-1], start=1):
        exact = ordered[math.ceil(i * len(values) / 4) - 1]
        assert abs(q - exact) <= 2.0**-8 * exact


def test_histogram_of_four_integers_by_hand() -> None:
    # Values 1, 2, 3, 3. The 1000 quantiles (smallest v with #(<= v) > i * 4 / 1000) are
    # 250 x 1, 250 x 2 and 501 x 3, with cumulative counts 1, 2 and 4. Quantile buckets:
    # 249 x (1, 1), one (1, 2) holding 1 value, 249 x (2, 2), one (2, 3) holding 2 values,
    # 500 x (3, 3). Buckets sharing a high bound share their count: (1, 2) and the (2, 2)
    # get 1/250 each, (2, 3) and the (3, 3) get 2/501 each; the minimum's count 1 goes to
    # the 249 buckets (1, 1). Equal-width intervals of 0.2 from 1 to 3 then take 0.2 of
    # (1, 2) or (2, 3) each, plus the point buckets they contain: (1, 1) in the first
    # (the first interval takes points on its low bound), (2, 2) in [1.8, 2.0] (later
    # intervals leave points on their low bound to the previous one), (3, 3) in the last.
    out = standard_histogram(np.array([1.0, 2.0, 3.0]), np.array([1, 2, 4]), 1.0, 3.0)
    assert out == {
        "boundaries": pytest.approx([1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0]),
        "counts": pytest.approx(
            [1 + 0.2 / 250, 0.2 / 250, 0.2 / 250, 0.2 / 250, 0.2 / 250 + 249 / 250]
            + [0.4 / 501] * 4
            + [0.4 / 501 + 1000 / 501]
        ),
    }
    assert sum(out["counts"]) == pytest.approx(4)


def test_histogram_of_a_constant_column_is_one_point_bucket() -> None:
    schema = pa.schema([("c", pa.float64()), ("k", pa.int32())])
    b = pa.record_batch(
        [pa.array([2.5] * 7), pa.array([4] * 6 + [None], pa.int32())], schema=schema
    )
    out = run(DatasetStats(schema), b)
    assert out["c"]["histogram"] == {"boundaries": [2.5, 2.5], "counts": [pytest.approx(7)]}
    assert out["k"]["histogram"] == {"boundaries": [4.0, 4.0], "counts": [pytest.approx(6)]}


def test_histogram_absent_without_finite_values_or_when_the_width_overflows() -> None:
    schema = pa.schema([("x", pa.float64()), ("wide", pa.float64())])
    b = pa.record_batch(
        [pa.array([math.nan, math.inf, None]), pa.array([-1e308, 1e308, 0.0])], schema=schema
    )
    out = run(DatasetStats(schema), b)
    assert "histogram" not in out["x"]
    # TFDV bails out too when the bucket boundaries overflow float64.
    assert "histogram" not in out["wide"]
    assert standard_histogram(np.zeros(0), np.zeros(0), math.nan, math.nan) is None


def test_histogram_counts_non_finite_values_across_merges() -> None:
    schema = pa.schema([("x", pa.float32())])
    values = [1.0, math.inf, 2.0, math.nan, -math.inf, math.inf, 3.0, 4.0]
    b = pa.record_batch([pa.array(values, pa.float32())], schema=schema)
    stats = DatasetStats(schema)
    single = run(stats, b)
    merged = run_merged(stats, b.slice(0, 3), b.slice(3, 2), b.slice(5))
    assert merged == single
    hist = single["x"]["histogram"]
    assert (hist["nan"], hist["neg_inf"], hist["pos_inf"]) == (1, 1, 2)
    assert hist["boundaries"] == pytest.approx([1 + 0.3 * k for k in range(11)])
    assert sum(hist["counts"]) == pytest.approx(4)


def test_quantiles_histogram_counts_infinities_exactly() -> None:
    # A tenth of the values each inf, -inf and NaN: the end buckets hold finite values only.
    finite = [float(v) for v in range(1, 211)]
    values = finite + [math.inf] * 30 + [-math.inf] * 30 + [math.nan] * 30
    schema = pa.schema([("x", pa.float64())])
    b = pa.record_batch([pa.array(values)], schema=schema)
    hist = run(DatasetStats(schema), b)["x"]["quantiles_histogram"]
    assert (hist["neg_inf"], hist["pos_inf"], hist["nan"]) == (30, 30, 30)
    assert sum(hist["counts"]) == pytest.approx(210)
    assert hist["boundaries"] == [
        1.0,
        22.0,
        43.0,
        64.0,
        85.0,
        106.0,
        127.0,
        148.0,
        169.0,
        190.0,
        210.0,
    ]
    assert hist["counts"] == pytest.approx([22.0] + [21.0] * 8 + [20.0])
    no_infinities = run(DatasetStats(schema), pa.record_batch([pa.array(finite)], schema=schema))
    assert no_infinities["x"]["quantiles_histogram"] == {
        "boundaries": hist["boundaries"],
        "counts": hist["counts"],
    }


def test_equal_width_buckets_of_many_distinct_values() -> None:
    # 0..1999: 1000 quantiles land on every other value, so each bucket of width 199.9
    # holds its share of a uniform spread: 199.9 values, the first one more (the minimum).
    out = standard_histogram(np.arange(2000.0), np.arange(1, 2001), 0.0, 1999.0)
    assert out is not None
    assert out["boundaries"] == pytest.approx([199.9 * k for k in range(11)])
    assert out["counts"] == pytest.approx([200.9] + [199.9] * 8 + [199.9], abs=1e-6)


def test_rank_histogram_keeps_1000_values_ties_by_value() -> None:
    schema = pa.schema([("s", pa.string()), ("d", pa.date32())])
    strings = [f"v{i:04d}" for i in range(1200)] + ["v1100"] * 2
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=i % 300) for i in range(1202)]
    b = pa.record_batch([pa.array(strings), pa.array(days, pa.date32())], schema=schema)
    out = run_merged(DatasetStats(schema, top_k=2), b.slice(0, 600), b.slice(600))
    rank = out["s"]["rank_histogram"]
    assert len(rank) == 1000
    assert rank[:3] == [
        {"value": "v1100", "count": 3},
        {"value": "v0000", "count": 1},
        {"value": "v0001", "count": 1},
    ]
    assert rank[-1] == {"value": "v0998", "count": 1}
    # 300 distinct days: past max_distinct (100) there are no top values, but the rank
    # histogram is exact.
    assert "top_values" not in out["d"]
    assert out["d"]["rank_histogram"][:2] == [
        {"value": "2020-01-01", "count": 5},
        {"value": "2020-01-02", "count": 5},
    ]
    assert len(out["d"]["rank_histogram"]) == 300
    assert sum(r["count"] for r in out["d"]["rank_histogram"]) == 1202
