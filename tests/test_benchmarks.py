"""Smoke tests of the benchmark harness: the data generator, the NumPy limit and the runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import data, run
from benchmarks.competitors import OUTPUT_NAMES, numpy_taxi

ROWS = 2_000


@pytest.fixture(scope="module")
def source() -> pa.Table:
    return data.read_source()


def test_generate_is_deterministic_by_seed(tmp_path: Path) -> None:
    first = data.generate(ROWS, seed=7, work_dir=tmp_path / "a")
    again = data.generate(ROWS, seed=7, work_dir=tmp_path / "b")
    other = data.generate(ROWS, seed=8, work_dir=tmp_path / "c")

    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_generate_keeps_header_rows_and_categories(tmp_path: Path, source: pa.Table) -> None:
    path = data.generate(ROWS, seed=1, work_dir=tmp_path)
    lines = path.read_text().splitlines()
    header = data.SOURCE.open().readline().strip()

    assert lines[0] == header
    assert len(lines) == ROWS + 1
    scaled = data.read_source(path)
    # Categories are kept as drawn: nothing new appears.
    for name in ["payment_type", "company", "trip_start_hour", "pickup_census_tract"]:
        assert set(scaled.column(name).to_pylist()) <= set(source.column(name).to_pylist())


def test_generate_uses_the_cache(tmp_path: Path) -> None:
    path = data.generate(ROWS, seed=3, work_dir=tmp_path)
    path.write_text("cached\n")

    assert data.generate(ROWS, seed=3, work_dir=tmp_path).read_text() == "cached\n"


def test_scale_jitters_floats_within_one_percent(source: pa.Table) -> None:
    scaled = data.scale(source, 5_000, seed=5)
    # Re-draw the same rows: the first random call of scale() is the row draw.
    picked = source.take(
        pa.array(np.random.default_rng(5).integers(0, source.num_rows, size=5_000))
    )
    for name in ["fare", "trip_miles", "pickup_latitude"]:
        before = picked.column(name).to_pylist()
        after = scaled.column(name).to_pylist()
        assert [b == "" for b in before] == [a == "" for a in after]
        b = np.array([float(v) for v in before if v != ""])
        a = np.array([float(v) for v in after if v != ""])
        decimals = data.FLOAT_JITTER[name][1]
        assert np.all(np.abs(a - b) <= np.abs(b) * 0.01 + 10.0**-decimals)
        assert not np.array_equal(a, b)


def test_csv_rendering_refuses_values_needing_quotes() -> None:
    table = pa.table({"a": ["x,y"]})
    with pytest.raises(ValueError, match="column a"):
        data.to_csv_bytes(table)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcxyz ", max_size=5),
            st.integers(min_value=-(10**6), max_value=10**6),
        ),
        max_size=20,
    )
)
def test_csv_rendering_round_trips(rows: list[tuple[str, int]]) -> None:
    table = pa.table(
        {"s": [s for s, _ in rows], "n": [str(n) for _, n in rows]},
        schema=pa.schema([("s", pa.string()), ("n", pa.string())]),
    )
    text = data.to_csv_bytes(table)
    parsed = pa_csv.read_csv(
        pa.BufferReader(text),
        convert_options=pa_csv.ConvertOptions(
            column_types={"s": pa.string(), "n": pa.string()}, strings_can_be_null=False
        ),
    )
    assert parsed.to_pylist() == table.to_pylist()


def test_vocabulary_order_and_oov() -> None:
    values = pa.array(["b", "a", "a", "c", "c", "", "", "", "d"])
    vocab = numpy_taxi.vocabulary(values, top_k=3)
    # Counts a=2, c=2, b=1, d=1; ties by descending bytes; '' left out; top 3 kept.
    assert vocab == ["c", "a", "d"]
    ids = numpy_taxi.apply_vocabulary(values, vocab, num_oov_buckets=10)
    import farmhash

    oov_b = 3 + farmhash.fingerprint64("b") % 10
    oov_empty = 3 + farmhash.fingerprint64("") % 10
    assert ids.tolist() == [oov_b, 1, 1, 0, 0, oov_empty, oov_empty, oov_empty, 2]


def test_z_score_label_and_buckets() -> None:
    z = numpy_taxi.z_score(np.array([1.0, 2.0, 3.0, 4.0]))
    std = np.sqrt(1.25)  # population variance of 1..4
    np.testing.assert_allclose(z, np.array([-1.5, -0.5, 0.5, 1.5]) / std, rtol=1e-6)
    assert z.dtype == np.float32
    # 0.2 * 10.0 in float32 is 2.0000000298...; tips of exactly 2 are not above it.
    label = numpy_taxi.label(np.array([2.0, 2.01, 0.0]), np.array([10.0, 10.0, 0.0]))
    assert label.tolist() == [0, 1, 0]
    buckets = numpy_taxi.bucketize(np.arange(100, dtype=np.float32), 10)
    assert np.bincount(buckets).tolist() == [10] * 10


def test_histogram_distance() -> None:
    a = np.sort(np.array([0, 0, 1, 1]))
    assert run._histogram_distance(a, a) == 0.0
    assert run._histogram_distance(a, np.array([0, 1, 1, 1])) == 0.25


def test_run_numpy_limit_writes_reports(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    code = run.main(
        [
            "--rows",
            str(ROWS),
            "--only",
            "numpy",
            "--results-dir",
            str(results_dir),
            "--work-dir",
            str(tmp_path / "work"),
            "--timeout",
            "120",
            "--repeat",
            "2",
        ]
    )

    assert code == 0
    report = json.loads((results_dir / "latest.json").read_text())
    assert [(r["system"], r["rows"], r["rows_out"], r["status"]) for r in report["results"]] == [
        ("numpy", ROWS, ROWS, "ok")
    ]
    result = report["results"][0]
    assert result["agreement"] == {"exact": OUTPUT_NAMES, "close": [], "differing": []}
    assert len(result["wall_seconds_all"]) == 2
    assert result["wall_seconds"] == pytest.approx(
        float(np.median(result["wall_seconds_all"])), abs=1e-3
    )
    assert report["repeat"] == 2
    assert len(result["cpu_seconds_all"]) == len(result["other_cpu_seconds_all"]) == 2
    assert all(c > 0 for c in result["cpu_seconds_all"])
    assert len(report["code"]["commit"]) == 40
    assert result["max_rss_mb"] > 10
    assert report["machine"]["cores"] >= 1
    assert report["ratios"] == []
    stamped = list(results_dir.glob("run-*.json"))
    assert len(stamped) == 1
    assert json.loads(stamped[0].read_text()) == report
    md = (results_dir / "latest.md").read_text()
    assert f"## {ROWS:,} rows" in md
    assert "| NumPy limit (pyarrow + NumPy, 1 process) |" in md
    assert (results_dir / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    output = pq.read_table(tmp_path / "work" / "out" / f"numpy_{ROWS}")
    assert output.column_names == OUTPUT_NAMES
    assert output.num_rows == ROWS


def test_run_reports_a_failing_system(tmp_path: Path) -> None:
    """A run that exits non-zero is reported as failed and the exit code says so."""
    work = tmp_path / "work"
    csv = data.generate(10, seed=0, work_dir=work)
    csv.write_text("not,the,taxi,header\n1,2,3,4\n")

    code = run.main(
        [
            *["--rows", "10", "--only", "numpy", "--results-dir", str(tmp_path / "r")],
            *["--work-dir", str(work), "--timeout", "120"],
        ]
    )

    assert code == 1
    report = json.loads((tmp_path / "r" / "latest.json").read_text())
    assert report["results"][0]["status"].startswith("failed (exit 1")
    assert report["results"][0]["rows_out"] is None


def test_measure_counts_grandchildren_memory(tmp_path: Path) -> None:
    """Multi-process runners put workers two levels down; their peak RSS must count."""
    grandchild = "b = b'x' * (300 << 20)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"

    m = run.measure(
        [sys.executable, "-c", child], cwd=tmp_path, log_path=tmp_path / "log", timeout=60
    )

    assert (m.exit_code, m.timed_out) == (0, False)
    assert m.max_rss_mb >= 300


def test_measure_kills_the_group_at_the_timeout(tmp_path: Path) -> None:
    # Blocks forever without sleeping: select on nothing.
    blocker = "import select; select.select([], [], [])"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {blocker!r}])"

    m = run.measure(
        [sys.executable, "-c", child], cwd=tmp_path, log_path=tmp_path / "log", timeout=0.5
    )

    assert (m.exit_code, m.timed_out) == (None, True)
    assert 0.5 <= m.wall_seconds < 30


def test_wait_for_idle_without_budget_measures_nothing() -> None:
    assert run.wait_for_idle(0.0) == 0.0


def test_wait_for_idle_returns_the_last_busy_percentage() -> None:
    busy = run.wait_for_idle(0.5, threshold=101.0)
    assert 0.0 <= busy <= 100.0


@pytest.mark.slow
@pytest.mark.tft
def test_smoke_every_system_at_small_n(tmp_path: Path) -> None:
    """The whole benchmark at a small N: every system runs, writes N rows and agrees."""
    results_dir = tmp_path / "results"
    code = run.main(
        [
            *["--rows", str(ROWS), "--results-dir", str(results_dir)],
            *["--work-dir", str(tmp_path / "work"), "--timeout", "300"],
        ]
    )
    assert code == 0
    report = json.loads((results_dir / "latest.json").read_text())
    assert sorted((r["system"], r["rows_out"], r["status"]) for r in report["results"]) == [
        ("beamforge", ROWS, "ok"),
        ("beamforge_mp2", ROWS, "ok"),
        ("mltransform", ROWS, "ok"),
        ("numpy", ROWS, "ok"),
        ("tft", ROWS, "ok"),
    ]
    for result in report["results"]:
        agreement = result["agreement"]
        assert agreement["differing"] == [], result["system"]
    # Ratios are reported (never asserted: timing belongs to benchmarks, not tests).
    assert {(r["beamforge"], r["versus"]) for r in report["ratios"]} >= {
        ("beamforge", "tft"),
        ("beamforge", "mltransform"),
        ("beamforge", "numpy"),
    }


def test_split_csv_keeps_every_row_once(tmp_path: Path) -> None:
    from benchmarks import streaming

    source = tmp_path / "rows.csv"
    source.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(10)))
    parts = streaming.split_csv(source, 3, tmp_path / "parts")
    texts = [p.read_text().splitlines() for p in parts]
    assert [t[0] for t in texts] == ["a,b"] * 3
    assert [len(t) - 1 for t in texts] == [4, 4, 2]
    assert sorted(line for t in texts for line in t[1:]) == sorted(f"{i},{i}" for i in range(10))


@pytest.mark.slow
def test_smoke_streaming_next_to_batch(tmp_path: Path) -> None:
    """Both runs at a small N: the streaming run writes every row and balances."""
    from benchmarks import streaming

    results_dir = tmp_path / "results"
    code = streaming.main(
        [
            *["--rows", str(ROWS), "--files", "2", "--results-dir", str(results_dir)],
            *["--work-dir", str(tmp_path / "work")],
        ]
    )
    assert code == 0
    report = json.loads((results_dir / "streaming.json").read_text())
    (result,) = report["results"]
    assert (result["rows"], result["files"], result["ok"]) == (ROWS, 2, True)
    assert (result["batch"]["exit_code"], result["streaming"]["exit_code"]) == (0, 0)
    assert result["streaming_summary"]["rows_written"] == ROWS
    assert set(result["streaming_summary"]["aggregate_rows"]) == {
        "fares_per_company",
        "trips_per_area",
    }
    # The ratio is reported, never asserted.
    assert f"| {ROWS:,} | 2 |" in (results_dir / "streaming.md").read_text()
