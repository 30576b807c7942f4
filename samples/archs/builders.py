"""A small ONNX graph builder for reference architectures, and their MAC and parameter counts.

`Builder` emits nodes the way an inference export has them: BatchNormalization folded into the
conv bias (``Builder.conv``), ReLU6 as Clip with initializer bounds, SiLU as Sigmoid + Mul,
HardSwish as the HardSwish op from opset 14 and as x * HardSigmoid(x; 1/6, 0.5) below, GELU as
its Erf (or Tanh) body, LayerNorm as LayerNormalization from opset 17 and as its ReduceMean body
below. It tracks every tensor's static shape, so a helper needs only the output width.

Weights are random (seeded), scaled by fan-in (He for layers followed by a rectifier) so that
activations stay finite through deep residual stacks.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

Shape = list[int]


class Builder:
    """Accumulates nodes, initializers and static shapes; ``finish`` returns the shape-inferred model."""

    def __init__(self, name: str, input_shape: Sequence[int] = (1, 3, 224, 224), opset: int = 13,
                 seed: int = 0, input_name: str = "input") -> None:
        self.name, self.opset = name, opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.shape: dict[str, Shape] = {input_name: list(input_shape)}
        self.consts: dict[str, np.ndarray] = {}
        self.inputs = [input_name]
        self._count: dict[str, int] = {}
        self.scope = ""  # a prefix for node names (the ncnn converter sets the layer name)

    # -- tensors -----------------------------------------------------------------------------

    def fresh(self, kind: str) -> str:
        n = self._count.get(kind, 0)
        self._count[kind] = n + 1
        return f"{self.scope}/{kind}_{n}" if self.scope else f"{kind}_{n}"

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        """An initializer (deduplicated by name)."""
        arr = np.asarray(value, dtype=dtype)
        name = name or self.fresh("const")
        if name not in self.consts:
            self.consts[name] = arr
            self.shape[name] = list(arr.shape)
        return name

    def scalar(self, value: float) -> str:
        """A shared float scalar initializer, named by its value."""
        return self.const(np.float32(value), f"scalar_{float(value):g}".replace("-", "m").replace(".", "p"))

    def ints(self, values: Sequence[int]) -> str:
        key = "_".join(str(v).replace("-", "m") for v in values)
        return self.const(np.array(values, np.int64), f"ints_{key}", dtype=np.int64)

    def param(self, shape: Sequence[int], fan_in: int, gain: float = 2.0, kind: str = "w") -> str:
        """A random weight, uniform with variance gain / fan_in (He / kaiming_uniform for gain 2)."""
        bound = np.float32(math.sqrt(3.0 * gain / max(fan_in, 1)))
        data = self.rng.random(tuple(shape), dtype=np.float32)
        data -= np.float32(0.5)
        data *= 2 * bound
        return self.const(data, self.fresh(kind))

    def bias(self, n: int) -> str:
        return self.const(self.rng.standard_normal(n, dtype=np.float32) * np.float32(0.01), self.fresh("b"))

    def op(self, op_type: str, inputs: Sequence[str], shape: Shape | Sequence[Shape], n_out: int = 1,
           **attrs) -> str | list[str]:
        """Append one node; `shape` is its output shape (a list of shapes when n_out > 1)."""
        name = self.fresh(op_type.lower())
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        shapes = shape if n_out > 1 else [shape]
        for o, s in zip(outs, shapes):
            self.shape[o] = [int(d) for d in s]
        return outs if n_out > 1 else outs[0]

    # -- convolution, pooling, dense ---------------------------------------------------------

    def conv(self, x: str, cout: int, k: int | Sequence[int], stride: int | Sequence[int] = 1,
             pad: int | Sequence[int] | None = None, group: int = 1, dilation: int = 1,
             bias: bool = True, act: str | None = None, gain: float | None = None) -> str:
        """Conv (BN folded into the bias); pad is k//2 by default, an int, or [top, left, bottom, right]."""
        n, cin, h, w = self.shape[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        if pad is None:
            pad = [dilation * (kh - 1) // 2, dilation * (kw - 1) // 2] * 2
        elif isinstance(pad, int):
            pad = [pad] * 4
        fan_in = cin // group * kh * kw
        inputs = [x, self.param([cout, cin // group, kh, kw], fan_in, gain if gain is not None else 2.0)]
        if bias:
            inputs.append(self.bias(cout))
        oh = (h + pad[0] + pad[2] - dilation * (kh - 1) - 1) // sh + 1
        ow = (w + pad[1] + pad[3] - dilation * (kw - 1) - 1) // sw + 1
        y = self.op("Conv", inputs, [n, cout, oh, ow], kernel_shape=[kh, kw], strides=[sh, sw],
                    pads=list(pad), group=group, dilations=[dilation, dilation])
        return self.act(y, act)

    def conv_transpose(self, x: str, cout: int, k: int, stride: int, pads: Sequence[int] = (0, 0, 0, 0),
                       group: int = 1, output_padding: Sequence[int] = (0, 0), bias: bool = True) -> str:
        """ConvTranspose; pads [top, left, bottom, right], output_padding [h, w]."""
        n, cin, h, w = self.shape[x]
        inputs = [x, self.param([cin, cout // group, k, k], cin // group * k * k)]
        if bias:
            inputs.append(self.bias(cout))
        oh = (h - 1) * stride - pads[0] - pads[2] + k + output_padding[0]
        ow = (w - 1) * stride - pads[1] - pads[3] + k + output_padding[1]
        return self.op("ConvTranspose", inputs, [n, cout, oh, ow], kernel_shape=[k, k], strides=[stride] * 2,
                       pads=list(pads), group=group, output_padding=list(output_padding))

    def bn(self, x: str, eps: float = 1e-5) -> str:
        """An explicit inference BatchNormalization (for exports that keep it, e.g. pre-activation BN)."""
        c = self.shape[x][1]
        scale = self.const(1.0 + 0.1 * self.rng.standard_normal(c, dtype=np.float32), self.fresh("bn_scale"))
        shift = self.const(0.01 * self.rng.standard_normal(c, dtype=np.float32), self.fresh("bn_bias"))
        mean = self.const(0.01 * self.rng.standard_normal(c, dtype=np.float32), self.fresh("bn_mean"))
        var = self.const(1.0 + 0.1 * self.rng.random(c, dtype=np.float32), self.fresh("bn_var"))
        return self.op("BatchNormalization", [x, scale, shift, mean, var], self.shape[x], epsilon=eps)

    def pool(self, x: str, kind: str, k: int | Sequence[int], stride: int | Sequence[int] | None = None,
             pad: int | Sequence[int] = 0, ceil: bool = False, count_include_pad: bool = False) -> str:
        """MaxPool / AveragePool; pad is an int or [top, left, bottom, right]."""
        n, c, h, w = self.shape[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        stride = stride if stride is not None else (kh, kw)
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        pads = [pad] * 4 if isinstance(pad, int) else list(pad)
        rnd = math.ceil if ceil else math.floor
        oh = int(rnd((h + pads[0] + pads[2] - kh) / sh)) + 1
        ow = int(rnd((w + pads[1] + pads[3] - kw) / sw)) + 1
        if ceil:  # the last window must start inside the input or its leading padding (ONNX, torch)
            oh -= (oh - 1) * sh >= h + pads[0]
            ow -= (ow - 1) * sw >= w + pads[1]
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=pads, ceil_mode=int(ceil))
        if kind == "max":
            return self.op("MaxPool", [x], [n, c, oh, ow], **attrs)
        return self.op("AveragePool", [x], [n, c, oh, ow], count_include_pad=int(count_include_pad), **attrs)

    def gap(self, x: str, flatten: bool = True, kind: str = "avg") -> str:
        """Global average (or max) pooling, flattened to [N, C] by default."""
        n, c = self.shape[x][:2]
        y = self.op("GlobalAveragePool" if kind == "avg" else "GlobalMaxPool", [x], [n, c, 1, 1])
        return self.flatten(y) if flatten else y

    def mean_hw(self, x: str) -> str:
        """x.mean([2, 3]) as torch exports it: ReduceMean over H, W without keepdims."""
        n, c = self.shape[x][:2]
        return self.op("ReduceMean", [x], [n, c], axes=[2, 3], keepdims=0)

    def fc(self, x: str, cout: int, act: str | None = None, gain: float = 2.0) -> str:
        """nn.Linear on [N, K] as Gemm(transB=1)."""
        n, k = self.shape[x]
        y = self.op("Gemm", [x, self.param([cout, k], k, gain), self.bias(cout)], [n, cout], transB=1)
        return self.act(y, act)

    def linear(self, x: str, cout: int, act: str | None = None, bias: bool = True, gain: float = 2.0) -> str:
        """nn.Linear on a rank > 2 input as torch exports it: MatMul(x, W^T) + Add(b)."""
        k = self.shape[x][-1]
        y = self.matmul(x, self.param([k, cout], k, gain))
        if bias:
            y = self.add(y, self.bias(cout))
        return self.act(y, act)

    def matmul(self, a: str, b: str) -> str:
        sa, sb = self.shape[a], self.shape[b]
        batch = _broadcast(sa[:-2], sb[:-2]) if len(sa) > 2 or len(sb) > 2 else []
        return self.op("MatMul", [a, b], batch + [sa[-2], sb[-1]])

    # -- activations -------------------------------------------------------------------------

    def act(self, x: str, kind: str | None) -> str:
        """relu, relu6, leaky:<alpha>, clip:<lo>:<hi>, sigmoid, hsigmoid, hswish, silu, gelu, gelu_tanh, tanh."""
        if kind is None or kind == "none":
            return x
        s = self.shape[x]
        if kind == "relu":
            return self.op("Relu", [x], s)
        if kind == "relu6":
            return self.op("Clip", [x, self.scalar(0.0), self.scalar(6.0)], s)
        if kind.startswith("clip:"):
            lo, hi = (float(v) for v in kind.split(":")[1:])
            return self.op("Clip", [x, self.scalar(lo), self.scalar(hi)], s)
        if kind.startswith("leaky"):
            return self.op("LeakyRelu", [x], s, alpha=float(kind.split(":")[1]) if ":" in kind else 0.01)
        if kind == "sigmoid":
            return self.op("Sigmoid", [x], s)
        if kind == "tanh":
            return self.op("Tanh", [x], s)
        if kind == "hsigmoid":
            return self.op("HardSigmoid", [x], s, alpha=1.0 / 6, beta=0.5)
        if kind == "hswish":
            return self.hardswish(x)
        if kind == "silu":
            return self.mul(x, self.op("Sigmoid", [x], s))
        if kind == "gelu":  # torch opset < 20: x * 0.5 * (1 + erf(x / sqrt(2)))
            erf = self.op("Erf", [self.op("Div", [x, self.scalar(math.sqrt(2.0))], s)], s)
            return self.mul(self.mul(x, self.add(erf, self.scalar(1.0))), self.scalar(0.5))
        if kind == "gelu_tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = self.op("Pow", [x, self.scalar(3.0)], s)
            inner = self.mul(self.add(x, self.mul(cube, self.scalar(0.044715))), self.scalar(math.sqrt(2 / math.pi)))
            return self.mul(self.mul(x, self.add(self.op("Tanh", [inner], s), self.scalar(1.0))), self.scalar(0.5))
        raise ValueError(f"unknown activation {kind!r}")

    def hardswish(self, x: str, alpha: float = 1.0 / 6, beta: float = 0.5) -> str:
        s = self.shape[x]
        if self.opset >= 14 and abs(alpha - 1.0 / 6) < 1e-7 and beta == 0.5:
            return self.op("HardSwish", [x], s)
        return self.mul(x, self.op("HardSigmoid", [x], s, alpha=alpha, beta=beta))

    # -- blocks ------------------------------------------------------------------------------

    def se(self, x: str, squeeze: int, act: str = "relu", gate: str = "sigmoid") -> str:
        """Squeeze-and-excitation: GlobalAveragePool -> 1x1 Conv -> act -> 1x1 Conv -> gate -> Mul."""
        s = self.gap(x, flatten=False)
        s = self.conv(s, squeeze, 1, act=act)
        s = self.conv(s, self.shape[x][1], 1, act=gate, gain=1.0)
        return self.mul(x, s)

    def layernorm(self, x: str, eps: float = 1e-5, axis: int = -1) -> str:
        """LayerNorm over the last axis: the LayerNormalization op from opset 17, else its body."""
        s = self.shape[x]
        c = s[axis]
        gamma = self.const(1.0 + 0.1 * self.rng.standard_normal(c, dtype=np.float32), self.fresh("ln_scale"))
        beta = self.const(0.01 * self.rng.standard_normal(c, dtype=np.float32), self.fresh("ln_bias"))
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, gamma, beta], s, axis=axis, epsilon=eps)
        red = list(s)
        red[axis] = 1
        mean = self.op("ReduceMean", [x], red, axes=[axis], keepdims=1)
        d = self.op("Sub", [x, mean], s)
        var = self.op("ReduceMean", [self.op("Mul", [d, d], s)], red, axes=[axis], keepdims=1)
        std = self.op("Sqrt", [self.op("Add", [var, self.scalar(eps)], red)], red)
        return self.add(self.mul(self.op("Div", [d, std], s), gamma), beta)

    # -- element-wise and layout -------------------------------------------------------------

    def _binary(self, op: str, a: str, b: str) -> str:
        return self.op(op, [a, b], _broadcast(self.shape[a], self.shape[b]))

    def add(self, a: str, b: str) -> str:
        return self._binary("Add", a, b)

    def mul(self, a: str, b: str) -> str:
        return self._binary("Mul", a, b)

    def concat(self, xs: Sequence[str], axis: int = 1) -> str:
        s = list(self.shape[xs[0]])
        s[axis] = sum(self.shape[x][axis] for x in xs)
        return self.op("Concat", list(xs), s, axis=axis)

    def split(self, x: str, sizes: Sequence[int], axis: int = 1) -> list[str]:
        shapes = []
        for n in sizes:
            s = list(self.shape[x])
            s[axis] = n
            shapes.append(s)
        return self.op("Split", [x, self.ints(sizes)], shapes, n_out=len(sizes), axis=axis)

    def flatten(self, x: str, axis: int = 1) -> str:
        s = self.shape[x]
        return self.op("Flatten", [x], [math.prod(s[:axis]), math.prod(s[axis:])], axis=axis)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        shape = list(shape)
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            shape[shape.index(-1)] = math.prod(self.shape[x]) // known
        assert math.prod(shape) == math.prod(self.shape[x]), (self.shape[x], shape)
        return self.op("Reshape", [x, self.ints(shape)], shape)

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        s = self.shape[x]
        return self.op("Transpose", [x], [s[p] for p in perm], perm=list(perm))

    def channel_shuffle(self, x: str, groups: int) -> str:
        n, c, h, w = self.shape[x]
        y = self.reshape(x, [n, groups, c // groups, h, w])
        return self.reshape(self.transpose(y, [0, 2, 1, 3, 4]), [n, c, h, w])

    def softmax(self, x: str, axis: int = -1) -> str:
        return self.op("Softmax", [x], self.shape[x], axis=axis)

    # -- model -------------------------------------------------------------------------------

    def finish(self, outputs: str | Sequence[str], check: bool = False) -> onnx.ModelProto:
        """The model (IR 8, this opset), shape-inferred; with check, also through the full checker.

        Shape inference runs on a copy whose large weights have no data yet (only their dims
        matter), so that a 500 MB model is not serialized for it; its result must agree with
        the shapes tracked while building."""
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(i, TensorProto.FLOAT, self.shape[i]) for i in self.inputs],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, self.shape[o]) for o in outputs])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="edgec-samples")
        model.ir_version = 8
        large = []
        for name, arr in self.consts.items():
            t = model.graph.initializer.add()
            t.name, t.data_type = name, helper.np_dtype_to_tensor_dtype(arr.dtype)
            t.dims.extend(arr.shape)
            if arr.size > 4096 and arr.dtype == np.float32:
                large.append((t, arr))
            else:
                t.raw_data = arr.tobytes()
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        for vi in inferred.graph.value_info:
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            if vi.name in self.shape and dims != self.shape[vi.name]:
                raise AssertionError(f"{self.name}: {vi.name} inferred {dims}, built as {self.shape[vi.name]}")
        model.graph.value_info.extend(inferred.graph.value_info)
        for t, arr in large:
            t.raw_data = arr.tobytes()
        if check:
            onnx.checker.check_model(model, full_check=True)
        return model


def _broadcast(a: Sequence[int], b: Sequence[int]) -> Shape:
    """Numpy broadcasting of two static shapes."""
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + list(a), [1] * (n - len(b)) + list(b)
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return out


# -- counting ---------------------------------------------------------------------------------

_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# inputs that are buffers, not learned parameters (BN running statistics)
_NOT_PARAMS = {"BatchNormalization": (3, 4)}


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (attention products included),
    read from graphsurgeon nodes of the shape-inferred model. Element-wise ops, pooling and
    normalization are not counted, as torchvision's and the papers' GFLOPS/MAdds do not count them."""
    return sum(node_macs(n) for n in gs.import_onnx(model).nodes)


def node_macs(node: gs.Node) -> int:
    if node.op not in _MAC_OPS:
        return 0
    shape = lambda t: list(t.values.shape if isinstance(t, gs.Constant) else t.shape)  # noqa: E731
    y = shape(node.outputs[0])
    if node.op == "Conv":
        return math.prod(y) * math.prod(shape(node.inputs[1])[1:])
    if node.op == "ConvTranspose":
        return math.prod(shape(node.inputs[0])) * math.prod(shape(node.inputs[1])[1:])
    a = shape(node.inputs[0])
    if node.op == "Gemm":
        return math.prod(y) * (a[0] if node.attrs.get("transA", 0) else a[1])
    return math.prod(y) * a[-1]


def count_params(model: onnx.ModelProto) -> int:
    """Learned parameters: float initializers of rank >= 1 read by a node, each counted once,
    without BatchNormalization running statistics (as torch's ``sum(p.numel() for p in parameters())``).
    Scalars (Clip bounds, GELU constants) and int64 tensors (shapes, split sizes) are not parameters."""
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    total = 0
    for node in model.graph.node:
        skip = _NOT_PARAMS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            t = inits.get(name)
            if t is None or name in seen or i in skip or t.data_type != TensorProto.FLOAT or len(t.dims) == 0:
                continue
            seen.add(name)
            total += math.prod(t.dims)
    return total

