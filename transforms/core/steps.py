"""The step contract: pure ``batch -> StepResult`` functions, optionally fitted.

A *step* is one clean or feature operation named in a spec (``op: z_score``). It is a
dataclass whose fields are its parameters, looked up by its op name in
:mod:`transforms.ops.registry`. Steps that need statistics of the whole data set return an
:class:`Analyzer`: mergeable accumulators that Beam combines across the data set (fit);
:meth:`Step.apply` then takes the analyzer's JSON-serialisable output (apply). The same ``apply`` runs in batch, streaming and serving.

Rows a step refuses are not removed by the step: it returns the batch unchanged in length
and says which rows to reject (data errors, sent to the error output) or to drop on purpose
(filters, deduplication; counted in the manifest). The caller removes them, so every row is
accounted for.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa

A = TypeVar("A")

Fitted = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Rejection:
    """Rows of a batch that a step refuses, with one reason.

    Attributes:
        mask: Boolean array, one entry per row of the input batch; True = refused.
        reason: Reason code (snake_case), e.g. ``out_of_range``; for drops, the filter's
            named reason.
        message: One message for all refused rows, or an object array with one per row.
    """

    mask: np.ndarray
    reason: str
    message: str | np.ndarray


class StepResult(NamedTuple):
    """What a step returns for one batch.

    Attributes:
        batch: The transformed batch, with exactly as many rows as the input.
        rejections: Rows to send to the error output (data errors).
        drops: Rows dropped on purpose (filters), counted per reason in the manifest.
    """

    batch: pa.RecordBatch
    rejections: tuple[Rejection, ...] = ()
    drops: tuple[Rejection, ...] = ()


class Analyzer(abc.ABC, Generic[A]):
    """Mergeable full-pass statistics for one step (the *fit* half).

    Implementations must be picklable, and so must their accumulators: Beam moves them
    between workers. ``add_batch`` and ``merge_accumulators`` may mutate and return their
    first argument.
    """

    @abc.abstractmethod
    def create_accumulator(self) -> A:
        """See the class docstring."""

    @abc.abstractmethod
    def add_batch(self, accumulator: A, batch: pa.RecordBatch) -> A:
        """See the class docstring."""

    @abc.abstractmethod
    def merge_accumulators(self, accumulators: Iterable[A]) -> A:
        """See the class docstring."""

    @abc.abstractmethod
    def extract_output(self, accumulator: A) -> dict[str, Any]:
        """Returns the fitted parameters as a JSON-serialisable dict.

        A key named ``vocabulary`` holding a list of strings is written to its own file in
        the artifact and read back as the same list.
        """


@dataclasses.dataclass(kw_only=True)
class Step(abc.ABC):
    """Base class of every clean and feature step.

    Subclasses are dataclasses whose fields are the step's parameters; they set ``op`` and
    are listed in their module's ``STEPS`` tuple, which :mod:`transforms.ops.registry`
    merges. ``name`` identifies the step in error records,
    counts and the artifact; the spec loader fills it in when the spec leaves it out.
    """

    op: ClassVar[str] = ""
    # Steps that regroup the whole data set (deduplication) cannot run batch by batch.
    is_barrier: ClassVar[bool] = False

    name: str = ""

    def validate(self) -> None:  # noqa: B027 (optional hook: most steps need no extra checks)
        """Checks parameters that types alone cannot; raises ValueError saying how to fix."""

    def input_columns(self) -> list[str]:
        """Columns this step reads."""
        return []

    def output_columns(self) -> list[str]:
        """Columns this step writes (new or replaced)."""
        return []

    def removed_columns(self) -> list[str]:
        """Columns this step removes from the batch."""
        return []

    def analyzer(self) -> Analyzer[Any] | None:
        """The statistics this step needs from the whole data set, or None if static."""
        return None

    @abc.abstractmethod
    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        """Transforms one batch. ``fitted`` is the analyzer's output (None if static)."""

    def default_name(self) -> str:
        cols = self.input_columns()
        return f"{self.op}:{cols[0]}" if len(cols) == 1 else self.op

    def describe(self) -> dict[str, Any]:
        """Parameters as a JSON-serialisable dict (recorded in the artifact)."""
        return {"op": self.op, **dataclasses.asdict(self)}


# Builds a step from its spec mapping and YAML path; :func:`transforms.ops.registry.build_step`
# is the one implementation. Code in this package that reads steps back (the artifact) takes
# it as an argument, so the contract never imports the ops that implement it.
BuildStep = Callable[[Any, str], Step]
