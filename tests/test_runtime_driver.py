"""The driver against a stand-in device: results reordered by sequence number, duplicates and strays caught."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from edgec.errors import EdgecError
from edgec.runtime import wire
from edgec.runtime.deployment import local_deployment
from edgec.runtime.driver import Driver, _group_errors
from edgec.runtime.frames import load_frames

from test_runtime_pipeline import _manifest, _stage

ONE_STAGE = [_stage("s0", "a", ["x"], ["z"], ["x"], ["z"])]


class FakeDevice:
    """Binds device a's sockets; answers the frames it gets in the order `answer(seqs)` gives."""

    def __init__(self, plan_dir, batch, answer, beat=None):
        from edgec.runtime.pipeline import read_pipeline

        self.plan = read_pipeline(plan_dir)
        self.deployment = local_deployment(self.plan)
        self.batch, self.answer = batch, answer
        self.beat = beat or (lambda held: {})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)

    def _serve(self):
        ctx = zmq.Context()
        plan, dep = self.plan, self.deployment
        pull, push, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PUB)
        for s in (pull, push, pub):
            s.setsockopt(zmq.LINGER, 0)
        pull.bind(dep.segment_input(plan, plan.segments[0], bind=True))
        push.bind(dep.results(plan, bind=True))
        pub.bind(dep.status(plan, "a", bind=True))
        held = []
        last_beat = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_beat > 0.2:
                pub.send(json.dumps({"device": "a", "frames": 0, **self.beat(held)}).encode())
                last_beat = time.monotonic()
            if not pull.poll(50):
                continue
            msg = wire.decode(pull.recv_multipart())
            if msg.kind != "end":
                held.append(msg)
            if msg.kind == "end" or len(held) == self.batch:
                answered = self.answer([m.seq for m in held])
                for seq in answered:
                    m = next(h for h in held if h.seq == seq)
                    push.send_multipart(wire.encode("data", m.run, seq, [("z", m.tensors["x"] * 2)]))
                if answered:
                    held = []  # what it left out is lost; with no answer at all it keeps computing
            if msg.kind == "end":
                push.send_multipart(wire.encode("end", msg.run, msg.seq, stats=[]))
        ctx.destroy(0)


def _frames(n):
    return [{"x": np.full((1, 4), k, np.float32)} for k in range(n)]


def test_results_that_come_back_out_of_order_are_delivered_in_order(tmp_path):
    out = _manifest(tmp_path, ONE_STAGE)
    frames = _frames(20)
    order = []
    with FakeDevice(out, 4, lambda seqs: list(reversed(seqs))) as dev:
        driver = Driver(out, dev.deployment, max_in_flight=4, timeout_s=3)
        result = driver.run(lambda k: frames[k], 20, lambda seq, o, e: order.append(seq))
    assert result.ok, result.summary()
    assert order == list(range(20))
    assert [float(o["z"][0, 0]) for o in result.outputs] == [2.0 * k for k in range(20)]


def test_a_frame_that_comes_back_twice_fails_the_run(tmp_path):
    out = _manifest(tmp_path, ONE_STAGE)
    frames = _frames(8)
    with FakeDevice(out, 2, lambda seqs: seqs + seqs[:1]) as dev:
        result = Driver(out, dev.deployment, timeout_s=3).run(lambda k: frames[k], 8)
    assert result.failure == "frame 0 came back twice"
    assert len(result.outputs) == 8 and sorted(result.errors) == list(range(2, 8))  # 0 and 1 were delivered


def test_a_frame_that_never_comes_back_fails_the_run_after_the_timeout(tmp_path):
    out = _manifest(tmp_path, ONE_STAGE)
    frames = _frames(8)
    with FakeDevice(out, 2, lambda seqs: [s for s in seqs if s != 3]) as dev:
        t0 = time.monotonic()
        result = Driver(out, dev.deployment, max_in_flight=2, timeout_s=1).run(lambda k: frames[k], 8)
        elapsed = time.monotonic() - t0
    assert "no result for" in result.failure and "frames from 3 were lost in transit" in result.failure
    assert elapsed < 5
    assert [o is not None for o in result.outputs] == [True, True, True, False, False, False, False, False]
    assert sorted(result.errors) == [3, 4, 5, 6, 7]


def test_a_stage_computing_past_the_timeout_fails_the_run(tmp_path):
    out = _manifest(tmp_path, ONE_STAGE)
    frames = _frames(4)
    started = []

    def busy(held):  # alive (heartbeats go on) but stuck in stage s0 on the first frame
        if not held:
            return {}
        started.append(time.monotonic()) if not started else None
        return {"busy": "s0", "run": held[0].run, "seq": held[0].seq, "busy_s": time.monotonic() - started[0]}

    with FakeDevice(out, 100, lambda seqs: [], busy) as dev:
        result = Driver(out, dev.deployment, timeout_s=1).run(lambda k: frames[k], 4)
    assert result.failure.startswith("device a stage s0 has been computing frame 0 for ")
    assert "(timeout 1 s)" in result.failure and sorted(result.errors) == [0, 1, 2, 3]


def test_a_timeout_shorter_than_two_heartbeats_is_refused(tmp_path):
    with pytest.raises(EdgecError, match="--timeout 0.5: at least 1 s"):
        Driver(_manifest(tmp_path, ONE_STAGE), timeout_s=0.5)


def test_inputs_from_npz_single_frame_or_stack(tmp_path):
    from edgec.runtime.pipeline import read_pipeline

    plan = read_pipeline(_manifest(tmp_path, ONE_STAGE))
    np.savez(tmp_path / "one.npz", x=np.ones((1, 4), np.float32))
    np.savez(tmp_path / "stack.npz", x=np.ones((5, 1, 4), np.float32))
    assert len(load_frames(str(tmp_path / "one.npz"), plan)) == 1
    assert len(load_frames(str(tmp_path / "stack.npz"), plan)) == 5
    np.savez(tmp_path / "bad.npz", x=np.ones((1, 5), np.float32))
    with pytest.raises(EdgecError, match="'x' is \\[1, 5\\]; expected \\[1, 4\\] or \\[frames, 1, 4\\]"):
        load_frames(str(tmp_path / "bad.npz"), plan)
    np.savez(tmp_path / "none.npz", y=np.ones((1, 4), np.float32))
    with pytest.raises(EdgecError, match="no array named 'x'"):
        load_frames(str(tmp_path / "none.npz"), plan)


def test_errors_are_reported_as_runs_of_frames():
    errors = {3: "a", 4: "a", 5: "a", 7: "b", 8: "a"}
    assert _group_errors(errors) == [("frames 3-5 (3)", "a"), ("frame 7", "b"), ("frame 8", "a")]
