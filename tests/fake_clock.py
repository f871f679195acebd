"""A clock that only moves when the code under test sleeps, and a backoff small enough for it."""

from __future__ import annotations

from launchers.polling import Backoff

TINY = Backoff(initial=0.001, factor=2.0, maximum=0.004)


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
