"""``beamforge predict`` on the taxi sample: a chain trains a model, RunInference scores raw rows.

The chain (dataset -> train -> upload) runs for real once per module; the scoring runs read
the sample and a copy with three broken lines, exactly as the dataset job reads them. Every
good row gets one prediction, each bad row one error record, the manifest balances and lists
exactly what the run folder holds, and the probabilities are the local prediction server's
for the same rows.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from beam_pipelines.predict import PredictInputError, run_predict
from beam_pipelines.spec import load_spec
from launchers import serving
from tests.conftest import REPO, TAXI_SAMPLE, beamforge

TAXI_SPEC = REPO / "examples" / "chicago_taxi" / "pipeline.yaml"
GOOD_ROWS = 3001
LABEL = "tips_xf"


def _csv_line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


def _sample_lines() -> tuple[str, list[str]]:
    header, *body = TAXI_SAMPLE.read_text().splitlines()
    return header, body


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A chain that ran dataset -> train (logistic) -> upload on the taxi sample."""
    folder = tmp_path_factory.mktemp("chain")
    chain_file = folder / "chain.yaml"
    chain_file.write_text(
        yaml.safe_dump(
            {
                "name": "taxi",
                "workdir": str(folder / "work"),
                "steps": [
                    {
                        "name": "dataset",
                        "kind": "dataset",
                        "spec": str(TAXI_SPEC),
                        "inputs": [str(TAXI_SAMPLE)],
                        "output": str(folder / "dataset"),
                    },
                    {
                        "name": "train",
                        "kind": "train",
                        "dataset": "dataset",
                        "module": "examples.chicago_taxi.trainer.task",
                        "args": ["--model", "logistic"],
                    },
                    {
                        "name": "upload",
                        "kind": "upload",
                        "model": "train",
                        "predictor": "examples.chicago_taxi.predictor:TaxiPredictor",
                    },
                ],
            }
        )
    )
    done = beamforge("chain", str(chain_file), timeout=300)
    assert done.returncode == 0, done.stderr
    return chain_file


@pytest.fixture(scope="module")
def model_dir(chain: pathlib.Path) -> pathlib.Path:
    return chain.parent / "work" / "train" / "model"


@pytest.fixture(scope="module")
def broken_csv(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The sample with three bad lines: a word for a fare, five fields, an infinite fare."""
    header, body = _sample_lines()
    word = next(csv.reader([body[0]]))
    word[1] = "twelve"
    infinite = next(csv.reader([body[2]]))
    infinite[1] = "inf"
    short = ",".join(next(csv.reader([body[1]]))[:5])
    lines = [
        header,
        *body[:100],
        _csv_line(word),  # line 102
        *body[100:2000],
        short,  # line 2003
        *body[2000:],
        _csv_line(infinite),  # line 3005
    ]
    path = tmp_path_factory.mktemp("raw") / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _manifest(output: pathlib.Path) -> dict[str, Any]:
    return dict(json.loads((output / "manifest.json").read_text()))


def _predictions(manifest: dict[str, Any]) -> pa.Table:
    files = [e["path"] for e in manifest["predictions"]["files"]]
    return pa.concat_tables(pq.read_table(p) for p in files)


def _errors(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for e in manifest["errors"]["files"]
        for line in pathlib.Path(e["path"]).read_text().splitlines()
    ]


def _run_files(root: pathlib.Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def test_cli_scores_every_good_row_and_sends_bad_rows_to_errors(
    chain: pathlib.Path, model_dir: pathlib.Path, broken_csv: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "scored"
    done = beamforge(
        "predict", str(chain), "--input", str(broken_csv), "--output", str(out), "--quiet"
    )
    assert done.returncode == 0, done.stderr
    manifest = _manifest(out)
    assert manifest["kind"] == "predictions"
    assert manifest["model"] == {"dir": str(model_dir), "label": LABEL}
    assert manifest["counts"] == {
        "read": GOOD_ROWS + 3,
        "written": {"predictions": GOOD_ROWS},
        "rejected": {"read": {"non_finite": 1, "unparseable_value": 1, "wrong_field_count": 1}},
        "dropped": {},
        "total_rejected": 3,
        "total_dropped": 0,
        "total_written": GOOD_ROWS,
    }
    predictions = _predictions(manifest)
    assert predictions.schema == pa.schema(
        [
            ("file", pa.string()),
            ("line", pa.int64()),
            (LABEL, pa.int64()),
            ("probability", pa.float64()),
        ]
    )
    bad_lines = {102, 2003, 3005}
    expected_lines = [n for n in range(2, GOOD_ROWS + 5) if n not in bad_lines]
    assert sorted(predictions.column("line").to_pylist()) == expected_lines
    assert set(predictions.column("file").to_pylist()) == {str(broken_csv)}
    assert manifest["predictions"]["rows"] == GOOD_ROWS
    assert [e["rows"] for e in manifest["predictions"]["files"]] == [GOOD_ROWS]
    errors = sorted(_errors(manifest), key=lambda e: e["source"])
    assert [(e["step"], e["reason"], e["source"], e["message"]) for e in errors] == [
        (
            "read",
            "unparseable_value",
            f"{broken_csv}:102",
            "column 'fare': 'twelve' is not a valid float32",
        ),
        ("read", "wrong_field_count", f"{broken_csv}:2003", "expected 18 fields, got 5"),
        ("read", "non_finite", f"{broken_csv}:3005", errors[2]["message"]),
    ]
    assert "fare" in errors[2]["message"]
    # The payload is the raw line, replayable.
    assert errors[1]["payload"] == broken_csv.read_text().splitlines()[2002]
    # What a reader sees is exactly what the manifest lists (plus the manifest itself).
    listed = {e["path"] for e in manifest["predictions"]["files"]} | {
        e["path"] for e in manifest["errors"]["files"]
    }
    assert _run_files(pathlib.Path(manifest["run"]["root"])) == listed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", manifest["run"]["id"]]
    assert "3,001 rows" in done.stdout


def test_predictions_equal_the_local_servers(
    chain: pathlib.Path, model_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    spec = load_spec(str(TAXI_SPEC))
    result = run_predict(
        str(model_dir), [str(TAXI_SAMPLE)], str(tmp_path / "out"), source=spec.source
    )
    assert result.counts["read"] == result.counts["total_written"] == GOOD_ROWS
    table = _predictions(result.manifest)
    by_line = {r["line"]: (r[LABEL], r["probability"]) for r in table.to_pylist()}
    with TAXI_SAMPLE.open(newline="") as f:
        rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(f)]
    server = serving.start_server(
        str(model_dir),
        predictor="examples.chicago_taxi.predictor:TaxiPredictor",
        log=str(tmp_path / "server.log"),
        timeout=120,
    )
    try:
        served: list[dict[str, Any]] = []
        for start in range(0, len(rows), 1000):
            served += serving.predict(server.predict_url, rows[start : start + 1000], timeout=60)
    finally:
        serving.stop_server(server)
    assert len(served) == len(by_line) == GOOD_ROWS
    # Row i of the file is line i + 2 (after the header).
    assert [by_line[i + 2][0] for i in range(GOOD_ROWS)] == [s[LABEL] for s in served]
    assert [by_line[i + 2][1] for i in range(GOOD_ROWS)] == pytest.approx(
        [s["probability"] for s in served], rel=1e-12, abs=0
    )
    assert sum(s[LABEL] for s in served) == sum(by_line[n][0] for n in by_line)


def test_keys_and_jsonl_output(
    model_dir: pathlib.Path, broken_csv: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # Without a source section the artifact's input schema reads the file (format from its name).
    out = tmp_path / "out"
    result = run_predict(
        str(model_dir),
        [str(broken_csv)],
        str(out),
        keys=["trip_start_timestamp", "company"],
        output_format="jsonl",
    )
    assert result.counts["total_written"] == GOOD_ROWS
    assert result.counts["total_rejected"] == 3
    (entry,) = result.manifest["predictions"]["files"]
    assert entry["path"].endswith(".jsonl") and entry["rows"] == GOOD_ROWS
    lines = [json.loads(line) for line in pathlib.Path(entry["path"]).read_text().splitlines()]
    assert len(lines) == GOOD_ROWS
    assert {tuple(r) for r in lines} == {("trip_start_timestamp", "company", LABEL, "probability")}
    header, body = _sample_lines()
    raw = list(csv.DictReader([header, *body]))
    assert sorted(r["trip_start_timestamp"] for r in lines) == sorted(
        int(r["trip_start_timestamp"]) for r in raw
    )
    # The same rows scored again with the file and line keys give the same probabilities.
    again = run_predict(str(model_dir), [str(broken_csv)], str(tmp_path / "again"))
    assert sorted(r["probability"] for r in lines) == sorted(
        _predictions(again.manifest).column("probability").to_pylist()
    )


def test_a_second_run_replaces_the_first(model_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    first = run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(out))
    second = run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(out))
    assert first.manifest["run"]["id"] != second.manifest["run"]["id"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", second.manifest["run"]["id"]]
    assert _predictions(second.manifest).num_rows == GOOD_ROWS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.csv"], "error: missing.csv: no file matches this path or pattern"),
        (
            ["--input", str(TAXI_SAMPLE), "--key", "no_such_column"],
            "error: --key no_such_column: no such input column; the input has "
            "pickup_community_area, fare,",
        ),
        (
            ["--input", str(TAXI_SAMPLE), "--key", "tips", "--model", "/no/such/model"],
            "error: /no/such/model: is not a model directory: model.joblib is missing",
        ),
        (["--input", str(TAXI_SAMPLE), "--no-such-option", "1"], "error: pipeline options:"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    chain: pathlib.Path, tmp_path: pathlib.Path, args: list[str], message: str
) -> None:
    done = beamforge("predict", str(chain), "--output", str(tmp_path / "o"), "--quiet", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "o").exists()


def test_no_chain_and_no_model_yet(tmp_path: pathlib.Path) -> None:
    missing = beamforge("predict", str(tmp_path / "nope.yaml"), "--input", "x", "--output", "y")
    assert (missing.returncode, missing.stderr) == (
        2,
        f"error: {tmp_path / 'nope.yaml'}: no such chain spec file\n",
    )
    untrained = tmp_path / "chain.yaml"
    untrained.write_text(
        yaml.safe_dump(
            {
                "name": "fresh",
                "workdir": str(tmp_path / "work"),
                "steps": [
                    {
                        "name": "dataset",
                        "kind": "dataset",
                        "spec": str(TAXI_SPEC),
                        "inputs": [str(TAXI_SAMPLE)],
                        "output": str(tmp_path / "dataset"),
                    },
                    {
                        "name": "train",
                        "kind": "train",
                        "dataset": "dataset",
                        "module": "examples.chicago_taxi.trainer.task",
                    },
                ],
            }
        )
    )
    done = beamforge("predict", str(untrained), "--input", str(TAXI_SAMPLE), "--output", "y")
    assert done.returncode == 2
    assert done.stderr == (
        f"error: chain fresh: no model trained yet on the local target (state "
        f"{tmp_path / 'work' / 'state-local.json'}); run `beamforge chain {untrained}` first "
        "or give --model DIR\n"
    )


def test_a_dry_run_needs_dataflow(model_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with pytest.raises(PredictInputError, match="builds a Dataflow job"):
        run_predict(str(model_dir), [str(TAXI_SAMPLE)], str(tmp_path / "o"), dry_run=True)
