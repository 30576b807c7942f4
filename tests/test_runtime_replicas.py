"""Replicas and units as workers at run time: frames dealt by weight, order restored, a lost replica's
frames dealt again; the units of one device serve their stages at once."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

import edgec
from edgec.runtime.dealing import Dealer, EndGather, NoReplicaLeft
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster, run_local
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.trust import seal

from conftest import save_text_model
from test_runtime_local import MULTI, assert_close, expected_outputs, host_cluster


class _Sock:
    """Stands in for a PUSH socket: records what it was sent."""

    def __init__(self):
        self.sent = []

    def poll(self, timeout, flags):
        return True

    def send_multipart(self, frames, copy=False):
        self.sent.append(frames)


def test_frames_are_dealt_in_proportion_to_the_weights_and_evenly_spread():
    socks = [_Sock(), _Sock()]
    dealer = Dealer("replica", [("a", 0.75, socks[0]), ("b", 0.25, socks[1])])
    picks = []
    for _ in range(400):
        (i,) = dealer.pick()
        dealer.send([i], [b"x"], lambda: True)
        picks.append(i)
    assert picks.count(0) == 300 and picks.count(1) == 100
    assert max(len(run) for run in "".join(map(str, picks)).split("1")) <= 3  # a's frames never bunch up


def test_a_skipped_replica_gets_nothing_and_a_step_with_none_left_says_so():
    dealer = Dealer("replica", [("a", 0.5, _Sock()), ("b", 0.5, _Sock())])
    chosen = set()
    for _ in range(10):
        chosen.update(dealer.pick(["a"]))
        dealer.taken()
    assert chosen == {1}
    with pytest.raises(NoReplicaLeft):
        dealer.pick(["a", "b"])
    assert Dealer("slice", [("a", 0.5, _Sock()), ("b", 0.5, _Sock())]).pick() == [0, 1]


class _FullSock(_Sock):
    """A PUSH socket whose queue never drains (its replica died)."""

    def poll(self, timeout, flags):
        return False


def test_a_replica_whose_queue_stays_full_hands_the_frame_to_a_live_one():
    stuck, live = _FullSock(), _Sock()
    dealer = Dealer("replica", [("a", 0.5, stuck), ("b", 0.5, live)])
    first = dealer.pick()
    assert first == [0]
    moved = dealer.wait_writable(first, [], lambda: True, redeal_after_s=0.0)
    assert moved == [1]
    dealer.send(moved, [b"x"], lambda: True)
    assert live.sent == [[b"x"]] and stuck.sent == []
    picks = []
    for _ in range(3):
        picks += dealer.pick()
        dealer.taken()
    assert sorted(picks) == [0, 0, 1]  # b was charged for the frame it took: 2 and 2 over the four frames
    # a step of one segment (or slices) only waits: there is nowhere else to send
    assert Dealer("one", [("a", 1.0, _FullSock())]).wait_writable([0], [], lambda: False) is None


def test_an_end_marker_goes_on_once_every_live_replica_has_sent_one():
    gather = EndGather(["a", "b"])
    assert gather.add("run", "a", [], [{"s": 1}]) is None
    assert gather.add("run", "b", [], [{"s": 2}]) == [{"s": 1}, {"s": 2}]
    assert gather.add("run", "b", [], []) is None  # not twice
    lost = EndGather(["a", "b"])
    assert lost.add("run", "a", [], []) is None
    assert lost.add("run", "a", ["b"], []) == []  # b was found dead: a's marker is enough


@pytest.fixture(scope="module")
def replica_plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicas")
    model = save_text_model(MULTI, tmp / "multi.onnx")
    cluster = tmp / "hosts.json"
    cluster.write_text(json.dumps(host_cluster([0, 1, 0])))
    out = edgec.compile(model, cluster, tmp / "out", strategy="data-parallel").out_dir
    return model, out


def test_data_parallel_plan_replicates_the_model_with_weights_summing_to_one(replica_plan):
    model, out = replica_plan
    plan = read_pipeline(str(out))
    assert len(plan.steps) == 1 and plan.steps[0].parallel == "replica" and len(plan.steps[0].segments) == 3
    assert {s.device for s in plan.segments} == {"d0", "d1", "d2"}
    assert sum(s.weight for s in plan.segments) == pytest.approx(1.0)
    assert edgec.verify(out).passed


def test_run_local_with_replicas_reproduces_the_original_in_order(replica_plan):
    model, out = replica_plan
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 5, seed=3)
    result = run_local(str(out), frames, 40)
    assert result.ok, result.summary()
    expected = expected_outputs(model, plan, frames)
    for k, got in enumerate(result.outputs):
        assert_close(expected[k % 5], got)
    served = {s["device"]: s["frames"] for s in result.stats}
    assert sum(served.values()) == 40 and all(n > 0 for n in served.values())  # every replica took frames


def test_a_killed_replica_loses_no_frame_and_order_is_kept(replica_plan):
    model, out = replica_plan
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 4, seed=5)
    expected = expected_outputs(model, plan, frames)
    n = 300
    with LocalCluster(str(out)) as cluster:
        victim = cluster.procs["d1"]

        def kill_at_25(seq, outputs, err):
            if seq == 25:
                victim.send_signal(signal.SIGKILL)

        driver = Driver(str(out), cluster.deployment, timeout_s=5, watch=cluster.problems)
        result = driver.run(lambda k: frames[k % 4], n, kill_at_25)
    assert result.ok, result.summary()
    assert len(result.outputs) == n  # every frame once, in sequence order
    for k, got in enumerate(result.outputs):
        assert_close(expected[k % 4], got)
    note = " ".join(result.notes)
    assert "device d1" in note and "killed by signal 9" in note and "dealt again" in note


def test_two_units_of_one_device_serve_their_stages_at_once(tmp_path):
    """A device with two one-core units: the hierarchical plan gives each unit work; `run --local` serves
    each unit's segment on its own thread and reproduces the original."""
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    cluster = tmp_path / "two-units.json"
    cluster.write_text(json.dumps(TWO_UNITS))
    out = edgec.compile(model, cluster, tmp_path / "out").out_dir
    plan = read_pipeline(str(out))
    assert {(s.device, s.unit) for s in plan.segments} == {("h", "cpu"), ("h", "cpu1")}
    assert edgec.verify(out).passed
    frames = random_frames(plan.inputs, 3, seed=1)
    result = run_local(str(out), frames, 30)
    assert result.ok, result.summary()
    expected = expected_outputs(model, plan, frames)
    for k, got in enumerate(result.outputs):
        assert_close(expected[k % 3], got)
    assert len(result.stats) == 2 and all(s["frames"] > 0 for s in result.stats)


TWO_UNITS = {"name": "two-units", "devices": [{"name": "h", "type": "host", "units": {
    "cpu": {"cores": [0]}, "cpu1": {"kind": "cpu", "cores": [1], "gflops": 20.0, "backend": "neon"}}}],
    "network": {"bandwidth_mbps": 1000, "latency_ms": 0.05}, "source": "h", "sink": "h"}


def _replicate_middle_stage(out, device):
    """Make the middle stage of a three-stage chain a step of two replicas, the copy on `device`."""
    import shutil

    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    assert len(stages) == 3
    copy = json.loads(json.dumps(stages[1]))
    copy["name"], copy["device"] = "s1r1", device
    copy["model"] = f"{device}/s1r1.onnx"
    (out / device).mkdir(exist_ok=True)
    shutil.copy(out / stages[1]["model"], out / copy["model"])
    for k, st in enumerate(stages):
        st["step"] = k
    stages[1].update(parallel="replica", weight=0.5)
    copy.update(parallel="replica", weight=0.5, step=1)
    stages.insert(2, copy)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    seal(str(out))  # as compile does: the runtime refuses a manifest without its digest


@pytest.fixture
def middle_replicas(tmp_path):
    from test_runtime_local import compile_for_hosts

    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = compile_for_hosts(model, tmp_path, [0, 1, 0])
    assert len(read_pipeline(str(out)).segments) == 3
    _replicate_middle_stage(out, "d3")  # a fourth device (the runtime needs no more of it than its stage)
    return model, out


def test_a_replicated_middle_step_is_dealt_by_the_stage_before_and_reordered_at_the_sink(middle_replicas):
    model, out = middle_replicas
    plan = read_pipeline(str(out))
    assert [len(s.segments) for s in plan.steps] == [1, 2, 1] and plan.steps[1].fan_out == "replica"
    assert edgec.verify(out).passed  # the replica is the same sub-model
    frames = random_frames(plan.inputs, 4, seed=2)
    result = run_local(str(out), frames, 60)
    assert result.ok, result.summary()
    expected = expected_outputs(model, plan, frames)
    for k, got in enumerate(result.outputs):
        assert_close(expected[k % 4], got)
    by_stage = {",".join(s["stages"]): s["frames"] for s in result.stats}
    assert by_stage["s1"] + by_stage["s1r1"] == 60 and min(by_stage["s1"], by_stage["s1r1"]) > 0
    assert by_stage["s2"] == 60  # the step after waited for both replicas' end markers


def test_a_killed_middle_replica_loses_no_frame(middle_replicas):
    model, out = middle_replicas
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 4, seed=4)
    expected = expected_outputs(model, plan, frames)
    n = 200
    with LocalCluster(str(out)) as cluster:
        victim = cluster.procs["d3"]

        def kill_at_20(seq, outputs, err):
            if seq == 20:
                victim.send_signal(signal.SIGKILL)

        driver = Driver(str(out), cluster.deployment, timeout_s=5, watch=cluster.problems)
        result = driver.run(lambda k: frames[k % 4], n, kill_at_20)
    assert result.ok, result.summary()
    assert len(result.outputs) == n
    for k, got in enumerate(result.outputs):
        assert_close(expected[k % 4], got)
    assert any("device d3" in note and "dealt again" in note for note in result.notes)


@pytest.mark.parametrize("change, says", [
    (lambda st: st[1].update(weight=0.9), "$.stages[0].weight: the weights of step 0 sum to"),
    (lambda st: st[1].pop("weight"), "$.stages[1]: missing field 'weight'"),
    (lambda st: st[1].update(parallel="slice"), "need one shared 'parallel' mode"),
    (lambda st: st[1].update(step=3), "step 0 comes after step 3"),
    (lambda st: st[1].pop("step"), "$.stages[1]: missing field 'step'"),
    (lambda st: st[1].update(weight=1.5), "$.stages[1].weight: a replica's share of the frames lies in (0, 1]"),
])
def test_a_manifest_with_bad_steps_is_one_line_naming_the_json_path(replica_plan, tmp_path, change, says):
    from edgec.errors import EdgecError
    from edgec.manifest import read_manifest

    _, out = replica_plan
    data = json.loads((out / "manifest.json").read_text())
    change(data["stages"])
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgecError) as info:
        read_manifest(tmp_path)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_step_marked_slices_without_their_rows_is_refused(replica_plan, tmp_path):
    import shutil

    from edgec.errors import EdgecError

    _, out = replica_plan
    folder = tmp_path / "plan"
    shutil.copytree(out, folder)
    data = json.loads((folder / "manifest.json").read_text())
    for st in data["stages"]:
        st["parallel"] = "slice"
        st.pop("weight")
    (folder / "manifest.json").write_text(json.dumps(data))
    seal(str(folder))
    with pytest.raises(EdgecError, match=r"\$\.stages\[0\]: missing field 'slice'"):
        read_pipeline(str(folder))
