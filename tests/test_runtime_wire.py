"""The wire format: JSON header + raw buffers, checked on receipt, never pickled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from edgec.runtime import wire

EXPECT = {"x": ("float32", [1, 3, 4, 4]), "ids": ("int64", [2])}


def _frame():
    return [("x", np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)), ("ids", np.array([7, 9], dtype=np.int64))]


def _as_bytes(frames):
    return [bytes(f) for f in frames]


def test_round_trip_keeps_names_dtypes_shapes_and_values():
    frames = wire.encode("data", "r1", 5, _frame())
    header = json.loads(frames[0])
    assert header == {"v": 1, "kind": "data", "run": "r1", "seq": 5,
                      "tensors": [{"name": "x", "dtype": "float32", "shape": [1, 3, 4, 4]},
                                  {"name": "ids", "dtype": "int64", "shape": [2]}]}
    msg = wire.decode(_as_bytes(frames), EXPECT)
    assert (msg.kind, msg.run, msg.seq) == ("data", "r1", 5)
    for name, arr in _frame():
        np.testing.assert_array_equal(msg.tensors[name], arr)
        assert msg.tensors[name].dtype == arr.dtype


def test_encode_does_not_copy_and_decode_shares_the_received_buffer():
    arr = np.ones((256, 256), np.float32)
    frames = wire.encode("data", "r", 0, [("t", arr)])
    assert np.shares_memory(np.frombuffer(frames[1], np.float32), arr)
    raw = bytearray(bytes(frames[1]))
    msg = wire.decode([frames[0], raw])
    assert np.shares_memory(msg.tensors["t"], np.frombuffer(raw, np.uint8))


def test_over_zeromq_with_zero_copy_frames():
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://wire")
        b.connect("inproc://wire")
        big = np.random.default_rng(0).standard_normal((1, 64, 32, 32)).astype(np.float32)
        a.send_multipart(wire.encode("data", "r", 3, [("big", big)]), copy=False)
        msg = wire.decode(b.recv_multipart(copy=False), {"big": ("float32", [1, 64, 32, 32])})
        np.testing.assert_array_equal(msg.tensors["big"], big)
        a.close(0)
        b.close(0)
    finally:
        ctx.term()


def test_non_contiguous_and_bool_tensors():
    t = np.arange(12, dtype=np.float64).reshape(3, 4).T
    m = np.array([[True, False], [False, True]])
    msg = wire.decode(_as_bytes(wire.encode("data", "r", 0, [("t", t), ("m", m)])))
    np.testing.assert_array_equal(msg.tensors["t"], t)
    np.testing.assert_array_equal(msg.tensors["m"], m)


@pytest.mark.parametrize("mutate, message", [
    (lambda f: [f[0], f[1][:-4], f[2]], "bytes for float32"),
    (lambda f: f[:2], "lists 2 tensors but 1 buffers"),
    (lambda f: [b"not json", *f[1:]], "not JSON"),
    (lambda f: [json.dumps([1, 2]).encode(), *f[1:]], "not a JSON object"),
    (lambda f: [_edit(f[0], v=2), *f[1:]], "wire version"),
    (lambda f: [_edit(f[0], kind="exec"), *f[1:]], "unknown message kind"),
    (lambda f: [_edit(f[0], seq=-1), *f[1:]], "sequence number"),
    (lambda f: [_edit(f[0], seq="3"), *f[1:]], "sequence number"),
    (lambda f: [_edit_tensor(f[0], 0, dtype="object"), *f[1:]], "dtype 'object' is not allowed"),
    (lambda f: [_edit_tensor(f[0], 0, shape=[1, -3, 4, 4]), *f[1:]], "not a list of sizes"),
    (lambda f: [_edit_tensor(f[0], 1, name="x"), *f[1:]], "sent twice"),
])
def test_malformed_messages_are_refused(mutate, message):
    frames = mutate(_as_bytes(wire.encode("data", "r", 4, _frame())))
    with pytest.raises(wire.WireError, match=message):
        wire.decode(frames)


def test_the_stage_expects_exact_names_dtypes_and_shapes():
    good = _as_bytes(wire.encode("data", "r", 4, _frame()))
    with pytest.raises(wire.WireError, match="missing y; unexpected ids") as exc:
        wire.decode(good, {"x": ("float32", [1, 3, 4, 4]), "y": ("int64", [2])})
    assert (exc.value.seq, exc.value.run) == (4, "r")  # so the receiver can report the frame
    with pytest.raises(wire.WireError, match="'ids' is int64\\[2\\], the stage expects int32\\[2\\]"):
        wire.decode(good, {"x": ("float32", [1, 3, 4, 4]), "ids": ("int32", [2])})
    with pytest.raises(wire.WireError, match="expects float32\\[1, 3, 2, 8\\]"):
        wire.decode(good, {"x": ("float32", [1, 3, 2, 8]), "ids": ("int64", [2])})


def test_error_and_end_messages():
    err = wire.decode(_as_bytes(wire.encode_error("r", 9, "rpi4", "s1", "boom")), EXPECT)
    assert err.kind == "error" and err.seq == 9 and err.error == {"device": "rpi4", "stage": "s1", "message": "boom"}
    end = wire.decode(_as_bytes(wire.encode("end", "r", 100, stats=[{"device": "a"}])), EXPECT)
    assert end.kind == "end" and end.header["stats"] == [{"device": "a"}]


def test_a_pickle_is_not_a_message():
    import pickle

    with pytest.raises(wire.WireError, match="not JSON"):
        wire.decode([pickle.dumps({"v": 1, "kind": "data"})])


def _edit(raw: bytes, **changes) -> bytes:
    header = json.loads(raw)
    header.update(changes)
    return json.dumps(header).encode()


def _edit_tensor(raw: bytes, i: int, **changes) -> bytes:
    header = json.loads(raw)
    header["tensors"][i].update(changes)
    return json.dumps(header).encode()


def test_a_tensor_in_foreign_byte_order_or_an_unsent_dtype_is_refused_by_name():
    """The receiver reads buffers in its own byte order: a big-endian array would arrive as other numbers."""
    with pytest.raises(wire.WireError, match="tensor 'x': dtype >f4 cannot be sent"):
        wire.encode("data", "r1", 0, [("x", np.zeros(3, dtype=">f4"))])
    with pytest.raises(wire.WireError, match="tensor 'c': dtype <c8 cannot be sent"):
        wire.encode("data", "r1", 0, [("c", np.zeros(3, dtype=np.complex64))])
    frames = wire.encode("data", "r1", 0, [("x", np.zeros(3, dtype="<f4"))])
    assert json.loads(bytes(frames[0]))["tensors"][0]["dtype"] == "float32"
