"""A bounded Pub/Sub reader for local runs: synchronous pull, fed to the streaming runner.

On Dataflow, Pub/Sub is read by Beam's ``ReadFromPubSub`` (the service's own source, with
exact watermarks and ``id_label`` de-duplication). Locally that reader cannot end: the
local runner has no bounded wait, so a demo or a test would have to cancel the job at a
wall-clock deadline, and whatever windows had not fired by then are never written.

:class:`PullPubSub` pulls with the Pub/Sub client instead, in a thread of the process, and
hands the runner events through a :class:`~transforms.streaming.threaded_source.LiveSource`: elements,
watermark and processing-time advances (:func:`pull_events`, pure apart from its two
callbacks). It stops when a limit is reached
(``max_messages`` data messages, ``idle_seconds`` without any message, or a deadline), and
ending is a *drain*: the watermark goes to the end of time, every open window fires, and
the job finishes on its own with every row accounted for.

Each pull is one element (:class:`Elements`: its messages, less repeated ids) timestamped
with its oldest publish time, as ``ReadFromPubSub`` timestamps messages without a timestamp
attribute; the watermark follows the oldest publish time of the latest pull (heartbeats
included). Messages are acknowledged once handed to the runner (see :func:`pull_events`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam

from transforms.streaming.pubsub_messages import Message, is_heartbeat, message_key
from transforms.streaming.threaded_source import (
    DRAIN_WATERMARK_US,
    LiveSource,
    Now,
    Watermark,
    drain,
)

_US = 1_000_000
# Time between two pulls of an idle subscription, and the longest a pull waits for messages.
_IDLE_POLL_SECONDS = 0.2
_PULL_WAIT_SECONDS = 1.0


def subscriber_client() -> Any:
    """A Pub/Sub subscriber client (``PUBSUB_EMULATOR_HOST`` is honoured by the library)."""
    import os

    # The package builds its public names at import time, which mypy cannot see.
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        # The emulator takes no credentials; do not look for any.
        from google.auth.credentials import AnonymousCredentials

        return pubsub_v1.SubscriberClient(credentials=AnonymousCredentials())
    return pubsub_v1.SubscriberClient()


def create_subscription(topic: str, client: Any = None) -> str:
    """Creates a subscription to ``topic`` for one run; returns its path.

    As ``ReadFromPubSub`` does when given a topic, the run reads messages published after
    it started. Delete it with :func:`delete_subscription` when the run ends.
    """
    import uuid

    if not topic.startswith("projects/") or "/topics/" not in topic:
        raise ValueError(f"topic must be projects/PROJECT/topics/NAME, got {topic!r}")
    project = topic.split("/")[1]
    path = f"projects/{project}/subscriptions/beamforge-{uuid.uuid4().hex[:12]}"
    (client or subscriber_client()).create_subscription(request={"name": path, "topic": topic})
    return path


def delete_subscription(path: str, client: Any = None) -> None:
    """Deletes a subscription made by :func:`create_subscription`."""
    (client or subscriber_client()).delete_subscription(request={"subscription": path})


def to_message(received: Any) -> Message:
    """A :class:`Message` from the client library's ``ReceivedMessage``."""
    msg = received.message
    publish = msg.publish_time
    publish_us = round(publish.timestamp() * _US) if publish else round(time.time() * _US)
    return Message(
        data=bytes(msg.data),
        attributes=dict(msg.attributes),
        message_id=msg.message_id,
        publish_time_us=publish_us,
    )


@dataclasses.dataclass(frozen=True)
class Limits:
    """When a bounded pull ends (the first limit reached); none of them: it never ends.

    Attributes:
        max_messages: Data messages (heartbeats are not counted) to read.
        idle_seconds: Time without any message (heartbeats included) after which to stop.
        deadline: Unix time after which to stop.
    """

    max_messages: int | None = None
    idle_seconds: float | None = None
    deadline: float | None = None

    def validate(self) -> None:
        if self.max_messages is not None and self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {self.max_messages}")
        if self.idle_seconds is not None and self.idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be > 0, got {self.idle_seconds}")


@dataclasses.dataclass(frozen=True)
class Elements:
    """One pull's data messages, and the ids of the repeats dropped from it."""

    messages: list[Message]
    duplicates: list[str] = dataclasses.field(default_factory=list)
    # The oldest publish time of the pull's data messages, repeats included.
    oldest_us: int | None = None

    @property
    def timestamp_us(self) -> int:
        """The element's event time: the oldest publish time in the pull."""
        times = [m.publish_time_us for m in self.messages]
        if self.oldest_us is not None:
            times.append(self.oldest_us)
        return min(times, default=0)


Event = Elements | Watermark | Now


def pull_events(
    pull: Callable[[int], list[Any]],
    acknowledge: Callable[[list[str]], None],
    limits: Limits,
    *,
    batch_size: int = 500,
    id_attribute: str | None = None,
    dedupe_seconds: float = 600.0,
    clock: Callable[[], float] = time.time,
) -> Iterator[Event]:
    """The events of a bounded read of a subscription, until a limit is reached.

    Each pull of up to ``batch_size`` messages yields one :class:`Elements`: its data
    messages, less repeats of an id seen in the last ``dedupe_seconds`` of publish time
    (:func:`~transforms.streaming.pubsub_messages.message_key`; as Dataflow's source does with
    ``id_label``), whose ids it lists. Heartbeats are acknowledged and dropped. Then the
    watermark: the oldest publish time of the pull (never moving back), and the processing
    time (the clock), so processing-time timers downstream fire on the real clock. While the
    subscription is idle the watermark holds: a message published earlier may still be on
    its way, and only Pub/Sub's backlog metrics (which Dataflow reads) could say otherwise.
    Heartbeat messages move it on.

    A pull is one element, so no buffering stage sits between the source and the windows: a
    buffer would let the watermark pass the rows it holds (the local runner holds the
    watermark for pending elements only), and the drain would make them late.

    Args:
        pull: Pulls up to n ``ReceivedMessage``; returns [] when none came in time.
        acknowledge: Acknowledges ack ids.
        limits: When to stop (``max_messages`` counts repeats too: they were read).
        batch_size: Messages per pull at most.
        id_attribute: Attribute holding a message's id (Pub/Sub's message id otherwise).
        dedupe_seconds: How long an id is remembered, in publish time.
        clock: Time source, seconds since the epoch.
    """
    read = 0
    last_seen = clock()
    mark: int | None = None
    seen: dict[str, int] = {}
    ttl_us = round(dedupe_seconds * _US)
    while True:
        want = batch_size
        if limits.max_messages is not None:
            want = min(want, limits.max_messages - read)
        received = pull(want) if want > 0 else []
        now = clock()
        if received:
            last_seen = now
            messages = [to_message(r) for r in received]
            data = [m for m in messages if not is_heartbeat(m)]
            if data:
                yield _first_of_each_id(data, seen, id_attribute, ttl_us)
            # Handed to the runner: the local runner keeps no checkpoint a redelivery
            # could resume from, so later acknowledgement would only add duplicates.
            acknowledge([r.ack_id for r in received])
            read += len(data)
            oldest = min(m.publish_time_us for m in messages)
            if mark is None or oldest > mark:
                mark = oldest
                yield Watermark(mark)
        yield Now(round(now * _US))
        full = limits.max_messages is not None and read >= limits.max_messages
        late = limits.deadline is not None and now >= limits.deadline
        idle = limits.idle_seconds is not None and now - last_seen >= limits.idle_seconds
        if full or late or idle:
            yield drain()
            return
        if not received:
            time.sleep(_IDLE_POLL_SECONDS)


def _first_of_each_id(
    data: list[Message], seen: dict[str, int], id_attribute: str | None, ttl_us: int
) -> Elements:
    newest = max(m.publish_time_us for m in data)
    for key in [k for k, first in seen.items() if first < newest - ttl_us]:
        del seen[key]
    kept, duplicates = [], []
    for m in data:
        key = message_key(m, id_attribute)
        if key in seen:
            duplicates.append(key)
        else:
            seen[key] = m.publish_time_us
            kept.append(m)
    return Elements(kept, duplicates, min(m.publish_time_us for m in data))


class PullPubSub(beam.PTransform):
    """Reads a Pub/Sub subscription on the local streaming runner until a limit, then drains.

    Applied to a pipeline root. Output: ``PCollection[Elements]`` (unbounded), one element
    per pull: its data messages less repeated ids, and the ids dropped, timestamped with its
    oldest publish time (see :func:`pull_events`). The messages are pulled by a thread of this process
    and fed to the runner by a :class:`~transforms.streaming.threaded_source.LiveSource`, which sets the
    watermark, advances processing time, and ends by draining: every window and timer fires,
    and ``wait_until_finish`` returns.

    Args:
        subscription: ``projects/P/subscriptions/S``.
        limits: When to stop (see :class:`Limits`).
        batch_size: Messages per pull at most.
        id_attribute: Attribute holding a message's id (Pub/Sub's message id otherwise).
        dedupe_seconds: How long (publish time) an id is remembered to drop repeats.
        client: Factory of the subscriber client (the library's by default).
    """

    def __init__(
        self,
        *,
        subscription: str,
        limits: Limits = Limits(),
        batch_size: int = 500,
        id_attribute: str | None = None,
        dedupe_seconds: float = 600.0,
        client: Callable[[], Any] = subscriber_client,
    ) -> None:
        super().__init__()
        if not subscription.startswith("projects/") or "/subscriptions/" not in subscription:
            raise ValueError(
                f"subscription must be projects/PROJECT/subscriptions/NAME, got {subscription!r}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dedupe_seconds <= 0:
            raise ValueError(f"dedupe_seconds must be > 0, got {dedupe_seconds}")
        limits.validate()
        self._id_attribute = id_attribute
        self._dedupe_seconds = dedupe_seconds
        self._subscription = subscription
        self._limits = limits
        self._batch_size = batch_size
        self._client = client
        # The live source: its ``check_completed`` tells a read that ran to a limit.
        self.live = LiveSource(self._events, subscription)

    def _events(self) -> Iterator[Event]:
        from google.api_core import exceptions

        client, subscription = self._client(), self._subscription

        def pull(n: int) -> list[Any]:
            try:
                # A pull waits while the subscription is empty: bound the wait, so the
                # limits are checked and time moves on while it is idle.
                response = client.pull(
                    request={"subscription": subscription, "max_messages": n},
                    timeout=_PULL_WAIT_SECONDS,
                    retry=None,
                )
            except exceptions.DeadlineExceeded:
                return []
            return list(response.received_messages)

        def acknowledge(ack_ids: list[str]) -> None:
            for start in range(0, len(ack_ids), 1000):
                chunk = ack_ids[start : start + 1000]
                client.acknowledge(request={"subscription": subscription, "ack_ids": chunk})

        yield from pull_events(
            pull,
            acknowledge,
            self._limits,
            batch_size=self._batch_size,
            id_attribute=self._id_attribute,
            dedupe_seconds=self._dedupe_seconds,
        )

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return pbegin | "Pull" >> self.live


__all__ = [
    "DRAIN_WATERMARK_US",
    "Elements",
    "Event",
    "Limits",
    "Now",
    "PullPubSub",
    "Watermark",
    "create_subscription",
    "delete_subscription",
    "pull_events",
    "subscriber_client",
    "to_message",
]
