"""Pub/Sub message decoding: JSON, CSV and Avro payloads into record batches, errors, event times."""

from __future__ import annotations

import io

import fastavro
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from transforms.streaming.event_time import parse_event_time
from transforms.streaming.pubsub_messages import Decoding, Message, decode_messages

SCHEMA = pa.schema([("area", pa.int64()), ("fare", pa.float32()), ("company", pa.string())])
T0 = 1_700_000_000_000_000


def _rows(batch: pa.RecordBatch) -> list[dict]:
    return batch.to_pylist()


def test_json_messages_with_attribute_event_time_and_kept_attributes() -> None:
    messages = [
        Message(
            b'{"area": 8, "fare": 12.5, "company": "A"}', {"ts": "1700000000000", "o": "x"}, "m1"
        ),
        Message(b'{"area": "nine"}', {"ts": "1700000000000"}, "m2"),
        Message(b"[1]", {"ts": "1700000000000"}, "m3"),
        Message(b'{"area": 1}', {"ts": "soon"}, "m4"),
    ]
    decoding = Decoding(format="json", event_time_attribute="ts", attributes=["o"])
    batch, errors = decode_messages(messages, decoding, SCHEMA, pipeline="job")
    assert batch is not None
    assert _rows(batch) == [
        {
            "area": 8,
            "fare": 12.5,
            "company": "A",
            "o": "x",
            "__file": "m1",
            "__event_time": _ts(T0),
        }
    ]
    assert [(e.source, e.reason) for e in errors] == [
        ("m3", "malformed_record"),
        ("m4", "bad_event_time"),
        ("m2", "unparseable_value"),
    ]


def _ts(us: int) -> object:
    return pa.scalar(us, pa.timestamp("us", "UTC")).as_py()


def test_csv_messages_use_the_csv_readers_conversions() -> None:
    messages = [
        Message(b"8,12.5,A", message_id="a", publish_time_us=T0),
        Message(b",,", message_id="b", publish_time_us=T0 + 1),
        Message(b"x,1,A", message_id="c", publish_time_us=T0),
        Message(b"1,2", message_id="d", publish_time_us=T0),
    ]
    batch, errors = decode_messages(messages, Decoding(format="csv"), SCHEMA, pipeline="job")
    assert batch is not None
    assert [(r["area"], r["fare"], r["company"], r["__file"]) for r in _rows(batch)] == [
        (8, 12.5, "A", "a"),
        (None, None, None, "b"),
    ]
    assert batch.column("__event_time").to_pylist() == [_ts(T0), _ts(T0 + 1)]
    assert [(e.source, e.reason) for e in errors] == [
        ("d", "malformed_record"),
        ("c", "unparseable_value"),
    ]


def test_avro_container_messages_and_event_time_field() -> None:
    schema = {
        "type": "record",
        "name": "Trip",
        "fields": [
            {"name": "area", "type": "long"},
            {"name": "fare", "type": "float"},
            {"name": "company", "type": "string"},
            {"name": "when", "type": "long"},
        ],
    }
    buffer = io.BytesIO()
    fastavro.writer(
        buffer, schema, [{"area": 3, "fare": 2.0, "company": "B", "when": 1_700_000_000_000}]
    )
    decoding = Decoding(format="avro", event_time_field="when")
    batch, errors = decode_messages(
        [Message(buffer.getvalue(), message_id="z")], decoding, SCHEMA, pipeline="job"
    )
    assert errors == []
    assert batch is not None
    assert _rows(batch) == [
        {"area": 3, "fare": 2.0, "company": "B", "__file": "z", "__event_time": _ts(T0)}
    ]


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_event_time_millis_as_number_or_text(millis: int) -> None:
    assert parse_event_time(millis) == parse_event_time(str(millis)) == millis * 1000


def test_event_time_rfc3339() -> None:
    assert parse_event_time("2023-11-14T22:13:20Z") == T0
    assert parse_event_time("2023-11-14T23:13:20+01:00") == T0
    assert parse_event_time("") is None


def test_messages_follow_the_readers_rule_for_non_finite_and_integral_values() -> None:
    attrs = {"ts": "1700000000000"}
    decoding = Decoding(format="json", event_time_attribute="ts")
    messages = [
        Message(b'{"area": 1, "fare": NaN, "company": "A"}', attrs, "nan"),
        Message(b'{"area": 2, "fare": 1e39, "company": "A"}', attrs, "overflow"),
        Message(b'{"area": 3.7, "fare": 1.5, "company": "A"}', attrs, "fraction"),
        Message(b'{"area": 4.0, "fare": "2.5", "company": "A"}', attrs, "ok"),
    ]
    batch, errors = decode_messages(messages, decoding, SCHEMA, pipeline="job")
    assert batch is not None
    assert [(r["area"], r["fare"]) for r in _rows(batch)] == [(4, 2.5)]
    assert [(e.source, e.reason) for e in errors] == [
        ("nan", "non_finite"),
        ("overflow", "non_finite"),
        ("fraction", "unparseable_value"),
    ]
    assert errors[0].message.startswith("column 'fare': ")
    # Allowed for the column, as the spec's source.allow_non_finite says.
    allowed, errors = decode_messages(
        messages[:1], decoding, SCHEMA, pipeline="job", allow_non_finite=["fare"]
    )
    assert errors == [] and allowed is not None
    assert str(_rows(allowed)[0]["fare"]) == "nan"
    csv_batch, csv_errors = decode_messages(
        [Message(b"5,inf,B", attrs, "c1"), Message(b"6,3.5,B", attrs, "c2")],
        Decoding(format="csv", event_time_attribute="ts"),
        SCHEMA,
        pipeline="job",
    )
    assert csv_batch is not None and [r["area"] for r in _rows(csv_batch)] == [6]
    assert [(e.source, e.reason) for e in csv_errors] == [("c1", "non_finite")]
