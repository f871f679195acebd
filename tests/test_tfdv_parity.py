"""beamforge's data validation gives TensorFlow Data Validation's numbers on the same files.

Baseline: the taxi example's sample (3,001 trips of the TFX taxi file) and the whole
15,002-row file from ../shared; current data: the same rows shifted
(:func:`benchmarks.validation_vs_tfdv.shift`: fares x1.5, every third trip 30% longer,
every fourth a year later, a payment type never seen before on every 20th row, two
companies' names dropped). TFDV 1.16 runs in its own venv (``make tfdv``; it cannot share
the project's) through ``tools/tfdv_reference.py``: ``generate_statistics_from_csv``,
``infer_schema``, ``infinity_norm`` comparators on string features and
``jensen_shannon_divergence`` ones on numeric features, ``validate_statistics`` with the
baseline as previous statistics. beamforge reads the same files with its CSV reader on
Beam, computes :class:`~transforms.ops.stats.DatasetStats` and validates with
:func:`transforms.validation.result.validate`, the schema inferred from the baseline less
the numeric ranges and fractional presences that TFDV does not infer
(:func:`benchmarks.validation_vs_tfdv.tfdv_like_schema`). Same thresholds on both sides.

Tolerances. Both sides build a numeric column's histogram from 1000 quantiles of its values:
TFDV from tfx_bsl's quantile sketch, beamforge from its exact summary (``QuantileSummary``,
exact up to 16,384 distinct values per column). While the sketch has not compacted, it is
exact too, both read the same quantiles, and what is left is floating-point rounding:
drift values then agree to :data:`EXACT` (1e-12; measured: below 1e-16). Once a column has many
distinct values the sketch compacts and its quantiles move within its rank error: in the
15,002-row file that happens to ``trip_start_timestamp`` alone (:data:`SKETCHED`), whose
histogram counts then differ by up to 2.7 of 15,002 values (0.02%; :data:`COUNT_SHARE`
allows 0.1%) and whose Jensen-Shannon divergence by 6.6e-6 (:data:`DRIFT`: 1e-4). The
difference grows with the data as the sketch compacts more: 9.1e-6 on 150,000 generated
rows, 1.2e-4 on 1,500,000 (``python -m benchmarks.validation_vs_tfdv`` reports it at any
size); the drifted columns and anomaly kinds stay the same.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
from typing import Any

import pytest

from benchmarks.validation_vs_tfdv import (
    DROPPED_COMPANIES,
    NEW_PAYMENT_EVERY,
    NEW_PAYMENT_TYPE,
    NUMERIC_THRESHOLD,
    STRING_THRESHOLD,
    TFDV_PYTHON,
    beamforge_side,
    compare,
    tfdv_command,
    tfdv_kinds,
    write_shifted,
)
from tests.conftest import REPO, TAXI_SAMPLE

pytestmark = pytest.mark.slow

# Drift values and histogram counts of columns both sides summarise exactly.
EXACT = 1e-12
# Columns whose histogram TFDV reads from a compacted (approximate) sketch, per data set.
SKETCHED = {"sample": set(), "full": {"trip_start_timestamp"}}
# Their drift values, absolute; their histogram counts, as a share of the column's values.
DRIFT = 1e-4
COUNT_SHARE = 1e-3
# Columns whose distribution the shift changes, and their measure.
SHIFTED = {
    "fare": "jensen_shannon",
    "trip_seconds": "jensen_shannon",
    "trip_start_timestamp": "jensen_shannon",
    "payment_type": "l_infinity",
    "company": "l_infinity",
}
# Anomalies both sides must report at the thresholds of 0.1: fares and companies drift over
# them, payment types, durations and start times under them; the new payment type is an
# unexpected value.
EXPECTED_ANOMALIES = {
    "company": ["drift"],
    "fare": ["drift"],
    "payment_type": ["unexpected_values"],
}


def _run_tfdv(baseline: pathlib.Path, current: pathlib.Path, out: pathlib.Path) -> dict[str, Any]:
    if not TFDV_PYTHON.exists():
        # Never a skip: a machine without TFDV's venv cannot show the numbers agree.
        raise FileNotFoundError(f"{TFDV_PYTHON} is missing: run `make tfdv` (tools/tfdv-venv.sh)")
    env = {
        **os.environ,
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    done = subprocess.run(
        tfdv_command(baseline, current, out),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module", params=["sample", "full"])
def compared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Both sides on one baseline file and its shifted copy."""
    baseline = TAXI_SAMPLE if request.param == "sample" else request.getfixturevalue("taxi_csv")
    folder = tmp_path_factory.mktemp(f"tfdv-{request.param}")
    current = write_shifted(baseline, folder / "current.csv")
    tfdv = _run_tfdv(baseline, current, folder / "tfdv.json")
    ours, baseline_stats, current_stats = beamforge_side(baseline, current, beam=True)
    return {
        "name": request.param,
        "tfdv": tfdv,
        "ours": ours,
        "stats": {"baseline": baseline_stats, "current": current_stats},
    }


def test_both_sides_read_every_row(compared: dict[str, Any]) -> None:
    rows = 3_001 if compared["name"] == "sample" else 15_002
    assert compared["tfdv"]["rows"] == {"baseline": rows, "current": rows}
    assert compared["ours"]["rows"] == {"baseline": rows, "current": rows}
    assert compared["tfdv"]["tfdv_version"] == "1.16.1"


def test_drift_values_equal_tfdvs(compared: dict[str, Any]) -> None:
    ours, tfdv = compared["ours"]["features"], compared["tfdv"]["features"]
    result = compare(ours, tfdv)
    print(f"{compared['name']}: max |beamforge - TFDV| = {result['max_abs_difference']:.3g}")

    sketched = SKETCHED[compared["name"]]
    for name, difference in result["differences"].items():
        assert difference <= (DRIFT if name in sketched else EXACT), (name, difference)
    # Every column TFDV measures, beamforge measures, with the same measure and threshold.
    assert result["measured_by_one"] == []
    measured = {name for name, f in tfdv.items() if f["drift"] is not None}
    assert measured == {name for name, f in ours.items() if f["drift"]["value"] is not None}
    # pickup_census_tract is empty in the sample: no histogram, no value on either side.
    unmeasured = {"pickup_census_tract"} if compared["name"] == "sample" else set()
    assert set(tfdv) - measured == unmeasured
    for name in measured:
        mine, theirs = ours[name]["drift"], tfdv[name]["drift"]
        assert (mine["measure"], mine["threshold"]) == (theirs["measure"], theirs["threshold"])
        threshold = STRING_THRESHOLD if mine["measure"] == "l_infinity" else NUMERIC_THRESHOLD
        assert mine["threshold"] == threshold
        if name in SHIFTED:
            assert mine["measure"] == SHIFTED[name]
            assert mine["value"] > 0
        else:
            assert mine["value"] == theirs["value"] == 0.0, name


def test_same_anomaly_kinds(compared: dict[str, Any]) -> None:
    ours, tfdv = compared["ours"]["features"], compared["tfdv"]["features"]

    assert {n: tfdv_kinds(f["anomalies"]) for n, f in tfdv.items() if f["anomalies"]} == (
        EXPECTED_ANOMALIES
    )
    assert {n: f["anomalies"] for n, f in ours.items() if f["anomalies"]} == EXPECTED_ANOMALIES
    assert tfdv["payment_type"]["anomalies"] == ["ENUM_TYPE_UNEXPECTED_STRING_VALUES"]
    assert compare(ours, tfdv)["drifted"] == {
        "beamforge": ["company", "fare"],
        "tfdv": ["company", "fare"],
    }


def test_payment_type_names_the_new_value(compared: dict[str, Any]) -> None:
    ranked = {
        item["value"]: item["count"]
        for item in compared["stats"]["current"]["payment_type"]["rank_histogram"]
    }
    rows = compared["tfdv"]["rows"]["current"]
    new_rows = math.ceil(rows / NEW_PAYMENT_EVERY)
    assert ranked[NEW_PAYMENT_TYPE] == new_rows
    tfdv_ranked = compared["tfdv"]["stats"]["current"]["payment_type"]["rank_histogram"]
    assert tfdv_ranked[NEW_PAYMENT_TYPE] == new_rows
    assert not set(DROPPED_COMPANIES) & {
        item["value"] for item in compared["stats"]["current"]["company"]["rank_histogram"]
    }


def test_histograms_equal_tfdvs(compared: dict[str, Any]) -> None:
    """The distributions the measures are read from: STANDARD and rank histograms."""
    sketched = SKETCHED[compared["name"]]
    checked = 0
    for side in ("baseline", "current"):
        ours, tfdv = compared["stats"][side], compared["tfdv"]["stats"][side]
        for name, theirs in tfdv.items():
            if "rank_histogram" in theirs:
                mine = {
                    item["value"]: item["count"] for item in ours[name].get("rank_histogram", [])
                }
                assert mine == theirs["rank_histogram"], (side, name)
                checked += 1
                continue
            histogram = ours[name]["histogram"]
            buckets = theirs["histogram"]
            boundaries = [buckets[0][0], *(high for _, high, _ in buckets)]
            # The ends are the exact min and max on both sides: the buckets are the same.
            assert histogram["boundaries"] == pytest.approx(boundaries, rel=0, abs=EXACT)
            counts = [count for _, _, count in buckets]
            values = ours[name]["count"]
            tolerance = COUNT_SHARE * values if name in sketched else 1e-9
            assert histogram["counts"] == pytest.approx(counts, rel=0, abs=tolerance), (side, name)
            assert histogram.get("nan", 0) == theirs["num_nan"] == 0
            checked += 1
    # Every one of the 18 columns on both sides (pickup_census_tract, empty in the sample,
    # is a string feature with an empty rank histogram for TFDV, an int64 column for us).
    assert checked == 2 * 18
