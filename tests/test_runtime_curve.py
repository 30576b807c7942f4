"""CurveZMQ: with keys, only the cluster's devices and its driver can connect; `serve` + `run` by hand."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from edgec.runtime import wire
from edgec.runtime.deployment import local_deployment
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.keys import load_keys
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline

from conftest import save_text_model
from test_runtime_local import MULTI, compile_for_hosts


@pytest.fixture
def plan2(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    return compile_for_hosts(model, tmp_path, [0, 1])


def _make_keys(out):
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "keys", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return out / "keys"


def test_keys_are_written_per_device_and_driver(plan2):
    keys = _make_keys(plan2)
    assert sorted(p.name for p in (keys / "public").iterdir()) == ["d0.key", "d1.key", "driver.key"]
    assert sorted(p.name for p in (keys / "private").iterdir()) == ["d0.key_secret", "d1.key_secret",
                                                                   "driver.key_secret"]
    for p in (keys / "private").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert "secret" not in (keys / "public" / "d0.key").read_text()
    d0 = load_keys(str(keys), "d0", ["d1", "driver"])
    assert set(d0.peers) == {"d0", "d1", "driver"} and len(d0.secret) == 40
    again = subprocess.run([sys.executable, "-m", "edgec.cli", "keys", str(plan2)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "pass --force" in again.stderr


def _inject(address, frame, server_key=None):
    """Connect as a stranger (no keys, or a keypair of its own) and push one well-formed frame."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None:
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.curve_serverkey = server_key
        sock.connect(address)
        try:
            sock.send_multipart(wire.encode("data", "rogue", 0, list(frame.items())), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no connection came up: nothing to send to
        time.sleep(1.0)
    finally:
        ctx.destroy(0)


def _frames_computed(cluster, device, keys=None):
    plan = cluster.plan
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        if keys is not None:
            keys.client(sub, device)
        sub.connect(cluster.deployment.status(plan, device))
        assert sub.poll(5000), "no heartbeat"
        return json.loads(sub.recv())["frames"]
    finally:
        ctx.destroy(0)


def test_without_the_keys_a_client_cannot_inject_a_frame(plan2):
    keys = _make_keys(plan2)
    plan = read_pipeline(str(plan2))
    frame = random_frames(plan.inputs, 1)[0]
    with LocalCluster(str(plan2), keys_dir=str(keys)) as cluster:
        driver = Driver(str(plan2), cluster.deployment, str(keys), watch=cluster.problems)
        assert driver.run(lambda k: frame, 0).ok  # every device up
        entry = cluster.deployment.segment_input(plan, plan.segments[0])
        server_key = load_keys(str(keys), "driver", plan.devices).peers["d0"]
        _inject(entry, frame)  # plain TCP
        _inject(entry, frame, server_key)  # CURVE, with a keypair the cluster does not know
        driver_keys = load_keys(str(keys), "driver", plan.devices)
        assert _frames_computed(cluster, "d0", driver_keys) == 0
        # a stranger cannot read the status either
        ctx = zmq.Context()
        try:
            spy = ctx.socket(zmq.SUB)
            spy.setsockopt(zmq.LINGER, 0)
            spy.setsockopt(zmq.SUBSCRIBE, b"")
            spy.connect(cluster.deployment.status(plan, "d0"))
            assert not spy.poll(1500)
        finally:
            ctx.destroy(0)
        result = driver.run(lambda k: frame, 10)  # the cluster's own driver still runs
        assert result.ok and result.delivered == 10
        assert _frames_computed(cluster, "d1", driver_keys) == 10


def test_without_curve_the_same_injection_is_computed(plan2):
    """The control for the test above: the injected frame is well-formed."""
    plan = read_pipeline(str(plan2))
    frame = random_frames(plan.inputs, 1)[0]
    with LocalCluster(str(plan2)) as cluster:
        assert Driver(str(plan2), cluster.deployment, watch=cluster.problems).run(lambda k: frame, 0).ok
        _inject(cluster.deployment.segment_input(plan, plan.segments[0]), frame)
        assert _frames_computed(cluster, "d0") == 1


def test_a_driver_without_the_cluster_keys_gets_nowhere(plan2, tmp_path):
    keys = _make_keys(plan2)
    plan = read_pipeline(str(plan2))
    with LocalCluster(str(plan2), keys_dir=str(keys)) as cluster:
        stranger = plan2 / "stranger-keys"
        subprocess.run([sys.executable, "-m", "edgec.cli", "keys", str(plan2), "--folder", str(stranger)],
                       check=True, capture_output=True, timeout=60)
        for pub in (keys / "public").glob("d*.key"):  # it knows the devices' public keys, not theirs its own
            (stranger / "public" / pub.name).write_bytes(pub.read_bytes())
        driver = Driver(str(plan2), cluster.deployment, str(stranger), startup_timeout_s=3, watch=cluster.problems)
        result = driver.run(lambda k: random_frames(plan.inputs, 1)[0], 3)
    assert result.failure and "did not come up within 3 s" in result.failure and "same keys" in result.failure
    assert len(result.errors) == 3


def test_serve_and_run_by_hand_with_a_deployment_file_and_keys(plan2, tmp_path):
    keys = _make_keys(plan2)
    plan = read_pipeline(str(plan2))
    deployment = tmp_path / "deployment.json"
    local_deployment(plan).write(str(deployment))
    servers = [subprocess.Popen([sys.executable, "-m", "edgec.cli", "serve", str(plan2), "--device", d,
                                 "--deployment", str(deployment), "--keys", str(keys)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in plan.devices]
    try:
        frames = random_frames(plan.inputs, 3, seed=5)
        np.savez(tmp_path / "x.npz", **{s.name: np.stack([f[s.name] for f in frames]) for s in plan.inputs})
        run = subprocess.run([sys.executable, "-m", "edgec.cli", "run", str(plan2), "--deployment", str(deployment),
                              "--keys", str(keys), "--inputs", str(tmp_path / "x.npz"), "--frames", "30"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "30 of 30 frames" in run.stdout
    finally:
        for s in servers:
            s.send_signal(signal.SIGTERM)
        logs = [s.communicate(timeout=30)[1] for s in servers]
    assert [s.returncode for s in servers] == [0, 0]
    assert "edgec: device d0: serving stages s0 (pinned to cores [0], CURVE)" in logs[0]
    port = json.loads(deployment.read_text())["devices"]["d1"]["port"]
    assert f"results tcp://127.0.0.1:{port + 2}" in logs[1]
