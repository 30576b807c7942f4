"""The runtime's view of a plan (segments per device), deployments, and what runtime modules may use."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgec.errors import EdgecError
from edgec.runtime.deployment import default_deployment, load_deployment, local_deployment, parse_deployment
from edgec.runtime.plan import device_cores, read_plan

RUNTIME = Path(__file__).resolve().parent.parent / "toolchain" / "runtime"


def _tensor(name, shape=(1, 4)):
    return {"name": name, "dtype": "float32", "shape": list(shape)}


def _stage(name, device, ins, outs, receives, sends):
    return {"name": name, "device": device, "unit": "cpu", "backend": "onnxruntime-cpu", "variant": "fp32",
            "model": f"{device}/{name}.onnx", "sha256": "0" * 64, "inputs": [_tensor(t) for t in ins],
            "outputs": [_tensor(t) for t in outs], "receives": receives, "sends": sends, "predicted_ms": 1.0,
            "memory_bytes": 0}


def _manifest(tmp_path, stages, cluster=None):
    data = {"schema_version": 1, "source_model": {"path": "m.onnx", "sha256": "0" * 64, "opset": 17},
            "cluster": cluster or {"devices": [{"name": "a", "type": "host"}, {"name": "b", "type": "host"}]},
            "objective": "throughput", "inputs": [_tensor("x")], "outputs": [_tensor("z")], "stages": stages,
            "transfers": [], "predicted": {"latency_ms": 1, "bottleneck_ms": 1, "throughput_fps": 1}}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return str(tmp_path)


# a on both ends: s0, s1 on a form one segment, s2 on b another, s3 on a a third
STAGES = [
    _stage("s0", "a", ["x"], ["p"], ["x"], ["x", "p"]),
    _stage("s1", "a", ["p"], ["q"], ["x", "p"], ["x", "q"]),
    _stage("s2", "b", ["q"], ["r"], ["x", "q"], ["x", "r"]),
    _stage("s3", "a", ["x", "r"], ["z"], ["x", "r"], ["z"]),
]


def test_consecutive_stages_on_one_device_form_a_segment(tmp_path):
    plan = read_plan(_manifest(tmp_path, STAGES))
    assert [(s.device, [st.name for st in s.stages]) for s in plan.segments] == [
        ("a", ["s0", "s1"]), ("b", ["s2"]), ("a", ["s3"])]
    assert plan.devices == ["a", "b"]
    assert plan.segments[0].receives == ("x",) and plan.segments[0].sends == ("x", "q")
    assert plan.stage_names("a") == ["s0", "s1", "s3"]
    assert plan.expect(["x", "r"]) == {"x": ("float32", (1, 4)), "r": ("float32", (1, 4))}


def test_ports_of_a_device_with_two_segments_and_the_results(tmp_path):
    plan = read_plan(_manifest(tmp_path, STAGES))
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
    plan = read_plan(_manifest(tmp_path, STAGES))
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
    plan = read_plan(_manifest(tmp_path, STAGES, cluster))
    default = default_deployment(plan)
    assert default.devices["a"].host == "192.168.1.5" and default.devices["b"].host == "127.0.0.1"
    local = local_deployment(plan)
    assert all(ep.host == "127.0.0.1" and ep.bind is None for ep in local.devices.values())
    ports = [p for d in plan.devices for p in range(local.devices[d].port,
                                                    local.devices[d].port + local.ports_needed(plan, d))]
    assert len(ports) == len(set(ports)) == 4 + 2


def test_cores_come_from_the_units_in_the_cluster_spec(tmp_path):
    cluster = {"devices": [{"name": "a", "type": "host", "units": {"cpu": {"cores": [1]}}},
                           {"name": "b", "type": "host"}]}
    plan = read_plan(_manifest(tmp_path, STAGES, cluster))
    assert device_cores(plan, "a") == [1]
    assert device_cores(plan, "b") is None  # the catalog's default: the launcher resolves it


def test_a_broken_manifest_is_a_user_error(tmp_path):
    (tmp_path / "manifest.json").write_text('{"schema_version": 1, "stages": []}')
    with pytest.raises(EdgecError, match="not a manifest this runtime can run"):
        read_plan(str(tmp_path))
    with pytest.raises(EdgecError, match="no manifest.json here"):
        read_plan(str(tmp_path / "nowhere"))


# what a board has: numpy, onnxruntime, pyzmq, Python 3.8 ------------------------------------------------

BOARD_MODULES = ["wire", "plan", "deployment", "keys", "stage", "device", "driver"]


@pytest.mark.parametrize("module", sorted(p.stem for p in RUNTIME.glob("*.py")))
def test_runtime_modules_are_python_3_8(module):
    source = (RUNTIME / f"{module}.py").read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # no match, no parenthesised with, ...
    if module != "__init__":
        assert "from __future__ import annotations" in source  # annotations are never evaluated
    in_annotation = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            annotations = [a.annotation for a in args if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for ann in annotations:
            if ann is not None:
                in_annotation.update(id(n) for n in ast.walk(ann))
    for node in ast.walk(tree):
        if id(node) in in_annotation:
            continue
        # list[int] or int | None evaluated at run time fail on 3.8
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            assert node.value.id not in ("list", "dict", "set", "tuple", "type", "frozenset"), \
                f"{module}:{node.lineno}: builtin generic evaluated at run time"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right)
            assert not any(isinstance(n, ast.Constant) and n.value is None for n in sides), \
                f"{module}:{node.lineno}: X | None evaluated at run time"


def test_board_modules_import_without_the_compiler_side():
    """Import the board's modules with onnx, onnxsim, graphsurgeon, typer, jsonschema blocked."""
    script = f"""
import importlib.abc, sys, types
BLOCKED = ("onnx", "onnxsim", "onnx_graphsurgeon", "typer", "jsonschema", "rich", "networkx")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked on a board: " + name)
sys.meta_path.insert(0, Block())
# the package without edgec/__init__ (which pulls in the compiler)
pkg = types.ModuleType("edgec"); pkg.__path__ = [{str(RUNTIME.parent)!r}]; sys.modules["edgec"] = pkg
import importlib
for m in {BOARD_MODULES!r}:
    importlib.import_module("edgec.runtime." + m)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
