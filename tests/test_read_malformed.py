"""Malformed input degrades per record, never per file, in every reader (issue 11).

A bad record is one error record with its file and line, and reading goes on; a value a
column cannot take rejects its row, whatever the format; a file that cannot be read at all
is one line naming it (:class:`transforms.core.errors.InputError`), before any work when possible.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.dataset import run_job
from beam_pipelines.spec import parse_spec
from tests.datasets import dataset_files
from transforms.core import errors
from transforms.core.config import SpecError, from_mapping
from transforms.core.errors import ErrorRecord, InputError
from transforms.core.schema import arrow_schema
from transforms.io.read import (
    CsvOptions,
    ReadError,
    ReadRecords,
    Source,
    expand_paths,
    read_file,
    resolve_schema,
)
from transforms.io.tf_example import encode_tf_examples, tfrecord_frame

TRIPS = {"id": "int64", "company": "string", "fare": "float64"}
REPO = pathlib.Path(__file__).resolve().parent.parent


def read_all(path: pathlib.Path, source: Source, **kwargs) -> tuple[list[dict], list[tuple]]:
    """Rows (without __file) and errors (line, reason, message, payload) of one file."""
    schema = resolve_schema(source, [str(path)])
    rows: list[dict] = []
    found: list[ErrorRecord] = []
    for batch, errs in read_file(str(path), source, schema, pipeline="job", **kwargs):
        if batch is not None:
            rows += batch.drop_columns(["__file"]).to_pylist()
        found += errs
    for e in found:
        assert e.source.rsplit(":", 1)[0] == str(path)
    return rows, [(int(e.source.rsplit(":", 1)[1]), e.reason, e.message, e.payload) for e in found]


def trips(**options) -> Source:
    return Source(format="csv", schema=dict(TRIPS), **options)


# --- CSV: quotes --------------------------------------------------------------------------

LITERAL_QUOTES = ['Flash"Cab', "5'10\"", 'Cab"', 'a""b', 'x"y"z']


@pytest.mark.parametrize("value", LITERAL_QUOTES)
@pytest.mark.parametrize("column", ["first", "middle", "last"])
def test_a_quote_inside_an_unquoted_value_is_a_literal_character(
    tmp_path: pathlib.Path, value: str, column: str
) -> None:
    schema = {"a": "string", "b": "string", "c": "string"}
    fields = {"first": [value, "m", "z"], "middle": ["f", value, "z"], "last": ["f", "m", value]}
    lines = ["a,b,c", "1,2,3", ",".join(fields[column]), "4,5,6", '"7","8,9",10']
    path = tmp_path / "x.csv"
    path.write_text("\n".join(lines) + "\n")
    rows, found = read_all(path, Source(format="csv", schema=schema))
    assert found == []
    # Python's csv module reads the same values: the quote is kept as written.
    with path.open(newline="") as handle:
        expected = [dict(zip("abc", r, strict=True)) for r in list(csv.reader(handle))[1:]]
    assert [{k: r[k] for k in "abc"} for r in rows] == expected
    assert [r["__line"] for r in rows] == [2, 3, 4, 5]
    assert expected[1][{"first": "a", "middle": "b", "last": "c"}[column]] == value


def test_lone_quotes_go_through_the_whole_pipeline(tmp_path: pathlib.Path) -> None:
    companies = ['Flash"Cab', "5'10\"", 'Blue, "Cab"', 'Taxi"', "Plain"]
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as handle:
        handle.write("id,company,fare\n")
        for i in range(200):
            company = companies[i % len(companies)]
            text = f'"{company.replace(chr(34), 2 * chr(34))}"' if "," in company else company
            handle.write(f"{i},{text},{i}.5\n")
    spec = {
        "name": "quotes",
        "source": {"format": "csv", "schema": dict(TRIPS)},
        "split": {"fractions": {"all": 1.0}},
    }
    out = tmp_path / "out"
    manifest = run_job(parse_spec(spec), inputs=[str(path)], output=str(out)).manifest
    assert manifest["counts"]["read"] == 200
    assert manifest["counts"]["rejected"] == {}
    written = pa.concat_tables([pq.read_table(f) for f in dataset_files(out)]).to_pylist()
    assert sorted((r["id"], r["company"]) for r in written) == [
        (i, companies[i % len(companies)]) for i in range(200)
    ]


def test_an_unterminated_quote_is_one_error_and_every_later_row_is_read(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    lines = ["id,company,fare"] + [
        f'{i},"Flash Cab,{i}.5' if i == 9 else f'{i},"Blue, Cab",{i}.5' for i in range(100)
    ]
    path.write_text("\n".join(lines) + "\n")
    rows, found = read_all(path, trips())
    assert [r["id"] for r in rows] == [i for i in range(100) if i != 9]
    assert [r["__line"] for r in rows] == [i + 2 for i in range(100) if i != 9]
    assert found == [
        (
            11,
            errors.UNTERMINATED_QUOTE,
            "a quoted value opened in this record is closed on a later line by a quote with"
            " more text after it (an unterminated quote?); the record is skipped and reading"
            " resumes on the next line",
            '9,"Flash Cab,9.5',
        )
    ]
    assert len(rows) + len(found) == 100


def test_an_unterminated_quote_in_read_records_counts_every_record(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    lines = ["id,company,fare"] + [
        f'{i},"oops,1' if i == 10 else f"{i},c{i},{i}" for i in range(100)
    ]
    path.write_text("\n".join(lines))
    source = trips(path=str(path), batch_size=16)
    pipeline = TestPipeline(runner="DirectRunner")
    read = pipeline | ReadRecords(
        source=source, schema=resolve_schema(source, [str(path)]), pipeline="job"
    )
    assert_that(
        read.batches | beam.FlatMap(lambda b: b.column("id").to_pylist()),
        equal_to([i for i in range(100) if i != 10]),
        label="rows",
    )
    assert_that(
        read.errors | beam.Map(lambda e: (e.reason, e.source, e.payload)),
        equal_to([(errors.UNTERMINATED_QUOTE, f"{path}:12", '10,"oops,1')]),
        label="errors",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("beamforge"))["counters"]
    }
    assert counters == {"rows_read": 99, "read_errors": 1}


# --- CSV: big records -----------------------------------------------------------------------


def test_records_up_to_the_maximum_parse_whatever_their_size(tmp_path: pathlib.Path) -> None:
    big = "x" * (3 << 20)  # Arrow's default block is 1 MiB
    path = tmp_path / "x.csv"
    path.write_text(f'id,company,fare\n1,a,1\n2,{big},2\n3,"{big}\n{big}",3\n4,d,4\n')
    rows, found = read_all(path, trips(), chunk_bytes=1 << 20)
    assert found == []
    assert [(r["id"], len(r["company"]), r["__line"]) for r in rows] == [
        (1, 1, 2),
        (2, 3 << 20, 3),
        (3, (6 << 20) + 1, 4),
        (4, 1, 6),
    ]


def test_a_record_over_the_maximum_is_one_error_and_reading_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,company,fare\n1,a,1\n2," + "x" * 100_000 + ",2\n3,c,3\n")
    rows, found = read_all(path, trips(csv=CsvOptions(max_record_bytes=1 << 16)))
    assert [(r["id"], r["__line"]) for r in rows] == [(1, 2), (3, 4)]
    assert [(line, reason, len(payload)) for line, reason, _, payload in found] == [
        (3, errors.RECORD_TOO_LARGE, 1 << 16)
    ]
    assert found[0][2] == (
        "record is longer than csv.max_record_bytes (65536 bytes); it is skipped (raise"
        " csv.max_record_bytes to read it)"
    )


@pytest.mark.parametrize("max_record_bytes", [16 << 20, 1 << 20])
def test_a_10_mb_file_without_newline_is_read_or_rejected_never_a_traceback(
    tmp_path: pathlib.Path, max_record_bytes: int
) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,company,fare\n1," + b"y" * (10 << 20) + b",2.5")
    rows, found = read_all(path, trips(csv=CsvOptions(max_record_bytes=max_record_bytes)))
    if max_record_bytes > 10 << 20:
        assert (found, [(r["id"], len(r["company"]), r["fare"]) for r in rows]) == (
            [],
            [(1, 10 << 20, 2.5)],
        )
    else:
        assert rows == []
        assert [(line, reason) for line, reason, *_ in found] == [(2, errors.RECORD_TOO_LARGE)]


def test_max_record_bytes_is_validated_with_the_spec() -> None:
    with pytest.raises(SpecError, match=r"csv\.max_record_bytes must be at least 1024, got 10"):
        from_mapping(
            Source,
            {"format": "csv", "schema": {"a": "int64"}, "csv": {"max_record_bytes": 10}},
            "source",
        )


# --- Values: the same rule in every format ---------------------------------------------------


def test_parquet_bad_string_in_a_numeric_column_rejects_its_row_only(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table({"id": [1, 2, 3], "company": ["a", "b", "c"], "fare": ["12.5", "abc", "7"]}),
        path,
    )
    rows, found = read_all(path, Source(format="parquet", schema=dict(TRIPS)))
    assert rows == [
        {"id": 1, "company": "a", "fare": 12.5, "__line": 1},
        {"id": 3, "company": "c", "fare": 7.0, "__line": 3},
    ]
    assert found == [
        (
            2,
            errors.UNPARSEABLE_VALUE,
            "column 'fare': 'abc' is not a valid float64",
            '{"company": "b", "fare": "abc", "id": 2}',
        )
    ]


def test_parquet_values_the_schema_cannot_take_reject_their_rows(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table(
            {
                "i": pa.array([3.0, 3.7, 1.0, 2.0], pa.float64()),
                "small": pa.array([1, 2, 2**40, 3], pa.int64()),
                "x": pa.array([1.5, 2.5, 3.5, float("nan")], pa.float64()),
            }
        ),
        path,
    )
    schema = {"i": "int64", "small": "int32", "x": "float32"}
    rows, found = read_all(path, Source(format="parquet", schema=schema))
    assert rows == [{"i": 3, "small": 1, "x": 1.5, "__line": 1}]
    assert [(line, reason, message) for line, reason, message, _ in found] == [
        (2, errors.UNPARSEABLE_VALUE, "column 'i': 3.7 is not a valid int64"),
        (3, errors.UNPARSEABLE_VALUE, "column 'small': 1099511627776 is not a valid int32"),
        (
            4,
            errors.NON_FINITE,
            "column 'x': nan is not a finite float32 (NaN, an infinity, or beyond float32's"
            " range); list the column in source.allow_non_finite to accept such values",
        ),
    ]


def test_jsonl_rejects_what_the_schema_cannot_take(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"i": 3.7, "x": 1}',
                '{"i": 3.0, "x": 1}',
                '{"i": 9223372036854775808, "x": 1}',
                '{"i": true, "x": 1}',
                '{"i": 1, "x": NaN}',
                '{"i": 1, "x": Infinity}',
                '{"i": 1, "x": -Infinity}',
                '{"i": 1, "x": 1e309}',
                '{"i": 1, "f32": 1e39}',
                '{"i": 1, "f32": 3.4e38, "x": 2.5}',
            ]
        )
    )
    schema = {"i": "int64", "x": "float64", "f32": "float32"}
    rows, found = read_all(path, Source(format="jsonl", schema=schema))
    assert [(r["__line"], r["i"]) for r in rows] == [(2, 3), (10, 1)]
    assert [(line, reason) for line, reason, *_ in found] == [
        (1, errors.UNPARSEABLE_VALUE),
        (3, errors.UNPARSEABLE_VALUE),
        (4, errors.UNPARSEABLE_VALUE),
        (5, errors.NON_FINITE),
        (6, errors.NON_FINITE),
        (7, errors.NON_FINITE),
        (8, errors.NON_FINITE),
        (9, errors.NON_FINITE),
    ]
    assert found[0][2] == "column 'i': expected int64, got 3.7"
    assert found[3][2].startswith("column 'x': nan is not a finite float64")
    assert found[7][2].startswith("column 'f32': 1e39 is not a finite float32")


def test_avro_and_tfrecord_apply_the_same_rule(tmp_path: pathlib.Path) -> None:
    avro = tmp_path / "x.avro"
    with avro.open("wb") as handle:
        fastavro.writer(
            handle,
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "n", "type": "long"}, {"name": "x", "type": "double"}],
            },
            [{"n": 1, "x": 0.5}, {"n": 2**40, "x": 1.5}, {"n": 3, "x": float("inf")}],
        )
    schema = {"n": "int32", "x": "float64"}
    rows, found = read_all(avro, Source(format="avro", schema=schema))
    assert rows == [{"n": 1, "x": 0.5, "__line": 1}]
    assert [(line, reason, message) for line, reason, message, _ in found] == [
        (2, errors.UNPARSEABLE_VALUE, "column 'n': expected int32, got 1099511627776"),
        (3, errors.NON_FINITE, found[1][2]),
    ]
    assert found[1][2].startswith("column 'x': inf is not a finite float64")

    batch = pa.RecordBatch.from_pydict(
        {"n": pa.array([1, 2], pa.int64()), "x": pa.array([float("nan"), 2.0], pa.float32())}
    )
    tfrecord = tmp_path / "x.tfrecord"
    tfrecord.write_bytes(b"".join(tfrecord_frame(r) for r in encode_tf_examples(batch)))
    rows, found = read_all(
        tfrecord, Source(format="tfrecord", schema={"n": "int64", "x": "float32"})
    )
    assert rows == [{"n": 2, "x": 2.0, "__line": 2}]
    assert [(line, reason) for line, reason, *_ in found] == [(1, errors.NON_FINITE)]
    assert json.loads(found[0][3]).keys() == {"tf_example_base64"}


# --- Non-finite numbers -------------------------------------------------------------------


def test_csv_non_finite_values_are_rejected_unless_allowed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,x,y\n1,NaN,1\n2,inf,1\n3,-inf,1\n4,1e309,1\n5,1.5,1e39\n6,2.5,2\n")
    schema = {"a": "int64", "x": "float64", "y": "float32"}
    rows, found = read_all(path, Source(format="csv", schema=schema))
    assert [r["a"] for r in rows] == [6]
    assert [(line, reason, message.split(" is not")[0]) for line, reason, message, _ in found] == [
        (2, errors.NON_FINITE, "column 'x': 'NaN'"),
        (3, errors.NON_FINITE, "column 'x': 'inf'"),
        (4, errors.NON_FINITE, "column 'x': '-inf'"),
        (5, errors.NON_FINITE, "column 'x': '1e309'"),
        (6, errors.NON_FINITE, "column 'y': '1e39'"),
    ]
    allowed, found = read_all(path, Source(format="csv", schema=schema, allow_non_finite=["x"]))
    assert [r["a"] for r in allowed] == [1, 2, 3, 4, 6]
    assert (
        np.isnan(allowed[0]["x"])
        and allowed[1:4]
        and [r["x"] for r in allowed[1:4]]
        == [
            float("inf"),
            float("-inf"),
            float("inf"),
        ]
    )
    assert [(line, reason) for line, reason, *_ in found] == [(6, errors.NON_FINITE)]


def test_parquet_nan_and_float32_overflow_are_allowed_per_column(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": [float("nan"), 1e300, 1.0]}), path)
    rejected, found = read_all(path, Source(format="parquet", schema={"x": "float32"}))
    assert (rejected, [(line, reason) for line, reason, *_ in found]) == (
        [{"x": 1.0, "__line": 3}],
        [(1, errors.NON_FINITE), (2, errors.NON_FINITE)],
    )
    allowed, found = read_all(
        path, Source(format="parquet", schema={"x": "float32"}, allow_non_finite=["x"])
    )
    assert found == [] and [r["x"] for r in allowed][1:] == [float("inf"), 1.0]


@pytest.mark.parametrize(
    ("allowed", "problem"),
    [
        (["nope"], "allow_non_finite: column 'nope' is not in the schema (columns: a, x)"),
        (["a"], "allow_non_finite: column 'a' is int64; only float columns hold non-finite"),
    ],
)
def test_allow_non_finite_names_float_columns_of_the_schema(allowed: list, problem: str) -> None:
    mapping = {"format": "csv", "schema": {"a": "int64", "x": "float64"}}
    with pytest.raises(SpecError, match=re.escape(problem)):
        from_mapping(Source, {**mapping, "allow_non_finite": allowed}, "source")


def test_allow_non_finite_is_checked_against_an_inferred_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,x\n1,2.5\n")
    source = Source(format="csv", infer_schema=True, allow_non_finite=["y"])
    with pytest.raises(InputError, match=r"^source.allow_non_finite: column 'y' is not in"):
        resolve_schema(source, [str(path)])


# --- Files that cannot be read: one line, before any work ---------------------------------


def test_a_schema_column_missing_from_any_header_fails_before_reading(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "a.csv").write_text("id,company,fare\n1,a,1\n")
    (tmp_path / "b.csv").write_text("id,fare\n1,1\n")
    paths = expand_paths([str(tmp_path / "*.csv")])
    with pytest.raises(ReadError) as failure:
        resolve_schema(trips(), paths)
    assert str(failure.value) == (
        f"{tmp_path / 'b.csv'}: column 'company' of the schema is not in the file's header"
        " (columns: id, fare)"
    )


def test_truncated_or_incomplete_parquet_fails_at_plan_time(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": [1, 2], "company": ["a", "b"], "fare": [1.0, 2.0]}), good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-20])
    source = Source(format="parquet", schema=dict(TRIPS))
    with pytest.raises(ReadError, match=rf"^{cut}: is not a readable Parquet file"):
        resolve_schema(source, [str(good), str(cut)])
    narrow = tmp_path / "narrow.parquet"
    pq.write_table(pa.table({"id": [1]}), narrow)
    with pytest.raises(
        ReadError,
        match=rf"^{narrow}: column 'company' of the schema is not in the Parquet file \(columns: id\)$",
    ):
        resolve_schema(source, [str(good), str(narrow)])


def test_a_truncated_gzip_csv_names_the_file_and_its_last_whole_line(
    tmp_path: pathlib.Path,
) -> None:
    text = "id,company,fare\n" + "".join(f"{i},c{i},{i}.5\n" for i in range(200_000))
    whole = gzip.compress(text.encode(), compresslevel=1)
    path = tmp_path / "x.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    decompressor = gzip.GzipFile(fileobj=io.BytesIO(whole[: len(whole) // 2]))
    available = b""
    try:
        while piece := decompressor.read(1 << 16):
            available += piece
    except EOFError:
        pass
    whole_lines = available.count(b"\n")
    with pytest.raises(ReadError) as failure:
        read_all(path, trips())
    assert whole_lines > 1000
    assert str(failure.value) == (
        f"{path}: is a truncated or corrupt gzip file (Compressed file ended before the"
        " end-of-stream marker was reached): its last whole line is line"
        f" {whole_lines}; write or upload it again"
    )


def test_a_directory_as_input_says_so_and_suggests_a_pattern(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("id\n1\n")
    folder = str(tmp_path / "data")
    with pytest.raises(InputError) as failure:
        expand_paths([folder])
    assert str(failure.value) == (
        f"{folder}: is a directory, not a file: give a pattern for its files, e.g."
        f" '{tmp_path / 'data'}/*.csv'"
    )


def test_an_unreadable_file_fails_before_any_work(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "locked.csv"
    path.write_text("id,company,fare\n1,a,1\n")
    path.chmod(0)
    program = (
        "import sys; from transforms.io.read import Source, resolve_schema\n"
        "try:\n"
        f"    resolve_schema(Source(format='csv', schema={TRIPS!r}), [{str(path)!r}])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    command = [sys.executable, "-c", program]
    if os.geteuid() == 0:
        # Root reads any file: drop the capabilities that let it.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == (
        f"ReadError {path}: cannot be opened: permission denied (check the file's permissions"
        " or your credentials)"
    )


def test_an_input_error_raised_in_a_worker_reaches_the_launcher_as_one(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,fare\n1,1\n")
    source = trips(path=str(path))
    # The schema is not checked against the file here, so the worker meets the problem.
    read = ReadRecords(source=source, schema=arrow_schema(TRIPS), pipeline="job")
    pipeline = TestPipeline(runner="DirectRunner")
    _ = pipeline | read
    with pytest.raises(InputError) as failure:
        pipeline.run().wait_until_finish()
    assert isinstance(failure.value, ReadError)
    assert failure.value.location == str(path)
    assert failure.value.problem.startswith(
        "column 'company' of the schema is not in the file's header (columns: id, fare)"
    )


# --- BigQuery results: the same rule ------------------------------------------------------


@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_bigquery_rows_the_schema_cannot_take_are_rejected(bigquery_emulator: Any) -> None:
    from google.cloud import bigquery

    from transforms.io.bigquery import BigQuerySource, ReadFromBigQuery

    client = bigquery_emulator.client()
    client.create_dataset("malformed", exists_ok=True)
    table = f"{bigquery_emulator.project}.malformed.trips"
    client.create_table(
        bigquery.Table(
            table,
            schema=[
                bigquery.SchemaField("id", "INT64"),
                bigquery.SchemaField("fare", "STRING"),
                bigquery.SchemaField("tips", "FLOAT64"),
            ],
        ),
        exists_ok=True,
    )
    client.insert_rows_json(
        table,
        [
            {"id": 1, "fare": "12.5", "tips": 1.0},
            {"id": 2, "fare": "abc", "tips": 2.0},
            {"id": 3, "fare": "7", "tips": "NaN"},
        ],
    )
    # The declared schema reads the STRING fare as a float, as a CSV field would be.
    schema = pa.schema([("id", pa.int64()), ("fare", pa.float64()), ("tips", pa.float64())])
    with TestPipeline(runner="DirectRunner") as p:
        read = p | ReadFromBigQuery(
            source=BigQuerySource(table=table), schema=schema, pipeline="job"
        )
        assert_that(
            read.batches | beam.FlatMap(lambda b: b.drop_columns(["__file"]).to_pylist()),
            equal_to([{"id": 1, "fare": 12.5, "tips": 1.0, "__line": 1}]),
            label="rows",
        )
        assert_that(
            read.errors | beam.Map(lambda e: (e.reason, e.message.split(" is ")[0])),
            equal_to(
                [
                    (errors.UNPARSEABLE_VALUE, "column 'fare': 'abc'"),
                    (errors.NON_FINITE, "column 'tips': nan"),
                ]
            ),
            label="errors",
        )


def test_bad_bytes_reject_their_record_only_in_any_encoding(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.csv"
    # cp1252 has no character for byte 0x81; the quoted value spans two lines.
    path.write_bytes('id,company,fare\n1,"Café\nNoir",1\n2,a\x81b,2\n3,Crème,3\n'.encode("latin-1"))
    rows, found = read_all(path, trips(csv=CsvOptions(encoding="cp1252")))
    assert [(r["id"], r["company"], r["__line"]) for r in rows] == [
        (1, "Café\nNoir", 2),
        (3, "Crème", 5),
    ]
    assert [(line, reason) for line, reason, *_ in found] == [(4, errors.BAD_ENCODING)]
    assert found[0][2] == ("line is not valid cp1252: character maps to <undefined> at byte 3")


def test_the_record_by_record_safety_net_reads_what_the_fast_path_reads() -> None:
    from transforms.io import csv_parse
    from transforms.io.csv_options import Dialect
    from transforms.io.csv_records import iter_records

    data = b'1,a,1\n2,b\n3,"c\nd",3\n'
    (records,) = iter_records(
        io.BytesIO(data), Dialect.of(CsvOptions()), chunk_bytes=64, max_record_bytes=1 << 10
    )
    names = ["id", "company", "fare"]
    table, keep, wrong = csv_parse.parse_one_by_one(records, names, trips(), arrow_schema(TRIPS))
    assert table.to_pylist() == [
        {"id": "1", "company": "a", "fare": "1"},
        {"id": "3", "company": "c\nd", "fare": "3"},
    ]
    assert (keep.tolist(), wrong) == ([True, False, True], [(1, 2)])
    fast, found = csv_parse.parse_records(records, names, trips(), arrow_schema(TRIPS), "f", "job")
    assert fast.column("id").to_pylist() == [1, 3]
    assert [(e.reason, e.source) for e in found] == [(errors.WRONG_FIELD_COUNT, "f:2")]


@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_gcs_folders_and_missing_objects_are_input_errors(gcs_emulator: Any) -> None:
    client = gcs_emulator.client()
    bucket = gcs_emulator.new_bucket("read-malformed")
    client.bucket(bucket).blob("raw/a.csv").upload_from_string("id,company,fare\n1,a,1\n")
    folder = f"gs://{bucket}/raw"
    with pytest.raises(InputError) as failure:
        expand_paths([folder])
    assert str(failure.value) == (
        f"{folder}: is a directory, not a file: give a pattern for its files, e.g. '{folder}/*.csv'"
    )
    assert expand_paths([f"{folder}/*.csv"]) == [f"{folder}/a.csv"]
    with pytest.raises(ReadError, match=rf"^gs://{bucket}/raw/gone.csv: cannot be opened: no"):
        list(read_file(f"gs://{bucket}/raw/gone.csv", trips(), arrow_schema(TRIPS), pipeline="j"))
