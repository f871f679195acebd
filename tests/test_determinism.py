"""Same input, same output: fitting does not depend on bundling, merge order or workers.

Unit tests fold the same rows into accumulators split in different ways (batches, bundles,
merge orders and merge trees, pickled in between as Beam moves them) and require identical
outputs, byte for byte once serialised. Pipeline tests run the taxi example twice and with
two worker processes and require byte-identical ``transform.json`` files, the same artifact
sha256 and the same ``stats.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import pathlib
import pickle
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from transforms.core.steps import Analyzer
from transforms.ops.analyzers import Moments, ValueCounts
from transforms.ops.quantiles import MIN_MAX_BINS, Quantiles
from transforms.ops.registry import build_step
from transforms.ops.stats import DatasetStats

REPO = pathlib.Path(__file__).resolve().parent.parent
PIPELINE_YAML = REPO / "examples/chicago_taxi/pipeline.yaml"


def _table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=rows) * 10
    # Many distinct values (a quantile sketch would compact them), repeats, signs, zeros,
    # NaN and infinities, and float32 values.
    x[rng.integers(0, rows, rows // 50)] = 0.0
    x[rng.integers(0, rows, rows // 50)] *= -1
    x[rng.integers(0, rows, 7)] = math.nan
    x[rng.integers(0, rows, 3)] = math.inf
    x[rng.integers(0, rows, 2)] = -math.inf
    return pa.table(
        {
            "x": pa.array(x),
            "f": pa.array(rng.normal(size=rows).astype(np.float32) * 1000),
            "n": pa.array(rng.integers(-50, 50, rows), pa.int64()),
            "s": pa.array([f"v{i}" for i in rng.zipf(1.5, rows) % 500]),
        }
    )


def _bundled(
    analyzer: Analyzer[Any], table: pa.Table, rng: random.Random, *, bundles: int
) -> bytes:
    """Fits ``analyzer`` on ``table`` cut at random into batches, bundles and a merge tree."""
    cuts = sorted(rng.sample(range(1, table.num_rows), k=rng.randint(5, 40)))
    edges = [0, *cuts, table.num_rows]
    batches = [table.slice(a, b - a).to_batches()[0] for a, b in itertools.pairwise(edges)]
    rng.shuffle(batches)  # bundles see the batches in any order
    groups: list[list[pa.RecordBatch]] = [[] for _ in range(bundles)]
    for batch in batches:
        groups[rng.randrange(bundles)].append(batch)
    accumulators = []
    for group in groups:
        acc = analyzer.create_accumulator()
        for batch in group:
            acc = analyzer.add_batch(acc, batch)
        accumulators.append(pickle.loads(pickle.dumps(acc)))
    # A random merge tree: merge random pairs until one is left.
    while len(accumulators) > 1:
        rng.shuffle(accumulators)
        k = rng.randint(2, len(accumulators))
        merged = analyzer.merge_accumulators(accumulators[:k])
        accumulators = [pickle.loads(pickle.dumps(merged)), *accumulators[k:]]
    output = analyzer.extract_output(accumulators[0])
    return json.dumps(output, sort_keys=True, allow_nan=False).encode()


def _analyzers(schema: pa.Schema) -> dict[str, Analyzer[Any]]:
    def fitted(mapping: dict[str, Any]) -> Analyzer[Any]:
        analyzer = build_step(mapping, "features[0]").analyzer()
        assert analyzer is not None
        return analyzer

    return {
        "moments_float64": Moments("x"),
        "moments_float32": Moments("f"),
        "moments_int": Moments("n"),
        "quantiles_exact": Quantiles("n", 7),
        "quantiles_bounded": Quantiles("x", 10, max_bins=MIN_MAX_BINS),
        "quantiles_default": Quantiles("f", 10),
        "vocabulary": ValueCounts("s", top_k=20),
        "vocabulary_of_floats": ValueCounts("x", top_k=5),
        "fill_mean": fitted({"op": "fill_missing", "columns": ["x", "f"], "strategy": "mean"}),
        "fill_median": fitted({"op": "fill_missing", "columns": ["x"], "strategy": "median"}),
        "fill_mode": fitted({"op": "fill_missing", "columns": ["n"], "strategy": "mode"}),
        "clip": fitted(
            {"op": "clip", "column": "x", "lower_quantile": 0.01, "upper_quantile": 0.99}
        ),
        "stats": DatasetStats(schema),
    }


@pytest.mark.parametrize("name", sorted(_analyzers(_table(10, 0).schema)))
def test_every_analyzer_gives_the_same_bytes_however_the_data_is_bundled(name: str) -> None:
    table = _table(40_000, seed=1)
    analyzer = _analyzers(table.schema)[name]
    reference = _bundled(analyzer, table, random.Random(0), bundles=1)
    for seed in range(1, 6):
        rng = random.Random(seed)
        assert _bundled(analyzer, table, rng, bundles=rng.randint(2, 9)) == reference, seed


def test_outputs_are_finite_and_the_bounded_summary_really_was_bounded() -> None:
    table = _table(40_000, seed=1)
    analyzers = _analyzers(table.schema)
    outputs = {
        name: json.loads(_bundled(a, table, random.Random(0), bundles=3))
        for name, a in analyzers.items()
    }
    summary = analyzers["quantiles_bounded"].create_accumulator()
    for batch in table.to_batches(max_chunksize=5000):
        summary = analyzers["quantiles_bounded"].add_batch(summary, batch)
    assert not summary.exact  # 40,000 distinct values past 4,096 bins
    x = table.column("x").to_numpy()
    finite = x[np.isfinite(x)]
    assert outputs["moments_float64"]["count"] == len(finite)
    assert outputs["moments_float64"]["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert outputs["fill_mean"]["x"]["mean"] == outputs["moments_float64"]["mean"]
    assert outputs["stats"]["x"]["non_finite"] == int((~np.isfinite(x)).sum())
    assert "nan" not in outputs["vocabulary_of_floats"]["vocabulary"]
    assert all(math.isfinite(v) for v in outputs["quantiles_bounded"]["boundaries"])


# --- whole runs ------------------------------------------------------------------------------


def _run(spec_data: dict[str, Any], data: pathlib.Path, out: pathlib.Path, args: Sequence[str]):
    from beam_pipelines.dataset import run_job
    from beam_pipelines.spec import parse_spec

    manifest = run_job(
        parse_spec(spec_data, origin=str(PIPELINE_YAML)),
        inputs=[str(data)],
        output=str(out),
        beam_args=list(args),
    ).manifest
    artifact = pathlib.Path(manifest["artifact"]["path"])
    return {
        "transform.json": (artifact / "transform.json").read_bytes(),
        "sha256": manifest["artifact"]["sha256"],
        "stats.json": pathlib.Path(manifest["stats"]).read_bytes(),
        "artifact files": {
            p.relative_to(artifact).as_posix(): p.read_bytes()
            for p in sorted(artifact.rglob("*"))
            if p.is_file()
        },
    }


def _strict(text: bytes) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_taxi_runs_and_two_worker_processes_write_identical_artifacts(taxi_csv, tmp_path):
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    first = _run(spec, taxi_csv, tmp_path / "first", [])
    second = _run(spec, taxi_csv, tmp_path / "second", [])
    two_workers = _run(
        spec,
        taxi_csv,
        tmp_path / "two_workers",
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    for other in (second, two_workers):
        assert other["transform.json"] == first["transform.json"]
        assert other["sha256"] == first["sha256"]
        assert other["artifact files"] == first["artifact files"]
        assert other["stats.json"] == first["stats.json"]
    document = _strict(first["transform.json"])
    assert document["sha256"] == first["sha256"]
    _strict(first["stats.json"])


@pytest.mark.slow
def test_jittered_taxi_rows_get_the_same_buckets_in_every_run(tmp_path):
    # 40,000 rows with jittered coordinates: thousands of distinct values per bucketized
    # column, where a randomised sketch moved hundreds of rows between buckets from run to run.
    from benchmarks.data import SOURCE, read_source, scale, to_csv_bytes

    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} not found")
    data = tmp_path / "taxi_40000.csv"
    data.write_bytes(to_csv_bytes(scale(read_source(SOURCE), 40_000, seed=3)))
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    first = _run(spec, data, tmp_path / "first", [])
    second = _run(spec, data, tmp_path / "second", ["--direct_num_workers=2"])
    assert second["transform.json"] == first["transform.json"]
    assert second["sha256"] == first["sha256"]
    fitted = _strict(first["transform.json"])["fitted"]
    assert len(fitted["bucketize:pickup_latitude"]["boundaries"]) == 9
