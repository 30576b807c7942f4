"""neon backend: thread pinning per compute unit, what a board's ONNX Runtime loads, down-conversion, bundle."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgec.backends import neon
from edgec.backends.base import device_bundle, taskset_list
from edgec.backends.registry import backend_for
from edgec.backends.opset import convert_for_device
from edgec.backends.versions import ort_versions
from edgec.cluster import CATALOG, parse_cluster
from edgec.errors import EdgecError
from edgec.manifest import StageSpec, TensorSpec
from edgec.runtime.session import session_options


def one_of_each():
    """A cluster holding one device of every catalog type, named after the type."""
    return parse_cluster({"devices": [{"name": t, "type": t} for t in CATALOG],
                          "network": {"bandwidth_mbps": 1000}, "source": "host", "sink": "host"})


def cpu_run(model: onnx.ModelProto, feeds, options=None):
    so = options or ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


# -- thread pinning -------------------------------------------------------------------------------


def test_affinity_strings_follow_the_catalog_cores():
    cluster = one_of_each()
    seen = {}
    for device, unit in cluster.units():
        if unit.backend != "neon":
            continue
        cfg = neon.session_config(device, unit)
        cores = sorted(CATALOG[device.type]["units"][unit.name]["cores"])
        assert cfg["intra_op_num_threads"] == len(cores)
        assert cfg["cores"] == cores and cfg["main_thread_core"] == cores[0]
        assert cfg["execution_mode"] == "ORT_SEQUENTIAL" and cfg["graph_optimization_level"] == "ORT_ENABLE_ALL"
        # one entry per pool thread (threads 2..n), 1-based processor ids, the main thread on cores[0]
        expected = ";".join(str(c + 1) for c in cores[1:])
        assert neon.affinity_string(cores) == expected
        seen[(device.type, unit.name)] = cfg["config_entries"].get(neon.AFFINITY_KEY)
    assert seen == {
        ("odroid-xu4", "big"): "6;7;8",  # cores 4-7: main thread on 4 (id 5), pool threads on ids 6, 7, 8
        ("odroid-xu4", "little"): "2;3;4",
        ("raspberry-pi-4", "cpu"): "2;3;4",
        ("jetson-nano", "cpu"): None,  # ONNX Runtime 1.10 has no affinity key: taskset pins it
        ("host", "cpu"): None,  # one core, no pool thread
    }
    assert neon.affinity_string([4, 5, 6, 7]) == "6;7;8" and neon.affinity_string([0]) == ""


def test_launcher_pins_the_process_to_its_stages_clusters():
    xu4 = one_of_each().devices["odroid-xu4"]
    assert taskset_list([4, 5, 6, 7]) == "4-7" and taskset_list([0, 2, 3]) == "0,2-3"
    run = device_bundle(xu4, [stage("s0", "odroid-xu4", "big")])["run_odroid-xu4.sh"].splitlines()
    assert run[-1] == ('exec taskset -c 4-7 python3 -m edgec.runtime serve . --device odroid-xu4 '
                       '--deployment deployment.json "$@"')


def test_onnxruntime_takes_the_session_config():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to pin a pool thread")
    device = parse_cluster({"devices": [{"name": "pi", "type": "raspberry-pi-4",
                                         "units": {"cpu": {"cores": cpus[:2]}}}],
                            "source": "pi", "sink": "pi"}).devices["pi"]
    cfg = neon.session_config(device, device.units["cpu"])
    assert cfg["config_entries"] == {neon.AFFINITY_KEY: str(cpus[1] + 1)}
    model = onnx.parser.parse_model('<ir_version: 8, opset_import: ["" : 13]> g (float[64,64] x) => (float[64,64] y) '
                                    '{ y = MatMul(x, x) }')
    x = np.eye(64, dtype=np.float32)
    assert np.allclose(cpu_run(model, {"x": x}, session_options(cfg))[0], x)


# -- what the board loads -------------------------------------------------------------------------


def test_target_versions_of_the_catalog():
    cluster = one_of_each()
    assert {name: neon.target_versions(d) for name, d in cluster.devices.items()} == {
        "odroid-xu4": (19, 9), "raspberry-pi-4": (21, 10), "jetson-nano": (15, 8), "host": (21, 10)}
    assert ort_versions("1.10") == (15, 8) and ort_versions("1.16") == (19, 9) and ort_versions("1.99") == (22, 10)
    with pytest.raises(EdgecError, match="older than"):
        ort_versions("1.2")
    declared = parse_cluster({"devices": [{"name": "n", "type": "jetson-nano", "max_opset": 13}],
                              "source": "n", "sink": "n"}).devices["n"]
    assert neon.target_versions(declared) == (13, 8)


OPSET17 = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,6,6] x) => (float[1,18] y) {
    c = Conv<pads=[1,1,1,1]>(x, w, b)
    n = BatchNormalization(c, s, bb, m, v)
    r = Relu(n)
    p = Pad<mode="reflect">(r, pads)
    q = MaxPool<kernel_shape=[2,2], strides=[2,2]>(p)
    i = Identity(q)
    f = Flatten(i)
    red = ReduceMean<axes=[1], keepdims=1>(f)
    d = Sub(f, red)
    y = Softmax<axis=1>(d)
}"""


def opset17_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(OPSET17)
    rng = np.random.default_rng(0)
    for name, shape in (("w", (2, 2, 3, 3)), ("b", (2,)), ("s", (2,)), ("bb", (2,)), ("m", (2,))):
        model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    model.graph.initializer.append(numpy_helper.from_array(np.full(2, 0.7, np.float32), "v"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 0, 0], np.int64), "pads"))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_an_opset_17_model_is_converted_for_an_opset_13_board():
    device = parse_cluster({"devices": [{"name": "n", "type": "jetson-nano", "max_opset": 13}],
                            "source": "n", "sink": "n"}).devices["n"]
    model = opset17_model()
    assert {n.op_type for n in model.graph.node if onnx.defs.get_schema(n.op_type, 17).since_version > 13} == \
        {"BatchNormalization", "Relu", "Identity", "Sub"}
    out = neon.prepare_submodel(model, device)
    assert [o.version for o in out.opset_import if o.domain == ""] == [13] and out.ir_version <= 8
    for node in out.graph.node:
        assert onnx.defs.get_schema(node.op_type, 13).since_version <= 13
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    a, b = cpu_run(model, {"x": x})[0], cpu_run(out, {"x": x})[0]
    assert np.abs(a - b).max() <= 1e-6
    assert model.opset_import[0].version == 17  # the input model is left alone


def test_split_and_pad_of_opset_18_are_rewritten_for_opset_13():
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 18]>
    g (float[2,5] x) => (float[2,3] y, float[2,4] z) {
        a, b = Split<axis=1, num_outputs=2>(x)
        p = Constant<value=int64[2] {1,1}>()
        ax = Constant<value=int64[1] {1}>()
        y = Identity(a)
        z = Pad(b, p, , ax)
    }""")
    out = convert_for_device(model, 13, 8)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    for a, b in zip(cpu_run(model, {"x": x}), cpu_run(out, {"x": x})):
        assert np.array_equal(a, b)


def test_constant_axes_and_split_inputs_go_back_to_attributes_below_opset_13():
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 18]>
    g (float[2,4,8] x) => (float[2,1,8] m, float[2,2,8] a, float[2,2,8] b, float[2,8] q, float[1,2,4,8] u) {
        ax1 = Constant<value=int64[1] {1}>()
        ax0 = Constant<value=int64[1] {0}>()
        sp = Constant<value=int64[2] {2,2}>()
        m = ReduceMean(x, ax1)
        a, b = Split<axis=1>(x, sp)
        t = ReduceSum(x, ax1)
        q = Squeeze(t, ax1)
        u = Unsqueeze(x, ax0)
    }""")
    out = convert_for_device(model, 11, 7)
    assert {o.domain: o.version for o in out.opset_import}[""] == 11
    assert all(len([i for i in n.input if i]) == 1 for n in out.graph.node if n.op_type != "Constant")
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    for a, b in zip(cpu_run(model, {"x": x}), cpu_run(out, {"x": x})):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("text, match", [
    ("""<ir_version: 8, opset_import: ["" : 18]> g (float[1,4,9] x) => (float[1,1,4,4] y) {
        ims = Constant<value=int64[2] {4,4}>()
        blk = Constant<value=int64[2] {2,2}>()
        y = Col2Im(x, ims, blk) }""",
     r"node 'y' \(Col2Im-18\) has no form at opset 13: Col2Im does not exist in earlier "
     r"opsets; place it on a unit whose runtime reads opset 18 or newer"),
    ("""<ir_version: 9, opset_import: ["" : 19]> g (float[2,4] x) => (float[4,6] y) {
        p = Constant<value=int64[4] {1,1,1,1}>()
        y = Pad<mode="wrap">(x, p) }""",
     r"node 'y' \(Pad-19\) has no form at opset 13: .*mode='wrap' needs Pad-19"),
])
def test_what_cannot_be_converted_is_named(text, match):
    with pytest.raises(EdgecError, match=match):
        convert_for_device(onnx.parser.parse_model(text), 13, 8)


def test_ir_versions_above_the_runtime_are_lowered_or_refused():
    model = onnx.parser.parse_model('<ir_version: 10, opset_import: ["" : 13]> g (float[2] x) => (float[2] y) '
                                    '{ y = Relu(x) }')
    assert convert_for_device(model, 13, 8).ir_version == 8
    model = onnx.parser.parse_model('<ir_version: 10, opset_import: ["" : 13]> g (float[2] x) => (float[2] y) '
                                    '{ y = Relu(x) }')
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT8E4M3FN, [2]))
    with pytest.raises(EdgecError, match="FLOAT8E4M3FN, which needs IR version 9"):
        convert_for_device(model, 13, 8)


# -- the predicate --------------------------------------------------------------------------------


def node_of(text: str) -> tuple[gs.Node, int]:
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(onnx.parser.parse_model(text)))
    return graph.nodes[-1], graph.opset


def test_cpu_predicate_follows_the_board_runtime():
    cluster = one_of_each()
    layer_norm = node_of("""<ir_version: 8, opset_import: ["" : 17]> g (float[2,4] x, float[4] s) => (float[2,4] y) {
        y = LayerNormalization(x, s) }""")
    # ONNX Runtime 1.10 on the Nano loads opset 15: LayerNormalization-17 runs there as its ONNX function body
    assert backend_for(cluster.devices["jetson-nano"], "cpu").supports(*layer_norm) is None
    assert backend_for(cluster.devices["raspberry-pi-4"], "cpu").supports(*layer_norm) is None
    col2im = node_of("""<ir_version: 8, opset_import: ["" : 18]> g (float[1,4,9] x) => (float[1,1,4,4] y) {
        ims = Constant<value=int64[2] {4,4}>()
        blk = Constant<value=int64[2] {2,2}>()
        y = Col2Im(x, ims, blk) }""")
    assert "Col2Im does not exist in earlier opsets" in backend_for(cluster.devices["jetson-nano"], "cpu").supports(
        *col2im)
    relu16 = node_of("""<ir_version: 8, opset_import: ["" : 17]> g (int16[4] x) => (int16[4] y) { y = Relu(x) }""")
    assert "no Relu kernel for T=tensor(int16)" in neon.supports(*relu16)
    half = node_of("""<ir_version: 8, opset_import: ["" : 13]> g (float16[1,2,4,4] x, float16[2,2,1,1] w) =>
        (float16[1,2,4,4] y) { y = Conv(x, w) }""")
    assert neon.supports(*half) is None  # ONNX Runtime casts float16 nodes without a float16 CPU kernel
    custom, opset = node_of("""<ir_version: 8, opset_import: ["" : 13]> g (float[4] x) => (float[4] y) {
        y = Relu(x) }""")
    custom.domain = "org.example"
    assert "op domain 'org.example'" in neon.supports(custom, opset)


# -- bundle ---------------------------------------------------------------------------------------


def stage(name: str, device: str, unit: str) -> StageSpec:
    return StageSpec(name=name, device=device, unit=unit, backend="neon", variant="fp32",
                     model=f"{device}/{name}.onnx", sha256="0" * 64,
                     inputs=[TensorSpec("x", "float32", [1, 8])], outputs=[TensorSpec("y", "float32", [1, 8])],
                     receives=["x"], sends=["y"], predicted_ms=1.0, memory_bytes=1)


def test_xu4_bundle_runs_one_process_on_both_clusters_each_stage_on_its_own():
    xu4 = one_of_each().devices["odroid-xu4"]
    stages = [stage("s0", "odroid-xu4", "big"), stage("s2", "odroid-xu4", "little")]
    files = device_bundle(xu4, stages)
    assert set(files) == {"s0.session.json", "s2.session.json", "run_odroid-xu4.sh", "README.md", "Dockerfile"}
    assert "FROM arm32v7/debian:bookworm AS onnxruntime" in files["Dockerfile"]  # no armv7 wheel: built here
    assert json.loads(files["s0.session.json"]) == neon.session_config(xu4, xu4.units["big"])
    assert json.loads(files["s2.session.json"])["config_entries"] == {neon.AFFINITY_KEY: "2;3;4"}
    run = files["run_odroid-xu4.sh"].splitlines()
    assert run[0] == "#!/bin/sh"
    assert run[-1] == ('exec taskset -c 0-7 python3 -m edgec.runtime serve . --device odroid-xu4 '
                       '--deployment deployment.json "$@"')
    readme = files["README.md"]
    assert "sh odroid-xu4/run_odroid-xu4.sh" in readme and "onnxruntime 1.16" in readme and "armv7" in readme
