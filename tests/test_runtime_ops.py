"""The cost model's op rules for ONNX Runtime, each against what ONNX Runtime does here.

Structure comes from its optimised graph (``optimized_model_filepath``); costs
from its profiler, plain layout (ORT_ENABLE_EXTENDED, the NCHW path the ARM
boards run: MLAS's im2col + SGEMM), one thread, as ratios between ops on the
same tensors, so the bounds hold on any host: a Winograd kernel would run a
3x3 conv at under half the 1x1's time per FLOP, a view would take a small
fraction of a copy.
"""

from __future__ import annotations

import collections
import json
from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.costmodel.builtin import BUILTIN_PROFILES
from edgec.costmodel.predict import node_ms
from edgec.costmodel.runtime_fusion import fused_nodes
from edgec.costmodel.work import VIEW_OPS, node_work

ORT_UNITS = [k for k, p in BUILTIN_PROFILES.items() if p.runtime == "onnxruntime"]


def model(nodes, inputs: dict[str, list[int]], consts: dict[str, object] = (), outputs=("y",)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(v, np.float32) if not isinstance(v, tuple)
                                     else (rng.standard_normal(v) * 0.1).astype(np.float32), k)
             for k, v in dict(consts).items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for i, n in enumerate(m.graph.node):
        n.name = n.name or f"{n.op_type.lower()}{i}"
    return onnx.shape_inference.infer_shapes(m)


def ort_ops(m: onnx.ModelProto, tmp_path) -> list[str]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def ort_node_us(m: onnx.ModelProto, tmp_path, runs: int = 25, sessions: int = 3) -> dict[str, float]:
    """Per node: the fastest session's median kernel time (us), one thread, plain layout."""
    best: dict[str, float] = {}
    feed = {i.name: np.random.default_rng(1).standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in m.graph.input}
    for s in range(sessions):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.enable_profiling, so.profile_file_prefix = True, str(tmp_path / f"p{s}")
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feed)
        times = collections.defaultdict(list)
        for e in json.loads(open(sess.end_profiling()).read()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                times[e["name"][: -len("_kernel_time")]].append(e["dur"])
        for name, t in times.items():
            best[name] = min(best.get(name, float("inf")), float(np.median(t[runs // 5:])))
    return best


def charged(m: onnx.ModelProto) -> list[str]:
    nodes = gs.import_onnx(m).nodes
    fused = fused_nodes(nodes, "onnxruntime", residual=False)
    return [n.op for n in nodes if n.name not in fused and n.op not in VIEW_OPS]


def predicted(m: onnx.ModelProto, unit: str) -> dict[str, float]:
    nodes = gs.import_onnx(m).nodes
    profile = BUILTIN_PROFILES[unit]
    return {n.name: node_ms(n, node_work(n), profile) - profile.overhead_ms for n in nodes}


# -- fusions: what ONNX Runtime's optimiser leaves ---------------------------------------------------------


GELU = {
    "torch": [helper.make_node("Div", ["x", "sqrt2"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
              helper.make_node("Add", ["b", "one"], ["c"]), helper.make_node("Mul", ["x", "c"], ["d"]),
              helper.make_node("Mul", ["d", "half"], ["y"])],
    "half-first": [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Div", ["x", "sqrt2"], ["a"]),
                   helper.make_node("Erf", ["a"], ["b"]), helper.make_node("Add", ["b", "one"], ["c"]),
                   helper.make_node("Mul", ["h", "c"], ["y"])],
}


@pytest.mark.parametrize("form", sorted(GELU))
def test_erf_gelu_is_one_pass_as_onnx_runtime_fuses_it(form, tmp_path):
    m = model(GELU[form], {"x": [1, 197, 768]}, {"sqrt2": 1.4142135, "one": 1.0, "half": 0.5})
    assert ort_ops(m, tmp_path) == ["Gelu"]
    assert charged(m) == ["Erf"]


def test_tanh_gelu_is_left_apart_as_onnx_runtime_leaves_it(tmp_path):
    """ncnn's ViT GELU: 0.5 x (1 + tanh(0.79788 (x + 0.044715 x^3))), unfused by ORT's CPU optimiser."""
    nodes = [helper.make_node("Pow", ["x", "three"], ["p"]), helper.make_node("Mul", ["p", "k"], ["q"]),
             helper.make_node("Add", ["x", "q"], ["r"]), helper.make_node("Mul", ["r", "s"], ["t"]),
             helper.make_node("Tanh", ["t"], ["u"]), helper.make_node("Add", ["u", "one"], ["v"]),
             helper.make_node("Mul", ["x", "v"], ["w"]), helper.make_node("Mul", ["w", "half"], ["y"])]
    m = model(nodes, {"x": [1, 197, 768]}, {"three": 3.0, "k": 0.044715, "s": 0.7978845, "one": 1.0, "half": 0.5})
    assert len(charged(m)) == len(ort_ops(m, tmp_path)) == 8


def test_attention_scale_and_key_transpose_ride_on_the_matmul(tmp_path):
    """softmax(q * scale @ k^T) @ v, per head: ORT's FusedMatMul takes the scale (alpha) and the transpose (transB)."""
    nodes = [helper.make_node("Mul", ["q", "scale"], ["qs"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["qs", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    m = model(nodes, {"q": [1, 3, 16, 8], "k": [1, 3, 16, 8], "v": [1, 3, 16, 8]}, {"scale": 0.125})
    assert ort_ops(m, tmp_path) == ["FusedMatMul", "Softmax", "MatMul"]
    assert charged(m) == ["MatMul", "Softmax", "MatMul"]
    matmul = next(n for n in gs.import_onnx(m).nodes if n.op == "MatMul")
    work = node_work(matmul)  # two activations: both read, 2 x 16 x 16 x 8 multiply-adds per head
    assert work.op_class == "gemm" and work.param_bytes == 0 and work.flops == 2 * 3 * 16 * 16 * 8
    assert work.input_bytes == 2 * 3 * 16 * 8 * 4


def test_a_transpose_of_other_axes_stays_a_copy(tmp_path):
    nodes = [helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1, 3]), helper.make_node("MatMul", ["qt", "k"], ["y"])]
    m = model(nodes, {"q": [1, 16, 3, 8], "k": [1, 3, 8, 16]})
    assert ort_ops(m, tmp_path) == ["Transpose", "MatMul"] and charged(m) == ["Transpose", "MatMul"]


# -- costs: ONNX Runtime's profiler, ratios on one host ----------------------------------------------------


def test_onnx_runtime_runs_3x3_convs_without_winograd(tmp_path):
    """Same FLOPs: a 3x3 64->64 conv and a 1x1 64->576 conv at 56x56; MLAS's im2col + SGEMM takes about as
    long per FLOP for both (a Winograd F(6,3) kernel would take well under half)."""
    nodes = [helper.make_node("Conv", ["x", "w3"], ["y"], name="c3", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1"], ["z"], name="c1")]
    m = model(nodes, {"x": [1, 64, 56, 56]}, {"w3": (64, 64, 3, 3), "w1": (576, 64, 1, 1)}, outputs=("y", "z"))
    us = ort_node_us(m, tmp_path)
    assert us["c3"] / us["c1"] > 0.6, us
    works = {n.name: node_work(n) for n in gs.import_onnx(m).nodes}
    assert works["c3"].winograd and not works["c1"].winograd and works["c3"].flops == works["c1"].flops
    for unit in ORT_UNITS:  # the same SGEMM at the same efficiency; no Winograd, no charged im2col segment
        profile = BUILTIN_PROFILES[unit]
        assert profile.winograd_gain == 1.0 and profile.efficiency["conv"] == profile.efficiency["pointwise"], unit
        assert works["c3"].column_bytes == 0
    gpu = BUILTIN_PROFILES["jetson-nano.gpu"]
    assert gpu.winograd_gain > 2 and gpu.node_ms(works["c3"]) < gpu.node_ms(works["c1"]) / 2


def test_a_depthwise_conv_costs_an_im2col_expansion_not_one_pass(tmp_path):
    """MLAS runs a 3x3 depthwise conv as im2col (9 values per output, the whole buffer per channel) + a GEMM of
    height 1 per channel: several times a Relu over the same tensor, as the profiles predict."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", pads=[1, 1, 1, 1], group=96),
             helper.make_node("Relu", ["x"], ["z"], name="relu")]
    m = model(nodes, {"x": [1, 96, 112, 112]}, {"w": (96, 1, 3, 3)}, outputs=("y", "z"))
    us = ort_node_us(m, tmp_path)
    assert us["dw"] > 3 * us["relu"], us
    dw = node_work(next(n for n in gs.import_onnx(m).nodes if n.name == "dw"))
    assert dw.column_bytes == 9 * dw.output_bytes
    for unit in ORT_UNITS:
        ms = predicted(m, unit)
        assert 3 < ms["dw"] / ms["relu"] < 20, unit


def shuffle_and_copies() -> onnx.ModelProto:
    nodes = [helper.make_node("Reshape", ["x", "s5"], ["r"], name="reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s4"], ["u"], name="reshape2"),
             helper.make_node("Relu", ["u"], ["y"], name="relu2"),  # a Reshape that writes a graph output copies
             helper.make_node("Concat", ["x", "x"], ["c"], name="concat", axis=1),
             helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1),
             helper.make_node("Relu", ["x"], ["z"], name="relu")]
    m = model(nodes, {"x": [1, 64, 112, 112]}, outputs=("y", "c", "a", "b", "z"))
    shapes = {"s5": [1, 2, 32, 112, 112], "s4": [1, 64, 112, 112]}
    m.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in shapes.items())
    return onnx.shape_inference.infer_shapes(m)


def test_views_are_free_and_data_movement_is_a_copy_at_memory_speed(tmp_path):
    """A channel shuffle is Reshape (a view) + Transpose (a copy) + Reshape; Concat and Split copy too. Each copy
    takes about what an elementwise pass over the same bytes takes; a Reshape a small fraction of it."""
    m = shuffle_and_copies()
    us = ort_node_us(m, tmp_path)
    copy = {op: us[op] for op in ("transpose", "concat", "split")}
    per_byte = {op: t / (2 if op == "concat" else 1) for op, t in copy.items()}  # Concat moves twice the bytes
    for op, t in per_byte.items():
        assert 0.2 < t / us["relu"] < 5, (op, us)
    assert us["reshape"] < 0.2 * us["transpose"] and us["reshape2"] < 0.2 * us["transpose"], us
    works = {n.name: node_work(n) for n in gs.import_onnx(m).nodes}
    for unit in ORT_UNITS:
        profile = BUILTIN_PROFILES[unit]
        ms = predicted(m, unit)
        assert ms["reshape"] == ms["reshape2"] == 0.0  # only the node's overhead
        for op in copy:
            assert ms[op] == pytest.approx(works[op].activation_bytes / profile.copy_bandwidth_gbs / 1e6), (unit, op)


def test_copy_bandwidth_absent_keeps_the_old_memory_rule():
    profile = BUILTIN_PROFILES["raspberry-pi-4.cpu"]
    old = replace(profile, copy_bandwidth_gbs=None)
    transpose = node_work(next(n for n in gs.import_onnx(shuffle_and_copies()).nodes if n.op == "Transpose"))
    assert old.node_ms(transpose, overhead=False) == pytest.approx(
        transpose.activation_bytes / profile.efficiency["memory"] / old.act_bandwidth_gbs / 1e6)


def test_tensorrt_writes_a_concats_inputs_in_place():
    """TensorRT's concatenation elision: layers of the engine write straight into the Concat's output."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="c1"), helper.make_node("Conv", ["x", "w"], ["b"], name="c2"),
             helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=1),
             helper.make_node("Concat", ["x", "y"], ["z"], name="cat_input", axis=1)]
    m = model(nodes, {"x": [1, 8, 16, 16]}, {"w": (8, 8, 1, 1)}, outputs=("z",))
    nodes = gs.import_onnx(m).nodes
    assert fused_nodes(nodes, "tensorrt") == {"cat"}  # a graph input is not written by the engine
    assert fused_nodes(nodes, "onnxruntime", residual=False) == set()  # ONNX Runtime copies


def layernorm(square: str) -> onnx.ModelProto:
    """LayerNorm's body over the last axis, the square of x - mean as Pow(d, 2) or as Mul(d, d)."""
    sq = (helper.make_node("Pow", ["d", "two"], ["d2"]) if square == "pow" else helper.make_node("Mul", ["d", "d"], ["d2"]))
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1), helper.make_node("Sub", ["x", "m"], ["d"]),
             sq, helper.make_node("ReduceMean", ["d2"], ["v"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["v", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["d", "s"], ["n"]), helper.make_node("Mul", ["n", "gamma"], ["ng"]),
             helper.make_node("Add", ["ng", "beta"], ["y"])]
    return model(nodes, {"x": [1, 197, 192]}, {"two": 2.0, "eps": 1e-5, "gamma": (192,), "beta": (192,)})


@pytest.mark.parametrize("square", ["pow", "mul"])
def test_layernorm_body_is_one_pass_where_onnx_runtime_fuses_it(square, tmp_path):
    m = layernorm(square)
    ran = ort_ops(m, tmp_path)
    assert ran == (["LayerNormalization"] if square == "pow" else
                   ["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add"])
    assert len(charged(m)) == len(ran)
    if square == "pow":
        assert charged(m) == ["Sub"]  # one read and one write of the tensor, as the fused kernel
