"""Non-finite numbers end to end: never in a fitted statistic, never in a written file.

A string column cast to float64 brings NaN, infinities and an overflowing ``1e309`` into
the pipeline (a spec may allow them; steps may produce them). Fitted steps must ignore
them, an expression producing one must reject the row, and every JSON file the run writes
must parse with a strict parser.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import parse_spec

CSV = """id,raw,denom
1,1.0,1
2,2.0,1
3,3.0,0
4,nan,1
5,inf,1
6,-inf,1
7,1e309,1
8,4.0,1
9,,1
"""

SPEC: dict[str, Any] = {
    "name": "non_finite",
    "source": {
        "format": "csv",
        "schema": {"id": "int64", "raw": "string", "denom": "float64"},
    },
    "clean": [
        {"op": "cast", "columns": {"raw": "float64"}},
        {"op": "fill_missing", "columns": ["raw"], "strategy": "mean"},
    ],
    "features": [
        {"op": "z_score", "column": "raw", "output": "z"},
        {"op": "min_max", "column": "raw", "output": "m"},
        {"op": "bucketize", "column": "raw", "output": "b", "num_buckets": 2},
        {"op": "expression", "output": "ratio", "expr": "raw / denom"},
    ],
    "split": {"fractions": {"all": 1.0}, "key": ["id"]},
    "output": {"columns": ["id", "raw", "z", "m", "b", "ratio"]},
}


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("non_finite")
    data = tmp / "rows.csv"
    data.write_text(CSV)
    manifest = run_job(parse_spec(SPEC), inputs=[str(data)], output=str(tmp / "out")).manifest
    return manifest


def test_fitted_statistics_ignore_non_finite_values(run: dict[str, Any]) -> None:
    artifact = pathlib.Path(run["artifact"]["path"]) / "transform.json"
    fitted = strict_loads(artifact.read_text())["fitted"]
    # The fill sees the finite 1, 2, 3, 4: mean 2.5 for the null row. The z-score then sees
    # 1, 2, 3, 4, 2.5: mean 2.5, population variance 1.
    assert fitted["fill_missing:raw"]["raw"]["mean"] == 2.5
    assert fitted["fill_missing:raw"]["raw"]["count"] == 4
    assert fitted["z_score:raw"] == {
        "count": 5,
        "mean": 2.5,
        "variance": 1.0,
        "min": 1.0,
        "max": 4.0,
        "sum": 12.5,
    }
    assert fitted["min_max:raw"]["min"] == 1.0 and fitted["min_max:raw"]["max"] == 4.0
    assert fitted["bucketize:raw"] == {"boundaries": [2.5]}


def test_rows_with_a_non_finite_expression_result_are_rejected(run: dict[str, Any]) -> None:
    files = [f["path"] for split in run["splits"].values() for f in split["files"]["parquet"]]
    rows = sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["id"])
    assert [(r["id"], r["z"], r["b"], r["ratio"]) for r in rows] == [
        (1, -1.5, 0, 1.0),
        (2, -0.5, 0, 2.0),
        (8, 1.5, 1, 4.0),
        (9, 0.0, 1, 2.5),
    ]
    assert run["counts"]["rejected"] == {"expression:ratio": {"non_finite": 5}}
    records = [
        strict_loads(line)
        for f in run["errors"]["files"]
        for line in pathlib.Path(f["path"]).read_text().splitlines()
    ]
    # The payload is the row as read (strict JSON too), replayable.
    by_id = {strict_loads(r["payload"])["id"]: r for r in records}
    assert sorted(by_id) == [3, 4, 5, 6, 7]
    assert {r["reason"] for r in records} == {"non_finite"}
    assert strict_loads(by_id[4]["payload"]) == {"denom": 1.0, "id": 4, "raw": "nan"}
    message = "ratio: expression 'raw / denom' gives {}, not a finite number"
    assert by_id[3]["message"] == message.format("inf")
    assert by_id[4]["message"] == message.format("nan")
    assert by_id[6]["message"] == message.format("-inf")


def test_every_json_file_of_the_run_is_strict(run: dict[str, Any]) -> None:
    manifest_path = pathlib.Path(run["run"]["output"]) / "manifest.json"
    assert strict_loads(manifest_path.read_text()) == run
    stats = strict_loads(pathlib.Path(run["stats"]).read_text())
    # Stats describe the written rows: the non-finite ones were rejected before the end.
    assert stats["all"]["raw"]["non_finite"] == 0
    assert stats["all"]["z"]["mean"] == -0.125  # (-1.5 - 0.5 + 1.5 + 0) / 4
    artifact = pathlib.Path(run["artifact"]["path"])
    for path in artifact.rglob("*.json"):
        strict_loads(path.read_text())
