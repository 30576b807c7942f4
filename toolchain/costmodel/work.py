"""Work per node: FLOPs, parameter bytes, activation bytes and op class.

Counted from a ``gs.Node`` whose tensors have static shapes (after the
shape-inference pass). A multiply-add counts as 2 FLOPs; a bias add, a
comparison or a simple element-wise op as 1. Layout ops (Concat, Split,
Reshape, Transpose, Flatten, ...) are memory moves: 0 FLOP, their bytes moved.

The op class picks the efficiency a :class:`edgec.costmodel.profile.UnitProfile` applies:

    conv        dense or grouped convolution with a spatial kernel, ConvTranspose
    pointwise   1x1 convolution, stride 1, group 1 (a GEMM over pixels)
    depthwise   one input channel per group (MobileNet's 3x3 dw convs)
    grouped     several input channels per group (ShuffleNet, ResNeXt): runtimes run
                one small GEMM per group, outside their dense and depthwise kernels
    gemm        Gemm, MatMul, LSTM/GRU/RNN
    elementwise activations, arithmetic, Resize
    pool        Max/Average/Global pooling, reductions
    norm        BatchNormalization, LayerNormalization, InstanceNormalization, Softmax
    memory      layout ops: bytes moved, no arithmetic
    other       LRN and anything else: ops runtimes run as plain scalar loops
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.weights import constant_nbytes

OP_CLASSES: tuple[str, ...] = (
    "conv", "pointwise", "depthwise", "grouped", "gemm", "elementwise", "pool", "norm", "memory", "other",
)

# FLOPs per output element of unary ops; ops not listed cost 1.
_UNARY_FLOPS = {
    "Sigmoid": 4, "Tanh": 4, "Exp": 4, "Log": 4, "Erf": 4, "Softplus": 4, "Elu": 4, "Selu": 4,
    "HardSigmoid": 2, "HardSwish": 3, "Gelu": 8, "Mish": 8, "Softsign": 2, "Pow": 4, "Sqrt": 2,
    "Reciprocal": 1, "LeakyRelu": 2, "PRelu": 2, "Clip": 2,
}
_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Where", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "Relu", "Abs", "Neg", "Floor", "Ceil",
    "Round", "Sign", "BitShift", "Mod", "ThresholdedRelu", "Shrink", "Celu", *_UNARY_FLOPS,
}
_VARIADIC = {"Sum", "Max", "Min", "Mean"}
_MEMORY = {
    "Concat", "Split", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity",
    "Dropout", "Slice", "Gather", "GatherElements", "GatherND", "ScatterND", "Pad", "Tile", "Expand",
    "Cast", "DepthToSpace", "SpaceToDepth", "Shape", "Size", "ConstantOfShape", "Constant",
    "CastLike", "Compress", "ReverseSequence",
}
# Ops a runtime executes without touching the data (a view or a no-op at inference).
VIEW_OPS: frozenset[str] = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size", "Constant",
})
_POOL = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
         "MaxRoiPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
         "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ArgMax", "ArgMin"}
_NORM = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "Softmax",
         "LogSoftmax", "GroupNormalization", "MeanVarianceNormalization", "LpNormalization"}
_GEMM = {"Gemm", "MatMul", "LSTM", "GRU", "RNN", "MatMulInteger", "QLinearMatMul"}


@dataclass(frozen=True)
class NodeWork:
    """What one node costs, independent of the unit that runs it."""

    flops: float
    param_bytes: int      # constant inputs (weights, biases)
    input_bytes: int      # activations read
    output_bytes: int     # activations written
    op_class: str
    reduction: int = 0    # a conv's multiply-adds per output value: input channels per group x kernel area
    pixels: int = 0       # a conv's output positions per image (the GEMM's other free dimension)
    winograd: bool = False  # a dense 3x3 conv, stride 1, dilation 1: what Winograd F(m,3) kernels take
    column_bytes: int = 0   # a grouped/depthwise conv's whole im2col buffer: reduction x pixels x groups
    groups: int = 0         # a conv's group count (an im2col runtime runs one expansion and GEMM per group)

    @property
    def activation_bytes(self) -> int:
        return self.input_bytes + self.output_bytes

    @property
    def bytes_moved(self) -> int:
        """Bytes the node reads and writes once: weights plus activations."""
        return self.param_bytes + self.input_bytes + self.output_bytes


def node_work(node: gs.Node) -> NodeWork:
    """FLOPs, bytes and op class of one node; raises EdgecError when a shape it needs is unknown."""
    params = _unique(t for t in node.inputs if isinstance(t, gs.Constant))
    acts = _unique(t for t in node.inputs if t.name and not isinstance(t, gs.Constant))
    return NodeWork(
        flops=float(node_flops(node)),
        param_bytes=sum(_nbytes(t, node) for t in params),
        input_bytes=sum(_nbytes(t, node) for t in acts),
        output_bytes=sum(_nbytes(t, node) for t in node.outputs if t.name and (t.outputs or t.shape is not None)),
        op_class=op_class(node),
        **_conv_gemm_shape(node),
    )


def _conv_gemm_shape(node: gs.Node) -> dict[str, int | bool]:
    """`reduction`, `pixels`, `winograd`, `column_bytes` and `groups` of a Conv with known shapes; {} otherwise.

    The column buffer is what an im2col-based runtime (ONNX Runtime's MLAS) writes whole and reads back, one
    group at a time, before each group's GEMM: grouped and depthwise convs (MlasConvPrepare sizes their working
    buffer as output size x K). A dense conv's im2col runs in per-thread segments of 16 K floats interleaved with
    its GEMM (ExpandThenGemmSegmented), cache-resident, and a 1x1 stride-1 unpadded one is a GEMM on the input
    itself: no column buffer is charged for either.
    """
    if node.op != "Conv":
        return {}
    w = _weight(node)
    y = node.outputs[0] if node.outputs else None
    if (w is None or w.shape is None or y is None or y.shape is None or len(w.shape) < 3
            or not all(isinstance(d, int) for d in list(w.shape) + list(y.shape))):
        return {}
    kernel = [int(d) for d in w.shape[2:]]
    ones = [1] * len(kernel)
    strides = [int(s) for s in node.attrs.get("strides", ones)]
    dilations = [int(d) for d in node.attrs.get("dilations", ones)]
    pads = [int(p) for p in node.attrs.get("pads", [0] * 2 * len(kernel))]
    group = int(node.attrs.get("group", 1))
    reduction, pixels = int(math.prod(w.shape[1:])), int(math.prod(y.shape[2:]))
    direct = kernel == ones and strides == ones and not any(pads)
    return {"reduction": reduction, "pixels": pixels,
            "winograd": group == 1 and kernel == [3, 3] and strides == ones and dilations == ones,
            "column_bytes": 0 if group == 1 or direct else reduction * pixels * group * _itemsize(node.inputs[0]),
            "groups": group}


def unary_flops(op: str) -> int:
    """FLOPs per output element the cost model counts for a unary op (1 where none is listed)."""
    return _UNARY_FLOPS.get(op, 1)


def total_flops(nodes: Iterable[gs.Node]) -> float:
    """Sum of :func:`node_flops` over nodes."""
    return float(sum(node_flops(n) for n in nodes))


def op_class(node: gs.Node) -> str:
    """The efficiency class of a node (one of :data:`OP_CLASSES`)."""
    op = node.op
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = _weight(node)
        group = int(node.attrs.get("group", 1))
        if w is not None and w.shape is not None and len(w.shape) >= 3:
            if group > 1:
                return "depthwise" if int(w.shape[1]) == 1 else "grouped"
            kernel = [int(d) for d in w.shape[2:]]
            strides = [int(s) for s in node.attrs.get("strides", [1] * len(kernel))]
            if group == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides):
                return "pointwise"
        return "conv"
    if op == "ConvTranspose":
        return "conv"
    if op in _GEMM:
        return "gemm"
    if op in _POOL:
        return "pool"
    if op in _NORM:
        return "norm"
    if op in _ELEMENTWISE or op == "Resize" or op == "Upsample":
        return "elementwise"
    if op in _MEMORY:
        return "memory"
    return "other"


def node_flops(node: gs.Node) -> float:
    """FLOPs of one node (multiply-add = 2)."""
    op = node.op
    handler = _HANDLERS.get(op)
    if handler is not None:
        return float(handler(node))
    if op in _ELEMENTWISE:
        return float(_elementwise(node))
    if op in _POOL:
        return float(_numel(node.inputs[0], node))
    return 0.0


# -- per-op formulas -------------------------------------------------------------------------


def _conv(node: gs.Node) -> float:
    w = _shape(_weight(node), node)           # [M, C/g, k...]
    y = _shape(node.outputs[0], node)         # [N, M, o...]
    macs = math.prod(y) * math.prod(w[1:])
    bias = math.prod(y) if len(node.inputs) > 2 and node.inputs[2].name else 0
    return 2 * macs + bias


def _conv_transpose(node: gs.Node) -> float:
    x = _shape(node.inputs[0], node)          # [N, C, i...]
    w = _shape(_weight(node), node)           # [C, M/g, k...]
    macs = math.prod(x) * math.prod(w[1:])
    y = _shape(node.outputs[0], node)
    bias = math.prod(y) if len(node.inputs) > 2 and node.inputs[2].name else 0
    return 2 * macs + bias


def _gemm(node: gs.Node) -> float:
    a = _shape(node.inputs[0], node)
    k = a[0] if int(node.attrs.get("transA", 0)) else a[1]
    y = _shape(node.outputs[0], node)
    bias = math.prod(y) if len(node.inputs) > 2 and node.inputs[2].name else 0
    return 2 * math.prod(y) * k + bias


def _matmul(node: gs.Node) -> float:
    a = _shape(node.inputs[0], node)
    y = _shape(node.outputs[0], node)
    return 2 * math.prod(y) * a[-1]


def _pool(node: gs.Node) -> float:
    kernel = math.prod(int(k) for k in node.attrs["kernel_shape"])
    per = 2 if node.op == "LpPool" else 1
    return per * _numel(node.outputs[0], node) * kernel


def _global_pool(node: gs.Node) -> float:
    per = 2 if node.op == "GlobalLpPool" else 1
    return per * _numel(node.inputs[0], node)


def _per_input_element(flops: int):
    return lambda node: flops * _numel(node.inputs[0], node)


def _lrn(node: gs.Node) -> float:
    size = int(node.attrs["size"])
    return (2 * size + 3) * _numel(node.inputs[0], node)


def _resize(node: gs.Node) -> float:
    mode = node.attrs.get("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode()
    y = _shape(node.outputs[0], node)
    spatial = max(len(y) - 2, 1)
    per = {"nearest": 0, "linear": 2 * 2 ** spatial, "cubic": 2 * 4 ** spatial}.get(mode, 0)
    return per * math.prod(y)


def _rnn(gates: int, elementwise_per_hidden: int):
    """LSTM (4 gates), GRU (3), RNN (1): per step and direction, gates*H*(I+H) MACs,
    2 bias adds per gate element, and the gate activations and state updates."""
    def count(node: gs.Node) -> float:
        x = _shape(node.inputs[0], node)      # [seq, batch, input] (layout=0)
        w = _shape(node.inputs[1], node)      # [dirs, gates*H, input]
        if int(node.attrs.get("layout", 0)):
            x = [x[1], x[0], x[2]]
        seq, batch, inp = x
        dirs, hidden = w[0], w[1] // gates
        per_step = 2 * gates * hidden * (inp + hidden) + 2 * gates * hidden + elementwise_per_hidden * hidden
        return dirs * seq * batch * per_step
    return count


def _elementwise(node: gs.Node) -> float:
    out = _numel(node.outputs[0], node)
    op = node.op
    if op in _VARIADIC:
        return out * max(len(node.inputs) - 1, 1)
    return out * _UNARY_FLOPS.get(op, 1)


_HANDLERS = {
    "Conv": _conv,
    "ConvInteger": _conv,
    "QLinearConv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "LpPool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "GlobalLpPool": _global_pool,
    # inference BN: one multiply-add per element (scale and shift precomputed)
    "BatchNormalization": _per_input_element(2),
    # mean 1, subtract 1, square-accumulate 2, normalize 1, scale and shift 2
    "LayerNormalization": _per_input_element(7),
    "InstanceNormalization": _per_input_element(7),
    "GroupNormalization": _per_input_element(7),
    "MeanVarianceNormalization": _per_input_element(5),
    "LRN": _lrn,
    # max 1, subtract 1, exp 1, sum 1, divide 1
    "Softmax": _per_input_element(5),
    "LogSoftmax": _per_input_element(5),
    "Resize": _resize,
    "Upsample": _resize,
    # LSTM: 4 gate activations, c = f*c + i*g (3), h = o*tanh(c) (2) -> 9 per hidden unit
    "LSTM": _rnn(4, 9),
    # GRU: 3 gate activations, r*h (1), h = (1-z)*n + z*h (3) -> 7 per hidden unit
    "GRU": _rnn(3, 7),
    "RNN": _rnn(1, 1),
}


# -- tensors ---------------------------------------------------------------------------------


def _weight(node: gs.Node) -> gs.Tensor | None:
    if node.op == "QLinearConv":
        return node.inputs[3] if len(node.inputs) > 3 else None
    return node.inputs[1] if len(node.inputs) > 1 else None


def _unique(tensors: Iterable[gs.Tensor]) -> list[gs.Tensor]:
    seen: dict[str, gs.Tensor] = {}
    for t in tensors:
        seen.setdefault(t.name or str(id(t)), t)
    return list(seen.values())


def _shape(t: gs.Tensor | None, node: gs.Node) -> list[int]:
    if t is None:
        raise EdgecError(f"node '{node.name}' ({node.op}) lacks an input the cost model needs")
    shape = t.shape
    if shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise EdgecError(f"node '{node.name}' ({node.op}): tensor '{t.name}' has no static shape; "
                         f"run shape-inference first (pin dynamic dims with --input-shape)")
    return [int(d) for d in shape]


def _numel(t: gs.Tensor, node: gs.Node) -> int:
    return math.prod(_shape(t, node))


def _nbytes(t: gs.Tensor, node: gs.Node) -> int:
    if isinstance(t, gs.Constant):
        return constant_nbytes(t)
    return _numel(t, node) * _itemsize(t)


def _itemsize(t: gs.Tensor) -> int:
    try:
        return np.dtype(t.dtype).itemsize if t.dtype is not None else 4
    except TypeError:
        return 4
