"""Judging a canary: its figures against the step's limits, watched until there is evidence.

Pure decisions (:func:`judge`, :func:`watch`) shared by the local and the gcp deployment; the
figures come from the local server's ``/metrics`` or from Cloud Monitoring.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from launchers.chain.spec import CanarySetting
from launchers.serving.metrics import CanaryFigures

NO_PREVIOUS = "no previous deployment: plain deployment (nothing to compare with)"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What became of a canary.

    Attributes:
        promote: Whether it takes all the traffic.
        reason: One line: the measured figures and the limits.
        figures: The figures it was judged on.
    """

    promote: bool
    reason: str
    figures: CanaryFigures

    def to_json(self) -> dict[str, object]:
        return {
            "decision": "promoted" if self.promote else "rolled back",
            "reason": self.reason,
            **self.figures.to_json(),
        }


def _measured(figures: CanaryFigures) -> tuple[str, str]:
    rate = f"error rate {figures.error_rate:.4g} ({figures.errors} of {figures.requests} requests)"
    p99 = "no latency" if math.isnan(figures.p99_ms) else f"p99 latency {figures.p99_ms:.4g} ms"
    return rate, p99


def judge(figures: CanaryFigures, setting: CanarySetting) -> Verdict:
    """Promote unless the error rate or the p99 latency is over its limit."""
    rate, p99 = _measured(figures)
    problems = []
    if figures.error_rate > setting.max_error_rate:
        problems.append(f"{rate} is over max_error_rate {setting.max_error_rate:g}")
    limit = setting.max_latency_ms
    if limit is not None and not math.isnan(figures.p99_ms) and figures.p99_ms > limit:
        problems.append(f"{p99} is over max_latency_ms {limit:g}")
    if problems:
        return Verdict(False, "; ".join(problems), figures)
    within = f"max_error_rate {setting.max_error_rate:g}"
    if limit is not None:
        within += f", max_latency_ms {limit:g}"
    return Verdict(True, f"{rate}, {p99}: within {within}", figures)


def watch(
    read: Callable[[], CanaryFigures],
    setting: CanarySetting,
    *,
    poll_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Reads the canary's figures until it has served ``min_requests`` or the timeout passes.

    At the timeout, too few requests roll back (``on_timeout: rollback``: not enough
    evidence) or are judged as they are (``on_timeout: promote``).
    """
    deadline = clock() + setting.timeout
    while True:
        figures = read()
        if figures.requests >= setting.min_requests:
            return judge(figures, setting)
        now = clock()
        if now >= deadline:
            short = (
                f"{figures.requests} of min_requests {setting.min_requests} requests "
                f"in {setting.timeout:g} s"
            )
            if setting.on_timeout == "promote":
                verdict = judge(figures, setting)
                return dataclasses.replace(verdict, reason=f"{short}; {verdict.reason}")
            return Verdict(False, f"{short}: not enough evidence (on_timeout: rollback)", figures)
        sleep(min(poll_seconds, deadline - now))


__all__ = ["NO_PREVIOUS", "Verdict", "judge", "watch"]
