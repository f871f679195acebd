"""One collector for every stage's error records and counts, refusing a forgotten error output.

Beam's own :class:`apache_beam.transforms.error_handling.ErrorHandler` takes error PCollections
from the transforms of a pipeline and makes ``Pipeline.run()`` fail when the handler was never
closed. :class:`ErrorCollector` keeps that protocol and adds what a pipeline with row counts
needs:

- each stage hands it its error records *and* its count elements;
- ``close()`` returns them flattened (:class:`Collected`), for the pipeline to write the records
  and sum the counts;
- ``Pipeline.run()`` fails with :class:`UnhandledErrorsError` when the collector was never
  closed, or when a transform made an error output (a PCollection tagged ``errors``) that was
  neither handed to a collector nor explicitly discarded nor flattened into one that was.

The check runs only on pipelines that hold a collector, and only while the pipeline is built:
nothing of it runs on workers. The collector knows nothing of the elements it moves.
"""

from __future__ import annotations

import dataclasses
import traceback
import weakref
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor

__all__ = ["ERRORS", "Collected", "ErrorCollector", "UnhandledErrorsError"]

ERRORS = "errors"
"""The output tag that marks a PCollection as an error output."""

# Error outputs handed to any collector (or discarded), per pipeline: a pipeline may hold
# several collectors, and each checks the whole graph.
_HANDLED: weakref.WeakKeyDictionary[beam.Pipeline, dict[int, beam.PCollection]] = (
    weakref.WeakKeyDictionary()
)


class UnhandledErrorsError(RuntimeError):
    """A pipeline was built with an error output nobody handles (a programming error)."""


@dataclasses.dataclass(frozen=True)
class Collected:
    """What a closed collector gives back.

    Attributes:
        errors: Every error record handed in.
        counted_errors: The records of rows the counts count as rejected: every record but
            those handed with ``in_counts=False``. The same PCollection as ``errors`` when
            there are no such records.
        counts: Every count element handed in, as they came (summing them is the pipeline's
            business).
    """

    errors: beam.PCollection
    counted_errors: beam.PCollection
    counts: beam.PCollection


class ErrorCollector:
    """Collects the error and count PCollections of a pipeline's stages; closed once, at the end.

    Typical use::

        collector = ErrorCollector(p, label="All")
        read = p | "Read" >> ReadRecords(...)
        collector.add(errors=read.errors, counts=read.batches | Map(count_rows))
        ...
        collected = collector.close()
        collected.errors | WriteErrors(...)
        collected.counts | SumCounts(...)

    Works on bounded and unbounded pipelines: it only flattens, so the PCollections handed in
    must have compatible windowing (Beam's rule for ``Flatten``).

    Args:
        pipeline: The pipeline whose stages hand their outputs in. ``pipeline.run()`` calls
            :meth:`verify_closed` before running.
        label: Prefix of the transforms ``close()`` applies: ``{label}Errors``,
            ``{label}DeadLetters`` (only with records handed with ``in_counts=False``) and
            ``{label}Counts``. Two collectors in one pipeline need different labels.
        tags: The output tags that mark an error output in the graph.
    """

    def __init__(
        self, pipeline: beam.Pipeline, *, label: str = "All", tags: Sequence[str] = (ERRORS,)
    ) -> None:
        if not label:
            raise ValueError("label must not be empty: it prefixes the collector's transforms")
        if not tags:
            raise ValueError("tags must name at least one output tag, e.g. ('errors',)")
        self._pipeline = pipeline
        self._label = label
        self._tags = frozenset(tags)
        self._counted: list[beam.PCollection] = []
        self._uncounted: list[beam.PCollection] = []
        self._counts: list[beam.PCollection] = []
        self._collected: Collected | None = None
        self._created_at = "".join(traceback.format_stack(limit=3)[:-1]).rstrip()
        _HANDLED.setdefault(pipeline, {})
        # Beam's hook: Pipeline.run() calls verify_closed() of every registered handler.
        pipeline._register_error_handler(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._collected is not None

    def add(
        self,
        *,
        errors: beam.PCollection | None = None,
        counts: beam.PCollection | None = None,
        in_counts: bool = True,
    ) -> None:
        """Hands in a stage's error records and/or count elements.

        Args:
            errors: The stage's error records.
            counts: The stage's count elements.
            in_counts: Whether the counts count these records' rows as rejected. False for
                records about rows counted otherwise (rows a sink refused after they were
                counted as written): they are in ``Collected.errors`` only.

        Raises:
            RuntimeError: if the collector is closed already.
        """
        self._check_open("add")
        if errors is not None:
            self._handle(errors)
            (self._counted if in_counts else self._uncounted).append(errors)
        if counts is not None:
            self._check_pipeline(counts)
            self._counts.append(counts)

    def discard(self, errors: beam.PCollection, *, reason: str) -> None:
        """Marks an error output as dropped on purpose (its records are handled elsewhere).

        Unlike :meth:`add`, this may come after :meth:`close`.

        Args:
            errors: The error output.
            reason: Why dropping it loses nothing (kept for the reader of the code).

        Raises:
            ValueError: without a reason.
        """
        if not reason.strip():
            raise ValueError("discard needs a reason: say where these records are handled")
        # Allowed after close(): the consumer of the collected records may itself have an
        # error output (a dead-letter table refusing rows that are in the error files too).
        self._handle(errors)

    def close(self) -> Collected:
        """Flattens what was handed in; call it once, after the last stage.

        Returns:
            The flattened records and counts.

        Raises:
            RuntimeError: if called twice.
        """
        self._check_open("close")
        p = self._pipeline
        counted = self._counted | f"{self._label}Errors" >> beam.Flatten(pipeline=p)
        errors = counted
        if self._uncounted:
            errors = [counted, *self._uncounted] | f"{self._label}DeadLetters" >> beam.Flatten(
                pipeline=p
            )
        counts = self._counts | f"{self._label}Counts" >> beam.Flatten(pipeline=p)
        self._collected = Collected(errors=errors, counted_errors=counted, counts=counts)
        return self._collected

    def verify_closed(self) -> None:
        """Checks the pipeline before it runs (``Pipeline.run()`` calls it).

        Raises:
            UnhandledErrorsError: if the collector was never closed, or an error output of
                the pipeline reaches no collector.
        """
        if self._collected is None:
            raise UnhandledErrorsError(
                f"the ErrorCollector {self._label!r} was never closed: call close() after the "
                f"last stage and consume what it returns; it was created at\n{self._created_at}"
            )
        unhandled = unhandled_error_outputs(
            self._pipeline, _HANDLED.get(self._pipeline, {}), self._tags
        )
        if unhandled:
            raise UnhandledErrorsError(
                "error outputs nobody handles: "
                + "; ".join(unhandled)
                + ". Hand each to the ErrorCollector (add(errors=...)) or discard it with a "
                "reason (discard(..., reason=...))"
            )

    def _handle(self, errors: beam.PCollection) -> None:
        self._check_pipeline(errors)
        _HANDLED[self._pipeline][id(errors)] = errors

    def _check_pipeline(self, pcoll: beam.PCollection) -> None:
        if pcoll.pipeline is not self._pipeline:
            raise ValueError(
                f"{pcoll} belongs to another pipeline than the ErrorCollector {self._label!r}"
            )

    def _check_open(self, what: str) -> None:
        if self._collected is not None:
            raise RuntimeError(
                f"ErrorCollector {self._label!r} is closed: {what}() must come before close()"
            )


class _Graph(PipelineVisitor):
    """Every output of every transform, and the Flatten transforms each PCollection feeds."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, object, beam.PCollection]] = []
        self.flattened_into: dict[int, list[beam.PCollection]] = {}

    def enter_composite_transform(self, node: AppliedPTransform) -> None:
        self._record_outputs(node)

    def visit_transform(self, node: AppliedPTransform) -> None:
        self._record_outputs(node)
        if isinstance(node.transform, beam.Flatten):
            outs = [o for o in node.outputs.values() if isinstance(o, beam.PCollection)]
            for pcoll in node.main_inputs.values():
                self.flattened_into.setdefault(id(pcoll), []).extend(outs)

    def _record_outputs(self, node: AppliedPTransform) -> None:
        for tag, pcoll in node.outputs.items():
            if isinstance(pcoll, beam.PCollection):
                self.outputs.append((node.full_label, tag, pcoll))


def unhandled_error_outputs(
    pipeline: beam.Pipeline, handled: dict[int, beam.PCollection], tags: Iterable[str]
) -> list[str]:
    """Names the error outputs of ``pipeline`` that reach none of ``handled``.

    An error output (a PCollection whose output tag is one of ``tags``) is handled when it is
    in ``handled`` or is flattened into a handled PCollection (a composite that merges its
    inner error outputs into one output is handled through that output).

    Returns:
        ``"'{tag}' of '{transform}'"`` for each unhandled error output, in graph order.
    """
    graph = _Graph()
    pipeline.visit(graph)
    wanted = set(tags)
    memo: dict[int, bool] = {}

    def reaches(pcoll: beam.PCollection) -> bool:
        key = id(pcoll)
        if key not in memo:
            memo[key] = False  # a cycle cannot happen in a DAG; this guards the recursion
            memo[key] = key in handled or any(
                reaches(out) for out in graph.flattened_into.get(key, [])
            )
        return memo[key]

    out: list[str] = []
    seen: set[int] = set()
    for label, tag, pcoll in graph.outputs:
        if tag in wanted and id(pcoll) not in seen:
            seen.add(id(pcoll))
            if not reaches(pcoll):
                out.append(f"{tag!r} of {label!r}")
    return out
