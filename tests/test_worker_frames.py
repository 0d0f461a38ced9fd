"""The frames between judge and worker: plain data only, strict decoding, bounded sizes."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import threading

import numpy as np
import pytest

from gradcam_kit.wire.frames import (
    MAGIC,
    FrameReader,
    LayerRef,
    ModelSpec,
    ProtocolError,
    pack_frame,
    read_frame,
    unpack_payload,
    write_frame,
)


def roundtrip(message):
    frame = pack_frame(message)
    (messages,) = [FrameReader().feed(frame)]
    assert len(messages) == 1
    return messages[0]


def test_plain_values_cross_unchanged():
    message = {"none": None, "flags": [True, False], "int": 2**70, "float": 0.25, "text": "é\n",
               "nested": [[1, [2, [3]]]], 5: "int key", (1, "a"): "tuple key"}
    assert roundtrip(message) == message


def test_types_are_kept_exactly():
    back = roundtrip({"tuple": (1, (2, 3)), "list": [1, 2], "bool": True, "int": 1})
    assert type(back["tuple"]) is tuple and type(back["tuple"][1]) is tuple
    assert type(back["list"]) is list
    assert back["bool"] is True and type(back["int"]) is int


def test_special_floats():
    back = roundtrip([math.nan, math.inf, -math.inf, -0.0])
    assert math.isnan(back[0]) and back[1] == math.inf and back[2] == -math.inf
    assert math.copysign(1, back[3]) == -1


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool", "complex64", "float16"])
def test_arrays_keep_dtype_shape_and_values(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    back = roundtrip({"a": array, "view": array[:, ::2].T})
    assert back["a"].dtype == array.dtype and back["a"].shape == (2, 3, 4)
    np.testing.assert_array_equal(back["a"], array)
    np.testing.assert_array_equal(back["view"], array[:, ::2].T)


def test_numpy_scalars_and_nan_arrays():
    back = roundtrip([np.float32(1.5), np.int64(-3), np.array([np.nan, 1.0])])
    assert type(back[0]) is np.float32 and back[0] == 1.5
    assert type(back[1]) is np.int64 and back[1] == -3
    assert np.isnan(back[2][0])


def test_records():
    spec = ModelSpec("densenet121", "random", "contrast")
    assert roundtrip([spec, LayerRef("features.denseblock4")]) == [spec, LayerRef("features.denseblock4")]


class Custom:
    pass


@pytest.mark.parametrize("value", [Custom(), {1, 2}, b"bytes", np.array([Custom()], dtype=object), object,
                                   type("MyInt", (int,), {})(3), type("MyList", (list,), {})([1])])
def test_anything_else_is_refused(value):
    with pytest.raises(ProtocolError):
        pack_frame({"x": value})


def test_nesting_is_bounded():
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ProtocolError):
        pack_frame(deep)


def _frame(document: object, blobs: list[bytes] = ()) -> bytes:
    text = json.dumps(document).encode()
    payload = struct.pack(">I", len(text)) + text + b"".join(struct.pack(">Q", len(b)) + b for b in blobs)
    return MAGIC + struct.pack(">Q", len(payload)) + payload


def test_pickled_arrays_are_never_loaded():
    buffer = io.BytesIO()
    np.save(buffer, np.array([Custom()], dtype=object), allow_pickle=True)
    with pytest.raises(ProtocolError, match="unreadable array"):
        FrameReader().feed(_frame({"$": "ndarray", "blob": 0}, [buffer.getvalue()]))


def test_a_raw_pickle_is_not_an_array():
    with pytest.raises(ProtocolError):
        FrameReader().feed(_frame({"$": "ndarray", "blob": 0}, [pickle.dumps(Custom())]))


@pytest.mark.parametrize("document", [
    {"no": "tag"},
    {"$": "unknown"},
    {"$": "ndarray", "blob": 3},
    {"$": "ndarray", "blob": "0"},
    {"$": "float", "value": "1e400"},
    {"$": "tuple"},
    {"$": "dict", "items": [[[1], 2]]},
    {"$": "model", "arch": 5},
    {"$": "layer", "name": None},
])
def test_malformed_documents_are_refused(document):
    with pytest.raises(ProtocolError):
        FrameReader().feed(_frame(document))


def test_deep_json_from_the_other_side_is_refused():
    text = b"[" * 100_000 + b"]" * 100_000
    payload = struct.pack(">I", len(text)) + text
    with pytest.raises(ProtocolError):
        unpack_payload(payload)


def test_bad_magic_and_oversized_frames():
    with pytest.raises(ProtocolError, match="magic"):
        FrameReader().feed(b"EVIL" + b"\0" * 20)
    reader = FrameReader(max_bytes=1000)
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.feed(MAGIC + struct.pack(">Q", 10**9))
    assert reader.pending == 12  # nothing of the announced gigabyte was waited for


def test_truncated_payloads():
    frame = pack_frame({"a": np.zeros(10)})
    payload = frame[12:]
    with pytest.raises(ProtocolError):
        unpack_payload(payload[:-5])
    with pytest.raises(ProtocolError):
        unpack_payload(payload[:2])


def test_reader_reassembles_frames_split_anywhere():
    messages = [{"i": i, "a": np.full((i + 1, 3), i, np.float32)} for i in range(5)]
    stream = b"".join(pack_frame(m) for m in messages)
    reader = FrameReader()
    received = []
    for start in range(0, len(stream), 7):
        received += reader.feed(stream[start:start + 7])
    assert [m["i"] for m in received] == list(range(5))
    np.testing.assert_array_equal(received[4]["a"], messages[4]["a"])
    assert reader.pending == 0


def test_pipe_roundtrip_with_a_large_array():
    read_end, write_end = os.pipe()
    array = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)

    def writer() -> None:  # more than a pipe buffer, so reading and writing interleave
        write_frame(write_end, {"image": array, "id": 1})
        os.close(write_end)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        message = read_frame(read_end)
        np.testing.assert_array_equal(message["image"], array)
        thread.join()
        with pytest.raises(EOFError):
            read_frame(read_end)
    finally:
        os.close(read_end)


def test_read_frame_refuses_an_oversized_announcement():
    read_end, write_end = os.pipe()
    os.write(write_end, MAGIC + struct.pack(">Q", 2**40))
    os.close(write_end)
    try:
        with pytest.raises(ProtocolError, match="exceeds"):
            read_frame(read_end, max_bytes=2**20)
    finally:
        os.close(read_end)
