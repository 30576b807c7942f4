"""FLOP, byte and op-class counts against hand-computed numbers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import EdgecError
from edgec.costmodel.work import node_flops, node_work, op_class, total_flops

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def one_node(op: str, inputs: dict[str, list[int]], consts: dict[str, np.ndarray] | None = None,
             n_outputs: int = 1, **attrs) -> gs.Node:
    """A one-node model, shape-inferred, as a graphsurgeon node. Constants follow the inputs."""
    consts = consts or {}
    names = list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, name="n", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return gs.import_onnx(model).nodes[0]


def w(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def test_conv_7x7_stride2_counts_macs_twice_plus_bias():
    n = one_node("Conv", {"x": [1, 3, 224, 224]}, {"w": w(64, 3, 7, 7), "b": w(64)},
                 kernel_shape=[7, 7], strides=[2, 2], pads=[3, 3, 3, 3])
    macs = 64 * 112 * 112 * 3 * 7 * 7  # 118,013,952
    assert node_flops(n) == 2 * macs + 64 * 112 * 112 == 236_830_720
    work = node_work(n)
    assert work.param_bytes == (64 * 3 * 49 + 64) * 4
    assert work.input_bytes == 3 * 224 * 224 * 4
    assert work.output_bytes == 64 * 112 * 112 * 4
    assert work.op_class == "conv"


def test_depthwise_conv():
    n = one_node("Conv", {"x": [1, 32, 112, 112]}, {"w": w(32, 1, 3, 3)}, group=32, pads=[1, 1, 1, 1])
    assert node_flops(n) == 2 * 32 * 112 * 112 * 9 == 7_225_344
    assert op_class(n) == "depthwise"


def test_grouped_and_dilated_conv():
    grouped = one_node("Conv", {"x": [1, 64, 56, 56]}, {"w": w(128, 16, 3, 3)}, group=4, pads=[1, 1, 1, 1])
    assert node_flops(grouped) == 2 * 128 * 56 * 56 * 16 * 9 == 115_605_504
    assert op_class(grouped) == "grouped"
    dilated = one_node("Conv", {"x": [1, 16, 32, 32]}, {"w": w(16, 16, 3, 3)}, dilations=[2, 2], pads=[2, 2, 2, 2])
    plain = one_node("Conv", {"x": [1, 16, 32, 32]}, {"w": w(16, 16, 3, 3)}, pads=[1, 1, 1, 1])
    assert node_flops(dilated) == node_flops(plain) == 2 * 16 * 32 * 32 * 16 * 9


def test_grouped_class_for_several_channels_per_group():
    """ShuffleNet's grouped 1x1 convs are neither pointwise (group > 1) nor depthwise (34 channels per group)."""
    shuffle = one_node("Conv", {"x": [1, 136, 28, 28]}, {"w": w(136, 34, 1, 1)}, group=4)
    assert op_class(shuffle) == "grouped"
    assert node_work(shuffle).op_class == "grouped"
    assert node_flops(shuffle) == 2 * 136 * 28 * 28 * 34
    depthwise = one_node("Conv", {"x": [1, 136, 28, 28]}, {"w": w(136, 1, 3, 3)}, group=136, pads=[1, 1, 1, 1])
    assert op_class(depthwise) == "depthwise"
    dense = one_node("Conv", {"x": [1, 136, 28, 28]}, {"w": w(136, 136, 3, 3)}, group=1, pads=[1, 1, 1, 1])
    assert op_class(dense) == "conv"


def test_pointwise_class_only_for_stride1_dense_1x1():
    assert op_class(one_node("Conv", {"x": [1, 64, 8, 8]}, {"w": w(32, 64, 1, 1)})) == "pointwise"
    assert op_class(one_node("Conv", {"x": [1, 64, 8, 8]}, {"w": w(32, 64, 1, 1)}, strides=[2, 2])) == "conv"


def test_conv_transpose_counts_per_input_pixel():
    n = one_node("ConvTranspose", {"x": [1, 16, 8, 8]}, {"w": w(16, 8, 4, 4)}, strides=[2, 2], pads=[1, 1, 1, 1])
    assert list(n.outputs[0].shape) == [1, 8, 16, 16]
    assert node_flops(n) == 2 * (16 * 8 * 8) * (8 * 4 * 4) == 262_144


def test_gemm_and_batched_matmul():
    fc = one_node("Gemm", {"x": [1, 2048]}, {"w": w(1000, 2048), "b": w(1000)}, transB=1)
    assert node_flops(fc) == 2 * 1000 * 2048 + 1000 == 4_097_000
    assert node_work(fc).param_bytes == (1000 * 2048 + 1000) * 4
    bmm = one_node("MatMul", {"a": [2, 8, 64, 32], "b": [2, 8, 32, 64]})
    assert node_flops(bmm) == 2 * (2 * 8 * 64 * 64) * 32 == 4_194_304
    bcast = one_node("MatMul", {"a": [4, 10, 32]}, {"b": w(32, 16)})
    assert node_flops(bcast) == 2 * 4 * 10 * 16 * 32 == 40_960
    assert op_class(bmm) == op_class(fc) == "gemm"


def test_pooling():
    mp = one_node("MaxPool", {"x": [1, 64, 112, 112]}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    assert node_flops(mp) == 64 * 56 * 56 * 9 == 1_806_336
    gap = one_node("GlobalAveragePool", {"x": [1, 2048, 7, 7]})
    assert node_flops(gap) == 2048 * 49 == 100_352
    assert op_class(mp) == op_class(gap) == "pool"


def test_elementwise():
    shape = [1, 64, 56, 56]
    elems = 64 * 56 * 56
    assert node_flops(one_node("Add", {"a": shape, "b": shape})) == elems
    assert node_flops(one_node("Relu", {"a": shape})) == elems
    assert node_flops(one_node("Sum", {"a": shape, "b": shape, "c": shape})) == 2 * elems
    assert node_flops(one_node("Sigmoid", {"a": shape})) == 4 * elems
    assert op_class(one_node("Relu", {"a": shape})) == "elementwise"


def test_normalizations_and_softmax():
    x = [1, 64, 56, 56]
    bn = one_node("BatchNormalization", {"x": x}, {k: w(64) for k in ("s", "b", "m", "v")})
    assert node_flops(bn) == 2 * 64 * 56 * 56 == 401_408
    ln = one_node("LayerNormalization", {"x": [2, 128, 768]}, {"s": w(768), "b": w(768)}, axis=-1)
    assert node_flops(ln) == 7 * 2 * 128 * 768 == 1_376_256
    inorm = one_node("InstanceNormalization", {"x": [1, 8, 4, 4]}, {"s": w(8), "b": w(8)})
    assert node_flops(inorm) == 7 * 128
    lrn = one_node("LRN", {"x": [1, 96, 55, 55]}, size=5)
    assert node_flops(lrn) == (2 * 5 + 3) * 96 * 55 * 55 == 3_775_200
    sm = one_node("Softmax", {"x": [1, 1000]})
    assert node_flops(sm) == 5000
    assert op_class(bn) == op_class(ln) == op_class(sm) == "norm"
    assert op_class(lrn) == "other"


def test_resize_modes():
    scales = np.array([1, 1, 2, 2], np.float32)
    lin = one_node("Resize", {"x": [1, 3, 10, 10]}, {"roi": w(0), "scales": scales}, mode="linear")
    assert node_flops(lin) == 8 * 3 * 20 * 20 == 9600
    near = one_node("Resize", {"x": [1, 3, 10, 10]}, {"roi": w(0), "scales": scales}, mode="nearest")
    assert node_flops(near) == 0


def test_lstm_and_gru():
    lstm = one_node("LSTM", {"x": [5, 1, 10]}, {"W": w(1, 80, 10), "R": w(1, 80, 20)}, hidden_size=20, n_outputs=1)
    per_step = 2 * 4 * 20 * (10 + 20) + 2 * 4 * 20 + 9 * 20  # 5140
    assert node_flops(lstm) == 5 * per_step == 25_700
    gru = one_node("GRU", {"x": [4, 2, 8]}, {"W": w(2, 48, 8), "R": w(2, 48, 16)}, hidden_size=16,
                   direction="bidirectional", n_outputs=1)
    per_step = 2 * 3 * 16 * (8 + 16) + 2 * 3 * 16 + 7 * 16  # 2512
    assert node_flops(gru) == 2 * 4 * 2 * per_step == 40_192
    assert op_class(lstm) == "gemm"


def test_memory_moves_cost_bytes_not_flops():
    cat = one_node("Concat", {"a": [1, 32, 28, 28], "b": [1, 64, 28, 28]}, axis=1)
    work = node_work(cat)
    assert work.flops == 0 and work.op_class == "memory"
    assert work.input_bytes == (32 + 64) * 28 * 28 * 4
    assert work.output_bytes == 96 * 28 * 28 * 4
    tr = one_node("Transpose", {"a": [1, 3, 8, 8]}, perm=[0, 2, 3, 1])
    assert node_work(tr).bytes_moved == 2 * 3 * 64 * 4 and node_flops(tr) == 0
    flat = one_node("Flatten", {"a": [1, 2048, 1, 1]})
    assert node_flops(flat) == 0 and op_class(flat) == "memory"


def test_missing_shape_names_node_and_fix():
    x = gs.Variable("x", dtype=np.float32, shape=None)
    y = gs.Variable("y", dtype=np.float32, shape=None)
    node = gs.Node("Relu", name="act1", inputs=[x], outputs=[y])
    with pytest.raises(EdgecError, match="act1.*Relu.*'y'.*shape-inference"):
        node_flops(node)


def test_resnet50_is_4_09_gmac():
    import onnxsim

    path = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light/light_resnet50.onnx"
    model, ok = onnxsim.simplify(onnx.load(path))
    assert ok
    graph = gs.import_onnx(model)
    total = total_flops(graph.nodes)
    assert total == pytest.approx(8.2e9, rel=0.01)
    macs = sum(node_flops(n) for n in graph.nodes if op_class(n) in ("conv", "pointwise", "gemm")) / 2
    assert macs == pytest.approx(4.09e9, rel=0.005)


def test_mobilenetv2_sample_is_300_mmac_3_5m_params():
    sys.path.insert(0, str(SAMPLES))
    try:
        from make_mobilenetv2 import build_mobilenetv2
    finally:
        sys.path.remove(str(SAMPLES))
    graph = gs.import_onnx(build_mobilenetv2())
    works = [node_work(n) for n in graph.nodes]
    macs = sum(wk.flops for wk in works if wk.op_class in ("conv", "pointwise", "depthwise", "gemm")) / 2
    assert macs == pytest.approx(300e6, rel=0.02)
    params = sum(wk.param_bytes for wk in works) / 4
    assert params == pytest.approx(3.5e6, rel=0.01)
    assert sum(n.op == "Conv" and n.attrs["group"] > 1 for n in graph.nodes) == 17
