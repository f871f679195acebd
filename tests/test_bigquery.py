"""BigQuery sources, sinks and dead letters against the BigQuery emulator (started by fixtures).

Beam's own BigQuery connector cannot be pointed at the emulator without patching it, so the
sink runs with STREAMING_INSERTS (the client library, the same code on Dataflow); FILE_LOADS
and STORAGE_WRITE_API use Beam's connector and are exercised on Google Cloud only.
"""

from __future__ import annotations

import pathlib
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.dataset import plan, run_job
from beam_pipelines.spec import parse_spec
from tests.conftest import REPO, TAXI_SAMPLE
from tests.datasets import split_paths
from tests.test_gcs import rows
from transforms.io import bigquery as bq

SPEC = str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")
pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


def _dataset(emulator: Any, name: str) -> str:
    emulator.client().create_dataset(name, exists_ok=True)
    return f"{emulator.project}.{name}"


def _taxi_with_sink(sink: dict[str, Any], errors: dict[str, Any] | None = None) -> Any:
    import yaml

    raw = yaml.safe_load(pathlib.Path(SPEC).read_text())
    raw["output"]["bigquery"] = sink
    if errors:
        raw["errors"] = errors
    return parse_spec(raw, origin=SPEC)


def test_taxi_to_one_table_per_split_equals_the_files(
    bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    ds = _dataset(bigquery_emulator, "taxi_out")
    spec = _taxi_with_sink(
        {"table": f"{ds}.taxi_{{split}}", "method": "STREAMING_INSERTS", "write": "truncate"}
    )
    result = run_job(spec, inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "out"))

    client = bigquery_emulator.client()
    for split in ("train", "eval"):
        table = client.list_rows(f"{ds}.taxi_{split}").to_arrow(create_bqstorage_client=False)
        files = pa.concat_tables([pq.read_table(p) for p in split_paths(result.manifest, split)])
        assert table.num_rows == result.manifest["counts"]["written"][split] > 0
        assert table.column_names == files.column_names
        assert rows(table) == rows(files)
    assert [f.field_type for f in client.get_table(f"{ds}.taxi_train").schema][:5] == [
        "FLOAT64",
        "FLOAT64",
        "FLOAT64",
        "INT64",
        "INT64",
    ]


def test_taxi_to_one_partitioned_table_with_a_split_column(
    bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    ds = _dataset(bigquery_emulator, "taxi_one")
    spec = _taxi_with_sink(
        {
            "table": f"{ds}.taxi",
            "method": "STREAMING_INSERTS",
            "clustering": ["company_xf"],
            "write": "truncate",
        }
    )
    result = run_job(spec, inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "out"))

    client = bigquery_emulator.client()
    counts = {
        r["split"]: r["n"]
        for r in client.query(f"SELECT split, COUNT(*) AS n FROM `{ds}.taxi` GROUP BY split")
    }
    assert counts == result.manifest["counts"]["written"]
    assert client.get_table(f"{ds}.taxi").clustering_fields == ["company_xf"]


def test_a_bigquery_source_with_a_date_range(
    bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    from google.cloud import bigquery

    ds = _dataset(bigquery_emulator, "trips_in")
    client = bigquery_emulator.client()
    table = bigquery.Table(
        f"{ds}.trips",
        schema=[
            bigquery.SchemaField("day", "DATE"),
            bigquery.SchemaField("fare", "FLOAT64"),
            bigquery.SchemaField("company", "STRING"),
        ],
    )
    client.create_table(table, exists_ok=True)
    client.insert_rows_json(
        f"{ds}.trips",
        [
            {"day": "2024-01-31", "fare": 1.0, "company": "a"},
            {"day": "2024-02-01", "fare": 2.0, "company": "b"},
            {"day": "2024-02-29", "fare": 3.0, "company": None},
            {"day": "2024-03-01", "fare": 4.0, "company": "c"},
        ],
    )
    spec = parse_spec(
        {
            "name": "trips",
            "source": {
                "format": "bigquery",
                "bigquery": {
                    "table": f"{ds}.trips",
                    "date_column": "day",
                    "start": "2024-02-01",
                    "end": "2024-03-01",
                },
                # The hash split hashes strings and numbers: the date is read as its text.
                "schema": {"day": "string"},
            },
            "split": {"method": "hash", "fractions": {"all": 1.0}},
            "output": {"formats": ["jsonl"]},
        }
    )
    result = run_job(spec, output=str(tmp_path / "out"))

    assert result.manifest["counts"]["read"] == 2
    assert result.manifest["source"]["bigquery"] == {
        "table": f"{ds}.trips",
        "query": None,
        "sql": f"SELECT * FROM `{ds}.trips` WHERE DATE(`day`) >= @start AND DATE(`day`) < @end",
        "date_column": "day",
        "start": "2024-02-01",
        "end": "2024-03-01",
    }
    assert result.manifest["input_schema"] == {
        "day": "string",
        "fare": "float64",
        "company": "string",
    }
    lines = sorted(
        t
        for p in split_paths(result.manifest, "all", "jsonl")
        if (t := pathlib.Path(p).read_text())
    )
    assert "".join(lines).count("\n") == 2
    assert '"2024-02-01"' in "".join(lines) and '"2024-02-29"' in "".join(lines)


def test_rows_bigquery_rejects_go_to_the_error_output(bigquery_emulator: Any) -> None:
    from google.cloud import bigquery

    ds = _dataset(bigquery_emulator, "reject")
    client = bigquery_emulator.client()
    client.create_table(
        bigquery.Table(f"{ds}.t", schema=[bigquery.SchemaField("n", "INT64")]), exists_ok=True
    )
    # The batch's strings are sent as they are: BigQuery refuses the one that is no number.
    batch = pa.RecordBatch.from_pydict({"n": ["1", "x", "3"]})
    with TestPipeline(runner="DirectRunner") as p:
        written = (
            p
            | beam.Create([batch])
            | bq.WriteToBigQuery(
                table=f"{ds}.t",
                schema=batch.schema,
                method="STREAMING_INSERTS",
                pipeline="job",
                step="bigquery_train",
            )
        )
        assert_that(written.rows, equal_to([2]), label="Rows")
        assert_that(
            written.errors
            | beam.Map(lambda e: (e.pipeline, e.step, e.reason, e.payload, e.source)),
            equal_to(
                [("job", "bigquery_train", "bigquery_rejected", '{"n": "x"}', f"bigquery:{ds}.t")]
            ),
            label="Errors",
        )
    assert sorted(r["n"] for r in client.list_rows(f"{ds}.t")) == [1, 3]


def test_a_dead_letter_table_receives_the_error_records(
    bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    ds = _dataset(bigquery_emulator, "dead")
    csv = tmp_path / "in.csv"
    csv.write_text("id,x\n1,2.5\n2,oops\n3,\n")
    spec = parse_spec(
        {
            "name": "dl",
            "source": {
                "format": "csv",
                "path": str(csv),
                "schema": {"id": "int64", "x": "float64"},
            },
            "clean": [{"op": "required", "columns": ["x"]}],
            "split": {"method": "hash", "fractions": {"all": 1.0}},
            "errors": {"bigquery_table": f"{ds}.errors"},
        }
    )
    result = run_job(spec, output=str(tmp_path / "out"))

    got = sorted(
        (r["step"], r["reason"], r["source"])
        for r in bigquery_emulator.client().list_rows(f"{ds}.errors")
    )
    assert result.manifest["errors"]["count"] == 2
    assert got == sorted(
        [
            ("read", "unparseable_value", f"{csv}:3"),
            ("required:x", "missing_required", f"{csv}:4"),
        ]
    )


def test_a_table_that_does_not_fit_fails_at_plan_time(
    bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    from google.cloud import bigquery

    ds = _dataset(bigquery_emulator, "mismatch")
    bigquery_emulator.client().create_table(
        bigquery.Table(f"{ds}.taxi", schema=[bigquery.SchemaField("fare_xf", "STRING")]),
        exists_ok=True,
    )
    spec = _taxi_with_sink({"table": f"{ds}.taxi", "method": "STREAMING_INSERTS"})
    with pytest.raises(
        ValueError, match="column 'fare_xf' is STRING NULLABLE in the table but FLOAT64 NULLABLE"
    ):
        plan(spec, inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "out"))


def test_missing_tables_fail_at_plan_time(bigquery_emulator: Any, tmp_path: pathlib.Path) -> None:
    ds = _dataset(bigquery_emulator, "missing")
    spec = _taxi_with_sink({"table": f"{ds}.nope", "create": False})
    with pytest.raises(ValueError, match=rf"BigQuery table {ds}.nope does not exist"):
        plan(spec, inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "out"))
    spec = _taxi_with_sink({"table": "test-project.no_dataset.t"})
    with pytest.raises(ValueError, match=r"dataset test-project\.no_dataset does not exist"):
        plan(spec, inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "out"))
    source = parse_spec(
        {
            "name": "s",
            "source": {"format": "bigquery", "bigquery": {"table": f"{ds}.absent"}},
        }
    )
    with pytest.raises(ValueError, match=rf"BigQuery source {ds}.absent not found"):
        plan(source, output=str(tmp_path / "out"))


def test_sink_tables_change_only_when_a_run_commits(
    bigquery_emulator: Any, tmp_path: pathlib.Path
) -> None:
    from transforms.core.manifest import CountsMismatchError

    ds = _dataset(bigquery_emulator, "taxi_commit")
    client = bigquery_emulator.client()
    sink = {"table": f"{ds}.taxi_{{split}}", "method": "STREAMING_INSERTS", "write": "truncate"}
    out = tmp_path / "out"
    good = run_job(_taxi_with_sink(sink), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    assert good["bigquery"] == {
        "tables": [f"{ds}.taxi_train", f"{ds}.taxi_eval"],
        "write": "truncate",
    }

    def table_rows() -> dict[str, list[tuple]]:
        return {
            split: rows(
                client.list_rows(f"{ds}.taxi_{split}").to_arrow(create_bqstorage_client=False)
            )
            for split in ("train", "eval")
        }

    before = table_rows()
    assert {k: len(v) for k, v in before.items()} == good["counts"]["written"]
    # A run that fails after writing its rows (too many rejected) changes no table.
    lines = TAXI_SAMPLE.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], *lines[1:200], *(x + ",9" for x in lines[200:260])]) + "\n")
    strict = _taxi_with_sink(sink, errors={"max_fraction": 0.01})
    with pytest.raises(CountsMismatchError, match=r"more than errors\.max_fraction=0\.01"):
        run_job(strict, inputs=[str(bad)], output=str(out))
    assert table_rows() == before
    assert sorted(t.table_id for t in client.list_tables(ds)) == ["taxi_eval", "taxi_train"]
    # A committed rerun replaces the rows with exactly its own.
    small = tmp_path / "small.csv"
    small.write_text("\n".join(lines[:101]) + "\n")
    rerun = run_job(_taxi_with_sink(sink), inputs=[str(small)], output=str(out)).manifest
    assert {k: len(v) for k, v in table_rows().items()} == rerun["counts"]["written"]
    assert sum(rerun["counts"]["written"].values()) == 100
    assert sorted(t.table_id for t in client.list_tables(ds)) == ["taxi_eval", "taxi_train"]
