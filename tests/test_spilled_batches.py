"""Spilled batches come back whole: every row, every column, hidden ones included."""

from __future__ import annotations

import pathlib

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.io.spilled_batches import ReadSpilled, SpillBatches, read_spilled


def _batch(start: int, n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "x": pa.array(range(start, start + n), pa.int64()),
            "name": [f"r{i}" for i in range(start, start + n)],
            "__line": pa.array(range(start + 2, start + n + 2), pa.int64()),
        }
    )


def _rows(batch: pa.RecordBatch) -> list[tuple]:
    return list(zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns)), strict=True))


@pytest.mark.parametrize("file_bytes", [1, 10_000_000])
def test_batches_round_trip_through_spill_files(tmp_path: pathlib.Path, file_bytes: int) -> None:
    batches = [_batch(i * 10, 10) for i in range(7)]
    # Another schema in the middle: it starts a file of its own.
    other = pa.RecordBatch.from_pydict({"y": pa.array([1.5, 2.5])})
    p = TestPipeline(runner="DirectRunner")
    back = (
        p
        | beam.Create([*batches[:3], other, *batches[3:]])
        | SpillBatches(str(tmp_path), file_bytes=file_bytes)
        | ReadSpilled()
        | beam.FlatMap(_rows)
    )
    expected = [row for b in batches for row in _rows(b)] + [(1.5,), (2.5,)]
    assert_that(back, equal_to(expected))
    p.run().wait_until_finish()
    files = sorted(tmp_path.glob("*.arrow"))
    # Small files: one per batch; large ones: one per run of a schema (the bundle is one).
    assert len(files) == (8 if file_bytes == 1 else 3)
    schemas = {next(read_spilled(str(f))).schema.names[0] for f in files}
    assert schemas == {"x", "y"}


def test_file_bytes_must_be_positive(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="file_bytes must be >= 1"):
        SpillBatches(str(tmp_path), file_bytes=0)


@pytest.mark.slow
def test_a_local_run_removes_its_spill_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import load_spec
    from tests.conftest import REPO, TAXI_SAMPLE

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    result = run_job(
        load_spec(str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")),
        inputs=[str(TAXI_SAMPLE)],
        output=str(tmp_path / "out"),
    )
    rows = len(TAXI_SAMPLE.read_text().splitlines()) - 1
    assert result.manifest["counts"]["read"] == rows
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(
    ("spill", "reads"), [(True, ["Read"]), (False, ["Read", "Transform/ReadForFit"])]
)
def test_with_a_spill_directory_the_input_is_read_once(
    tmp_path: pathlib.Path, spill: bool, reads: list[str]
) -> None:
    from beam_pipelines.dataset import build, plan
    from beam_pipelines.runner import make_options, make_pipeline
    from beam_pipelines.spec import load_spec
    from tests.conftest import REPO, TAXI_SAMPLE

    the_plan = plan(
        load_spec(str(REPO / "examples" / "chicago_taxi" / "pipeline.yaml")),
        inputs=[str(TAXI_SAMPLE)],
        output=str(tmp_path / "out"),
    )
    p = make_pipeline(make_options([]))
    build(p, the_plan, spill_dir=str(tmp_path) if spill else None)
    top = p.transforms_stack[0].parts
    (transform,) = [t for t in top if t.full_label == "Transform"]
    names = [t.full_label for t in top] + [t.full_label for t in transform.parts]
    read = [n for n in names if n.split("/")[-1].startswith("Read") and "Spilled" not in n]
    assert read == reads
    assert ("Transform/Spill" in names, "Transform/ReadSpilled" in names) == (spill, spill)
