"""A transform artifact that may be replaced while a streaming job runs.

A batch run fits and publishes ``artifact/transform.json``; a streaming job applies it and
must pick up a newer one without restarting. Given a dataset folder, the watcher follows its
manifest: the artifact of the run committed last. :class:`ArtifactWatcher` re-reads the
artifact's recorded ``sha256`` at most every ``refresh_seconds`` and reloads the steps and
fitted parameters only when it changed. :class:`ApplyLatestArtifact` applies whatever
artifact is current to every batch.

Beam's "slowly updating side input" pattern (a PeriodicImpulse re-reading the file into a
global-window side input) does not run on the local runners of Beam 2.77: a global-window
side input blocks the main input until its watermark ends, and PeriodicImpulse cannot run
on the streaming local runner. Checking the hash in the applying DoFn has the same effect
(every batch processed after the check uses the new artifact) on every runner.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.beam.apply import COUNTS, ERRORS
from transforms.core.artifact import TRANSFORM_FILE, Artifact, read_artifact
from transforms.core.batch_steps import apply_steps
from transforms.core.steps import Step
from transforms.io.commit import resolve_artifact_dir
from transforms.ops.registry import build_step


def recorded_hash(directory: str) -> str | None:
    """The ``sha256`` recorded in ``transform.json``, or None if there is no artifact yet."""
    path = FileSystems.join(directory, TRANSFORM_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return str(json.loads(f.read().decode("utf-8")).get("sha256"))


class ArtifactWatcher:
    """Holds the current artifact of a directory, re-checking its hash periodically.

    Args:
        directory: Artifact directory (local or gs://).
        refresh_seconds: Minimum time between two hash checks.
        clock: Time source (seconds); injectable for tests.
    """

    def __init__(
        self,
        directory: str,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._checked = -float("inf")
        self.artifact: Artifact | None = None
        self.sha256: str | None = None
        self.steps: list[Step] = []
        self.loads = 0

    def current(self) -> tuple[list[Step], dict[str, Any], str]:
        """The steps, fitted parameters and hash to apply now.

        Raises:
            transforms.core.artifact.ArtifactError: if no artifact was ever readable.
        """
        now = self._clock()
        if now - self._checked >= self.refresh_seconds or self.artifact is None:
            self._checked = now
            # A dataset folder stands for the artifact its current manifest lists: a new
            # run's commit switches the stream to the new artifact.
            directory = resolve_artifact_dir(self.directory)
            digest = recorded_hash(directory)
            if digest is not None and digest != self.sha256:
                artifact = read_artifact(directory, build_step)
                self.artifact = artifact
                self.steps = [s for s in artifact.build_steps(build_step) if not s.is_barrier]
                self.sha256 = digest
                self.loads += 1
        if self.artifact is None:
            from transforms.core.artifact import ArtifactError

            raise ArtifactError(f"no artifact in {self.directory} ({TRANSFORM_FILE} is missing)")
        assert self.sha256 is not None
        return self.steps, self.artifact.fitted, self.sha256


class _ApplyLatestDoFn(beam.DoFn):
    def __init__(self, directory: str, refresh_seconds: float, pipeline: str) -> None:
        self._directory = directory
        self._refresh = refresh_seconds
        self._pipeline = pipeline
        self._watcher: ArtifactWatcher | None = None
        self._reloads = Metrics.counter("beamforge", "artifact_loads")

    def setup(self) -> None:
        self._watcher = ArtifactWatcher(self._directory, self._refresh)

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        assert self._watcher is not None
        before = self._watcher.loads
        steps, fitted, _ = self._watcher.current()
        if self._watcher.loads != before:
            self._reloads.inc()
        applied = apply_steps(batch, steps, fitted, pipeline=self._pipeline)
        for error in applied.errors:
            yield beam.pvalue.TaggedOutput(ERRORS, error)
        counts = collections.Counter(applied.counts)
        if counts:
            yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if applied.batch.num_rows:
            yield applied.batch


class ApplyLatestArtifact(beam.PTransform):
    """Applies the current artifact of a directory to every record batch.

    Input: ``PCollection[pa.RecordBatch]`` with the artifact's input columns (bounded or
    unbounded). Outputs (a tagged tuple) as :class:`transforms.beam.apply.ApplySteps`: main
    ``batches``, ``errors`` and ``counts`` (one Counter per batch with rejections or drops).
    A newer artifact written to the directory is used from the next check on
    (``refresh_seconds``). Metric: ``beamforge/artifact_loads``.
    """

    def __init__(self, *, directory: str, pipeline: str, refresh_seconds: float = 30.0) -> None:
        super().__init__()
        if refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds}")
        self._directory = directory
        self._pipeline = pipeline
        self._refresh = refresh_seconds

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | beam.ParDo(
            _ApplyLatestDoFn(self._directory, self._refresh, self._pipeline)
        ).with_outputs(ERRORS, COUNTS, main="batches")
