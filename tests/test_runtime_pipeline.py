"""The runtime's view of a manifest (segments per device, cores per device) and deployments."""

from __future__ import annotations

import json

import pytest

from edgec.errors import EdgecError
from edgec.runtime.deployment import default_deployment, load_deployment, local_deployment, parse_deployment
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.trust import seal


def _tensor(name, shape=(1, 4)):
    return {"name": name, "dtype": "float32", "shape": list(shape)}


def _stage(name, device, ins, outs, receives, sends, cores=None):
    stage = {"name": name, "device": device, "unit": "cpu", "backend": "onnxruntime-cpu", "variant": "fp32",
             "model": f"{device}/{name}.onnx", "sha256": "0" * 64, "inputs": [_tensor(t) for t in ins],
             "outputs": [_tensor(t) for t in outs], "receives": receives, "sends": sends, "predicted_ms": 1.0,
             "memory_bytes": 0}
    if cores is not None:
        stage["cores"] = cores
    return stage


def _manifest(tmp_path, stages, cluster=None):
    data = {"schema_version": 1, "source_model": {"path": "m.onnx", "sha256": "0" * 64, "opset": 17},
            "cluster": cluster or {"devices": [{"name": "a", "type": "host"}, {"name": "b", "type": "host"}]},
            "objective": "throughput", "inputs": [_tensor("x")], "outputs": [_tensor("z")], "stages": stages,
            "transfers": [], "predicted": {"latency_ms": 1, "bottleneck_ms": 1, "throughput_fps": 1}}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    seal(str(tmp_path))  # as compile does: the runtime refuses a manifest without its digest
    return str(tmp_path)


# a on both ends: s0, s1 on a form one segment, s2 on b another, s3 on a a third
STAGES = [
    _stage("s0", "a", ["x"], ["p"], ["x"], ["x", "p"]),
    _stage("s1", "a", ["p"], ["q"], ["x", "p"], ["x", "q"]),
    _stage("s2", "b", ["q"], ["r"], ["x", "q"], ["x", "r"]),
    _stage("s3", "a", ["x", "r"], ["z"], ["x", "r"], ["z"]),
]


def test_consecutive_stages_on_one_device_form_a_segment(tmp_path):
    plan = read_pipeline(_manifest(tmp_path, STAGES))
    assert [(s.device, [st.name for st in s.stages]) for s in plan.segments] == [
        ("a", ["s0", "s1"]), ("b", ["s2"]), ("a", ["s3"])]
    assert plan.devices == ["a", "b"]
    assert plan.segments[0].receives == ("x",) and plan.segments[0].sends == ("x", "q")
    assert plan.stage_names("a") == ["s0", "s1", "s3"]
    assert plan.expect(["x", "r"]) == {"x": ("float32", (1, 4)), "r": ("float32", (1, 4))}


def test_ports_of_a_device_with_two_segments_and_the_results(tmp_path):
    plan = read_pipeline(_manifest(tmp_path, STAGES))
    dep = parse_deployment({"devices": {"a": {"host": "10.0.0.1", "port": 6000},
                                        "b": {"host": "10.0.0.2", "port": 6000, "bind": "0.0.0.0"}}}, plan)
    assert dep.status(plan, "a") == "tcp://10.0.0.1:6000"
    assert dep.segment_input(plan, plan.segments[0]) == "tcp://10.0.0.1:6001"
    assert dep.segment_input(plan, plan.segments[2]) == "tcp://10.0.0.1:6002"
    assert dep.results(plan) == "tcp://10.0.0.1:6003"
    assert dep.segment_input(plan, plan.segments[1]) == "tcp://10.0.0.2:6001"
    # binds at the host unless asked otherwise; peers always connect to the host
    assert dep.segment_input(plan, plan.segments[0], bind=True) == "tcp://10.0.0.1:6001"
    assert dep.segment_input(plan, plan.segments[1], bind=True) == "tcp://*:6001"


def test_deployment_errors_name_the_problem(tmp_path):
    plan = read_pipeline(_manifest(tmp_path, STAGES))
    with pytest.raises(EdgecError, match="no entry for device b"):
        parse_deployment({"devices": {"a": {"host": "h", "port": 6000}}}, plan)
    with pytest.raises(EdgecError, match="port 6001 on h is also used by a"):
        parse_deployment({"devices": {"a": {"host": "h", "port": 6000}, "b": {"host": "h", "port": 6001}}}, plan)
    with pytest.raises(EdgecError, match="not a port number"):
        parse_deployment({"devices": {"a": {"host": "h", "port": 70000}, "b": {"host": "h"}}}, plan)
    with pytest.raises(EdgecError, match="deployment file not found"):
        load_deployment(str(tmp_path / "missing.json"), plan)


def test_default_and_local_deployments_stay_on_their_hosts(tmp_path):
    cluster = {"devices": [{"name": "a", "type": "host", "host": "192.168.1.5"}, {"name": "b", "type": "host"}]}
    plan = read_pipeline(_manifest(tmp_path, STAGES, cluster))
    default = default_deployment(plan)
    assert default.devices["a"].host == "192.168.1.5" and default.devices["b"].host == "127.0.0.1"
    local = local_deployment(plan)
    assert all(ep.host == "127.0.0.1" and ep.bind is None for ep in local.devices.values())
    ports = [p for d in plan.devices for p in range(local.devices[d].port,
                                                    local.devices[d].port + local.ports_needed(plan, d))]
    assert len(ports) == len(set(ports)) == 4 + 2


def test_cores_come_from_the_manifest_stages(tmp_path):
    stages = [dict(st, cores=c) for st, c in zip(STAGES, ([4, 5], [6], [1], [5, 4]))]
    plan = read_pipeline(_manifest(tmp_path, stages))
    assert plan.cores("a") == [4, 5, 6] and plan.cores("b") == [1]
    assert plan.stages[0].cores == [4, 5]  # the manifest's own StageSpec, not a copy of it
    assert plan.stages is plan.manifest.stages


def test_a_manifest_without_cores_leaves_its_devices_unpinned(tmp_path):
    from edgec.runtime.local import plan_cores

    plan = read_pipeline(_manifest(tmp_path, STAGES))
    assert plan.cores("a") is None
    cores, notes = plan_cores(plan)
    assert cores == {"a": [], "b": []}
    assert any("device a: the manifest names no cores" in n for n in notes)
