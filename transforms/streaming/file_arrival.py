"""Files arriving in a folder (local or ``gs://``), read as record batches.

:class:`WatchFiles` polls a glob from a splittable DoFn whose restriction is the set of paths
already emitted, so each file is emitted exactly once whatever the runner does with
checkpoints (Beam 2.77's ``fileio.MatchContinuously`` re-emits or loses files on the local
runners). It stops after ``max_files`` files or at a deadline, for bounded local runs.
:class:`ReadArrivingFiles` reads each new file with :func:`transforms.io.read.read_file`,
exactly as the batch pipeline does, into batches with the spec's columns plus the hidden
columns ``__file``, ``__line`` and ``__event_time``; on the streaming local runner the folder
is watched by :func:`watch_events` in a thread instead
(:mod:`transforms.streaming.threaded_source`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.core import schema as schema_lib
from transforms.io.read import Source, read_file
from transforms.streaming.event_time import NO_TIME, event_times_us, with_event_time
from transforms.streaming.threaded_source import LiveSource, Now, Watermark, drain

BATCHES = "batches"
ERRORS = "errors"
_US = 1_000_000


@dataclasses.dataclass(frozen=True)
class _Seen:
    """The watch restriction: paths already emitted; ``stopped`` ends this piece of work."""

    paths: frozenset[str]
    stopped: bool = False


_STOP = "\x00stop"


class _SeenTracker(RestrictionTracker):
    """Claims paths; a checkpoint hands the same seen-set on to the residual."""

    def __init__(self, restriction: _Seen) -> None:
        self._paths = set(restriction.paths)
        self._stopped = restriction.stopped
        self._done = restriction.stopped

    def current_restriction(self) -> _Seen:
        return _Seen(frozenset(self._paths), self._stopped)

    def try_claim(self, position: str) -> bool:
        if self._stopped:
            return False
        if position == _STOP:
            self._stopped = True
            self._done = True
            return True
        self._paths.add(position)
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[_Seen, _Seen] | None:
        if self._stopped:
            return None
        self._stopped = True
        seen = frozenset(self._paths)
        return _Seen(seen, True), _Seen(seen, False)

    def check_done(self) -> None:
        return None

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(completed=len(self._paths), remaining=0 if self._done else 1)

    def is_bounded(self) -> bool:
        return False


class _SeenProvider(RestrictionProvider):
    def initial_restriction(self, element: Any) -> _Seen:
        return _Seen(frozenset())

    def create_tracker(self, restriction: _Seen) -> _SeenTracker:
        return _SeenTracker(restriction)

    def restriction_size(self, element: Any, restriction: _Seen) -> int:
        return 1

    def split(self, element: Any, restriction: _Seen) -> Iterator[_Seen]:
        yield restriction

    def restriction_coder(self) -> PickleCoder:
        return PickleCoder()


def new_files(pattern: str, seen: Iterable[str]) -> list[str]:
    """Files matching ``pattern`` not in ``seen``, oldest first (then by name)."""
    (result,) = FileSystems.match([pattern])
    known = set(seen)
    found = [m for m in result.metadata_list if m.path not in known]
    return [m.path for m in sorted(found, key=lambda m: (m.last_updated_in_seconds, m.path))]


_TRACKER_PARAM = beam.DoFn.RestrictionParam(_SeenProvider())
_WATERMARK_PARAM = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class _WatchFn(beam.DoFn):
    def __init__(self, poll_seconds: float, max_files: int | None, deadline: float | None) -> None:
        self._poll = poll_seconds
        self._max_files = max_files
        self._deadline = deadline

    def process(
        self,
        pattern: str,
        tracker: Any = _TRACKER_PARAM,
        watermark: Any = _WATERMARK_PARAM,
    ) -> Iterator[TimestampedValue]:
        seen = tracker.current_restriction().paths
        count = len(seen)
        for path in new_files(pattern, seen):
            if self._max_files is not None and count >= self._max_files:
                break
            if not tracker.try_claim(path):
                return
            count += 1
            now = Timestamp.now()
            watermark.set_watermark(now)
            yield TimestampedValue(path, now)
        full = self._max_files is not None and count >= self._max_files
        late = self._deadline is not None and time.time() >= self._deadline
        if full or late:
            tracker.try_claim(_STOP)
            return
        tracker.defer_remainder(Duration(seconds=self._poll))


@dataclasses.dataclass(frozen=True)
class Found:
    """A file found by :func:`watch_events`, at ``timestamp_us`` (the time it was found)."""

    path: str
    timestamp_us: int


def watch_events(
    pattern: str,
    *,
    poll_seconds: float = 1.0,
    max_files: int | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Any]:
    """The events of a folder watched until a limit, for a :class:`~transforms.streaming.threaded_source.LiveSource`.

    Each listing yields a :class:`Found` per new file (oldest first, each file once), the
    watermark at the time of the listing (files are timestamped with the time they were
    found, as :class:`WatchFiles` does), and the processing time. After ``max_files`` files
    or at ``deadline`` (a Unix time) it drains; without either it runs until the job is
    cancelled.
    """
    seen: set[str] = set()
    while True:
        now = clock()
        for path in new_files(pattern, seen):
            if max_files is not None and len(seen) >= max_files:
                break
            seen.add(path)
            yield Found(path, round(now * _US))
        yield Watermark(round(now * _US))
        yield Now(round(now * _US))
        full = max_files is not None and len(seen) >= max_files
        if full or (deadline is not None and now >= deadline):
            yield drain()
            return
        sleep(poll_seconds)


class WatchFiles(beam.PTransform):
    """Emits each file matching a glob once, as it appears; polls until a limit is reached.

    Applied to a pipeline root. Output: ``PCollection[str]`` of paths (unbounded),
    timestamped with the time they were found. Stops after ``max_files`` files or when
    ``deadline`` (a Unix time) passes; without either it runs until cancelled.
    """

    def __init__(
        self,
        *,
        pattern: str,
        poll_seconds: float = 1.0,
        max_files: int | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        if not pattern:
            raise ValueError("pattern must be a glob, e.g. incoming/*.csv or gs://b/in/*.csv")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        if max_files is not None and max_files < 1:
            raise ValueError(f"max_files must be >= 1, got {max_files}")
        self._pattern = pattern
        self._poll = poll_seconds
        self._max_files = max_files
        self._deadline = deadline

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Watch" >> beam.ParDo(_WatchFn(self._poll, self._max_files, self._deadline))
        )


class _ReadArrivedFn(beam.DoFn):
    def __init__(
        self, source: Source, schema: pa.Schema, pipeline: str, event_time_field: str | None
    ) -> None:
        self._source = source
        self._schema = schema
        self._pipeline = pipeline
        self._field = event_time_field

    def process(self, path: str, arrived: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
        arrival_us = int(arrived.micros)
        for batch, found in read_file(path, self._source, self._schema, pipeline=self._pipeline):
            for error in found:
                yield beam.pvalue.TaggedOutput(ERRORS, error)
            if batch is None or not batch.num_rows:
                continue
            if self._field is None:
                times = np.full(batch.num_rows, arrival_us, dtype=np.int64)
                yield with_event_time(batch, times)
                continue
            times = event_times_us(batch.column(self._field))
            missing = times == NO_TIME
            yield with_event_time(batch, np.where(missing, arrival_us, times))


class ReadArrivingFiles(beam.PTransform):
    """Reads files as they arrive in a folder (local or ``gs://``) into record batches.

    Applied to a pipeline root. Each file is read once, by the batch pipeline's reader.
    Outputs (a tagged tuple): ``batches`` with the schema's columns, ``__file``, ``__line``
    and ``__event_time`` (the ``event_time_field`` value, or the time the file was found);
    ``errors``, one per malformed record (step ``read``).

    The folder is watched by :class:`WatchFiles` (a splittable DoFn, for Dataflow and the
    batch local runner) or, with ``live=True``, by :func:`watch_events` in a thread for the
    streaming local runner (``self.live``, whose ``check_completed`` tells a run that ended
    at its limit from one cut short).
    """

    def __init__(
        self,
        *,
        source: Source,
        schema: pa.Schema,
        pipeline: str,
        pattern: str,
        poll_seconds: float = 1.0,
        max_files: int | None = None,
        deadline: float | None = None,
        event_time_field: str | None = None,
        live: bool = False,
    ) -> None:
        super().__init__()
        source.validate()
        if event_time_field is not None and event_time_field not in schema.names:
            raise ValueError(
                f"event_time_field {event_time_field!r} is not a column; columns are "
                f"{', '.join(schema.names)}"
            )
        self.live: LiveSource | None = None
        if live:
            self.live = LiveSource(
                lambda: watch_events(
                    pattern, poll_seconds=poll_seconds, max_files=max_files, deadline=deadline
                ),
                pattern,
            )
        self._watch = WatchFiles(
            pattern=pattern, poll_seconds=poll_seconds, max_files=max_files, deadline=deadline
        )
        self._read = _ReadArrivedFn(source, schema_lib.visible(schema), pipeline, event_time_field)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        if self.live is not None:
            paths = pbegin | "WatchFiles" >> self.live | "Paths" >> beam.Map(lambda f: f.path)
        else:
            paths = pbegin | "WatchFiles" >> self._watch
        return paths | "ReadFiles" >> beam.ParDo(self._read).with_outputs(ERRORS, main=BATCHES)


__all__ = [
    "BATCHES",
    "ERRORS",
    "Found",
    "ReadArrivingFiles",
    "WatchFiles",
    "new_files",
    "watch_events",
]
