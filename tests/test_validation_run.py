"""A dataset run judges its input: input statistics, validation.json, baselines, schemas.

Real runs of the taxi pipeline on the sample and on a shifted copy of it (fares x1.5, a new
payment type on one trip in five), through the ``beamforge`` command line.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest
import yaml

from examples.chicago_taxi.shift import shift
from tests.conftest import TAXI_SAMPLE, beamforge

SPEC = "examples/chicago_taxi/pipeline.yaml"
REPO = pathlib.Path(__file__).resolve().parent.parent
INPUT_COLUMNS = [
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
]
CATEGORICAL = {"payment_type", "company"}


def _spec(folder: pathlib.Path, validation: dict | None) -> str:
    """The taxi spec with another ``validation:`` section (None: none)."""
    spec = yaml.safe_load((REPO / SPEC).read_text())
    spec.pop("validation")
    if validation is not None:
        spec["validation"] = validation
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _run(spec: str, *args: str) -> None:
    done = beamforge("run", spec, "--quiet", *args)
    assert done.returncode == 0, done.stderr[-3000:]


def _manifest(output: pathlib.Path) -> dict:
    return json.loads((output / "manifest.json").read_text())


def _validation(output: pathlib.Path) -> dict:
    return json.loads(pathlib.Path(_manifest(output)["validation"]["path"]).read_text())


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("shifted") / "shifted.csv"
    assert shift(str(TAXI_SAMPLE), str(path)) == 3001
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The taxi spec without a schema or baseline, drift thresholds 0.1 (default 0.3)."""
    thresholds = {"thresholds": {"l_infinity": 0.1, "jensen_shannon": 0.1}}
    return _spec(tmp_path_factory.mktemp("plain"), thresholds)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, plain: str) -> pathlib.Path:
    output = tmp_path_factory.mktemp("baseline") / "out"
    _run(plain, "--input", str(TAXI_SAMPLE), "--output", str(output))
    return output


@pytest.fixture(scope="module")
def drifted(
    tmp_path_factory: pytest.TempPathFactory,
    plain: str,
    baseline: pathlib.Path,
    shifted: pathlib.Path,
) -> pathlib.Path:
    output = tmp_path_factory.mktemp("drifted") / "out"
    _run(plain, "--input", str(shifted), "--output", str(output), "--baseline", str(baseline))
    return output


def test_input_statistics_cover_every_raw_column_per_split(baseline: pathlib.Path) -> None:
    stats = json.loads(pathlib.Path(_manifest(baseline)["stats"]).read_text())
    assert list(stats["input"]["all"]) == sorted(INPUT_COLUMNS)
    assert set(stats["input"]["splits"]) == {"train", "eval"}
    fare = stats["input"]["all"]["fare"]
    splits = stats["input"]["splits"]
    assert fare["count"] + fare["missing"] == 3001
    assert splits["train"]["fare"]["count"] + splits["eval"]["fare"]["count"] == fare["count"]
    assert sum(fare["histogram"]["counts"]) == pytest.approx(fare["count"])
    payments = {
        v["value"]: v["count"] for v in stats["input"]["all"]["payment_type"]["rank_histogram"]
    }
    assert sum(payments.values()) == 3001 - stats["input"]["all"]["payment_type"]["missing"]
    # The output columns' statistics are still there, unchanged in shape.
    assert "fare_xf" in stats["all"] and "train" in stats["splits"]


def test_every_run_writes_validation_json_listed_in_its_manifest(baseline: pathlib.Path) -> None:
    manifest = _manifest(baseline)
    root = pathlib.Path(manifest["run"]["root"])
    assert manifest["validation"] == {
        "path": str(root / "validation.json"),
        "anomalies": 0,
        "drifted_columns": [],
        "skewed_columns": [],
        "ok": True,
    }
    assert manifest["validation_file"]["path"] == str(root / "validation.json")
    assert manifest["validation_file"]["size"] == (root / "validation.json").stat().st_size
    result = _validation(baseline)
    assert result["run"] == manifest["run"]["id"]
    assert result["schema"] is None and result["baseline"] is None
    assert result["drift"] == {} and result["skew"] == {} and result["anomalies"] == []


def test_skew_between_splits_is_measured_for_every_column_when_asked(
    tmp_path: pathlib.Path,
) -> None:
    spec = _spec(
        tmp_path,
        {"skew": [["train", "eval"]], "thresholds": {"l_infinity": 0.1, "jensen_shannon": 0.5}},
    )
    output = tmp_path / "out"
    _run(spec, "--input", str(TAXI_SAMPLE), "--output", str(output))
    result = _validation(output)
    skew = result["skew"]["train_vs_eval"]
    # pickup_census_tract is empty in the sample: no histogram, nothing to compare.
    assert list(skew) == sorted(INPUT_COLUMNS)
    assert skew["pickup_census_tract"]["value"] is None
    for column, m in skew.items():
        assert m["measure"] == ("l_infinity" if column in CATEGORICAL else "jensen_shannon")
        assert m["threshold"] == (0.1 if column in CATEGORICAL else 0.5)
        if m["value"] is not None:
            assert m["over"] is (m["value"] > m["threshold"])
    # Measured under the threshold too, not only over it.
    assert sum(not m["over"] for m in skew.values()) >= 15
    assert result["summary"]["skewed_columns"] == [c for c, m in skew.items() if m["over"]]


def test_a_shifted_run_drifts_on_fare_and_payment_type_only(drifted: pathlib.Path) -> None:
    manifest = _manifest(drifted)
    result = _validation(drifted)
    assert manifest["validation"]["drifted_columns"] == ["fare", "payment_type"]
    assert manifest["validation"]["ok"] is False
    assert list(result["drift"]) == sorted(INPUT_COLUMNS)
    over = {c for c, m in result["drift"].items() if m["over"]}
    assert over == {"fare", "payment_type"}
    payment = result["drift"]["payment_type"]
    assert payment["measure"] == "l_infinity"
    # One trip in five became "Mobile Wallet": its share moved from 0 to 600/3001.
    assert payment["value"] == pytest.approx(600 / 3001, abs=1e-9)
    assert payment["max_difference_value"] == "Mobile Wallet"
    # pickup_census_tract is empty in the sample: no histogram, no value.
    assert result["drift"]["pickup_census_tract"]["value"] is None
    unchanged = [
        c for c in INPUT_COLUMNS if c not in {"fare", "payment_type", "pickup_census_tract"}
    ]
    for column in unchanged:
        assert result["drift"][column]["value"] == pytest.approx(0.0, abs=1e-12), column
    kinds = {(a["column"], a["kind"]) for a in result["anomalies"]}
    assert kinds == {("fare", "drift"), ("payment_type", "drift")}


def test_the_baseline_statistics_are_kept_beside_the_run(
    drifted: pathlib.Path, baseline: pathlib.Path
) -> None:
    manifest = _manifest(drifted)
    root = pathlib.Path(manifest["run"]["root"])
    result = _validation(drifted)
    assert result["baseline"] == {
        "run": _manifest(baseline)["run"]["id"],
        "source": str(baseline),
        "stats": str(root / "baseline_stats.json"),
    }
    kept = json.loads((root / "baseline_stats.json").read_text())
    original = json.loads(pathlib.Path(_manifest(baseline)["stats"]).read_text())
    assert kept == {"input": original["input"]}
    assert manifest["baseline_stats_file"]["path"] == str(root / "baseline_stats.json")


def test_the_example_spec_catches_the_shifted_data(
    tmp_path: pathlib.Path, shifted: pathlib.Path
) -> None:
    # Its validation: the example schema, and the run the output held before as baseline.
    output = tmp_path / "out"
    first = beamforge("run", SPEC, "--quiet", "--input", str(TAXI_SAMPLE), "--output", str(output))
    assert first.returncode == 0, first.stderr[-2000:]
    first_run = _manifest(output)["run"]["id"]
    result = _validation(output)
    assert result["baseline"] is None and result["anomalies"] == []
    # Relative to the spec file's folder, recorded as the file read.
    assert result["schema"]["path"] == str(REPO / "examples" / "chicago_taxi" / "schema.yaml")
    second = beamforge("run", SPEC, "--quiet", "--input", str(shifted), "--output", str(output))
    assert second.returncode == 0, second.stderr[-2000:]
    result = _validation(output)
    assert result["baseline"]["run"] == first_run
    assert [(a["column"], a["kind"]) for a in result["anomalies"]] == [
        ("fare", "out_of_range"),
        ("payment_type", "unexpected_values"),
        ("fare", "drift"),
        ("payment_type", "drift"),
    ]
    assert _manifest(output)["validation"]["drifted_columns"] == ["fare", "payment_type"]
    assert "validation.json: 4 anomalies; drift in fare, payment_type" in second.stdout
    # The shifted run failed: the next is measured against the first run again, not it.
    third = beamforge("run", SPEC, "--quiet", "--input", str(TAXI_SAMPLE), "--output", str(output))
    assert third.returncode == 0, third.stderr[-2000:]
    result = _validation(output)
    assert result["baseline"]["run"] == first_run
    assert result["anomalies"] == [] and result["summary"]["ok"] is True
    # Accepting the shifted data: --baseline names the output itself once.
    shifted_again = beamforge(
        "run", SPEC, "--quiet", "--input", str(shifted), "--output", str(output)
    )
    assert _validation(output)["summary"]["drifted_columns"] == ["fare", "payment_type"]
    accepted = beamforge(
        "run",
        SPEC,
        "--quiet",
        "--input",
        str(shifted),
        "--output",
        str(output),
        "--baseline",
        str(output),
    )
    assert shifted_again.returncode == 0 and accepted.returncode == 0, accepted.stderr[-2000:]
    assert _validation(output)["summary"]["drifted_columns"] == []


def test_schema_infer_then_unexpected_payment_type(
    tmp_path: pathlib.Path, baseline: pathlib.Path, shifted: pathlib.Path
) -> None:
    schema = tmp_path / "schema.yaml"
    done = beamforge("schema", "infer", str(baseline), "-o", str(schema))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{schema}: data schema of 18 columns from run ")
    assert beamforge("schema", "check", str(schema)).returncode == 0
    spec = yaml.safe_load((pathlib.Path(__file__).parent.parent / SPEC).read_text())
    spec["validation"] = {"schema": str(schema)}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    output = tmp_path / "out"
    again = beamforge(
        "run", str(path), "--quiet", "--input", str(TAXI_SAMPLE), "--output", str(output)
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert _validation(output)["anomalies"] == []
    output2 = tmp_path / "out2"
    run = beamforge("run", path, "--quiet", "--input", str(shifted), "--output", str(output2))
    assert run.returncode == 0, run.stderr[-2000:]
    anomalies = _validation(output2)["anomalies"]
    unexpected = [a for a in anomalies if a["kind"] == "unexpected_values"]
    assert [a["column"] for a in unexpected] == ["payment_type"]
    assert "Mobile Wallet" in json.dumps(unexpected[0]["observed"])


def test_a_schema_with_an_unknown_key_is_one_line_naming_it(tmp_path: pathlib.Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("columns:\n  fare: {type: float32, presense: 1.0}\n")
    path = _spec(tmp_path, {"schema": str(schema)})
    done = beamforge(
        "run", path, "--quiet", "--input", str(TAXI_SAMPLE), "--output", str(tmp_path / "o")
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {schema}: columns.fare.presense: ")
    assert "unknown key" in lines[0]
    assert not (tmp_path / "o").exists()


def _refused_with_baseline(
    tmp_path: pathlib.Path, baseline: pathlib.Path | str
) -> subprocess.CompletedProcess[str]:
    # The sample run with --baseline; nothing may be written to its output.
    done = beamforge(
        "run",
        SPEC,
        "--quiet",
        "--input",
        str(TAXI_SAMPLE),
        "--output",
        str(tmp_path / "o"),
        "--baseline",
        str(baseline),
    )
    assert not (tmp_path / "o").exists()
    return done


def test_a_baseline_without_statistics_is_refused(
    tmp_path: pathlib.Path, baseline: pathlib.Path
) -> None:
    copy = tmp_path / "old"
    shutil.copytree(baseline, copy)
    manifest = _manifest(copy)
    stats = pathlib.Path(manifest["stats"].replace(str(baseline), str(copy)))
    manifest["stats"] = str(stats)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    stats.write_text(
        json.dumps({k: v for k, v in json.loads(stats.read_text()).items() if k != "input"})
    )
    done = _refused_with_baseline(tmp_path, copy)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: --baseline {stats}: holds no input statistics (key input): the baseline was made by a "
        "beamforge that did not record them; run it again to use it as a baseline"
    )
    stats.unlink()
    done = _refused_with_baseline(tmp_path, copy)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: --baseline {stats}: does not exist: the baseline run has no statistics"
    )


def test_a_baseline_that_did_not_finish_is_refused(tmp_path: pathlib.Path) -> None:
    unfinished = tmp_path / "out" / "run-20260101T000000Z-00000000"
    unfinished.mkdir(parents=True)
    done = _refused_with_baseline(tmp_path, unfinished)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: --baseline {unfinished}: holds no manifest.json: not a dataset, or a run that did not finish"
    )


def test_an_empty_baseline_is_refused(tmp_path: pathlib.Path) -> None:
    # An empty --baseline (a shell variable that was not set) is a mistake, not "none".
    done = _refused_with_baseline(tmp_path, "")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --baseline: is empty; expected a run, an output folder or 'previous'"
    )


def test_previous_without_input_statistics_starts_over(
    tmp_path: pathlib.Path, baseline: pathlib.Path
) -> None:
    # An output whose run predates input statistics: the new run is measured against
    # nothing (a warning says why) instead of failing; a named --baseline must have them.
    output = tmp_path / "out"
    shutil.copytree(baseline, output)
    manifest = _manifest(output)
    manifest["stats"] = manifest["stats"].replace(str(baseline), str(output))
    manifest["run"]["root"] = manifest["run"]["root"].replace(str(baseline), str(output))
    (output / "manifest.json").write_text(json.dumps(manifest))
    stats = pathlib.Path(manifest["stats"])
    old = {k: v for k, v in json.loads(stats.read_text()).items() if k != "input"}
    stats.write_text(json.dumps(old))
    done = beamforge("run", SPEC, "--input", str(TAXI_SAMPLE), "--output", str(output))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"no drift measured: {stats}: holds no input statistics" in done.stderr
    assert _validation(output)["baseline"] is None
