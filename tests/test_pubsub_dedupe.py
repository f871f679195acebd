"""Pub/Sub messages before decoding: heartbeats, message ids, de-duplication on TestStream."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.streaming.pubsub_decode import DedupeMessages
from transforms.streaming.pubsub_messages import Message, is_heartbeat, message_key


def test_heartbeats_are_recognised_by_their_attribute() -> None:
    assert is_heartbeat(Message(b"", {"heartbeat": "1"}))
    assert not is_heartbeat(Message(b"", {"heartbeat": "0"}))
    assert not is_heartbeat(Message(b"{}", {}))


def _msg(ident: str, payload: str, message_id: str = "") -> Message:
    return Message(payload.encode(), {"id": ident} if ident else {}, message_id=message_id)


def test_message_key_prefers_the_id_attribute() -> None:
    assert message_key(_msg("a", "x", "m1"), "id") == "a"
    assert message_key(_msg("", "x", "m1"), "id") == "m1"
    assert message_key(_msg("a", "x", "m1"), None) == "m1"


def test_duplicates_are_dropped_until_their_id_expires() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(
            [
                TimestampedValue(_msg("a", "a0"), 0),
                TimestampedValue(_msg("b", "b0"), 0),
                TimestampedValue(_msg("a", "a1"), 1),  # duplicate of a0
            ]
        )
        .advance_watermark_to(5)  # ttl 3 s: a and b are forgotten
        .add_elements(
            [
                TimestampedValue(_msg("a", "a6"), 6),  # a again, after expiry: kept
                TimestampedValue(_msg("b", "b6"), 6),
                TimestampedValue(_msg("b", "b7"), 7),  # duplicate of b6
                TimestampedValue(_msg("", "c7", "m-c"), 7),  # no attribute: Pub/Sub's id
                TimestampedValue(_msg("", "c8", "m-c"), 8),  # duplicate of c7
            ]
        )
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(runner="DirectRunner", options=options)
    deduped = p | stream | DedupeMessages(id_attribute="id", ttl_seconds=3)
    kept = deduped.messages | beam.Map(lambda m: m.data.decode())
    assert_that(kept, equal_to(["a0", "b0", "a6", "b6", "c7"]))
    assert_that(deduped.duplicates, equal_to(["a", "b", "m-c"]), label="Duplicates")
    p.run().wait_until_finish()


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be > 0"):
        DedupeMessages(ttl_seconds=0)
