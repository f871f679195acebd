"""ErrorCollector: every error output reaches it, or the pipeline does not build."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.beam.error_handling import (
    Collected,
    ErrorCollector,
    UnhandledErrorsError,
    unhandled_error_outputs,
)


def _check_even(n: int) -> Iterator[object]:
    """Odd numbers are errors; every element is counted, as (kind, n) pairs."""
    if n % 2:
        yield beam.pvalue.TaggedOutput("errors", f"odd {n}")
        yield beam.pvalue.TaggedOutput("counts", collections.Counter({"rejected": 1}))
    else:
        yield n
        yield beam.pvalue.TaggedOutput("counts", collections.Counter({"kept": 1}))


def _stage(p: beam.Pipeline, label: str, values: list[int]) -> beam.pvalue.DoOutputsTuple:
    return (
        p
        | f"{label}Create" >> beam.Create(values)
        | label >> beam.FlatMap(_check_even).with_outputs("errors", "counts", main="rows")
    )


def _total(counters: list[collections.Counter]) -> dict[str, int]:
    return dict(sum(counters, collections.Counter()))


def test_an_error_output_handed_to_nobody_fails_the_build() -> None:
    p = test_pipeline.TestPipeline()
    collector = ErrorCollector(p)
    kept = _stage(p, "First", [1, 2])
    forgotten = _stage(p, "Second", [3, 4])
    collector.add(errors=kept.errors, counts=kept.counts)
    _ = forgotten.counts | "CountForgotten" >> beam.Map(lambda c: c)
    collector.close()

    with pytest.raises(
        UnhandledErrorsError, match=r"error outputs nobody handles: 'errors' of 'Second'\. "
    ):
        p.run()


def test_an_error_output_never_accessed_is_caught_too() -> None:
    # The tagged output exists in the graph even if the code never touched it.
    p = test_pipeline.TestPipeline()
    collector = ErrorCollector(p)
    _ = (
        p
        | beam.Create([1])
        | "Quiet" >> beam.FlatMap(_check_even).with_outputs("errors", main="rows")
    )
    collector.close()

    assert unhandled_error_outputs(p, {}, ["errors"]) == ["'errors' of 'Quiet'"]
    with pytest.raises(UnhandledErrorsError, match="'errors' of 'Quiet'"):
        p.run()


def test_a_collector_never_closed_fails_the_build() -> None:
    p = test_pipeline.TestPipeline()
    collector = ErrorCollector(p, label="Dataset")
    stage = _stage(p, "First", [1])
    collector.add(errors=stage.errors, counts=stage.counts)

    with pytest.raises(UnhandledErrorsError, match="ErrorCollector 'Dataset' was never closed"):
        p.run()


def test_a_consumed_collector_gives_exactly_the_errors_and_counts() -> None:
    with test_pipeline.TestPipeline() as p:
        collector = ErrorCollector(p)
        first = _stage(p, "First", [1, 2, 3])
        second = _stage(p, "Second", [4, 5])
        collector.add(errors=first.errors, counts=first.counts)
        collector.add(errors=second.errors, counts=second.counts)
        collected = collector.close()

        assert isinstance(collected, Collected)
        assert collected.errors is collected.counted_errors
        assert_that(collected.errors, equal_to(["odd 1", "odd 3", "odd 5"]), label="Errors")
        totals = collected.counts | beam.combiners.ToList() | beam.Map(_total)
        assert_that(totals, equal_to([{"kept": 2, "rejected": 3}]), label="Counts")
        rows = (first.rows, second.rows) | "Rows" >> beam.Flatten()
        assert_that(rows, equal_to([2, 4]), label="Rows")


def test_records_outside_the_counts_are_in_errors_only() -> None:
    with test_pipeline.TestPipeline() as p:
        collector = ErrorCollector(p)
        stage = _stage(p, "First", [1, 2])
        refused = p | "Refused" >> beam.Create(["sink refused 2"])
        collector.add(errors=stage.errors, counts=stage.counts)
        collector.add(errors=refused, in_counts=False)
        collected = collector.close()

        assert_that(collected.errors, equal_to(["odd 1", "sink refused 2"]), label="All")
        assert_that(collected.counted_errors, equal_to(["odd 1"]), label="Counted")


def test_an_error_output_flattened_into_a_handed_one_is_handled() -> None:
    # A composite that merges its inner error outputs hands in the merged one only.
    class TwoStages(beam.PTransform):
        def expand(self, p: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
            first = _stage(p.pipeline, "A", [1])
            second = _stage(p.pipeline, "B", [3, 4])
            return {
                "rows": (first.rows, second.rows) | "Rows" >> beam.Flatten(),
                "bad": (first.errors, second.errors) | "Errors" >> beam.Flatten(),
            }

    with test_pipeline.TestPipeline() as p:
        collector = ErrorCollector(p)
        out = p | "Two" >> TwoStages()
        collector.add(errors=out["bad"])
        collected = collector.close()

        assert_that(collected.errors, equal_to(["odd 1", "odd 3"]), label="Errors")
        assert_that(collected.counts, equal_to([]), label="Counts")


def test_a_discarded_error_output_needs_a_reason() -> None:
    with test_pipeline.TestPipeline() as p:
        collector = ErrorCollector(p)
        stage = _stage(p, "First", [1, 2])
        second_read = _stage(p, "Again", [1, 2])
        collector.add(errors=stage.errors, counts=stage.counts)
        with pytest.raises(ValueError, match="discard needs a reason"):
            collector.discard(second_read.errors, reason=" ")
        collector.discard(second_read.errors, reason="the first read records the same rows")
        collected = collector.close()

        assert_that(collected.errors, equal_to(["odd 1"]))


def test_the_consumer_s_own_error_output_may_be_discarded_after_close() -> None:
    with test_pipeline.TestPipeline() as p:
        collector = ErrorCollector(p)
        stage = _stage(p, "First", [1, 2])
        collector.add(errors=stage.errors, counts=stage.counts)
        collected = collector.close()
        refused = collected.errors | "DeadLetterTable" >> beam.FlatMap(
            lambda e: [beam.pvalue.TaggedOutput("errors", f"refused {e}")]
        ).with_outputs("errors", main="rows")
        collector.discard(refused.errors, reason="the records are in the error files too")

        assert_that(refused.errors, equal_to(["refused odd 1"]))


def test_nothing_handed_in_gives_empty_outputs() -> None:
    with test_pipeline.TestPipeline() as p:
        collected = ErrorCollector(p).close()

        assert_that(collected.errors, equal_to([]), label="Errors")
        assert_that(collected.counts, equal_to([]), label="Counts")


def test_a_closed_collector_takes_nothing_more() -> None:
    p = test_pipeline.TestPipeline()
    collector = ErrorCollector(p)
    stage = _stage(p, "First", [1])
    collector.close()

    with pytest.raises(RuntimeError, match=r"add\(\) must come before close\(\)"):
        collector.add(errors=stage.errors)
    with pytest.raises(RuntimeError, match=r"close\(\) must come before close\(\)"):
        collector.close()


def test_outputs_of_another_pipeline_are_refused() -> None:
    collector = ErrorCollector(test_pipeline.TestPipeline())
    other = _stage(test_pipeline.TestPipeline(), "First", [1])

    with pytest.raises(ValueError, match="belongs to another pipeline"):
        collector.add(errors=other.errors)


def test_two_collectors_share_what_each_was_handed() -> None:
    with test_pipeline.TestPipeline() as p:
        batch = ErrorCollector(p, label="Batch")
        other = ErrorCollector(p, label="Other")
        first = _stage(p, "First", [1])
        second = _stage(p, "Second", [3])
        batch.add(errors=first.errors)
        other.add(errors=second.errors)

        assert_that(batch.close().errors, equal_to(["odd 1"]), label="BatchErrors")
        assert_that(other.close().errors, equal_to(["odd 3"]), label="OtherErrors")


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="label must not be empty"):
        ErrorCollector(test_pipeline.TestPipeline(), label="")
    with pytest.raises(ValueError, match="tags must name at least one"):
        ErrorCollector(test_pipeline.TestPipeline(), tags=())
