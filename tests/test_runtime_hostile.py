"""Hostile input to a serving device: headers that would overflow or recurse, oversized messages, a
stranger's run: the device refuses them and keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from edgec.runtime import limits, wire
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline

from conftest import save_text_model
from test_runtime_local import MULTI, compile_for_hosts


def _header(**fields):
    base = {"v": 1, "kind": "data", "run": "r", "seq": 0, "tensors": []}
    base.update(fields)
    return json.dumps(base).encode()


NESTED = b'{"v": 1, "kind": "data", "run": "r", "seq": 0, "x": ' + b"[" * 200000 + b"]" * 200000 + b"}"
HOSTILE = {
    "shape 2**32 x 2**32, no bytes": [_header(tensors=[{"name": "x", "dtype": "float32", "shape": [2**32, 2**32]}]),
                                     b""],
    "shape 2**70": [_header(tensors=[{"name": "x", "dtype": "float32", "shape": [2**70]}]), b""],
    "shape 0 x 2**70": [_header(tensors=[{"name": "x", "dtype": "float32", "shape": [0, 2**70]}]), b""],
    "deeply nested header": [NESTED[:limits.MAX_HEADER_BYTES - 1] + b"}"],
    "deeply nested small header": [b'{"a":' * 5000 + b"1" + b"}" * 5000],
    "end with stats a number": [_header(kind="end", stats=5)],
    "end with stats a list of numbers": [_header(kind="end", stats=[1, 2])],
    "error without an object": [_header(kind="error", error="x")],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_are_wire_errors(name):
    with pytest.raises(wire.WireError):
        wire.decode(HOSTILE[name])


def test_header_depth_is_measured_without_parsing():
    assert limits.json_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert limits.json_depth(b'"\\"[[["') == 0


def test_a_message_larger_than_a_frame_is_refused_unread():
    expect = {"x": ("float32", [1, 8])}
    good = [bytes(f) for f in wire.encode("data", "r", 0, [("x", np.zeros((1, 8), np.float32))])]
    assert wire.decode(good, expect, limits.frame_bytes(expect)).seq == 0
    padded = good + [b"\0" * limits.frame_bytes(expect)]
    with pytest.raises(wire.WireError, match="larger than a frame of this stage"):
        wire.decode(padded, expect, limits.frame_bytes(expect))


@pytest.fixture
def plan2(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    return compile_for_hosts(model, tmp_path, [0, 1])


def _push(address, messages, pause_s=0.5):
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.connect(address)
        for frames in messages:
            sock.send_multipart(frames)
        time.sleep(pause_s)
        sock.close(2000)
    finally:
        ctx.term()


def _peak_rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_serving_device_survives_every_hostile_message_and_still_computes(plan2):
    plan = read_pipeline(str(plan2))
    frame = random_frames(plan.inputs, 1)[0]
    with LocalCluster(str(plan2)) as cluster:
        driver = Driver(str(plan2), cluster.deployment, watch=cluster.problems)
        assert driver.run(lambda k: frame, 0).ok
        for device in ("d0", "d1"):
            seg = plan.segments_of(device)[0]
            _push(cluster.deployment.segment_input(plan, seg), list(HOSTILE.values()), pause_s=1.0)
        assert not cluster.problems(), cluster.problems()
        result = driver.run(lambda k: frame, 5)
        assert result.ok and result.delivered == 5
        log = cluster.log("d0")
    assert log.count("rejected a message") == len(HOSTILE)


def test_an_oversized_message_is_dropped_by_the_transport_before_it_is_buffered(plan2):
    plan = read_pipeline(str(plan2))
    frame = random_frames(plan.inputs, 1)[0]
    big = b"\0" * (128 << 20)
    with LocalCluster(str(plan2)) as cluster:
        driver = Driver(str(plan2), cluster.deployment, watch=cluster.problems)
        assert driver.run(lambda k: frame, 0).ok
        pid = cluster.procs["d0"].pid
        before = _peak_rss_kb(pid)
        _push(cluster.deployment.segment_input(plan, plan.segments[0]), [[_header(), big]] * 3, pause_s=2.0)
        grown_mb = (_peak_rss_kb(pid) - before) / 1024
        assert not cluster.problems()
        assert driver.run(lambda k: frame, 3).ok
        log = cluster.log("d0")
    assert grown_mb < 64, f"the device's peak memory grew by {grown_mb:.0f} MB"
    assert "rejected a message" not in log  # it never reached the device's code
