"""ncnn benchmark models: the graphs of Tencent/ncnn's benchmark/*.param, converted to ONNX with random weights.

benchncnn (the program behind the ncnn benchmark README) runs these .param files with random
weights, so converting the .param gives exactly the graph that was timed: the same layers,
widths, strides, paddings and activations, down to ncnn's own choices (Caffe ceil-mode pooling
as explicit tail padding, HardSwish with ncnn's default alpha 0.2, SE blocks as InnerProduct on a
1-D blob). The files in ``ncnn_params/`` are copied unchanged from Tencent/ncnn at commit
cc37c10997e836e5ac4facb08c6a59d99ec09155 (2023-06-15, the commit of the README's Raspberry Pi 4
1.8 GHz run; identical to 71f377e9e9 of the 2022 runs for every model present then). Input
sizes are benchncnn's (benchmark/benchncnn.cpp).

Blob layout: an ncnn blob of dims 1/2/3 (w / h,w / c,h,w) is an ONNX tensor [1, w] / [1, h, w] /
[1, c, h, w]. Split, Dropout and Noop are aliases. Post-processing layers (PriorBox,
DetectionOutput, Yolo(v3)DetectionOutput) and a Noop that gathers several heads are dropped, and
the tensors they read become the graph outputs. Every layer's output shape is checked against
the shape hint (-23330) the .param carries. ONNX node names are prefixed with the ncnn layer name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx

from .builders import Builder

PARAMS = Path(__file__).resolve().parent / "ncnn_params"

# benchncnn.cpp: ncnn::Mat(w, h, c) per model
INPUTS = {
    "squeezenet": (227, 227, 3), "mobilenet": (224, 224, 3), "mobilenet_v2": (224, 224, 3),
    "mobilenet_v3": (224, 224, 3), "shufflenet": (224, 224, 3), "shufflenet_v2": (224, 224, 3),
    "mnasnet": (224, 224, 3), "proxylessnasnet": (224, 224, 3), "efficientnet_b0": (224, 224, 3),
    "efficientnetv2_b0": (224, 224, 3), "regnety_400m": (224, 224, 3), "blazeface": (128, 128, 3),
    "googlenet": (224, 224, 3), "resnet18": (224, 224, 3), "alexnet": (227, 227, 3), "vgg16": (224, 224, 3),
    "resnet50": (224, 224, 3), "squeezenet_ssd": (300, 300, 3), "mobilenet_ssd": (300, 300, 3),
    "mobilenet_yolo": (416, 416, 3), "mobilenetv2_yolov3": (352, 352, 3), "yolov4-tiny": (416, 416, 3),
    "nanodet_m": (320, 320, 3), "yolo-fastest-1.1": (320, 320, 3), "yolo-fastestv2": (352, 352, 3),
    "vision_transformer": (384, 384, 3), "FastestDet": (352, 352, 3),
}
POSTPROCESS = {"PriorBox", "DetectionOutput", "YoloDetectionOutput", "Yolov3DetectionOutput"}
ALIASES = {"Split", "Dropout", "Noop"}


def parse_param(text: str) -> list[dict]:
    """The layers of an ncnn .param: type, name, inputs, outputs and params {id: int | float | list}."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if lines[0] != ["7767517"]:
        raise ValueError("not an ncnn .param (magic 7767517)")
    layers = []
    for tok in lines[2:]:
        kind, name, nin, nout = tok[0], tok[1], int(tok[2]), int(tok[3])
        ins, outs = tok[4:4 + nin], tok[4 + nin:4 + nin + nout]
        params: dict[int, object] = {}
        for kv in tok[4 + nin + nout:]:
            key, value = kv.split("=", 1)
            k = int(key)
            if k <= -23300:  # array: count, then values
                params[-k - 23300] = [_number(v) for v in value.split(",")[1:]]
            else:
                params[k] = _number(value)
        layers.append(dict(type=kind, name=name, inputs=ins, outputs=outs, params=params))
    return layers


def _number(s: str) -> int | float:
    return float(s) if any(c in s for c in ".eE") else int(s)


class Converter:
    """Walks the layers of one .param and emits the ONNX graph through a Builder."""

    def __init__(self, name: str, layers: list[dict], wh_c: tuple[int, int, int], opset: int) -> None:
        w, h, c = wh_c
        self.b = Builder(f"ncnn_{name}", (1, c, h, w), opset=opset, input_name="data")
        self.blob: dict[str, str] = {}
        self.layers = layers

    def run(self) -> onnx.ModelProto:
        consumers: dict[str, int] = {}
        for layer in self.layers:
            for i in layer["inputs"]:
                consumers[i] = consumers.get(i, 0) + 1
        dropped: set[str] = set()
        outputs: list[str] = []
        for layer in self.layers:
            p, ins = layer["params"], layer["inputs"]
            sink = layer["type"] == "Noop" and len(ins) > 1  # a Noop gathering several heads
            if layer["type"] in POSTPROCESS or sink or any(i in dropped for i in ins):
                dropped.update(layer["outputs"])
                if layer["type"] != "PriorBox":  # PriorBox reads only the shapes of its inputs
                    outputs += [self.blob[i] for i in ins if i in self.blob and self.blob[i] != "data"]
                continue
            self.b.scope = layer["name"]
            if layer["type"] == "Input":
                self.blob[layer["outputs"][0]] = "data"
                continue
            if layer["type"] in ALIASES:
                for o in layer["outputs"]:
                    self.blob[o] = self.blob[ins[0]]
                continue
            handler = getattr(self, f"_{layer['type']}", None)
            if handler is None:
                raise NotImplementedError(f"ncnn layer type {layer['type']} ({layer['name']})")
            xs = [self.blob[i] for i in ins]
            ys = handler(xs, p) if len(ins) != 1 else handler(xs[0], p)
            ys = [ys] if isinstance(ys, str) else ys
            hints = p.get(30)
            for k, (o, y) in enumerate(zip(layer["outputs"], ys)):
                self.blob[o] = y
                if hints:
                    self._check_hint(layer, y, hints[4 * k:4 * k + 4])
        self.b.scope = ""
        outputs += [self.blob[o] for layer in self.layers for o in layer["outputs"]
                    if o not in consumers and o in self.blob and o not in dropped]
        return self.b.finish(list(dict.fromkeys(outputs)))

    def _check_hint(self, layer: dict, y: str, hint: list) -> None:
        dims, w, h, c = hint
        want = {1: [w], 2: [h, w], 3: [c, h, w]}.get(dims)
        got = self.b.shape[y][1:]
        if want is not None and got != want:
            raise AssertionError(f"ncnn layer {layer['name']} ({layer['type']}): built {got}, .param says {want}")

    # -- helpers ----------------------------------------------------------------------------

    def nshape(self, x: str) -> list[int]:
        """ncnn shape of a blob in ONNX order: [w], [h, w] or [c, h, w]."""
        return self.b.shape[x][1:]

    def reshape(self, x: str, shape: list[int]) -> str:
        return x if self.nshape(x) == list(shape) else self.b.reshape(x, [1] + list(shape))

    def activation(self, y: str, kind: int, params: list) -> str:
        b = self.b
        if kind == 0:
            return y
        if kind == 1:
            return b.act(y, "relu")
        if kind == 2:
            return b.act(y, f"leaky:{params[0]}")
        if kind == 3:
            return b.act(y, f"clip:{params[0]}:{params[1]}")
        if kind == 4:
            return b.act(y, "sigmoid")
        if kind == 5:
            return self._Mish(y, {})
        if kind == 6:
            return b.hardswish(y, params[0], params[1])
        raise NotImplementedError(f"activation_type {kind}")

    # -- layers -----------------------------------------------------------------------------

    def _Convolution(self, x: str, p: dict, depthwise: bool = False) -> str:
        b = self.b
        cout, kw = p.get(0, 0), p.get(1, 0)
        kh = p.get(11, kw)
        dil, sw = p.get(2, 1), p.get(3, 1)
        sh = p.get(13, sw)
        group = p.get(7, 1) if depthwise else 1
        act = (p.get(9, 0), p.get(10, []))
        if len(self.nshape(x)) == 1:  # ncnn runs a 1x1 Convolution on a 1-D blob as InnerProduct
            return self._InnerProduct(x, {0: cout, 2: p.get(6, 0), 9: act[0], 10: act[1]})
        cin, h, w = self.nshape(x)
        assert p.get(12, dil) == dil, "anisotropic dilation"
        if p.get(6, 0) != cout * cin // group * kh * kw:
            raise AssertionError(f"weight_data_size {p.get(6)} != {cout}x{cin // group}x{kh}x{kw}")
        pad = _conv_pads(p, h, w, dil * (kh - 1) + 1, dil * (kw - 1) + 1, sh, sw)
        y = b.conv(x, cout, (kh, kw), (sh, sw), pad, group, dil, bias=bool(p.get(5, 0)),
                   gain=2.0 if act[0] in (1, 2, 3) else 1.0)
        return self.activation(y, *act)

    def _ConvolutionDepthWise(self, x: str, p: dict) -> str:
        return self._Convolution(x, p, depthwise=True)

    def _Deconvolution(self, x: str, p: dict, depthwise: bool = False) -> str:
        k, stride = p.get(1, 0), p.get(3, 1)
        assert p.get(11, k) == k and p.get(13, stride) == stride and p.get(2, 1) == 1, "square, undilated"
        left = p.get(4, 0)
        right, top = p.get(15, left), p.get(14, left)
        out_pad = p.get(18, 0)
        y = self.b.conv_transpose(x, p.get(0, 0), k, stride, [top, left, p.get(16, top), right],
                                  p.get(7, 1) if depthwise else 1, [p.get(19, out_pad), out_pad], bool(p.get(5, 0)))
        return self.activation(y, p.get(9, 0), p.get(10, []))

    def _DeconvolutionDepthWise(self, x: str, p: dict) -> str:
        return self._Deconvolution(x, p, depthwise=True)

    def _InnerProduct(self, x: str, p: dict) -> str:
        b = self.b
        n = p.get(0, 0)
        k = p.get(2, 0) // n
        s = self.nshape(x)
        if len(s) == 2 and s[1] == k:  # per-row GEMM on a 2-D blob
            y = b.linear(x, n, bias=True)
        else:
            assert math.prod(s) == k, f"InnerProduct over {s} with {k} inputs"
            flat = x if len(s) == 1 else b.flatten(x)
            y = b.fc(flat, n)
        return self.activation(y, p.get(9, 0), p.get(10, []))

    def _Pooling(self, x: str, p: dict) -> str:
        b = self.b
        kind = "max" if p.get(0, 0) == 0 else "avg"
        if p.get(4, 0):
            return b.gap(x, flatten=True, kind=kind)
        assert not p.get(7, 0), "adaptive pooling"
        kw = p.get(1, 0)
        kh, sw = p.get(11, kw), p.get(2, 1)
        sh = p.get(12, sw)
        left = p.get(3, 0)
        right, top = p.get(14, left), p.get(13, left)
        bottom = p.get(15, top)
        _, h, w = self.nshape(x)
        mode = p.get(5, 0)
        if mode == 0:  # full padding: extend the tail so every input pixel is covered (Caffe ceil mode)
            bottom += (-(h + top + bottom - kh)) % sh
            right += (-(w + left + right - kw)) % sw
        elif mode in (2, 3):  # SAME_UPPER / SAME_LOWER
            hp, wp = kh + (h - 1) // sh * sh - h, kw + (w - 1) // sw * sw - w
            hp, wp = max(hp, 0), max(wp, 0)
            top, left = (hp // 2, wp // 2) if mode == 2 else (hp - hp // 2, wp - wp // 2)
            bottom, right = hp - top, wp - left
        return b.pool(x, kind, (kh, kw), (sh, sw), [top, left, bottom, right],
                      count_include_pad=bool(p.get(6, 0)))

    def _Eltwise(self, xs: list[str], p: dict) -> str:
        op = {0: "Mul", 1: "Add", 2: "Max"}[p.get(0, 0)]
        coeffs = p.get(1, [])
        if op == "Add" and coeffs and any(c != 1 for c in coeffs):
            xs = [self.b.mul(x, self.b.scalar(c)) for x, c in zip(xs, coeffs)]
        y = xs[0]
        for x in xs[1:]:
            y = self.b.op(op, [y, x], self.b.shape[y])
        return y

    def _BinaryOp(self, xs, p: dict) -> str:
        b = self.b
        op = p.get(0, 0)
        if p.get(1, 0):  # with scalar
            a, c = xs, b.scalar(p.get(2, 0.0))
        else:
            a, c = self._broadcast(*xs)
        if op in (7, 8, 9):  # rsub, rdiv, rpow
            a, c, op = c, a, op - 6
        name = {0: "Add", 1: "Sub", 2: "Mul", 3: "Div", 4: "Max", 5: "Min", 6: "Pow"}[op]
        return b._binary(name, a, c)

    def _broadcast(self, a: str, c: str) -> tuple[str, str]:
        """ncnn's rule: the lower-rank operand's axes are aligned to the inner (or channel) axes."""
        sa, sc = self.nshape(a), self.nshape(c)
        if len(sa) < len(sc):
            return self.reshape(a, _expand(sa, sc)), c
        if len(sc) < len(sa):
            return a, self.reshape(c, _expand(sc, sa))
        return a, c

    def _Concat(self, xs: list[str], p: dict) -> str:
        axis = p.get(0, 0)
        return self.b.concat(xs, (axis + len(self.nshape(xs[0])) if axis < 0 else axis) + 1)

    def _Slice(self, x: str, p: dict) -> list[str]:
        s = self.nshape(x)
        axis = p.get(1, 0)
        axis = axis + len(s) if axis < 0 else axis
        slices, total, sizes = p.get(0, []), s[axis], []
        for i, n in enumerate(slices):
            sizes.append((total - sum(sizes)) // (len(slices) - i) if n == -233 else n)
        return self.b.split(x, sizes, axis + 1)

    def _Crop(self, x: str, p: dict) -> str:
        s = self.nshape(x)
        dims = len(s)
        if 9 in p and 10 in p:  # numpy-style starts/ends/axes
            axes = p.get(11) or list(range(dims))
            starts, ends = p[9], p[10]
        else:  # offsets (c, h, w) and sizes
            names = {1: [(0, 3, 6)], 2: [(1, 4, 7), (0, 3, 6)], 3: [(2, 5, 8), (1, 4, 7), (0, 3, 6)]}[dims]
            axes, starts, ends = [], [], []
            for ax, (off, size, off2) in enumerate(names):
                o, n = p.get(off, 0), p.get(size, 0)
                end = s[ax] - p.get(off2, 0)
                if n > 0:
                    end = min(end, o + n)
                axes.append(ax), starts.append(o), ends.append(end)
        out, axes1, st1, en1 = list(s), [], [], []
        for ax, st, en in zip(axes, starts, ends):  # ncnn: -233 is open, end <= 0 counts from the end
            ax = ax + dims if ax < 0 else ax
            st = 0 if st == -233 else (st if st >= 0 else s[ax] + st)
            en = s[ax] if en == -233 else min(s[ax], en if en > 0 else s[ax] + en)
            out[ax] = en - st
            axes1.append(ax + 1), st1.append(st), en1.append(en)
        b = self.b
        return b.op("Slice", [x, b.ints(st1), b.ints(en1), b.ints(axes1)], [1] + out)

    def _Softmax(self, x: str, p: dict) -> str:
        axis = p.get(0, 0)
        return self.b.softmax(x, (axis + len(self.nshape(x)) if axis < 0 else axis) + 1)

    def _ReLU(self, x: str, p: dict) -> str:
        slope = p.get(0, 0.0)
        return self.b.act(x, f"leaky:{slope}" if slope else "relu")

    def _Clip(self, x: str, p: dict) -> str:
        return self.b.act(x, f"clip:{p.get(0, -3.4e38)}:{p.get(1, 3.4e38)}")

    def _Sigmoid(self, x: str, p: dict) -> str:
        return self.b.act(x, "sigmoid")

    def _TanH(self, x: str, p: dict) -> str:
        return self.b.act(x, "tanh")

    def _Swish(self, x: str, p: dict) -> str:
        return self.b.act(x, "silu")

    def _Mish(self, x: str, p: dict) -> str:
        s = self.b.shape[x]
        return self.b.mul(x, self.b.op("Tanh", [self.b.op("Softplus", [x], s)], s))

    def _HardSigmoid(self, x: str, p: dict) -> str:
        return self.b.op("HardSigmoid", [x], self.b.shape[x], alpha=p.get(0, 0.2), beta=p.get(1, 0.5))

    def _HardSwish(self, x: str, p: dict) -> str:
        return self.b.hardswish(x, p.get(0, 0.2), p.get(1, 0.5))

    def _GELU(self, x: str, p: dict) -> str:
        return self.b.act(x, "gelu_tanh" if p.get(0, 0) else "gelu")

    def _ShuffleChannel(self, x: str, p: dict) -> str:
        groups, c = p.get(0, 1), self.nshape(x)[0]
        return self.b.channel_shuffle(x, c // groups if p.get(1, 0) else groups)

    def _Flatten(self, x: str, p: dict) -> str:
        return self.b.flatten(x)

    def _Reshape(self, x: str, p: dict) -> str:
        s = self.nshape(x)
        total = math.prod(s)
        named = dict(zip({1: "w", 2: "hw", 3: "chw"}[len(s)][::-1], s[::-1]))
        want = [(k, p.get(i, -233)) for k, i in (("c", 2), ("h", 1), ("w", 0))]
        want = [(k, named.get(k, 1) if v == 0 else v) for k, v in want if v != -233]
        dims = [v for _, v in want]
        if -1 in dims:
            dims[dims.index(-1)] = total // math.prod(d for d in dims if d != -1)
        return self.reshape(x, dims)

    def _Permute(self, x: str, p: dict) -> str:
        s = self.nshape(x)
        order = {2: ["wh", "hw"], 3: ["whc", "hwc", "wch", "cwh", "hcw", "chw"]}[len(s)][p.get(0, 0)]
        index = {k: i for i, k in enumerate({2: "hw", 3: "chw"}[len(s)])}
        return self.b.transpose(x, [0] + [index[k] + 1 for k in reversed(order)])

    def _Padding(self, x: str, p: dict) -> str:
        b = self.b
        top, bottom, left, right = (p.get(i, 0) for i in range(4))
        front, behind = p.get(7, 0), p.get(8, 0)
        c, h, w = self.nshape(x)
        mode = {0: "constant", 1: "edge", 2: "reflect"}[p.get(4, 0)]
        pads = b.ints([0, front, top, left, 0, behind, bottom, right])
        inputs = [x, pads] + ([b.scalar(p.get(5, 0.0))] if mode == "constant" else [])
        return b.op("Pad", inputs, [1, c + front + behind, h + top + bottom, w + left + right], mode=mode)

    def _Interp(self, x: str, p: dict) -> str:
        b = self.b
        c, h, w = self.nshape(x)
        oh, ow = p.get(3, 0), p.get(4, 0)
        if not oh or not ow:
            oh, ow = int(h * p.get(1, 1.0)), int(w * p.get(2, 1.0))
        mode = {1: "nearest", 2: "linear", 3: "cubic"}[p.get(0, 0)]
        coord = "align_corners" if p.get(6, 0) else ("asymmetric" if mode == "nearest" else "half_pixel")
        return b.op("Resize", [x, "", "", b.ints([1, c, oh, ow])], [1, c, oh, ow], mode=mode,
                    coordinate_transformation_mode=coord, nearest_mode="floor")

    def _LRN(self, x: str, p: dict) -> str:
        assert p.get(0, 0) == 0, "LRN within channel"
        return self.b.op("LRN", [x], self.b.shape[x], size=p.get(1, 5), alpha=float(p.get(2, 1.0)),
                         beta=float(p.get(3, 0.75)), bias=float(p.get(4, 1.0)))

    def _BatchNorm(self, x: str, p: dict) -> str:
        return self.b.bn(x, max(float(p.get(1, 0.0)), 1e-12))

    def _MemoryData(self, xs: list, p: dict) -> str:
        w, h, c = p.get(0, 0), p.get(1, 0), p.get(2, 0)
        shape = [c, h, w] if c else ([h, w] if h else [w])
        data = 0.02 * self.b.rng.standard_normal([1] + shape, dtype=np.float32)
        return self.b.const(data, self.b.fresh("memorydata"))

    def _Reduction(self, x: str, p: dict) -> str:
        assert p.get(5, 0) == 1 and not p.get(1, 1), "Reduction: only fixbug0 axes"
        s = self.nshape(x)
        axes = [(a + len(s) if a < 0 else a) + 1 for a in p.get(3, [])]
        keep = p.get(4, 0)
        op = {3: "ReduceMean", 4: "ReduceMax", 5: "ReduceMin"}[p.get(0, 0)]
        out = [1] + [1 if i + 1 in axes else d for i, d in enumerate(s) if keep or i + 1 not in axes]
        y = self.b.op(op, [x], out, axes=axes, keepdims=keep)
        return y if p.get(2, 1.0) == 1.0 else self.b.mul(y, self.b.scalar(p[2]))

    def _LayerNorm(self, x: str, p: dict) -> str:
        assert p.get(0, 0) == self.nshape(x)[-1], "LayerNorm over the innermost axis"
        return self.b.layernorm(x, float(p.get(1, 0.001)))

    def _MultiHeadAttention(self, xs: list[str], p: dict) -> str:
        """q, k, v in-projections, per-head softmax(q k^T * scale) v, out-projection; 2-D [tokens, dim] blobs."""
        b = self.b
        q, k, v = (xs * 3)[:3] if len(xs) == 1 else xs
        dim, heads = p.get(0, 0), p.get(1, 1)
        hd = dim // heads
        scale = p.get(6, 1.0 / math.sqrt(hd))

        def heads_of(t: str) -> str:
            t = b.linear(t, dim, gain=1.0)
            return b.transpose(b.reshape(t, [1, self.nshape(t)[0], heads, hd]), [0, 2, 1, 3])

        qh, kh, vh = heads_of(q), heads_of(k), heads_of(v)
        att = b.softmax(b.matmul(b.mul(qh, b.scalar(scale)), b.transpose(kh, [0, 1, 3, 2])), -1)
        y = b.transpose(b.matmul(att, vh), [0, 2, 1, 3])
        y = b.reshape(y, [1, self.nshape(q)[0], dim])
        return b.linear(y, dim, gain=1.0)


def _conv_pads(p: dict, h: int, w: int, ext_h: int, ext_w: int, sh: int, sw: int) -> list[int]:
    """[top, left, bottom, right] of an ncnn Convolution (explicit, or -233/-234 for SAME_UPPER/LOWER)."""
    left = p.get(4, 0)
    right, top = p.get(15, left), p.get(14, left)
    bottom = p.get(16, top)
    if left in (-233, -234):
        hp = max(ext_h + (h - 1) // sh * sh - h, 0)
        wp = max(ext_w + (w - 1) // sw * sw - w, 0)
        if left == -233:
            return [hp // 2, wp // 2, hp - hp // 2, wp - wp // 2]
        return [hp - hp // 2, wp - wp // 2, hp // 2, wp // 2]
    return [top, left, bottom, right]


def _expand(small: list[int], big: list[int]) -> list[int]:
    """ncnn BinaryOp: the shape a lower-rank operand takes against a higher-rank one (ONNX order)."""
    if len(small) == 1:
        w = small[0]
        if len(big) == 2:
            return [w, 1] if w == big[0] else [1, w]
        return [w, 1, 1] if w == big[0] else [1, 1, w]
    if len(small) == 2 and len(big) == 3:  # Mat.reshape(1, w, h): w=1, h=w, c=h
        return [small[0], small[1], 1]
    raise NotImplementedError(f"broadcast {small} to {big}")


def build(name: str, opset: int | None = None) -> onnx.ModelProto:
    """The ncnn benchmark model `name` (benchmark/<name>.param) as ONNX, at benchncnn's input size."""
    layers = parse_param((PARAMS / f"{name}.param").read_text())
    if opset is None:
        opset = 17 if any(layer["type"] == "LayerNorm" for layer in layers) else 13
    return Converter(name, layers, INPUTS[name], opset).run()


def models() -> list[str]:
    return sorted(p.stem for p in PARAMS.glob("*.param"))
