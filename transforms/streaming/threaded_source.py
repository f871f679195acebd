"""Sources for the local streaming runner that run in a thread, and end by draining.

Beam's local streaming runner (``BundleBasedDirectRunner``) has no bounded wait and runs
no splittable DoFn, and Beam's own unbounded sources cannot end there. A :class:`LiveSource`
is fed by a Python generator of events, served to the runner through Beam's ``TestStream``
service (the mechanism behind interactive Beam):

- an element: any object with a ``timestamp_us`` attribute (microseconds since the epoch),
  emitted as itself at that event time;
- :class:`Watermark`: the source's watermark moves to that time;
- :class:`Now`: the processing time is that time (the runner's clock under a TestStream
  starts at 0 and moves only by the advances sent, while timers such as
  ``GroupIntoBatches``' are set on the real clock: absolute times keep them in step).

When the generator ends the source has ended: :func:`drain` first moves the watermark to a
finite time after every timer (the runner does not fire event-time timers when a watermark
jumps straight to the end of time), then the runner takes it to the end of time, every window
fires and ``wait_until_finish`` returns. One live source per pipeline: the runner reads one
event stream.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.utils.timestamp import MAX_TIMESTAMP

_US = 1_000_000
# The last watermark of a bounded source: a day before the end of Beam's time, after every
# timer a pipeline sets for event times near now.
DRAIN_WATERMARK_US = int(MAX_TIMESTAMP.micros) - 86_400 * _US


@dataclasses.dataclass(frozen=True)
class Watermark:
    """The source's watermark moved to ``micros`` (since the epoch)."""

    micros: int


@dataclasses.dataclass(frozen=True)
class Now:
    """The processing time is ``micros`` (since the epoch)."""

    micros: int


def drain() -> Watermark:
    """The last event of a bounded source (see the module docstring)."""
    return Watermark(DRAIN_WATERMARK_US)


class _EventReader:
    """Serves a generator's events as TestStreamService events (``read_multiple``)."""

    def __init__(self, events: Callable[[], Iterator[Any]], coder: Any) -> None:
        self._events = events
        self._coder = coder
        self._processing_us = 0
        self.finished = threading.Event()
        # Whether the events ran to their end (not cut short by an error or the runner).
        self.completed = False

    def read_multiple(self, specs: Any) -> Iterator[Any]:
        from apache_beam.portability.api import beam_runner_api_pb2

        payload = beam_runner_api_pb2.TestStreamPayload
        try:
            for event in self._events():
                if isinstance(event, Watermark):
                    mark = payload.Event.AdvanceWatermark(new_watermark=event.micros)
                    yield payload.Event(watermark_event=mark)
                elif isinstance(event, Now):
                    if event.micros > self._processing_us:
                        advance = event.micros - self._processing_us
                        self._processing_us = event.micros
                        elapsed = payload.Event.AdvanceProcessingTime(advance_duration=advance)
                        yield payload.Event(processing_time_event=elapsed)
                else:
                    element = payload.TimestampedElement(
                        encoded_element=self._coder.encode(event), timestamp=event.timestamp_us
                    )
                    add = payload.Event.AddElements(elements=[element])
                    yield payload.Event(element_event=add)
            self.completed = True
        finally:
            self.finished.set()


class LiveSource(beam.PTransform):
    """A root transform emitting what a generator of events yields (module docstring).

    Args:
        events: Called once, when the runner starts reading, for the event generator.
        what: What is read, for error messages (e.g. the subscription).
    """

    def __init__(self, events: Callable[[], Iterator[Any]], what: str) -> None:
        super().__init__()
        self._events = events
        self._what = what
        self._reader: _EventReader | None = None

    def check_completed(self) -> None:
        """Raises unless the events ran to their end.

        The local runner treats a lost connection to the event stream as its end; this
        tells the two apart after ``wait_until_finish``.

        Raises:
            RuntimeError: if the source was never run or stopped before its end.
        """
        if self._reader is None or not self._reader.completed:
            raise RuntimeError(
                f"reading {self._what} stopped before any of its limits was reached; "
                "see the log above for the cause"
            )

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        from apache_beam.testing.test_stream import TestStream
        from apache_beam.testing.test_stream_service import TestStreamServiceController

        coder = PickleCoder()
        reader = self._reader = _EventReader(self._events, coder)
        server = TestStreamServiceController(reader)
        server.start()

        def stop_when_done() -> None:
            reader.finished.wait()
            time.sleep(1.0)  # let the runner read the end of the stream first
            server.stop()

        threading.Thread(target=stop_when_done, daemon=True).start()
        return pbegin | "Events" >> TestStream(coder=coder, endpoint=server.endpoint)


__all__ = ["DRAIN_WATERMARK_US", "LiveSource", "Now", "Watermark", "drain"]
