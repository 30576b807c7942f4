"""`run --local`: every device its own pinned process on this machine; outputs match the original, in order."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import edgec
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster, plan_cores, run_local
from edgec.runtime.pipeline import read_pipeline
from edgec.verification import session

from conftest import MULTI, save_text_model

def host_cluster(cores):
    """Devices d0, d1, ... of type host, each one unit pinned to the given core."""
    return {"name": "hosts", "devices": [{"name": f"d{i}", "type": "host", "units": {"cpu": {"cores": [c]}}}
                                         for i, c in enumerate(cores)],
            "network": {"bandwidth_mbps": 1000, "latency_ms": 0.05}, "source": "d0", "sink": f"d{len(cores) - 1}"}


def compile_for_hosts(model, tmp_path, cores, name="out", strategy="pipeline"):
    """A chain over the devices (the single-level plan: one segment per device)."""
    cluster = tmp_path / f"{name}.json"
    cluster.write_text(json.dumps(host_cluster(cores)))
    return edgec.compile(model, cluster, tmp_path / name, strategy=strategy).out_dir


def expected_outputs(model, plan, frames):
    sess = session(str(model))
    names = [o.name for o in plan.outputs]
    feeds = [i.name for i in sess.get_inputs()]
    return [dict(zip(names, sess.run(names, {n: f[n] for n in feeds}))) for f in frames]


def assert_close(expected, got):
    """Element by element within `edgec verify`'s tolerances."""
    from edgec.verification import compare

    for name, exp in expected.items():
        assert got[name].shape == exp.shape and got[name].dtype == exp.dtype
        assert compare(name, exp, got[name]).passed, name


@pytest.fixture(scope="module")
def squeezenet_plan(random_zoo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("squeezenet")
    model = random_zoo("squeezenet")
    return model, compile_for_hosts(model, tmp, [0, 1, 0])


def test_squeezenet_over_three_devices_matches_the_original_in_order(squeezenet_plan):
    model, out = squeezenet_plan
    plan = read_pipeline(str(out))
    assert len(plan.segments) == 3
    assert max(len(s.receives) for s in plan.segments) >= 2  # Concat branches cross a cut
    frames = random_frames(plan.inputs, 120, seed=1)  # every frame different: order shows
    delivered = []
    result = run_local(str(out), frames, 120, on_result=lambda seq, out, err: delivered.append(seq))
    assert result.ok, result.summary()
    assert delivered == list(range(120))
    for exp, got in zip(expected_outputs(model, plan, frames), result.outputs):
        assert_close(exp, got)
    assert [s["device"] for s in result.stats] == ["d0", "d1", "d2"]
    assert all(s["frames"] == 120 and s["errors"] == 0 for s in result.stats)


def test_inception_with_boundaries_of_three_or_more_tensors(random_zoo, tmp_path):
    model = random_zoo("inception_v1")
    out = compile_for_hosts(model, tmp_path, [0, 1, 0])
    plan = read_pipeline(str(out))
    assert len(plan.segments) == 3
    assert max(len(s.receives) for s in plan.segments[1:]) >= 3  # branches of an inception block cross a cut
    frames = random_frames(plan.inputs, 10, seed=5)
    result = run_local(str(out), frames, 100)
    assert result.ok, result.summary()
    expected = expected_outputs(model, plan, frames)
    for k, got in enumerate(result.outputs):
        assert_close(expected[k % 10], got)


def test_multi_tensor_boundaries_relays_and_two_outputs(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = compile_for_hosts(model, tmp_path, [0, 1, 0])
    plan = read_pipeline(str(out))
    assert len(plan.segments) == 3
    assert max(len(s.receives) for s in plan.segments[1:]) >= 2
    relayed = [set(seg.receives) - {t.name for st in seg.stages for t in st.inputs} for seg in plan.segments]
    assert any(relayed)  # a tensor passes through a device that does not read it
    frames = random_frames(plan.inputs, 150, seed=2)
    result = run_local(str(out), frames, 150)
    assert result.ok, result.summary()
    assert len(result.outputs) == 150
    for exp, got in zip(expected_outputs(model, plan, frames), result.outputs):
        assert_close(exp, got)


SCALAR_INPUT = """
<ir_version: 8, opset_import: ["" : 13]>
sc (float[1,16] x, float s) => (float[1,16] y) <float[16,16] w>
{
    a = MatMul(x, w)
    b = Mul(a, s)
    y = Relu(b)
}
"""


def test_scalar_inputs_travel_as_0_d_arrays(tmp_path):
    model = save_text_model(SCALAR_INPUT, tmp_path / "scalar.onnx")
    out = compile_for_hosts(model, tmp_path, [0, 1])
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 4, seed=3)
    assert frames[0]["s"].shape == () and isinstance(frames[0]["s"], np.ndarray)
    result = run_local(str(out), frames, 4)
    assert result.ok, result.summary()
    for exp, got in zip(expected_outputs(model, plan, frames), result.outputs):
        assert_close(exp, got)


def test_a_bad_frame_gets_an_explicit_error_and_the_rest_go_through(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = compile_for_hosts(model, tmp_path, [0, 1])
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 40, seed=3)
    frames[7] = dict(frames[7], y=np.zeros((1, 9), np.float32))  # the first stage expects [1, 8]
    frames[8] = dict(frames[8], y=frames[8]["y"].astype(np.float64))
    seen = []
    with LocalCluster(str(out)) as cluster:
        driver = Driver(str(out), cluster.deployment, watch=cluster.problems)
        result = driver.run(lambda k: frames[k], 40, lambda seq, o, err: seen.append((seq, err is None)))
    assert not result.ok and result.failure is None
    assert sorted(result.errors) == [7, 8]
    assert "device d0 stage s0" in result.errors[7] and "'y' is float32[1, 9], the stage expects float32[1, 8]" \
        in result.errors[7]
    assert "float64" in result.errors[8]
    assert seen == [(k, k not in (7, 8)) for k in range(40)]
    assert result.outputs[7] is None and result.outputs[9] is not None
    assert result.delivered == 38


def test_cli_run_local_writes_outputs_in_order(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = compile_for_hosts(model, tmp_path, [0, 1])
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 5, seed=4)
    np.savez(tmp_path / "x.npz", **{s.name: np.stack([f[s.name] for f in frames]) for s in plan.inputs})
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "run", str(out), "--local", "--inputs",
                           str(tmp_path / "x.npz"), "--frames", "12", "--output", str(tmp_path / "y.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "12 of 12 frames" in proc.stdout
    expected = expected_outputs(model, plan, frames)
    with np.load(tmp_path / "y.npz") as y:
        assert list(y["seq"]) == list(range(12))
        for k in range(12):
            assert_close(expected[k % 5], {n: y[n][k] for n in expected[0]})


def test_device_processes_pin_to_their_units_cores(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = compile_for_hosts(model, tmp_path, [1, 0])
    cores, notes = plan_cores(read_pipeline(str(out)))
    assert cores == {"d0": [1], "d1": [0]} and notes == []
    with LocalCluster(str(out)) as cluster:
        assert "--cores" in cluster.command("d0") and cluster.command("d0")[-1] == "1"
        driver = Driver(str(out), cluster.deployment, watch=cluster.problems)
        result = driver.run(lambda k: random_frames(driver.plan.inputs, 1, k)[0], 3)
        pids = {d: p.pid for d, p in cluster.procs.items()}
        import os

        assert {d: sorted(os.sched_getaffinity(pid)) for d, pid in pids.items()} == {"d0": [1], "d1": [0]}
    assert result.ok
    assert [s["cores"] for s in result.stats] == [[1], [0]]


def test_cores_a_machine_lacks_are_folded_onto_its_own(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = compile_for_hosts(model, tmp_path, [0, 517])
    cores, notes = plan_cores(read_pipeline(str(out)))
    import os

    available = sorted(os.sched_getaffinity(0))
    assert cores["d1"] == [available[517 % len(available)]]
    assert notes and "d1: cores [517] are not all on this machine" in notes[0]


def test_serving_a_board_does_not_load_the_compiler(squeezenet_plan):
    """A board runs `edgec serve` with numpy, pyzmq and onnxruntime; onnx, onnxsim and graphsurgeon stay out,
    through reading the plan, taking its cores from the manifest and loading the device's stages."""
    out = str(squeezenet_plan[1])
    code = ("import sys; from edgec.runtime.pipeline import read_pipeline; from edgec.runtime.local import plan_cores; "
            "from edgec.runtime.device import DeviceWorker; import edgec.cli; "
            f"plan = read_pipeline({out!r}); plan_cores(plan); DeviceWorker({out!r}, plan.devices[0]); "
            "print(sorted(m for m in ('onnx', 'onnxsim', 'onnx_graphsurgeon', 'edgec.api') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
