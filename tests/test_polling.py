"""The one poll both Dataflow and Vertex AI waits use: backoff, timeout and job errors."""

from __future__ import annotations

import pickle

import pytest

from launchers.dataflow.jobs import JobDrainedError
from launchers.polling import Backoff, CloudJobError, poll
from tests.dataflow_fake import URL
from tests.fake_clock import TINY, FakeClock


def test_backoff_must_grow_within_bounds() -> None:
    with pytest.raises(ValueError, match="backoff needs initial > 0"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial=2, maximum=1)


# The one poll both Dataflow and Vertex AI waits use.


def test_poll_backs_off_and_cuts_the_last_sleep_at_the_timeout() -> None:
    clock = FakeClock()
    probes: list[float] = []

    def probe() -> float:
        probes.append(clock.now)
        return clock.now

    with pytest.raises(TimeoutError, match=r"^last seen at 0\.006$"):
        poll(
            probe,
            lambda _: False,
            timed_out=lambda seen: TimeoutError(f"last seen at {seen:g}"),
            timeout=0.006,
            backoff=TINY,
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.sleeps == [0.001, 0.002, 0.003]
    assert probes == [0.0, 0.001, 0.003, 0.006]


def test_poll_returns_what_done_accepts() -> None:
    clock = FakeClock()
    states = iter(["RUNNING", "RUNNING", "DONE"])

    seen = poll(
        lambda: next(states),
        lambda state: state == "DONE",
        timed_out=lambda state: AssertionError(state),
        backoff=TINY,
        clock=clock,
        sleep=clock.sleep,
    )
    assert (seen, clock.sleeps) == ("DONE", [0.001, 0.002])


def test_job_errors_share_one_base_and_pickle_from_their_parts() -> None:
    error = JobDrainedError("job-1", "JOB_STATE_DRAINED", URL)
    copied = pickle.loads(pickle.dumps(error))
    assert isinstance(copied, CloudJobError)
    assert (type(copied), str(copied), copied.job_id, copied.state, copied.url) == (
        JobDrainedError,
        f"Dataflow job job-1 was drained (JOB_STATE_DRAINED): {URL}",
        "job-1",
        "JOB_STATE_DRAINED",
        URL,
    )
    assert copied.exit_code == 4
