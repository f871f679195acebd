"""Tests of transforms.io.tf_example: hand-written tf.train.Example encoding and decoding."""

from __future__ import annotations

import datetime as dt
import gzip

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core import errors
from transforms.io.tf_example import (
    BYTES_LIST,
    FLOAT_LIST,
    INT64_LIST,
    DecodeProblem,
    decode_tf_examples,
    encode_tf_examples,
    infer_tf_example_schema,
    masked_crc32c,
    parse_tf_example,
    tfrecord_frame,
)

SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("f", pa.float32()),
        ("s", pa.string()),
        ("b", pa.bool_()),
        ("l", pa.list_(pa.int64())),
        ("t", pa.timestamp("us", tz="UTC")),
    ]
)
NOON = dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC)


def sample_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "i": [1, -5, None],
            "f": [0.1, None, 3.5],
            "s": ["x", "é", None],
            "b": [True, False, None],
            "l": [[1, 2, 3], [], None],
            "t": [NOON, None, None],
            "__line": [7, 8, 9],
        },
        schema=SCHEMA.append(pa.field("__line", pa.int64())),
    )


def test_encode_parse_known_bytes():
    batch = pa.RecordBatch.from_pydict({"a": pa.array([1], pa.int64())})
    # Example{features{feature{key:"a" value{int64_list{value:1}}}}}
    assert encode_tf_examples(batch) == [b"\n\x0c\n\n\n\x01a\x12\x05\x1a\x03\n\x01\x01"]


def test_encode_decode_round_trip_drops_hidden_and_nulls():
    records = encode_tf_examples(sample_batch())
    assert parse_tf_example(records[2]) == {
        "f": (FLOAT_LIST, [3.5]),
    }
    assert parse_tf_example(records[1]) == {
        "i": (INT64_LIST, [-5]),
        "s": (BYTES_LIST, ["é".encode()]),
        "b": (INT64_LIST, [0]),
        "l": (INT64_LIST, []),
    }
    batch, problems = decode_tf_examples(records, SCHEMA)
    assert problems == []
    expected = sample_batch().to_pylist()
    for row in expected:
        del row["__line"]
    expected[0]["f"] = float(np.float32(0.1))
    expected[2]["l"] = None
    assert batch.to_pylist() == expected


def test_decode_problems():
    good = encode_tf_examples(pa.RecordBatch.from_pydict({"i": [1], "s": ["x"]}))[0]
    wrong_kind = encode_tf_examples(pa.RecordBatch.from_pydict({"i": ["one"]}))[0]
    two_values = encode_tf_examples(pa.RecordBatch.from_pydict({"i": [[1, 2]]}))[0]
    bad_utf8 = encode_tf_examples(
        pa.RecordBatch.from_pydict({"s": pa.array([b"\xff"], pa.binary())})
    )[0]
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    batch, problems = decode_tf_examples(
        [good, b"\x0a\x05ab", wrong_kind, two_values, bad_utf8], schema
    )
    assert batch.to_pylist() == [{"i": 1, "s": "x"}]
    assert problems == [
        DecodeProblem(
            1, errors.MALFORMED_RECORD, "not a tf.train.Example: truncated length-delimited field"
        ),
        DecodeProblem(
            2,
            errors.UNPARSEABLE_VALUE,
            "feature 'i' is a bytes_list; expected int64_list for int64",
        ),
        DecodeProblem(
            3, errors.UNPARSEABLE_VALUE, "feature 'i' has 2 values; expected at most 1 for int64"
        ),
        DecodeProblem(4, errors.BAD_ENCODING, "feature 's': value is not valid utf-8"),
    ]


def test_infer_schema():
    records = encode_tf_examples(sample_batch())
    assert infer_tf_example_schema(records) == pa.schema(
        [
            ("b", pa.int64()),
            ("f", pa.float32()),
            ("i", pa.int64()),
            ("l", pa.list_(pa.int64())),
            ("s", pa.string()),
            ("t", pa.string()),
        ]
    )


def test_masked_crc32c_known_value():
    # CRC-32C("123456789") = 0xE3069283, then TFRecord's masking.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.integers(-(2**63), 2**63 - 1),
            st.none() | st.floats(width=32),
            st.none() | st.text(max_size=5),
        ),
        max_size=10,
    )
)
def test_round_trip_property(data):
    schema = pa.schema([("i", pa.int64()), ("f", pa.float32()), ("s", pa.string())])
    batch = pa.RecordBatch.from_pylist(
        [{"i": i, "f": f, "s": s} for i, f, s in data], schema=schema
    )
    decoded, problems = decode_tf_examples(encode_tf_examples(batch), schema)
    assert problems == []
    assert decoded.column("i").to_pylist() == batch.column("i").to_pylist()
    assert decoded.column("s").to_pylist() == batch.column("s").to_pylist()
    np.testing.assert_array_equal(
        decoded.column("f").to_numpy(zero_copy_only=False),
        batch.column("f").to_numpy(zero_copy_only=False),
    )


@pytest.mark.tft
def test_tensorflow_reads_what_we_write(tmp_path):
    tf = pytest.importorskip("tensorflow")
    records = encode_tf_examples(sample_batch())
    example = tf.train.Example.FromString(records[0])
    feature = example.features.feature
    assert list(feature["i"].int64_list.value) == [1]
    assert list(feature["f"].float_list.value) == [np.float32(0.1)]
    assert list(feature["s"].bytes_list.value) == [b"x"]
    assert list(feature["l"].int64_list.value) == [1, 2, 3]
    assert list(feature["t"].bytes_list.value) == [b"2024-01-31T12:00:00+00:00"]
    second = tf.train.Example.FromString(records[1]).features.feature
    assert sorted(second) == ["b", "i", "l", "s"]
    assert list(second["i"].int64_list.value) == [-5]
    assert second["l"].WhichOneof("kind") == "int64_list"
    assert list(second["l"].int64_list.value) == []

    path = tmp_path / "x.tfrecord.gz"
    path.write_bytes(gzip.compress(b"".join(tfrecord_frame(r) for r in records)))
    spec = {
        "i": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "f": tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
        "s": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "l": tf.io.VarLenFeature(tf.int64),
    }
    dataset = tf.data.TFRecordDataset([str(path)], compression_type="GZIP").batch(10)
    parsed = tf.io.parse_example(next(iter(dataset)), spec)
    assert parsed["i"].numpy().tolist() == [1, -5, 0]
    np.testing.assert_array_equal(parsed["f"].numpy(), np.array([0.1, -1.0, 3.5], np.float32))
    assert parsed["s"].numpy().tolist() == [b"x", "é".encode(), b""]
    assert tf.sparse.to_dense(parsed["l"]).numpy().tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 0]]
