"""The bounded local Pub/Sub reader, against Google's Pub/Sub emulator."""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.runner import make_options, make_pipeline
from tests.emulators import PubSub
from transforms.streaming.pubsub_pull import (
    DRAIN_WATERMARK_US,
    Elements,
    Limits,
    Now,
    PullPubSub,
    Watermark,
    pull_events,
)


def _publish(emulator: PubSub, payloads: list[bytes], **attributes: str) -> None:
    publisher = emulator.publisher()
    futures = [publisher.publish(emulator.topic, p, **attributes) for p in payloads]
    for future in futures:
        future.result(timeout=30)


def _redelivered(emulator: PubSub) -> int:
    """Messages delivered again: pulled but not acknowledged ones return after the ack deadline.

    The subscription's ack deadline is Pub/Sub's default and least, 10 s: waiting 15 s for a
    message covers it.
    """
    from google.api_core import exceptions

    try:
        response = emulator.subscriber().pull(
            request={"subscription": emulator.subscription, "max_messages": 1000},
            timeout=15,
            retry=None,
        )
    except exceptions.DeadlineExceeded:
        return 0
    return len(response.received_messages)


def _read(emulator: PubSub, limits: Limits, expected: list[bytes], batch_size: int = 7) -> Any:
    """Runs the reader to its end; asserts it emitted exactly ``expected`` (in any order)."""
    p = make_pipeline(make_options([], streaming=True))
    reader = PullPubSub(subscription=emulator.subscription, limits=limits, batch_size=batch_size)
    messages = p | reader
    data = messages | beam.FlatMap(lambda pulled: [m.data for m in pulled.messages])
    assert_that(data, equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    reader.live.check_completed()
    return result


@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_reads_every_message_once_and_stops_after_max_messages(pubsub_emulator: PubSub) -> None:
    payloads = [f"m{i}".encode() for i in range(40)]
    _publish(pubsub_emulator, payloads)
    _publish(pubsub_emulator, [b""], heartbeat="1")
    _read(pubsub_emulator, Limits(max_messages=40, deadline=time.time() + 60), payloads)


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(120)
def test_messages_are_acknowledged_when_the_bundle_is_committed(pubsub_emulator: PubSub) -> None:
    payloads = [f"m{i}".encode() for i in range(25)]
    _publish(pubsub_emulator, payloads)
    _read(pubsub_emulator, Limits(idle_seconds=1.5, deadline=time.time() + 60), payloads)
    # Nothing is delivered again: every pulled message was acknowledged.
    assert _redelivered(pubsub_emulator) == 0


@pytest.mark.emulator
@pytest.mark.timeout(60)
def test_an_idle_subscription_ends_at_the_idle_limit(pubsub_emulator: PubSub) -> None:
    started = time.monotonic()
    _read(pubsub_emulator, Limits(idle_seconds=1.0), [])
    assert time.monotonic() - started < 30


def test_limits_and_subscription_are_validated() -> None:
    with pytest.raises(ValueError, match="max_messages must be >= 1"):
        PullPubSub(subscription="projects/p/subscriptions/s", limits=Limits(max_messages=0))
    with pytest.raises(ValueError, match="idle_seconds must be > 0"):
        PullPubSub(subscription="projects/p/subscriptions/s", limits=Limits(idle_seconds=0))
    with pytest.raises(ValueError, match="projects/PROJECT/subscriptions/NAME"):
        PullPubSub(subscription="rows-sub")


# --- pull_events: the event sequence, with plain functions for pull and acknowledge --------


class _Received:
    """The fields of the client library's ReceivedMessage that the reader uses."""

    def __init__(self, ack_id: str, data: bytes, publish_s: float, **attributes: str) -> None:
        import datetime as dt
        from types import SimpleNamespace

        when = dt.datetime.fromtimestamp(publish_s, tz=dt.UTC)
        self.ack_id = ack_id
        self.message = SimpleNamespace(
            data=data, attributes=attributes, message_id=f"id-{ack_id}", publish_time=when
        )


def test_events_carry_messages_watermarks_and_the_clock() -> None:
    pulls = [
        [_Received("a", b"1", 100.0), _Received("b", b"2", 101.0)],
        [_Received("h", b"", 103.0, heartbeat="1")],
        # Published before the previous pull's oldest: the watermark does not move back.
        [_Received("c", b"3", 99.0)],
    ]
    acked: list[list[str]] = []
    times = iter([10.0, 10.5, 11.0, 11.5, 12.0])
    events = list(
        pull_events(
            lambda n: pulls.pop(0),
            acked.append,
            Limits(max_messages=3),
            batch_size=10,
            clock=lambda: next(times),
        )
    )
    data = [[m.data for m in e.messages] for e in events if isinstance(e, Elements)]
    assert data == [[b"1", b"2"], [b"3"]]
    # The oldest publish time of each pull, never back; the drain's watermark last.
    marks = [e.micros for e in events if isinstance(e, Watermark)]
    assert marks == [100_000_000, 103_000_000, DRAIN_WATERMARK_US]
    assert isinstance(events[-1], Watermark)
    assert [e.micros for e in events if isinstance(e, Now)] == [10_500_000, 11_000_000, 11_500_000]
    # Heartbeats are acknowledged too, and never emitted.
    assert acked == [["a", "b"], ["h"], ["c"]]


def test_an_idle_read_ends_after_idle_seconds_and_holds_the_watermark() -> None:
    clock = iter([0.0, 1.0, 2.0, 3.5]).__next__
    events = list(pull_events(lambda n: [], lambda ids: None, Limits(idle_seconds=3), clock=clock))
    assert [type(e).__name__ for e in events] == ["Now"] * 3 + ["Watermark"]
    assert events[-1] == Watermark(DRAIN_WATERMARK_US)


def test_max_messages_bounds_each_pull() -> None:
    asked: list[int] = []

    def pull(n: int) -> list[_Received]:
        asked.append(n)
        return [_Received(f"{len(asked)}-{i}", b"x", 1.0) for i in range(n)]

    events = list(pull_events(pull, lambda ids: None, Limits(max_messages=25), batch_size=10))
    assert asked == [10, 10, 5]
    assert sum(len(e.messages) for e in events if isinstance(e, Elements)) == 25


def test_repeated_ids_are_dropped_until_they_expire() -> None:
    pulls = [
        [_Received("1", b"a0", 100.0, id="a"), _Received("2", b"b0", 100.0, id="b")],
        # a again within 5 s: dropped; c has no id attribute: Pub/Sub's message id.
        [_Received("3", b"a1", 102.0, id="a"), _Received("4", b"c0", 102.0)],
        # 106 s: a (first seen at 100 s) is forgotten, b too.
        [_Received("5", b"a2", 106.0, id="a"), _Received("4", b"c1", 106.0)],
    ]
    events = pull_events(
        lambda n: pulls.pop(0),
        lambda ids: None,
        Limits(max_messages=6),
        id_attribute="id",
        dedupe_seconds=5,
    )
    got = [([m.data for m in e.messages], e.duplicates) for e in events if isinstance(e, Elements)]
    assert got == [([b"a0", b"b0"], []), ([b"c0"], ["a"]), ([b"a2"], ["id-4"])]


def test_a_pull_of_repeats_only_is_timestamped_by_its_publish_times() -> None:
    pulls = [[_Received("1", b"a0", 100.0, id="a")], [_Received("2", b"a1", 101.0, id="a")]]
    events = pull_events(
        lambda n: pulls.pop(0), lambda ids: None, Limits(max_messages=2), id_attribute="id"
    )
    pulled = [e for e in events if isinstance(e, Elements)]
    assert [(len(e.messages), e.duplicates, e.timestamp_us) for e in pulled] == [
        (1, [], 100_000_000),
        (0, ["a"], 101_000_000),
    ]
