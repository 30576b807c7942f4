"""A real network between devices: each device serves in its own network namespace, the namespaces joined
by a veth pair (with `tc netem` delay and loss where the kernel has netem), so hosts, ports and timeouts are
exercised off loopback. Needs root and `ip netns`; skipped, saying why, without them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import edgec
from edgec.runtime.frames import random_frames
from edgec.runtime.pipeline import read_pipeline
from edgec.verification import session

from conftest import MULTI, save_text_model
from test_runtime_local import host_cluster

SUBNET = "10.231.{}.{}"


def _ip(*args, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"edgec-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture
def net(request):
    """Two namespaces a, b joined by a veth pair; netem on both ends if `request.param` asks and the kernel can."""
    tag = f"{os.getpid() % 10000}"
    a, b, va, vb = f"edgec-a{tag}", f"edgec-b{tag}", f"eva{tag}", f"evb{tag}"
    octet = os.getpid() % 200 + 20
    hosts = {a: SUBNET.format(octet, 1), b: SUBNET.format(octet, 2)}
    netem = getattr(request, "param", None)
    try:
        for ns in (a, b):
            _ip("ip", "netns", "add", ns)
            _ip("ip", "link", "set", "lo", "up", ns=ns)
        _ip("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        for ns, dev in ((a, va), (b, vb)):
            _ip("ip", "link", "set", dev, "netns", ns)
            _ip("ip", "addr", "add", f"{hosts[ns]}/24", "dev", dev, ns=ns)
            _ip("ip", "link", "set", dev, "up", ns=ns)
        if netem:
            for ns, dev in ((a, va), (b, vb)):
                made = _ip("tc", "qdisc", "add", "dev", dev, "root", "netem", *netem.split(), ns=ns, check=False)
                if made.returncode != 0:
                    pytest.skip(f"tc netem is not available in this kernel: {made.stderr.strip()}")
        yield {"a": a, "b": b, "hosts": hosts}
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", va], capture_output=True)


def _compile(tmp_path, host_a, host_b):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    spec = host_cluster([0, 1])  # the two-device plan the other runtime tests serve on loopback
    for device, host in zip(spec["devices"], (host_a, host_b)):
        device.update(host=host, port=47000)
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    out = edgec.compile(model, tmp_path / "cluster.json", tmp_path / "out", strategy="pipeline").out_dir
    assert read_pipeline(str(out)).devices == ["d0", "d1"]
    return model, out


def _serve(ns, out, device):
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "edgec.runtime", "serve", str(out),
                             "--device", device, "--no-pin"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _run_across(net, tmp_path, frames=40, timeout=10):
    model, out = _compile(tmp_path, net["hosts"][net["a"]], net["hosts"][net["b"]])
    servers = [_serve(net["a"], out, "d0"), _serve(net["b"], out, "d1")]
    try:
        result = tmp_path / "y.npz"
        t0 = time.monotonic()
        run = subprocess.run(["ip", "netns", "exec", net["a"], sys.executable, "-m", "edgec.runtime", "run", str(out),
                              "--frames", str(frames), "--timeout", str(timeout), "--output", str(result)],
                             capture_output=True, text=True, timeout=600)
        elapsed = time.monotonic() - t0
    finally:
        for p in servers:
            p.terminate()
        errs = [p.communicate(timeout=30)[1] for p in servers]
    assert run.returncode == 0, run.stdout + run.stderr + "\n".join(errs)
    plan = read_pipeline(str(out))
    frame = random_frames(plan.inputs, 1, 0)[0]
    names = [o.name for o in plan.outputs]
    want = dict(zip(names, session(str(model)).run(names, frame)))
    with np.load(result) as got:
        assert list(got["seq"]) == list(range(frames))
        for name in names:
            for k in range(frames):
                np.testing.assert_allclose(got[name][k], want[name], rtol=1e-4, atol=1e-5)
    return out, elapsed


def test_devices_in_two_namespaces_serve_over_a_veth_pair(net, tmp_path):
    out, _ = _run_across(net, tmp_path)
    dep = json.loads((out / "deployment.json").read_text())
    assert dep["devices"]["d1"]["host"] == net["hosts"][net["b"]]  # off loopback


@pytest.mark.parametrize("net", ["delay 20ms loss 2%"], indirect=True)
def test_the_same_under_netem_delay_and_loss(net, tmp_path):
    _run_across(net, tmp_path, frames=40, timeout=10)


def test_a_device_that_is_not_on_the_network_fails_within_the_timeout_naming_it(net, tmp_path):
    model, out = _compile(tmp_path, net["hosts"][net["a"]], net["hosts"][net["b"]])
    server = _serve(net["a"], out, "d0")  # d1 is never started
    try:
        t0 = time.monotonic()
        run = subprocess.run(["ip", "netns", "exec", net["a"], sys.executable, "-m", "edgec.runtime", "run", str(out),
                              "--frames", "3", "--timeout", "3"], capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert run.returncode == 1
    assert f"device d1 (stages s1) did not come up within 3 s: no heartbeat from host {net['hosts'][net['b']]} " \
           f"port 47000" in run.stderr
    assert "device d0" not in run.stderr.split("did not come up")[0].replace("device d1", "")
    assert elapsed < 3 + 12
