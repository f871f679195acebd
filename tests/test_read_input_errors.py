"""A file that cannot be read at all is one line naming it (issue 11).

The line is a :class:`transforms.core.errors.InputError`, raised before any work when possible:
a missing header column, a truncated Parquet or gzip file, a directory, an unreadable file, a
missing GCS object; one met in a worker reaches the launcher as the same error.
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from tests.malformed_reads import TRIPS, read_all, trips
from transforms.core.errors import InputError
from transforms.core.schema import arrow_schema
from transforms.io.read import (
    ReadError,
    ReadRecords,
    Source,
    expand_paths,
    read_file,
    resolve_schema,
)

REPO = pathlib.Path(__file__).resolve().parent.parent


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
