"""Graphs laid out the way exporters write them (torch's TorchScript and dynamo exporters, paddle2onnx, tf2onnx).

Each builder returns an onnx.ModelProto with random weights; what it imitates is
said in its docstring. Kept small so the foreign-model tests stay fast.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _w(rng: np.random.Generator, name: str, shape: list[int], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"/Constant_{name}",
                            value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name + "_value"))


def _model(nodes, inputs, outputs, inits, opset: int, ir: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "main_graph", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch")
    model.ir_version = ir
    onnx.checker.check_model(model, full_check=True)
    return model


def torch_mobilenet_block(opset: int = 13) -> onnx.ModelProto:
    """torch.onnx (TorchScript) ReLU6: Clip whose min and max are outputs of Constant nodes, shared by every
    Clip of the model; `/features/0/Conv`-style names and `onnx::Conv_12` weights."""
    rng = np.random.default_rng(0)
    nodes = [_const("onnx::Clip_lo", 0.0), _const("onnx::Clip_hi", 6.0)]
    inits = [_w(rng, "onnx::Conv_1", [16, 3, 3, 3]), _w(rng, "onnx::Conv_2", [16]),
             _w(rng, "onnx::Conv_3", [16, 1, 3, 3]), _w(rng, "onnx::Conv_4", [16]),
             _w(rng, "onnx::Conv_5", [16, 16, 1, 1]), _w(rng, "onnx::Conv_6", [16])]
    nodes += [
        helper.make_node("Conv", ["input", "onnx::Conv_1", "onnx::Conv_2"], ["/features/0/Conv_output_0"],
                         name="/features/0/Conv", pads=[1, 1, 1, 1], strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Clip", ["/features/0/Conv_output_0", "onnx::Clip_lo", "onnx::Clip_hi"],
                         ["/features/0/Clip_output_0"], name="/features/0/Clip"),
        helper.make_node("Conv", ["/features/0/Clip_output_0", "onnx::Conv_3", "onnx::Conv_4"],
                         ["/features/1/Conv_output_0"], name="/features/1/Conv", pads=[1, 1, 1, 1], group=16,
                         kernel_shape=[3, 3]),
        helper.make_node("Clip", ["/features/1/Conv_output_0", "onnx::Clip_lo", "onnx::Clip_hi"],
                         ["/features/1/Clip_output_0"], name="/features/1/Clip"),
        helper.make_node("Conv", ["/features/1/Clip_output_0", "onnx::Conv_5", "onnx::Conv_6"],
                         ["/features/2/Conv_output_0"], name="/features/2/Conv", kernel_shape=[1, 1]),
        helper.make_node("Add", ["/features/2/Conv_output_0", "/features/0/Clip_output_0"], ["output"],
                         name="/features/Add"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("input", F, [1, 3, 32, 32])],
                  [helper.make_tensor_value_info("output", F, [1, 16, 16, 16])], inits, opset)


def torch_groupnorm(opset: int = 13) -> onnx.ModelProto:
    """torch.onnx GroupNorm(4, 16): Reshape to [N, 4, -1] by a Constant shape, InstanceNormalization whose
    scale and bias are Constant nodes, Reshape back through Shape, then the affine Mul/Add."""
    rng = np.random.default_rng(1)
    inits = [_w(rng, "conv.weight", [16, 3, 3, 3]), _w(rng, "gn.weight", [16, 1, 1]), _w(rng, "gn.bias", [16, 1, 1])]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
        _const("shape3", [0, 4, -1], np.int64),
        helper.make_node("Reshape", ["c", "shape3"], ["r"], name="/gn/Reshape"),
        _const("in_scale", np.ones(4)), _const("in_bias", np.zeros(4)),
        helper.make_node("InstanceNormalization", ["r", "in_scale", "in_bias"], ["n"], name="/gn/InstanceNorm",
                         epsilon=1e-5),
        helper.make_node("Shape", ["c"], ["s"], name="/gn/Shape"),
        helper.make_node("Reshape", ["n", "s"], ["rn"], name="/gn/Reshape_1"),
        helper.make_node("Mul", ["rn", "gn.weight"], ["m"], name="/gn/Mul"),
        helper.make_node("Add", ["m", "gn.bias"], ["y"], name="/gn/Add"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 16, 16])],
                  [helper.make_tensor_value_info("y", F, [1, 16, 16, 16])], inits, opset)


def torch_upsample(opset: int = 13) -> onnx.ModelProto:
    """torch.onnx nearest Upsample: Resize(x, "", scales) with an empty-string roi input and Constant scales."""
    rng = np.random.default_rng(2)
    inits = [_w(rng, "w", [8, 3, 3, 3])]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        _const("scales", [1.0, 1.0, 2.0, 2.0]),
        helper.make_node("Resize", ["r", "", "scales"], ["y"], name="/up/Resize", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", F, [1, 8, 16, 16])], inits, opset)


def paddle_ocr_stem() -> onnx.ModelProto:
    """paddle2onnx: dynamic dims written as dim_value -1, `conv2d_0.w_0` names, Clip bounds as Constants."""
    rng = np.random.default_rng(3)
    inits = [_w(rng, "conv2d_0.w_0", [8, 3, 3, 3]), _w(rng, "conv2d_1.w_0", [8, 8, 3, 3])]
    nodes = [
        _const("clip_min", 0.0), _const("clip_max", 6.0),
        helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["conv2d_0.tmp_0"], name="p2o.Conv.0", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["conv2d_0.tmp_0", "clip_min", "clip_max"], ["relu6_0.tmp_0"], name="p2o.Clip.0"),
        helper.make_node("Conv", ["relu6_0.tmp_0", "conv2d_1.w_0"], ["conv2d_1.tmp_0"], name="p2o.Conv.1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["conv2d_1.tmp_0", "clip_min", "clip_max"], ["y"], name="p2o.Clip.1"),
    ]
    x = helper.make_tensor_value_info("x", F, [1, 3, 8, 8])
    for dim in (x.type.tensor_type.shape.dim[0], x.type.tensor_type.shape.dim[2], x.type.tensor_type.shape.dim[3]):
        dim.dim_value = -1
    y = helper.make_tensor_value_info("y", F, [1, 8, 8, 8])
    for dim in (y.type.tensor_type.shape.dim[0], y.type.tensor_type.shape.dim[2], y.type.tensor_type.shape.dim[3]):
        dim.dim_value = -1
    model = helper.make_model(helper.make_graph(nodes, "paddle", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 11)], producer_name="PaddlePaddle")
    model.ir_version = 6
    return model


def tf2onnx_nhwc() -> onnx.ModelProto:
    """tf2onnx: an NHWC input transposed to NCHW for Conv and back, a Constant-shape Reshape, Identity nodes,
    and names with ':0' suffixes."""
    rng = np.random.default_rng(4)
    inits = [_w(rng, "conv/kernel:0", [8, 3, 3, 3]), _w(rng, "conv/bias:0", [8])]
    nodes = [
        helper.make_node("Transpose", ["input_1:0"], ["t:0"], name="conv__6", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t:0", "conv/kernel:0", "conv/bias:0"], ["c:0"], name="model/conv/Conv2D",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c:0"], ["r:0"], name="model/conv/Relu"),
        helper.make_node("Transpose", ["r:0"], ["tb:0"], name="model/conv/Relu__9", perm=[0, 2, 3, 1]),
        helper.make_node("Identity", ["tb:0"], ["id:0"], name="Identity_1"),
        _const("model/flatten/Const:0", [1, -1], np.int64),
        helper.make_node("Reshape", ["id:0", "model/flatten/Const:0"], ["flat:0"], name="model/flatten/Reshape"),
        helper.make_node("Identity", ["flat:0"], ["output_0"], name="Identity"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("input_1:0", F, [1, 8, 8, 3])],
                  [helper.make_tensor_value_info("output_0", F, [1, 512])], inits, 13)


def two_inputs_shared_batch() -> onnx.ModelProto:
    """Two inputs sharing the dim_param 'batch' (torch dynamic_axes on both): pinning one pins both."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    a = helper.make_tensor_value_info("a", F, ["batch", 8])
    b = helper.make_tensor_value_info("b", F, ["batch", 4])
    y = helper.make_tensor_value_info("y", F, ["batch", 4])
    return _model(nodes, [a, b], [y], [_w(rng, "w", [8, 4])], 13)


def torch_mobilenetv3_block(opset: int = 14) -> onnx.ModelProto:
    """torch.onnx at opset 14+: MobileNetV3's HardSwish as one node (TensorRT 8.2 reads opset <= 13)."""
    rng = np.random.default_rng(6)
    inits = [_w(rng, "w0", [16, 3, 3, 3]), _w(rng, "w1", [16, 1, 3, 3]), _w(rng, "w2", [8, 16, 1, 1])]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="/0/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("HardSwish", ["c0"], ["h0"], name="/0/HardSwish"),
        helper.make_node("Conv", ["h0", "w1"], ["c1"], name="/1/Conv", pads=[1, 1, 1, 1], group=16),
        helper.make_node("HardSwish", ["c1"], ["h1"], name="/1/HardSwish"),
        helper.make_node("Conv", ["h1", "w2"], ["y"], name="/2/Conv"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 32, 32])],
                  [helper.make_tensor_value_info("y", F, [1, 8, 16, 16])], inits, opset)


def dynamo_gelu_encoder(opset: int = 20) -> onnx.ModelProto:
    """torch.onnx dynamo export of a tiny MLP block at opset 20: Gelu and LayerNormalization as single nodes."""
    rng = np.random.default_rng(7)
    inits = [_w(rng, "fc1.weight", [16, 32]), _w(rng, "fc2.weight", [32, 16]),
             numpy_helper.from_array(np.ones(16, np.float32), "ln.weight"),
             numpy_helper.from_array(np.zeros(16, np.float32), "ln.bias")]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.weight", "ln.bias"], ["n"], name="node_ln", axis=-1,
                         epsilon=1e-5),
        helper.make_node("MatMul", ["n", "fc1.weight"], ["h"], name="node_fc1"),
        helper.make_node("Gelu", ["h"], ["g"], name="node_gelu"),
        helper.make_node("MatMul", ["g", "fc2.weight"], ["o"], name="node_fc2"),
        helper.make_node("Add", ["o", "x"], ["y"], name="node_residual"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 8, 16])],
                  [helper.make_tensor_value_info("y", F, [1, 8, 16])], inits, opset, ir=9)


def opset3_convnet() -> onnx.ModelProto:
    """An old exporter's model at opset 3 (Relu with consumed_inputs, as Caffe2-era tools wrote it)."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", F, [1, 3, 8, 8]),
                                             helper.make_tensor_value_info("w", F, [8, 3, 3, 3])],
                              [helper.make_tensor_value_info("y", F, [1, 8, 8, 8])],
                              initializer=[_w(rng, "w", [8, 3, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 3)])
    model.ir_version = 3
    return model
