"""Streaming: files arriving in a folder, Pub/Sub messages, and windowed aggregates per key.

Pure modules (no Beam): :mod:`~transforms.streaming.event_time` (the hidden event-time
column), :mod:`~transforms.streaming.pubsub_messages` (messages and their decoder) and
:mod:`~transforms.streaming.windows` (the window model). Beam modules:
:mod:`~transforms.streaming.file_arrival`, :mod:`~transforms.streaming.pubsub_decode`,
:mod:`~transforms.streaming.pubsub_pull` (local bounded reads),
:mod:`~transforms.streaming.threaded_source` (a local source fed from a thread that ends by
draining) and :mod:`~transforms.streaming.aggregate_windows`.

Nothing is imported here, so that the pure modules stay free of Beam: import the names from
their modules.
"""

__all__ = [
    "aggregate_windows",
    "event_time",
    "file_arrival",
    "pubsub_decode",
    "pubsub_messages",
    "pubsub_pull",
    "threaded_source",
    "windows",
]
