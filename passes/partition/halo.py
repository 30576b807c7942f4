"""Receptive-field arithmetic along the height of NCHW feature maps.

A node is *row-local* when each row of its output depends only on a band of
rows of each input: convolutions and pooling (a window of rows), element-wise
ops, BN, LRN and channel/width Concat (the same rows). For such a node,
:func:`input_rows` says which rows of an input a band of output rows reads,
and :func:`window` gives the numbers behind it. Pads count as rows outside
``[0, H)``: a band that reaches past the image border reads padding there,
and only there; a band's inner edges read real neighbouring rows (the halo).

:func:`needed_rows` runs this backwards through a run of nodes: the rows of
every tensor in the run that a band of rows of the run's output needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

Rows = tuple[int, int]  # [lo, hi) along axis 2

WINDOWED = ("Conv", "MaxPool", "AveragePool")
SAME_ROWS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Erf", "Identity", "Dropout",
    "BatchNormalization", "LRN", "Cast", "Mish", "Gelu", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu",
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "Concat",
})


@dataclass(frozen=True)
class Window:
    """How a windowed op walks the rows: effective kernel extent, stride, pad above and below."""

    extent: int
    stride: int
    pad_top: int
    pad_bottom: int

    def reads(self, out: Rows, height: int) -> Rows:
        """Input rows (clipped to the image) that output rows `out` read."""
        lo, hi = out
        return max(0, lo * self.stride - self.pad_top), min(height, (hi - 1) * self.stride - self.pad_top + self.extent)

    def pads_for(self, out: Rows, height: int) -> tuple[int, int]:
        """Pads above and below that make the op, run on :meth:`reads` of `out`, produce exactly `out`:
        the original pad at a true border, none at an inner edge."""
        lo, hi = out
        return max(0, self.pad_top - lo * self.stride), max(0, (hi - 1) * self.stride - self.pad_top + self.extent - height)


def _shape(t: gs.Tensor) -> list:
    return list(t.shape) if t.shape is not None else []


def _static_4d(t: gs.Tensor) -> bool:
    shape = _shape(t)
    return len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape)


def window(node: gs.Node) -> Window:
    """The row window of a Conv, MaxPool or AveragePool on 4-D tensors (call :func:`refusal` first)."""
    attrs = node.attrs
    if node.op == "Conv":
        kernel = list(attrs.get("kernel_shape") or _shape(node.inputs[1])[2:])
    else:
        kernel = list(attrs["kernel_shape"])
    k = int(kernel[0])
    stride = int((attrs.get("strides") or [1, 1])[0])
    dilation = int((attrs.get("dilations") or [1, 1])[0])
    extent = (k - 1) * dilation + 1
    height = int(_shape(node.inputs[0])[2])
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-height // stride)
        total = max(0, (out - 1) * stride + extent - height)
        small, big = total // 2, total - total // 2
        top, bottom = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        top = bottom = 0
    else:
        pads = list(attrs.get("pads") or [0, 0, 0, 0])
        top, bottom = int(pads[0]), int(pads[2])
    return Window(extent, stride, top, bottom)


def refusal(node: gs.Node) -> str | None:
    """Why `node` is not row-local (None when it is): what keeps a band of its output from being computed
    from bands of its inputs alone."""
    op = node.op
    if node.domain not in (None, "", "ai.onnx"):
        return f"{op} is a custom op"
    if op not in WINDOWED and op not in SAME_ROWS:
        return f"{op} mixes rows or is not known to act locally in space"
    outs = [t for t in node.outputs if t.name]
    if len(outs) != 1:
        return f"{op} has {len(outs)} outputs"
    out = outs[0]
    if not _static_4d(out):
        return f"output '{out.name}' is not a static 4-D (NCHW) tensor"
    height = out.shape[2]
    if op == "Concat":
        axis = int(node.attrs.get("axis", 1)) % 4
        if axis in (0, 2):
            return f"Concat on axis {axis} joins along the batch or the rows"
    for i, t in enumerate(node.inputs):
        if not t.name:
            continue
        if isinstance(t, gs.Constant):
            if op in WINDOWED or op == "BatchNormalization" or _const_broadcasts_rows(t):
                continue
            return f"constant input '{t.name}' varies along the rows"
        if not _static_4d(t):
            return f"input '{t.name}' is not a static 4-D (NCHW) tensor"
        if op not in WINDOWED and t.shape[2] != height:
            return f"input '{t.name}' has {t.shape[2]} rows, the output {height}"
        if op in WINDOWED and i > 0:
            return f"{op} reads its weights from a variable tensor '{t.name}'"
    if op in WINDOWED:
        attrs = node.attrs
        if op == "Conv" and len(_shape(node.inputs[1])) != 4:
            return "Conv is not 2-D"
        if op != "Conv" and len(attrs.get("kernel_shape", [])) != 2:
            return f"{op} is not 2-D"
    return None


def _const_broadcasts_rows(t: gs.Constant) -> bool:
    """A constant operand broadcasts over the rows: rank below 2, or 1 along the row axis."""
    shape = _shape(t)
    if len(shape) > 4:
        return False
    return len(shape) < 2 or shape[-2] == 1


def input_rows(node: gs.Node, out: Rows) -> Rows:
    """Rows of the node's first input (and, for same-row ops, of every variable input) that rows `out`
    of its output read."""
    if node.op in WINDOWED:
        return window(node).reads(out, int(node.inputs[0].shape[2]))
    return out


def hull(a: Rows | None, b: Rows) -> Rows:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]))


def needed_rows(nodes: Sequence[gs.Node], wanted: dict[str, Rows]) -> dict[str, Rows]:
    """Rows of every tensor read or made in `nodes` (topological order) that the rows `wanted` of the
    run's outputs need. A tensor read by several nodes needs the hull of their needs."""
    need: dict[str, Rows] = dict(wanted)
    for node in reversed(list(nodes)):
        out = node.outputs[0].name
        if out not in need:
            continue
        band = input_rows(node, need[out])
        for t in _variables(node):
            need[t.name] = hull(need.get(t.name), band)
    return need


def _variables(node: gs.Node) -> Iterable[gs.Variable]:
    return [t for t in node.inputs if t.name and not isinstance(t, gs.Constant)]


def split_rows(height: int, shares: Sequence[float]) -> list[Rows]:
    """Cut rows [0, height) into contiguous bands in proportion to `shares`, each at least one row."""
    shares = np.asarray(shares, dtype=np.float64)
    if len(shares) > height:
        raise ValueError(f"{len(shares)} bands of {height} rows")
    bounds = np.round(np.cumsum(shares) / shares.sum() * height).astype(int)
    cuts = [0]
    for k, b in enumerate(bounds[:-1]):
        cuts.append(int(min(max(b, cuts[-1] + 1), height - (len(shares) - 1 - k))))
    cuts.append(height)
    return [(cuts[k], cuts[k + 1]) for k in range(len(shares))]
