"""The typed ``streaming:`` section: ``beamforge validate`` refuses what a run would refuse.

Every key and type in the section (and its nested mappings) is checked when the spec loads,
with the YAML path, the value and what is valid, as in every other section.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from beam_pipelines.spec import parse_spec
from beam_pipelines.streaming import (
    StreamingSpec,
    check_aggregation_columns,
    describe,
    streaming_spec,
)
from transforms.core.config import SpecError

REPO = pathlib.Path(__file__).resolve().parent.parent
STREAMING_YAML = REPO / "examples" / "chicago_taxi" / "streaming.yaml"
FILES = 4


def _files_spec(root: pathlib.Path) -> Any:
    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"]["files"] = {
        "path": str(root / "incoming" / "*.csv"),
        "poll_seconds": 0.1,
        "max_files": FILES,
        "deadline_seconds": 90,
    }
    data["streaming"]["artifact"] = str(root / "artifact")
    data["streaming"]["output"]["path"] = str(root / "out")
    return parse_spec(data, origin="test")


def _validate(tmp_path: pathlib.Path, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``beamforge validate`` on ``data`` written as a spec file, as a real subprocess."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "launchers.cli", "validate", str(spec)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The run's one error line; fails unless there is exactly one and no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def _example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(STREAMING_YAML.read_text())
    return data


def _misspelt_top(d: dict[str, Any]) -> None:
    d["streaming"]["no_such_key"] = 1


def _misspelt_nested(d: dict[str, Any]) -> None:
    d["streaming"]["aggregations"][0]["window"]["size_secs"] = 60


def _wrong_type(d: dict[str, Any]) -> None:
    d["streaming"]["files"]["max_files"] = "four"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            _misspelt_top,
            "streaming.no_such_key: unknown key 'no_such_key'; valid keys are source, artifact, "
            "output, files, pubsub, artifact_refresh_seconds, aggregations",
        ),
        (
            _misspelt_nested,
            "streaming.aggregations[0].window.size_secs: unknown key 'size_secs'; valid keys "
            "are size_seconds, kind, period_seconds, offset_seconds",
        ),
        (_wrong_type, "streaming.files.max_files: got 'four'; expected an integer"),
    ],
)
def test_validate_refuses_a_bad_streaming_key_in_one_line(
    tmp_path: pathlib.Path, change: Callable[[dict[str, Any]], None], line: str
) -> None:
    data = _example()
    change(data)
    done = _validate(tmp_path, data)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert _error_line(done) == f"error: {tmp_path / 'spec.yaml'}: {line}"


@pytest.mark.slow
def test_validate_accepts_a_valid_streaming_spec(tmp_path: pathlib.Path) -> None:
    done = _validate(tmp_path, _example())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{tmp_path / 'spec.yaml'}: valid (chicago_taxi: ")


_PUBSUB = {"subscription": "projects/p/subscriptions/s"}


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        # Unknown keys, at every depth.
        (
            ["files", "poll_secs"],
            1,
            "unknown key 'poll_secs'; valid keys are path, poll_seconds, "
            "max_files, deadline_seconds, event_time_field",
        ),
        (
            ["output", "fromat"],
            "jsonl",
            "unknown key 'fromat'; valid keys are path, format, topic, errors_topic, bigquery",
        ),
        (
            ["aggregations", 1, "metrics", 0, "opp"],
            "sum",
            "unknown key 'opp'; valid keys are op, output, column",
        ),
        # Wrong types and values outside the choices.
        (["source"], "kafka", "got 'kafka'; expected one of 'files', 'pubsub'"),
        (["output", "format"], "csv", "got 'csv'; expected one of 'jsonl', 'parquet'"),
        (["artifact_refresh_seconds"], "soon", "got 'soon'; expected a number"),
        (["files", "poll_seconds"], True, "got True; expected a number"),
        (
            ["aggregations", 0, "window", "kind"],
            "tumbling",
            "got 'tumbling'; expected one of 'fixed', 'sliding'",
        ),
        (
            ["aggregations", 0, "keys"],
            "pickup_community_area",
            "got 'pickup_community_area'; expected list of str",
        ),
        (
            ["aggregations", 1, "metrics", 0, "op"],
            "median",
            "got 'median'; expected one of 'count', 'sum', 'mean', 'min', 'max'",
        ),
        (["aggregations"], {"trips": {}}, "got {'trips': {}}; expected list of mapping"),
    ],
)
def test_every_key_and_type_of_the_section_is_checked_when_the_spec_loads(
    path: list[str | int], value: Any, problem: str
) -> None:
    data = _example()
    parent = data["streaming"]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    where = "streaming" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    with pytest.raises(SpecError) as raised:
        parse_spec(data, origin="spec.yaml")
    assert str(raised.value) == f"spec.yaml: {where}: {problem}"


@pytest.mark.parametrize(
    ("pubsub", "where", "problem"),
    [
        ({**_PUBSUB, "formt": "json"}, "streaming.pubsub.formt", "unknown key 'formt'"),
        ({**_PUBSUB, "format": "xml"}, "streaming.pubsub.format", "got 'xml'; expected one of"),
        (
            {**_PUBSUB, "batch_size": 1.5},
            "streaming.pubsub.batch_size",
            "got 1.5; expected an integer",
        ),
        ({**_PUBSUB, "attributes": "region"}, "streaming.pubsub.attributes", "got 'region'"),
    ],
)
def test_the_pubsub_mapping_is_checked_too(
    pubsub: dict[str, Any], where: str, problem: str
) -> None:
    data = _example()
    data["streaming"].update(source="pubsub", pubsub=pubsub)
    del data["streaming"]["files"]
    with pytest.raises(SpecError) as raised:
        parse_spec(data, origin="spec.yaml")
    assert raised.value.path == where
    assert str(raised.value).startswith(f"spec.yaml: {where}: {problem}")


def test_the_parsed_spec_holds_the_typed_section() -> None:
    spec = parse_spec(_example(), origin="spec.yaml")
    assert isinstance(spec.streaming, StreamingSpec)
    assert streaming_spec(spec) is spec.streaming
    assert spec.streaming.files is not None and spec.streaming.files.max_files == 4
    assert [a.name for a in spec.streaming.aggregations] == ["trips_per_area", "fares_per_company"]


def test_streaming_section_is_validated() -> None:
    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"]["source"] = "pubsub"
    with pytest.raises(SpecError, match=r"needs a streaming\.pubsub section"):
        streaming_spec(parse_spec(data))
    data["streaming"]["pubsubb"] = {}
    with pytest.raises(SpecError, match=r"unknown key 'pubsubb'"):
        streaming_spec(parse_spec(data))
    del data["streaming"]
    with pytest.raises(SpecError, match="needs a 'streaming:' section"):
        streaming_spec(parse_spec(data))


def test_a_streaming_run_says_what_it_reads_and_when_it_stops(tmp_path: pathlib.Path) -> None:
    stream = streaming_spec(_files_spec(tmp_path))
    assert describe(stream) == (
        f"watching {tmp_path}/incoming/*.csv every 0.1 s; stops after {FILES} files or 90 s; "
        f"rows, windows (trips_per_area, fares_per_company) and errors to {tmp_path}/out"
    )
    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"].update(source="pubsub", pubsub={"topic": "projects/p/topics/t"})
    del data["streaming"]["files"]
    data["streaming"]["aggregations"] = []
    stream = streaming_spec(parse_spec(data, origin="test"))
    assert describe(stream, "gs://b/out") == (
        "reading projects/p/topics/t; runs until interrupted; rows, windows (no windows) and "
        "errors to gs://b/out"
    )


@pytest.mark.parametrize(
    ("sink", "problem"),
    [
        ({"table": "p-proj.ds.t_{split}"}, r"one table: no \{split\}"),
        ({"table": "p-proj.ds.t", "method": "FILE_LOADS"}, "must be STREAMING_INSERTS"),
    ],
)
def test_the_streaming_bigquery_sink_is_one_table_with_streaming_inserts(
    sink: dict[str, Any], problem: str
) -> None:
    data = yaml.safe_load(STREAMING_YAML.read_text())
    data["streaming"]["output"]["bigquery"] = sink
    with pytest.raises(SpecError, match=problem):
        streaming_spec(parse_spec(data, origin="test"))


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        parent = d["streaming"]
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value

    return change


def _pubsub(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["streaming"].update(source="pubsub", pubsub={**_PUBSUB, key: value})
        del d["streaming"]["files"]

    return change


_SECONDS = "expected a number greater than 0 (seconds)"
# What the example's aggregations may read: its source columns, then its artifact's outputs.
_EXAMPLE_COLUMNS = (
    "pickup_community_area, fare, trip_start_month, trip_start_hour, trip_start_day, "
    "trip_start_timestamp, pickup_latitude, pickup_longitude, dropoff_latitude, "
    "dropoff_longitude, trip_miles, pickup_census_tract, dropoff_census_tract, payment_type, "
    "company, trip_seconds, dropoff_community_area, tips, trip_miles_xf, fare_xf, "
    "trip_seconds_xf, payment_type_xf, company_xf, pickup_latitude_xf, pickup_longitude_xf, "
    "dropoff_latitude_xf, dropoff_longitude_xf, trip_start_hour_xf, trip_start_day_xf, "
    "trip_start_month_xf, pickup_census_tract_xf, dropoff_census_tract_xf, "
    "pickup_community_area_xf, dropoff_community_area_xf, tips_xf"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        # Columns the aggregations read: checked against source.schema and the steps' outputs.
        (_set(["aggregations", 0, "keys"], ["nope"]), "aggregations[0].keys[0]", None),
        (
            _set(["aggregations", 1, "keys"], ["company", "nope"]),
            "aggregations[1].keys[1]",
            None,
        ),
        (
            _set(["aggregations", 1, "metrics", 1, "column"], "nope"),
            "aggregations[1].metrics[1].column",
            None,
        ),
        (_set(["aggregations", 0, "time_column"], "nope"), "aggregations[0].time_column", None),
        # Every number of the sources, the output and the refresh, at its key.
        (
            _set(["files", "max_files"], -1),
            "files.max_files",
            "got -1; expected an integer of at least 1",
        ),
        (
            _set(["files", "max_files"], 0),
            "files.max_files",
            "got 0; expected an integer of at least 1",
        ),
        (_set(["files", "poll_seconds"], -1), "files.poll_seconds", f"got -1; {_SECONDS}"),
        (_set(["files", "deadline_seconds"], 0), "files.deadline_seconds", f"got 0; {_SECONDS}"),
        (
            _set(["artifact_refresh_seconds"], -0.5),
            "artifact_refresh_seconds",
            f"got -0.5; {_SECONDS}",
        ),
        (_pubsub("batch_size", 0), "pubsub.batch_size", "got 0; expected an integer of at least 1"),
        (
            _pubsub("max_messages", -3),
            "pubsub.max_messages",
            "got -3; expected an integer of at least 1",
        ),
        (_pubsub("max_latency_seconds", 0), "pubsub.max_latency_seconds", f"got 0; {_SECONDS}"),
        (_pubsub("dedupe_seconds", -600), "pubsub.dedupe_seconds", f"got -600; {_SECONDS}"),
        (_pubsub("idle_seconds", 0), "pubsub.idle_seconds", f"got 0; {_SECONDS}"),
        (_pubsub("deadline_seconds", -1), "pubsub.deadline_seconds", f"got -1; {_SECONDS}"),
    ],
)
def test_validate_refuses_what_a_streaming_run_would_refuse(
    tmp_path: pathlib.Path,
    change: Callable[[dict[str, Any]], None],
    where: str,
    problem: str | None,
) -> None:
    """Unknown columns (with source.schema) and numbers out of range: exit 2, one line."""
    data = _example()
    change(data)
    done = _validate(tmp_path, data)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    if problem is None:
        problem = f"unknown column 'nope'; available columns are {_EXAMPLE_COLUMNS}"
    assert _error_line(done) == f"error: {tmp_path / 'spec.yaml'}: streaming.{where}: {problem}"


def test_aggregation_columns_are_checked_at_their_keys() -> None:
    stream = streaming_spec(parse_spec(_example(), origin="spec.yaml"))
    check_aggregation_columns(stream, ["pickup_community_area", "company", "fare"])
    with pytest.raises(SpecError) as raised:
        check_aggregation_columns(stream, ["pickup_community_area", "company"])
    assert str(raised.value) == (
        "streaming.aggregations[0].metrics[1].column: unknown column 'fare'; "
        "available columns are pickup_community_area, company"
    )
    # The source's event time column is always there.
    data = _example()
    data["streaming"]["aggregations"][0]["time_column"] = "__event_time"
    parse_spec(data, origin="spec.yaml")


def test_without_a_schema_the_columns_wait_for_the_run() -> None:
    data = _example()
    del data["source"]["schema"]
    data["source"]["infer_schema"] = True
    data["streaming"]["aggregations"][0]["keys"] = ["nope"]
    assert parse_spec(data, origin="spec.yaml").streaming is not None
