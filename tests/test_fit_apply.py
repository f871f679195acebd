"""FitSteps, ApplySteps and AnalyzeBatches as Beam transforms on the local runner."""

from __future__ import annotations

import collections

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.beam.apply import COUNTS, ERRORS, ApplySteps
from transforms.beam.fit import AnalyzeBatches, FitSteps
from transforms.ops.analyzers import Moments
from transforms.ops.registry import build_step


def _batches() -> list[pa.RecordBatch]:
    # Three elements, as three files would arrive.
    return [
        pa.RecordBatch.from_pydict({"x": [1.0, 2.0], "__file": ["a"] * 2, "__line": [2, 3]}),
        pa.RecordBatch.from_pydict({"x": [-1.0, 3.0], "__file": ["b"] * 2, "__line": [2, 3]}),
        pa.RecordBatch.from_pydict({"x": [None, 6.0], "__file": ["c"] * 2, "__line": [2, 3]}),
    ]


STEPS = [
    build_step({"op": "range", "column": "x", "min": 0}, "clean[0]"),
    build_step({"op": "fill_missing", "columns": ["x"], "strategy": "mean"}, "clean[1]"),
    build_step({"op": "z_score", "column": "x", "output": "z"}, "features[0]"),
]


def test_fit_steps_fits_each_step_on_the_rows_it_will_see() -> None:
    with TestPipeline(runner="DirectRunner") as p:
        prior = p | "Prior" >> beam.Create([{}])
        fitted = p | beam.Create(_batches()) | FitSteps(steps=STEPS, prior=prior, pipeline="t")
        # range drops -1; the mean of 1, 2, 3, 6 is 3; the z-score sees 1, 2, 3, 3, 6 after the fill.
        assert_that(
            fitted
            | beam.Map(
                lambda f: (
                    round(f["fill_missing:x"]["x"]["mean"], 6),
                    round(f["z_score:x"]["mean"], 6),
                    round(f["z_score:x"]["variance"], 6),
                )
            ),
            equal_to([(3.0, 3.0, 2.8)]),
        )


def test_apply_steps_outputs_rows_errors_and_counts() -> None:
    fitted_params = {
        "fill_missing:x": {"x": {"mean": 3.0, "count": 4}},
        "z_score:x": {"mean": 3.0, "variance": 4.0, "count": 5},
    }
    p = TestPipeline(runner="DirectRunner")
    fitted = p | "Fitted" >> beam.Create([fitted_params])
    applied = p | beam.Create(_batches()) | ApplySteps(steps=STEPS, fitted=fitted, pipeline="t")
    rows = applied.batches | beam.FlatMap(
        lambda b: list(zip(b.column("x").to_pylist(), b.column("z").to_pylist(), strict=True))
    )
    assert_that(
        rows, equal_to([(1.0, -1.0), (2.0, -0.5), (3.0, 0.0), (3.0, 0.0), (6.0, 1.5)]), label="rows"
    )
    assert_that(
        applied[ERRORS] | beam.Map(lambda e: (e.step, e.reason, e.source, e.payload)),
        equal_to([("range:x", "out_of_range", "b:2", '{"x": -1.0}')]),
        label="errors",
    )
    total = applied[COUNTS] | beam.CombineGlobally(lambda cs: sum(cs, collections.Counter()))
    assert_that(
        total,
        equal_to([collections.Counter({("rejected", "range:x", "out_of_range"): 1})]),
        label="counts",
    )
    result = p.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace("beamforge"))["counters"]
    by_name = {m.key.metric.name: m.committed for m in metrics}
    assert by_name == {"rows_applied": 6, "rows_rejected": 1}


def test_analyze_batches_folds_per_bundle_and_merges() -> None:
    with TestPipeline(runner="DirectRunner") as p:
        out = p | beam.Create(_batches()) | AnalyzeBatches(Moments("x"))
        assert_that(
            out | beam.Map(lambda m: (m["count"], m["sum"], m["min"], m["max"])),
            equal_to([(5, 11.0, -1.0, 6.0)]),
        )


def test_fit_steps_ignore_non_finite_values_in_every_analyzer() -> None:
    nan, inf = float("nan"), float("inf")
    batches = [
        pa.RecordBatch.from_pydict({"x": [1.0, nan, 2.0]}),
        pa.RecordBatch.from_pydict({"x": [inf, 3.0, -inf]}),
        pa.RecordBatch.from_pydict({"x": [None, 4.0, nan]}),
    ]
    steps = [
        build_step({"op": "fill_missing", "columns": ["x"], "strategy": "median"}, "clean[0]"),
        build_step({"op": "clip", "column": "x", "upper_quantile": 1.0}, "clean[1]"),
        build_step({"op": "z_score", "column": "x", "output": "z"}, "features[0]"),
        build_step({"op": "min_max", "column": "x", "output": "m"}, "features[1]"),
        build_step({"op": "bucketize", "column": "x", "output": "b", "num_buckets": 2}, "f[2]"),
        build_step({"op": "vocabulary", "column": "x", "output": "v"}, "features[3]"),
    ]
    with TestPipeline(runner="DirectRunner") as p:
        prior = p | "Prior" >> beam.Create([{}])
        fitted = p | beam.Create(batches) | FitSteps(steps=steps, prior=prior, pipeline="t")
        # Finite values 1, 2, 3, 4 (the median fill adds a 2, the lower median, for the
        # null; the upper clip bound is 4, so inf becomes 4 from then on).
        assert_that(
            fitted
            | beam.Map(
                lambda f: (
                    f["fill_missing:x"]["x"]["quantiles"],
                    f["clip:x"]["quantiles"],
                    f["z_score:x"]["count"],
                    f["z_score:x"]["mean"],
                    f["min_max:x"]["min"],
                    f["min_max:x"]["max"],
                    f["bucketize:x"]["boundaries"],
                    f["vocabulary:x"]["vocabulary"],
                )
            ),
            equal_to([([2.0], [4.0], 6, 16 / 6, 1.0, 4.0, [3.0], ["4.0", "2.0", "3.0", "1.0"])]),
        )
