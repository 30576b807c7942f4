"""What the cost model takes as fused matches what ONNX Runtime's optimiser fuses, read back from ONNX Runtime here."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgec.costmodel.microbench import nchwc_block_size
from edgec.costmodel.runtime_fusion import fused_nodes

CONSTS = {"lo": 0.0, "hi": 6.0, "two": 2.0}

# name -> nodes after `c = Conv(x, w)` (and `r`, a second conv output for residuals), the last one writes `y`
PATTERNS = {
    "relu": [("Relu", ["c"], {})],
    "relu6": [("Clip", ["c", "lo", "hi"], {})],
    "leaky": [("LeakyRelu", ["c"], {"alpha": 0.1})],
    "tanh": [("Tanh", ["c"], {})],
    "sigmoid": [("Sigmoid", ["c"], {})],
    "hardsigmoid": [("HardSigmoid", ["c"], {})],
    "silu": [("Sigmoid", ["c"], {}), ("Mul", ["c", "t0"], {})],
    "hardswish-decomposed": [("HardSigmoid", ["c"], {"alpha": 1 / 6, "beta": 0.5}), ("Mul", ["c", "t0"], {})],
    "scale": [("Mul", ["c", "two"], {})],
    "residual-relu": [("Add", ["c", "x"], {}), ("Relu", ["t0"], {})],
    "two-readers": [("Relu", ["c"], {}), ("Add", ["c", "t0"], {})],
}


def model_of(pattern: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    steps = PATTERNS[pattern]
    for k, (op, inputs, attrs) in enumerate(steps):
        out = "y" if k == len(steps) - 1 else f"t{k}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"n{k}", **attrs))
    inits = [numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in CONSTS.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def ort_compute_nodes(model: onnx.ModelProto, tmp_path,
                      level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED) -> list[str]:
    """The op types ONNX Runtime's CPU provider runs after its optimiser (by default no layout transforms)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_the_nodes_charged_are_the_kernels_onnx_runtime_runs(pattern, tmp_path):
    """Plain layout, as on the ARM boards: ONNX Runtime's optimiser without its NCHWc transformer."""
    model = model_of(pattern)
    graph = gs.import_onnx(model)
    charged = [n.op for n in graph.nodes if n.name not in fused_nodes(graph.nodes, "onnxruntime", residual=False)]
    assert len(charged) == len(ort_compute_nodes(model, tmp_path)), (charged, ort_compute_nodes(model, tmp_path))


@pytest.mark.skipif(nchwc_block_size() == 0, reason="this ONNX Runtime build has no NCHWc kernels")
def test_a_residual_add_joins_the_conv_on_the_blocked_path(tmp_path):
    """Relu(Conv2(Conv1(x)) + Conv1(x)): both operands blocked, so the Add and the Relu ride on Conv2."""
    model = model_of("relu")
    graph = model.graph
    graph.node[-1].output[0] = "c1"
    graph.node.append(helper.make_node("Conv", ["c1", "w", "b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]))
    graph.node.append(helper.make_node("Add", ["c2", "c1"], ["s"], name="add"))
    graph.node.append(helper.make_node("Relu", ["s"], ["y"], name="relu2"))
    graph = gs.import_onnx(model)
    charged = [n.op for n in graph.nodes if n.name not in fused_nodes(graph.nodes, "onnxruntime", residual=True)]
    ran = ort_compute_nodes(model, tmp_path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert charged == ["Conv", "Conv"] and [op for op in ran if not op.startswith("Reorder")] == ["Conv", "Conv"]


def test_tensorrt_fuses_pointwise_chains_into_the_conv():
    for pattern in ("silu", "hardswish-decomposed", "residual-relu", "relu6"):
        graph = gs.import_onnx(model_of(pattern))
        assert fused_nodes(graph.nodes, "tensorrt") == {n.name for n in graph.nodes if n.op != "Conv"}, pattern
    with pytest.raises(ValueError, match="unknown runtime 'ncnn'"):
        fused_nodes([], "ncnn")


def _blocked_kernels(model: onnx.ModelProto, tmp_path) -> list[str]:
    """Op types ONNX Runtime runs with its NCHWc transformer, layout reorders left out."""
    ran = ort_compute_nodes(model, tmp_path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return [op for op in ran if not op.startswith("Reorder")]


def _charged(model: onnx.ModelProto, residual: bool) -> list[str]:
    graph = gs.import_onnx(model)
    return [n.op for n in graph.nodes if n.name not in fused_nodes(graph.nodes, "onnxruntime", residual=residual)]


needs_nchwc = pytest.mark.skipif(nchwc_block_size() == 0, reason="this ONNX Runtime build has no NCHWc kernels")


@needs_nchwc
def test_a_decomposed_hardswish_joins_the_conv_on_the_blocked_path(tmp_path):
    """Mul(c, HardSigmoid(c)) after a blocked Conv and before another: one Conv kernel with a HardSwish
    activation. Where the Mul writes the graph's output ONNX Runtime runs it apart, and so it is charged."""
    model = model_of("hardswish-decomposed")
    assert _charged(model, residual=True) == _blocked_kernels(model, tmp_path) == ["Conv", "HardSigmoid", "Mul"]
    model.graph.node[-1].output[0] = "h"
    model.graph.node.append(helper.make_node("Conv", ["h", "w", "b"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    assert _charged(model, residual=True) == _blocked_kernels(model, tmp_path) == ["Conv", "Conv"]


@needs_nchwc
def test_a_hardsigmoid_with_other_constants_stays_apart_on_the_blocked_path(tmp_path):
    """alpha 0.2 (ONNX's default) is no HardSwish: ONNX Runtime runs the Mul apart (the HardSigmoid cannot join a
    conv output with two readers)."""
    model = model_of("hardswish-decomposed")
    model.graph.node[1].attribute[0].f = 0.2
    model.graph.node[-1].output[0] = "h"
    model.graph.node.append(helper.make_node("Conv", ["h", "w", "b"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    assert _charged(model, residual=True) == _blocked_kernels(model, tmp_path) == ["Conv", "HardSigmoid", "Mul", "Conv"]


@needs_nchwc
def test_a_grouped_conv_run_plain_keeps_its_hardswish_apart(tmp_path):
    """8 channels per group are no whole NCHWc block of 16: the conv runs plain, HardSigmoid and Mul apart."""
    if nchwc_block_size() != 16:
        pytest.skip("needs 16-channel blocks")
    model = model_of("hardswish-decomposed")
    model.graph.node[0].attribute.append(helper.make_attribute("group", 2))
    w = numpy_helper.to_array(model.graph.initializer[0])
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[:, :8]), "w"))
    model.graph.initializer.append(numpy_helper.from_array(w, "w2"))
    model.graph.node[-1].output[0] = "h"
    model.graph.node.append(helper.make_node("Conv", ["h", "w2", "b"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    assert _charged(model, residual=True) == ["Conv", "HardSigmoid", "Mul", "Conv"]
    assert _blocked_kernels(model, tmp_path) in (["Conv", "HardSigmoid", "Mul", "Conv"],
                                                 ["FusedConv", "HardSigmoid", "Mul", "Conv"])


@needs_nchwc
def test_a_residual_add_after_a_matmul_runs_apart_on_the_blocked_path(tmp_path):
    """A transformer's x + Linear(x): the bias Add joins the MatMul (a Gemm), the residual Add does not."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["l"], name="bias"),
             helper.make_node("Add", ["l", "x"], ["y"], name="residual")]
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b")]
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [32, 64])],
                              [helper.make_tensor_value_info("y", f, [32, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert _charged(model, residual=True) == ["MatMul", "Add"]
    assert len(_blocked_kernels(model, tmp_path)) == 2


def test_an_erf_gelu_is_one_gelu_kernel_and_costs_a_gelus_work(tmp_path):
    """ONNX Runtime runs x * 0.5 * (1 + Erf(x / sqrt 2)) as one Gelu kernel: one node charged, the Erf, at the
    FLOPs of a Gelu of its shape (twice a Sigmoid's, as the Gelu kernel takes here)."""
    from edgec.costmodel.predict import predict_ms
    from edgec.costmodel.profile import UnitProfile
    from edgec.costmodel.work import OP_CLASSES

    f = onnx.TensorProto.FLOAT
    consts = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("r2", 2 ** 0.5), ("one", 1.0),
                                                                                ("half", 0.5))]
    nodes = [helper.make_node("Div", ["x", "r2"], ["d"], name="div"), helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["a"], name="add"), helper.make_node("Mul", ["x", "a"], ["m"], name="mul"),
             helper.make_node("Mul", ["m", "half"], ["y"], name="half")]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [64, 256])],
                                                [helper.make_tensor_value_info("y", f, [64, 256])], consts),
                              opset_imports=[helper.make_opsetid("", 13)])
    assert ort_compute_nodes(model, tmp_path) == ["Gelu"]
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    assert _charged(model, residual=False) == ["Erf"]
    gelu = helper.make_model(helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], name="gelu", domain="com.microsoft")],
                                               "g", [helper.make_tensor_value_info("x", f, [64, 256])],
                                               [helper.make_tensor_value_info("y", f, [64, 256])]),
                             opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    profile = UnitProfile("p", 100.0, 10.0, {c: 0.05 for c in OP_CLASSES}, 0.0, activation_bandwidth_gbs=1e3)
    assert predict_ms(graph.nodes, profile) == pytest.approx(predict_ms(gs.import_onnx(gelu).nodes, profile))
    assert predict_ms(graph.nodes, profile) == pytest.approx(2 * 64 * 256 * 4 / (100e9 * 0.05) * 1e3)


@needs_nchwc
def test_a_residual_add_after_a_fused_hardswish_runs_apart(tmp_path):
    """The conv already has its HardSwish activation: the Add after it stays a node of its own."""
    model = model_of("hardswish-decomposed")
    model.graph.node[-1].output[0] = "h"
    model.graph.node.append(helper.make_node("Add", ["h", "x"], ["s"], name="residual"))
    model.graph.node.append(helper.make_node("Conv", ["s", "w", "b"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    assert _charged(model, residual=True) == _blocked_kernels(model, tmp_path) == ["Conv", "Add", "Conv"]


@needs_nchwc
@pytest.mark.parametrize("activation", ["relu", "relu6", "leaky"])
def test_a_residual_add_after_a_fused_activation_runs_apart(activation, tmp_path):
    """Conv -> Relu -> Add(x): the blocked kernel computes act(conv + sum), so an Add after the activation
    cannot join; it stays a node of its own, as ONNX Runtime runs it."""
    model = model_of(activation)
    model.graph.node[-1].output[0] = "h"
    model.graph.node.append(helper.make_node("Add", ["h", "x"], ["s"], name="residual"))
    model.graph.node.append(helper.make_node("Conv", ["s", "w", "b"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    assert _charged(model, residual=True) == _blocked_kernels(model, tmp_path) == ["Conv", "Add", "Conv"]
