"""The dataset pipeline end to end on the local runner: outputs, errors, stats and manifest."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import parse_spec
from tests.datasets import manifest_of, run_root, split_paths
from transforms.core.config import SpecError

CSV = """id,city,fare,tips
1,Chicago,10.0,1.0
2,Chicago,,2.0
3,Evanston,-5.0,0.5
4,Chicago,20.0
5,Evanston,30.0,3.0
5,Evanston,30.0,3.0
6,Skokie,abc,1.0
7,Chicago,40.0,4.0
"""


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "tiny",
        "source": {
            "format": "csv",
            "schema": {"id": "int64", "city": "string", "fare": "float64", "tips": "float64"},
        },
        "clean": [
            {"op": "range", "column": "fare", "min": 0},
            {"op": "dedupe", "key": ["id"]},
            {"op": "fill_missing", "columns": ["fare"], "strategy": "mean"},
        ],
        "split": {"fractions": {"train": 0.5, "eval": 0.5}, "key": ["id"]},
    }
    spec.update(overrides)
    return spec


def _read_split(out: pathlib.Path, split: str) -> list[dict]:
    files = split_paths(manifest_of(out), split)
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["id"])


def _errors(out: pathlib.Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(pathlib.Path(e["path"]) for e in manifest_of(out)["errors"]["files"])
        for line in f.read_text().splitlines()
    ]


@pytest.fixture
def tiny_csv(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "in" / "trips.csv"
    path.parent.mkdir()
    path.write_text(CSV)
    return path


def test_every_row_is_written_rejected_or_dropped(
    tmp_path: pathlib.Path, tiny_csv: pathlib.Path
) -> None:
    out = tmp_path / "out"
    result = run_job(parse_spec(_spec()), inputs=[str(tiny_csv)], output=str(out))

    rows = _read_split(out, "train") + _read_split(out, "eval")
    # Mean of the fares that survive read, range and dedupe: (10 + 30 + 40) / 3.
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": 1, "city": "Chicago", "fare": 10.0, "tips": 1.0},
        {"id": 2, "city": "Chicago", "fare": 80 / 3, "tips": 2.0},
        {"id": 5, "city": "Evanston", "fare": 30.0, "tips": 3.0},
        {"id": 7, "city": "Chicago", "fare": 40.0, "tips": 4.0},
    ]
    errors = sorted(_errors(out), key=lambda e: e["source"])
    assert [(e["step"], e["reason"], e["source"].rsplit("/", 1)[-1]) for e in errors] == [
        ("range:fare", "out_of_range", "trips.csv:4"),
        ("read", "wrong_field_count", "trips.csv:5"),
        ("read", "unparseable_value", "trips.csv:8"),
    ]
    assert errors[0]["payload"] == '{"city": "Evanston", "fare": -5.0, "id": 3, "tips": 0.5}'
    assert errors[1]["payload"] == "4,Chicago,20.0"

    manifest = result.manifest
    assert json.loads((out / "manifest.json").read_text()) == manifest
    counts = manifest["counts"]
    assert counts["read"] == 8
    assert counts["rejected"] == {
        "range:fare": {"out_of_range": 1},
        "read": {"unparseable_value": 1, "wrong_field_count": 1},
    }
    assert counts["dropped"] == {"dedupe": {"duplicate": 1}}
    assert counts["total_written"] == 4
    assert {s: v["rows"] for s, v in manifest["splits"].items()} == {
        "train": len(_read_split(out, "train")),
        "eval": len(_read_split(out, "eval")),
    }
    assert [(s["step"], s["rows_in"], s["rows_out"]) for s in manifest["steps"]] == [
        ("read", 8, 6),
        ("split", 6, 6),
        ("range:fare", 6, 5),
        ("dedupe", 5, 4),
        ("fill_missing:fare", 4, 4),
    ]
    assert manifest["schema"] == {
        "id": "int64",
        "city": "string",
        "fare": "float64",
        "tips": "float64",
    }
    assert manifest["errors"]["count"] == 3
    stats = json.loads((run_root(out) / "stats.json").read_text())
    assert stats["all"]["fare"]["count"] == 4
    assert stats["all"]["fare"]["mean"] == pytest.approx((10 + 80 / 3 + 30 + 40) / 4)
    transform = json.loads((run_root(out) / "artifact" / "transform.json").read_text())
    assert transform["fitted"]["fill_missing:fare"]["fare"]["mean"] == pytest.approx(80 / 3)


def test_a_run_with_a_given_artifact_applies_it_without_fitting(
    tmp_path: pathlib.Path, tiny_csv: pathlib.Path
) -> None:
    first = tmp_path / "first"
    run_job(parse_spec(_spec()), inputs=[str(tiny_csv)], output=str(first))
    other = tmp_path / "other.csv"
    other.write_text("id,city,fare,tips\n10,Chicago,,1.0\n11,Chicago,100.0,1.0\n")
    second = tmp_path / "second"
    result = run_job(
        parse_spec(_spec()),
        inputs=[str(other)],
        output=str(second),
        artifact_dir=str(first),
    )
    rows = _read_split(second, "train") + _read_split(second, "eval")
    # The mean fitted on the first data set, not on this one (100).
    assert sorted((r["id"], r["fare"]) for r in rows) == [(10, 80 / 3), (11, 100.0)]
    assert result.manifest["artifact"]["fitted_here"] is False
    assert result.manifest["artifact"]["applied_from"] == str(run_root(first) / "artifact")


def test_an_artifact_for_other_steps_is_refused(
    tmp_path: pathlib.Path, tiny_csv: pathlib.Path
) -> None:
    first = tmp_path / "first"
    run_job(parse_spec(_spec()), inputs=[str(tiny_csv)], output=str(first))
    changed = _spec(clean=[{"op": "fill_missing", "columns": ["fare"], "strategy": "median"}])
    with pytest.raises(ValueError, match="fitted for different steps"):
        run_job(
            parse_spec(changed),
            inputs=[str(tiny_csv)],
            output=str(tmp_path / "x"),
            artifact_dir=str(first),
        )


def test_all_formats_hold_the_same_rows(tmp_path: pathlib.Path, tiny_csv: pathlib.Path) -> None:
    out = tmp_path / "out"
    spec = _spec(output={"formats": ["parquet", "csv", "jsonl", "tfrecord"], "num_shards": 2})
    manifest = run_job(parse_spec(spec), inputs=[str(tiny_csv)], output=str(out)).manifest
    for split in ("train", "eval"):
        files = manifest["splits"][split]["files"]
        assert sorted(files) == ["csv", "jsonl", "parquet", "tfrecord"]
        assert all(len(paths) == 2 for paths in files.values())
        jsonl_ids = sorted(
            json.loads(line)["id"]
            for e in files["jsonl"]
            for line in pathlib.Path(e["path"]).read_text().splitlines()
        )
        assert jsonl_ids == [r["id"] for r in _read_split(out, split)]


def test_time_split_rejects_rows_without_a_time(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("id,ts\n1,100\n2,\n3,300\n")
    spec = {
        "name": "timed",
        "source": {"format": "csv", "schema": {"id": "int64", "ts": "int64"}},
        "split": {"method": "time", "column": "ts", "cutoffs": {"train": 200, "eval": None}},
    }
    out = tmp_path / "out"
    manifest = run_job(parse_spec(spec), inputs=[str(data)], output=str(out)).manifest
    assert [r["id"] for r in _read_split(out, "train")] == [1]
    assert [r["id"] for r in _read_split(out, "eval")] == [3]
    assert manifest["counts"]["rejected"] == {"split": {"missing_split_time": 1}}
    assert [(e["step"], e["reason"]) for e in _errors(out)] == [("split", "missing_split_time")]


def test_empty_input_writes_empty_splits_and_a_balanced_manifest(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("id,city,fare,tips\n")
    out = tmp_path / "out"
    manifest = run_job(parse_spec(_spec()), inputs=[str(data)], output=str(out)).manifest
    assert manifest["counts"]["read"] == 0
    assert _read_split(out, "train") == [] and _read_split(out, "eval") == []


def test_missing_input_fails_before_running(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="no file matches"):
        run_job(
            parse_spec(_spec()), inputs=[str(tmp_path / "nope-*.csv")], output=str(tmp_path / "o")
        )
    assert not (tmp_path / "o").exists()


def test_unknown_column_in_a_step_fails_at_load() -> None:
    bad = _spec(clean=[{"op": "range", "column": "fair", "min": 0}])
    with pytest.raises(SpecError) as info:
        parse_spec(bad, origin="job.yaml")
    assert str(info.value) == (
        "job.yaml: clean[0]: step 'range:fair' reads unknown column 'fair'; available columns are "
        "id, city, fare, tips"
    )


def test_a_failed_rerun_leaves_the_previous_dataset(
    tmp_path: pathlib.Path, tiny_csv: pathlib.Path
) -> None:
    out = tmp_path / "out"
    good = run_job(parse_spec(_spec()), inputs=[str(tiny_csv)], output=str(out)).manifest
    strict = _spec(errors={"max_fraction": 0.1})  # 3 of 8 rows are rejected
    with pytest.raises(Exception, match=r"more than errors\.max_fraction=0\.1"):
        run_job(parse_spec(strict), inputs=[str(tiny_csv)], output=str(out))
    assert manifest_of(out) == good
    # Beside the dataset, only the failed run's dead letters (its message points at them).
    (failed,) = [p for p in out.iterdir() if p.name not in ("manifest.json", good["run"]["id"])]
    assert [p.name for p in failed.iterdir()] == ["errors"]
    assert len(_read_split(out, "train")) + len(_read_split(out, "eval")) == 4


def test_fit_on_one_split_fits_on_its_rows_only(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("id,fare\n" + "".join(f"{i},{i * 10}\n" for i in range(1, 41)) + "41,\n")
    spec = {
        "name": "fit_train",
        "source": {"format": "csv", "schema": {"id": "int64", "fare": "float64"}},
        "clean": [{"op": "fill_missing", "columns": ["fare"], "strategy": "mean"}],
        "split": {"fractions": {"train": 0.5, "eval": 0.5}, "key": ["id"]},
        "transform": {"fit_on": "train"},
    }
    out = tmp_path / "out"
    run_job(parse_spec(spec), inputs=[str(data)], output=str(out))
    train = {r["id"]: r["fare"] for r in _read_split(out, "train")}
    eval_ = {r["id"]: r["fare"] for r in _read_split(out, "eval")}
    assert len(train) + len(eval_) == 41 and train and eval_
    known = [fare for i, fare in train.items() if i != 41]
    expected = sum(known) / len(known)
    filled = train.get(41, eval_.get(41))
    assert filled == pytest.approx(expected)
    everything = [fare for i, fare in {**train, **eval_}.items() if i != 41]
    assert filled != pytest.approx(sum(everything) / len(everything))


def test_an_artifact_read_under_another_non_finite_rule_is_refused(
    tmp_path: pathlib.Path, tiny_csv: pathlib.Path
) -> None:
    from transforms.core.errors import InputError

    lenient = _spec(source={**_spec()["source"], "allow_non_finite": ["fare"]})
    first = run_job(parse_spec(lenient), inputs=[str(tiny_csv)], output=str(tmp_path / "a"))
    assert json.loads((run_root(tmp_path / "a") / "artifact" / "transform.json").read_text())[
        "allow_non_finite"
    ] == ["fare"]
    assert first.manifest["counts"]["read"] == 8
    with pytest.raises(InputError, match=r"allow_non_finite: is \[\] but the artifact"):
        run_job(
            parse_spec(_spec()),
            inputs=[str(tiny_csv)],
            output=str(tmp_path / "b"),
            artifact_dir=str(tmp_path / "a"),
        )


def test_every_error_output_of_the_dataset_pipeline_reaches_its_collector(
    tmp_path: pathlib.Path, tiny_csv: pathlib.Path
) -> None:
    import apache_beam as beam

    from beam_pipelines.dataset import build, plan
    from beam_pipelines.runner import make_options, make_pipeline
    from transforms.beam.error_handling import UnhandledErrorsError

    # Fitted steps on both sides of a dedupe barrier, fit on one split: every stage that
    # makes an error output is in the graph, and the second read of the fit pass too.
    the_plan = plan(
        parse_spec(_spec(transform={"fit_on": "train"})),
        inputs=[str(tiny_csv)],
        output=str(tmp_path / "out"),
    )
    p = make_pipeline(make_options([]))
    build(p, the_plan)
    for handler in p._error_handlers:
        handler.verify_closed()

    _ = (
        p
        | "Stray" >> beam.Create([1])
        | "Check" >> beam.Map(lambda x: x).with_outputs("errors", main="rows")
    )
    with pytest.raises(UnhandledErrorsError, match=r"nobody handles: 'errors' of 'Check'\."):
        p.run()
    assert not (tmp_path / "out").exists()
