"""Waiting for cloud jobs: one bounded poll with backoff, one error base for jobs that stop.

Dataflow (:mod:`launchers.dataflow.jobs`) and Vertex AI (:mod:`launchers.vertex`) jobs are
waited for the same way: ask for the job's state, stop on a terminal state, otherwise sleep
a delay that grows from ``initial`` by ``factor`` up to ``maximum``, and give up once
``timeout`` seconds have passed. The delays are exact (no jitter) and the clock and sleep are
passed in, so a test can check every delay without waiting for any.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import ClassVar, TypeVar

from beam_pipelines.exit_codes import ExitCode

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delays between polls: ``initial``, times ``factor`` each poll, at most ``maximum``."""

    initial: float = 5.0
    factor: float = 1.5
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError(
                f"backoff needs initial > 0, factor >= 1 and maximum >= initial, got {self}"
            )

    def delays(self) -> Iterator[float]:
        """An endless iterator of delays in seconds."""
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


# Dataflow jobs take minutes: the first look after 5 s, then at most every minute.
DEFAULT_BACKOFF = Backoff()


def poll(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timed_out: Callable[[T], BaseException],
    timeout: float | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Calls ``probe`` until ``done`` accepts what it returned, sleeping between calls.

    Args:
        probe: Reads the current observation (e.g. a job and its state); called at once,
            then after each delay.
        done: Whether an observation ends the wait; it raises to end the wait with an error
            (a terminal state other than the one waited for).
        timed_out: Builds the error raised once ``timeout`` has passed, from the last
            observation.
        timeout: Give up after this many seconds (None: wait as long as it takes). The last
            sleep is cut short so that the wait ends at the timeout.
        backoff: Delays between calls.
        clock: Monotonic clock, in seconds.
        sleep: Sleeps for the given seconds.

    Returns:
        The observation ``done`` accepted.

    Raises:
        BaseException: what ``timed_out`` builds, or what ``done`` raises.
    """
    start = clock()
    for delay in backoff.delays():
        seen = probe()
        if done(seen):
            return seen
        if timeout is not None:
            left = timeout - (clock() - start)
            if left <= 0:
                raise timed_out(seen)
            delay = min(delay, left)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class CloudJobError(RuntimeError):
    """A cloud job did not end as asked: it ended in another state, or not in time.

    The message is ``<service> job <id> <what> (<state>)[; <detail>]: <console URL>``.

    Attributes:
        job_id: The job's id (or resource name).
        state: The state it ended in (or was in, for a timeout).
        url: Its console page.
        detail: More about the outcome, e.g. how long it was waited for.
        service: The service the job runs on, as the message names it.
        what: What happened to the job, as the message says it.
        exit_code: The CLI's exit code for this outcome.
    """

    service: ClassVar[str] = "Cloud"
    what: ClassVar[str] = "ended"
    exit_code: ClassVar[ExitCode] = ExitCode.FAILED

    def __init__(self, job_id: str, state: str, url: str, detail: str = "") -> None:
        self.job_id = job_id
        self.state = state
        self.url = url
        self.detail = detail
        extra = f"; {detail}" if detail else ""
        super().__init__(f"{self.service} job {job_id} {self.what} ({state}){extra}: {url}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        # Rebuilt from its parts when pickled, as it is between processes.
        return (type(self), (self.job_id, self.state, self.url, self.detail))


__all__ = ["DEFAULT_BACKOFF", "Backoff", "CloudJobError", "poll"]
