"""Runs against faults of their own making: signals to `run --local`, a second run on a busy deployment, a
device that is not there, a device restarted mid-run, stats after a failed run, serving without keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from edgec.runtime import wire
from edgec.runtime.deployment import Deployment, DeviceEndpoint
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline
from edgec.verification import session

from conftest import save_text_model
from test_runtime_faults import _children, _cmdline, _wait_frames
from test_runtime_local import MULTI, compile_for_hosts


@pytest.fixture
def plan3(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    return compile_for_hosts(model, tmp_path, [0, 1, 0])


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_run_local_stops_its_devices_and_removes_its_folder(plan3, sig):
    proc = subprocess.Popen([sys.executable, "-m", "edgec.runtime", "run", str(plan3), "--local", "--frames",
                             "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        devices = {}
        while len(devices) < 3 and time.monotonic() < deadline:
            for child in _children(proc.pid):
                args = _cmdline(child)
                if "--device" in args:
                    devices[child] = args[args.index("--deployment") + 1]
            time.sleep(0.1)
        assert len(devices) == 3
        _wait_frames(str(plan3), next(iter(devices.values())), "d2", 20)
        proc.send_signal(sig)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig
    time.sleep(0.5)
    assert not [pid for pid in devices if _alive(pid)]
    assert not Path(next(iter(devices.values()))).parent.exists()


def test_a_second_run_on_a_busy_deployment_is_refused_and_the_first_finishes(plan3, tmp_path):
    plan = read_pipeline(str(plan3))
    frames = random_frames(plan.inputs, 2)
    with LocalCluster(str(plan3)) as cluster:
        first = {}
        driver = Driver(str(plan3), cluster.deployment, timeout_s=10)
        t = threading.Thread(target=lambda: first.update(r=driver.run(lambda k: frames[k % 2], 3000)))
        t.start()
        _wait_frames(str(plan3), cluster.deployment_path, "d2", 50)
        proc = subprocess.run([sys.executable, "-m", "edgec.runtime", "run", str(plan3), "--deployment",
                               cluster.deployment_path, "--frames", "5"], capture_output=True, text=True, timeout=60)
        t.join(120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "another run is using this deployment" in proc.stderr and "Traceback" not in proc.stderr
        result = first["r"]
        assert result.ok and result.delivered == 3000, result.summary()
        # once it has ended, the deployment is free
        again = subprocess.run([sys.executable, "-m", "edgec.runtime", "run", str(plan3), "--deployment",
                                cluster.deployment_path, "--frames", "5"], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("keys", [False, True])
def test_a_device_that_is_not_there_fails_within_the_timeout_naming_host_port_and_keys(plan3, tmp_path, keys):
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps({"devices": {d: {"host": "127.0.0.1", "port": 47100 + 10 * i}
                                           for i, d in enumerate(["d0", "d1", "d2"])}}))
    args = [sys.executable, "-m", "edgec.runtime", "run", str(plan3), "--deployment", str(dep), "--timeout", "2"]
    if keys:
        subprocess.run([sys.executable, "-m", "edgec.runtime", "keys", str(plan3)], check=True, capture_output=True)
        args += ["--keys", str(plan3 / "keys")]
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1
    assert elapsed < 2 + 10  # the process's own start-up (imports) on a loaded machine, plus the 2 s
    assert "did not come up within 2 s" in proc.stderr and "host 127.0.0.1 port 47100" in proc.stderr
    assert ("CURVE keys in use" if keys else "no CURVE keys in use") in proc.stderr


def test_a_device_restarted_mid_run_is_taken_back_and_exactly_the_lost_frames_are_named(plan3):
    plan = read_pipeline(str(plan3))
    frames = random_frames(plan.inputs, 4)
    sess = session(str(plan3.parent / "multi.onnx"))
    names = [o.name for o in plan.outputs]
    expected = [dict(zip(names, sess.run(names, f))) for f in frames]
    n = 600
    with LocalCluster(str(plan3)) as cluster:
        restarted = []

        def restart_at_100(seq, out, err):
            if seq == 100 and not restarted:
                cluster.procs["d1"].kill()
                cluster.procs["d1"].wait()
                log = open(cluster._logs["d1"], "ab")
                cluster.procs["d1"] = subprocess.Popen(cluster.command("d1"), stdout=log, stderr=subprocess.STDOUT)
                restarted.append(seq)

        driver = Driver(str(plan3), cluster.deployment, timeout_s=30)  # no watch: as devices served elsewhere
        result = driver.run(lambda k: frames[k % 4], n, restart_at_100)
    assert result.failure is None, result.failure
    lost = sorted(result.errors)
    assert lost and all(100 < s < 100 + driver.max_in_flight + 2 for s in lost)
    assert all("device d1 restarted" in result.errors[s] for s in lost)
    assert any("device d1 restarted" in note and "taken back" in note for note in result.notes)
    assert result.delivered == n - len(lost)
    for k, out in enumerate(result.outputs):
        if out is not None:
            for name in names:
                np.testing.assert_allclose(out[name], expected[k % 4][name], rtol=1e-4, atol=1e-5)


def test_stats_after_a_failed_run_count_only_the_new_runs_frames(plan3):
    plan = read_pipeline(str(plan3))
    frame = random_frames(plan.inputs, 1)[0]
    with LocalCluster(str(plan3)) as cluster:
        driver = Driver(str(plan3), cluster.deployment, watch=cluster.problems)
        assert driver.run(lambda k: frame, 0).ok
        ctx = zmq.Context()
        try:  # a run that never ended: frames of run "gone", no end message
            push = ctx.socket(zmq.PUSH)
            push.connect(cluster.deployment.segment_input(plan, plan.segments[0]))
            for seq in range(7):
                push.send_multipart(wire.encode("data", "gone", seq, list(frame.items())))
            _wait_frames(str(plan3), cluster.deployment_path, "d0", 7)
        finally:
            ctx.destroy(0)
        time.sleep(2.5)  # the abandoned run's last frame: past the window in which it still holds the deployment
        result = driver.run(lambda k: frame, 5)
    assert result.ok
    assert [s["frames"] for s in result.stats] == [5, 5, 5]


def test_serve_without_keys_warns_that_anyone_can_feed_it(plan3):
    proc = subprocess.Popen([sys.executable, "-m", "edgec.runtime", "serve", str(plan3), "--device", "d0", "--no-pin"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.1)
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "WARNING" in line or not line:
                break
    finally:
        proc.send_signal(signal.SIGHUP)
        proc.wait(30)
    text = "".join(lines)
    assert "WARNING: device d0 serves without CURVE keys" in text and "anyone" in text
    assert proc.returncode == 0
