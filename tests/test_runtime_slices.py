"""A step of spatial slices at run time: scattered to every slice, joined in order, outputs as the original's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import edgec
from edgec.runtime import wire
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.gather import SliceGather
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline

from test_runtime_local import assert_close, expected_outputs, host_cluster


def _run_matches_original(model, out, plan, frames):
    """Run every frame through out/ on local devices; the outputs are the original model's, in order."""
    with LocalCluster(str(out)) as local:
        result = Driver(str(out), local.deployment, watch=local.problems).run(lambda k: frames[k], len(frames))
    assert result.ok, result.summary()
    for exp, got in zip(expected_outputs(model, plan, frames), result.outputs):
        assert_close(exp, got)
    return result


def _spatial_plan(model, tmp_path, cores, name="out"):
    cluster = tmp_path / f"{name}.json"
    cluster.write_text(json.dumps(host_cluster(cores)))
    return edgec.compile(model, cluster, tmp_path / name, strategy="spatial", objective="latency").out_dir


@pytest.mark.parametrize("cores", [[0, 1], [0, 1, 0]], ids=["two-devices", "three-devices"])
def test_slices_run_across_devices_and_match_the_original_in_order(random_zoo, tmp_path, cores):
    model = random_zoo("squeezenet")
    out = _spatial_plan(model, tmp_path, cores)
    plan = read_pipeline(str(out))
    sliced = [s for s in plan.steps if s.parallel == "slice"]
    assert sliced and len(sliced[0].segments) >= 2
    assert len({seg.device for seg in sliced[0].segments}) >= 2  # the slices cross devices
    # the manifest's transfers: the run's input to every slice on another device, each band to the joining stage
    join = plan.steps[sliced[0].index + 1].segments[0]
    moved = {(t.src, t.dst): t.tensors for t in plan.manifest.transfers}
    for seg in sliced[0].segments:
        name = seg.stages[0].name
        if seg.device != join.device:
            assert moved[(name, join.stages[0].name)] == list(seg.sends)
    result = _run_matches_original(model, out, plan, random_frames(plan.inputs, 6, seed=3))
    # every slice segment computed every frame, and the joining segment each frame once
    done = {tuple(s["stages"]): s["frames"] for s in result.stats}
    for seg in sliced[0].segments:
        assert done[tuple(st.name for st in seg.stages)] == 6


def _msg(seq, **tensors):
    return wire.Message("data", "r", seq, {k: np.full(v, seq, np.float32) for k, v in tensors.items()})


def test_gather_joins_a_frame_once_every_slice_is_in():
    g = SliceGather({"s1": {"a": ("float32", (1, 2))}, "s2": {"b": ("float32", (1, 3)), "x": ("float32", (1,))}})
    assert g.add(_msg(0, a=(1, 2))) is None
    assert g.add(_msg(1, b=(1, 3), x=(1,))) is None
    joined = g.add(_msg(0, b=(1, 3), x=(1,)))
    assert sorted(joined) == ["a", "b", "x"] and g.pending() == [("r", 1)]
    with pytest.raises(wire.WireError, match="not what any slice"):
        g.add(_msg(2, a=(1, 2), b=(1, 3)))
    with pytest.raises(wire.WireError, match="slice sends"):
        g.add(_msg(2, a=(1, 5)))
    with pytest.raises(wire.WireError, match="came twice"):
        g.add(_msg(1, b=(1, 3), x=(1,)))
    # a failed slice stands for its frame: its error goes on once, the frame's other slices are dropped
    assert g.fail("r", 1) is True and g.fail("r", 1) is False
    assert g.add(_msg(1, a=(1, 2))) is None and g.pending() == []


def test_manifest_with_slices_that_do_not_tile_is_refused(random_zoo, tmp_path):
    out = _spatial_plan(random_zoo("squeezenet"), tmp_path, [0, 1])
    data = json.loads((out / "manifest.json").read_text())
    k = next(i for i, s in enumerate(data["stages"]) if s.get("parallel") == "slice")
    data["stages"][k]["slice"]["rows"][1] += 1
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(edgec.errors.EdgecError, match=re.escape(f"$.stages[{k + 1}].slice.rows")):
        read_pipeline(str(out))


def test_several_steps_of_slices_in_a_row(random_zoo, tmp_path):
    """ResNet-50 over two one-core units: slices, merge, slices again; the run reproduces the original."""
    model = random_zoo("resnet50")
    out = _spatial_plan(model, tmp_path, [0, 1])
    plan = read_pipeline(str(out))
    sliced = [s for s in plan.steps if s.parallel == "slice"]
    assert len(sliced) >= 2
    assert edgec.verify(out).passed
    _run_matches_original(model, out, plan, random_frames(plan.inputs, 2, seed=5))


def test_slices_between_the_units_of_one_board_pass_in_process(random_zoo, tmp_path):
    """One device with two one-core units: the slices are two worker threads of one process, and every hop
    between them goes over an in-process socket (no TCP, no copy); the run reproduces the original."""
    import zmq

    from edgec.runtime.device import DeviceWorker

    spec = host_cluster([0])
    spec["devices"][0]["units"]["cpu1"] = {"kind": "cpu", "gflops": 20.0, "backend": "neon", "cores": [1]}
    cluster = tmp_path / "board.json"
    cluster.write_text(json.dumps(spec))
    model = random_zoo("squeezenet")
    out = edgec.compile(model, cluster, tmp_path / "out", strategy="spatial", objective="latency").out_dir
    plan = read_pipeline(str(out))
    sliced = [s for s in plan.steps if s.parallel == "slice"]
    assert sliced and {seg.unit for seg in sliced[0].segments} == {"cpu", "cpu1"}
    worker = DeviceWorker(str(out), "d0")
    try:
        worker.bind()
        inputs = {sw.segment.index: sw.input.getsockopt(zmq.LAST_ENDPOINT).decode() for sw in worker.segments}
        assert all(addr == f"inproc://segment-{k}" for k, addr in inputs.items())
    finally:
        worker.close()
    _run_matches_original(model, out, plan, random_frames(plan.inputs, 3, seed=7))
