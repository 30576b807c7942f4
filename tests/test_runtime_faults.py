"""Faults: a device that dies or hangs is named, the run exits non-zero, every frame is accounted for;
a tampered sub-model is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from edgec.runtime.deployment import load_deployment
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline

from conftest import save_text_model
from test_runtime_local import MULTI, compile_for_hosts


@pytest.fixture
def plan3(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    return compile_for_hosts(model, tmp_path, [0, 1, 0])


def _check_accounting(result, n):
    """Every frame has its outputs or an error; the delivered ones are a prefix, in order."""
    assert len(result.outputs) == n
    delivered = [k for k, o in enumerate(result.outputs) if o is not None]
    assert delivered == list(range(len(delivered)))
    assert sorted(result.errors) == list(range(len(delivered), n))


def test_a_killed_device_is_named_and_no_frame_is_lost_silently(plan3):
    n = 3000
    frames = random_frames(read_pipeline(str(plan3)).inputs, 4)
    with LocalCluster(str(plan3)) as cluster:
        victim = cluster.procs["d1"]

        def kill_at_30(seq, out, err):
            if seq == 30:
                victim.send_signal(signal.SIGKILL)

        driver = Driver(str(plan3), cluster.deployment, timeout_s=5, watch=cluster.problems)
        t0 = time.monotonic()
        result = driver.run(lambda k: frames[k % 4], n, kill_at_30)
        elapsed = time.monotonic() - t0
    assert not result.ok
    assert "device d1 (stages s1)" in result.failure and "killed by signal 9 (SIGKILL)" in result.failure
    assert elapsed < 5 + 3
    _check_accounting(result, n)
    assert 30 < result.delivered < n
    assert "not delivered: the run failed (device d1" in result.errors[n - 1]


def test_a_hung_device_is_reported_silent_past_the_timeout(plan3):
    frames = random_frames(read_pipeline(str(plan3)).inputs, 4)
    with LocalCluster(str(plan3)) as cluster:
        victim = cluster.procs["d1"]
        stopped = []

        def stop_at_20(seq, out, err):
            if seq == 20:
                victim.send_signal(signal.SIGSTOP)
                stopped.append(time.monotonic())

        driver = Driver(str(plan3), cluster.deployment, timeout_s=2, watch=cluster.problems)
        try:
            result = driver.run(lambda k: frames[k % 4], 3000, stop_at_20)
            reported = time.monotonic()
        finally:
            victim.send_signal(signal.SIGCONT)
    assert "device d1 (stages s1) silent for" in result.failure and "(timeout 2 s)" in result.failure
    assert 2 - 0.5 <= reported - stopped[0] < 2 + 2  # silence counts from its last heartbeat (every 0.5 s)
    _check_accounting(result, 3000)


def _children(pid):
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def _cmdline(pid):
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_cli_run_exits_non_zero_naming_the_killed_device_and_stage(plan3):
    proc = subprocess.Popen([sys.executable, "-m", "edgec.cli", "run", str(plan3), "--local", "--frames",
                             "1000000", "--timeout", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # find the d1 process and wait until it has computed frames, by its own heartbeats
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            for child in _children(proc.pid):
                args = _cmdline(child)
                if "--device" in args and args[args.index("--device") + 1] == "d1":
                    victim = (child, args[args.index("--deployment") + 1])
            time.sleep(0.1)
        assert victim is not None, "device d1 was not started"
        pid, deployment = victim
        _wait_frames(str(plan3), deployment, "d1", 50)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=30)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert exited - killed < 4 + 4
    assert "edgec: run failed: device d1 (stages s1)" in err and f"process {pid} killed by signal 9" in err
    assert "not delivered" in err


def _wait_frames(out, deployment, device, count):
    plan = read_pipeline(out)
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(load_deployment(deployment, plan).status(plan, device))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sub.poll(500) and json.loads(sub.recv()).get("frames", 0) >= count:
                return
        raise AssertionError(f"device {device} computed fewer than {count} frames")
    finally:
        ctx.destroy(0)


def _tamper(out, stage_index):
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stages"][stage_index]
    path = out / stage["model"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return stage


def test_cli_run_refuses_a_tampered_sub_model(plan3):
    stage = _tamper(plan3, 1)
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "run", str(plan3), "--local", "--frames", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "device d1 (stages s1)" in proc.stderr and "exited with code 2" in proc.stderr
    assert f"stage {stage['name']} (device d1): sub-model sha256" in proc.stderr
    assert "does not match" in proc.stderr and "refusing to load it" in proc.stderr
    assert "frames 0-4 (5): not delivered" in proc.stderr


def test_serve_refuses_a_tampered_sub_model(plan3):
    _tamper(plan3, 0)
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "serve", str(plan3), "--device", "d0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("edgec: ") and "stage s0 (device d0): sub-model sha256" in proc.stderr
    assert "Traceback" not in proc.stderr
