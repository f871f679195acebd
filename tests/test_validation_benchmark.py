"""Smoke tests of the validation benchmark against TFDV: the data shift, the comparison, a run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from benchmarks import data
from benchmarks import validation_vs_tfdv as bench

ROWS = 2_000


def _table(**columns: list[str]) -> pa.Table:
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def test_shift_changes_what_it_says_and_keeps_empties() -> None:
    rows = 21
    table = _table(
        fare=["10.0", ""] + ["3.33"] * (rows - 2),
        trip_seconds=["100", "", "7"] + ["10"] * (rows - 3),
        trip_start_timestamp=["1400000000"] * rows,
        payment_type=["Cash"] * rows,
        company=["Choice Taxi Association", "Dispatch Taxi Affiliation", "Other", ""]
        + ["Other"] * (rows - 4),
        tips=["1.5"] * rows,
    )

    shifted = bench.shift(table).to_pydict()

    assert shifted["fare"][:3] == ["15", "", "5"]  # 3.33 * 1.5 = 4.995, rounded to cents
    # Every third row (0, 3, 6, ...) 30% longer; an empty field stays empty.
    assert shifted["trip_seconds"][:7] == ["130", "", "7", "13", "10", "10", "13"]
    year_later = str(1_400_000_000 + 365 * 86_400)
    assert shifted["trip_start_timestamp"][:5] == [year_later, *["1400000000"] * 3, year_later]
    assert [i for i, v in enumerate(shifted["payment_type"]) if v == "Mobile"] == [0, 20]
    assert shifted["company"][:5] == ["", "", "Other", "", "Other"]
    assert shifted["tips"] == table.column("tips").to_pylist()


def test_write_shifted_round_trips_through_csv(tmp_path: Path) -> None:
    source = data.generate(50, seed=2, work_dir=tmp_path)
    target = bench.write_shifted(source, tmp_path / "shifted" / "current.csv")

    written = data.read_source(target)
    assert written.column_names == data.read_source(source).column_names
    assert written.to_pydict() == bench.shift(data.read_source(source)).to_pydict()


def test_compare_maps_tfdv_kinds_and_measures_differences() -> None:
    def feature(value: float | None, *kinds: str) -> dict:
        drift = None if value is None else {"measure": "l_infinity", "value": value}
        return {"anomalies": list(kinds), "drift": drift}

    ours = {
        "a": feature(0.25, "drift"),
        "b": feature(0.05, "unexpected_values"),
        "c": feature(0.0),
        "d": {"anomalies": [], "drift": {"measure": "jensen_shannon", "value": None}},
    }
    tfdv = {
        "a": feature(0.2500004, "COMPARATOR_L_INFTY_HIGH"),
        "b": feature(0.05, "ENUM_TYPE_UNEXPECTED_STRING_VALUES"),
        "c": feature(0.0),
        "d": feature(None),
    }

    result = bench.compare(ours, tfdv)

    assert result["max_abs_difference"] == pytest.approx(4e-7)
    assert result["drifted"] == {"beamforge": ["a"], "tfdv": ["a"]}
    assert (result["anomalies"], result["measured_by_one"], result["same"]) == ({}, [], True)

    tfdv["c"] = feature(0.3, "COMPARATOR_L_INFTY_HIGH", "SCHEMA_NEW_COLUMN")
    tfdv["d"] = feature(0.0)
    result = bench.compare(ours, tfdv)
    assert result["anomalies"] == {"c": {"beamforge": [], "tfdv": ["drift", "new_column"]}}
    assert result["measured_by_one"] == ["d"]
    assert result["same"] is False


def test_tfdv_like_schema_drops_what_tfdv_does_not_infer(tmp_path: Path) -> None:
    baseline = bench.stats_with_arrow(
        data.generate(200, seed=4, work_dir=tmp_path), bench.taxi_schema()
    )

    schema = bench.tfdv_like_schema(baseline, 0.2, 0.3)

    fare, company = schema.columns["fare"], schema.columns["company"]
    assert (fare.min, fare.max, fare.drift) == (None, None, ("jensen_shannon", 0.3))
    assert company.drift == ("l_infinity", 0.2)
    # Never null in the baseline: presence 1.0, as TFDV's min_fraction; otherwise unset.
    assert schema.columns["trip_start_timestamp"].presence == 1.0
    assert company.presence is None and baseline["company"]["missing"] > 0
    assert company.values is not None and company.max_unexpected_share == 0.0


def test_beamforge_sides_agree_with_each_other(tmp_path: Path) -> None:
    """The Beam pipeline and the plain pyarrow run compute the same statistics."""
    baseline = data.generate(ROWS, seed=5, work_dir=tmp_path)
    current = bench.write_shifted(baseline, tmp_path / "current.csv")

    on_beam, beam_baseline, _ = bench.beamforge_side(baseline, current, beam=True)
    plain, arrow_baseline, _ = bench.beamforge_side(baseline, current, beam=False)

    assert on_beam["features"] == plain["features"]
    assert on_beam["rows"] == {"baseline": ROWS, "current": ROWS}
    assert json.loads(json.dumps(arrow_baseline)) == json.loads(json.dumps(beam_baseline))
    assert on_beam["features"]["fare"]["anomalies"] == ["drift"]
    assert on_beam["features"]["payment_type"]["anomalies"] == ["unexpected_values"]


@pytest.mark.slow
def test_smoke_every_system_at_small_n(tmp_path: Path) -> None:
    """The whole benchmark at a small N: every system runs and beamforge agrees with TFDV."""
    results_dir = tmp_path / "results"
    code = bench.main(
        [
            *["--rows", str(ROWS), "--results-dir", str(results_dir)],
            *["--work-dir", str(tmp_path / "work"), "--timeout", "600"],
        ]
    )

    assert code == 0
    report = json.loads((results_dir / "validation.json").read_text())
    assert [(r["system"], r["rows"], r["status"]) for r in report["results"]] == [
        ("beamforge", ROWS, "ok"),
        ("beamforge_arrow", ROWS, "ok"),
        ("tfdv", ROWS, "ok"),
    ]
    for result in report["results"][:2]:
        agreement = result["agreement"]
        assert agreement["same"] is True, agreement
        assert agreement["drifted"]["beamforge"] == agreement["drifted"]["tfdv"]
        assert "company" in agreement["drifted"]["tfdv"]
        assert agreement["max_abs_difference"] <= 1e-4
        assert result["timings"]["stats"] > 0
    assert report["results"][2]["agreement"] is None
    assert report["results"][2]["timings"]["baseline_stats"] > 0
    # Ratios are reported, never asserted: timing belongs to benchmarks, not tests.
    assert [(r["beamforge"], r["versus"]) for r in report["ratios"]] == [
        ("beamforge", "tfdv"),
        ("beamforge_arrow", "tfdv"),
    ]
    assert all(r["speedup"] > 0 and r["cpu_speedup"] > 0 for r in report["ratios"])
    assert all(r["tree_peak_rss_mb"] > 50 for r in report["results"])
    assert report["harness_rss_mb"] > 0
    md = (results_dir / "validation.md").read_text()
    assert f"## {ROWS:,} rows" in md
    assert "| TFDV 1.16 (generate_statistics_from_csv" in md
    assert "same anomalies" in md and "DIFFERENT" not in md
