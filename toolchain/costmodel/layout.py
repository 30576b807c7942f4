"""Where a runtime converts activations between plain NCHW and a blocked layout.

ONNX Runtime's CPU provider (x86-64 and ARM64 MLAS builds) runs convolutions
and pools in a blocked layout, NCHWc: channels in blocks of ``block`` (16 with
AVX-512, 8 with AVX2/NEON) innermost. Its NCHWc transformer rewrites the ops it
has blocked kernels for and inserts a ``ReorderInput`` (plain -> blocked) or
``ReorderOutput`` (blocked -> plain) wherever a tensor crosses between a
blocked op and one that runs in plain layout. A run of blocked ops converts
once at its start and once at its end; a model that alternates (ShuffleNet's
grouped convs and channel-shuffle Transposes around depthwise convs) pays two
full copies of the tensor per alternation. Which ops run blocked, following the
transformer:

- Conv with constant 4-D weights: group 1 with input channels a multiple of
  4 (ONNX Runtime 1.2x fills the last block partly; fewer than ``block`` input channels: reads the plain
  input directly, no ReorderInput), depthwise (ONNX Runtime 1.2x pads its channels
  to whole blocks), or grouped with input and output channels per group multiples of
  ``block``; a grouped conv with other channel counts (ShuffleNet's) runs plain;
- Max/Average/GlobalMax/GlobalAverage pools over a multiple of ``block`` channels;
- on blocked inputs only: activations, BatchNormalization and a constant Mul
  (run as a blocked 1x1 depthwise conv), an Add/Sum of two blocked tensors,
  a channel Concat of blocked tensors each a multiple of ``block`` channels,
  nearest Upsample/Resize;
- an epilogue fused into its producer's kernel (:func:`edgec.costmodel.runtime_fusion.fused_nodes`)
  has its producer's layout;
- everything else (Transpose, Reshape, Gemm, LRN, Softmax, a constant Add, ...) runs plain.

The nodes analysed run as one session: their inputs arrive plain and the
tensors they hand on (read by a node outside them, or graph outputs) leave
plain, so a stage boundary inside a blocked run costs a conversion on each side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import onnx_graphsurgeon as gs

BLOCKED_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"})  # have NCHWc kernels
_FOLLOW_UNARY = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish",
                           "BatchNormalization", "Dropout", "Identity"})
_FOLLOW_BINARY = frozenset({"Add", "Sum"})


@dataclass(frozen=True)
class Conversion:
    """One layout conversion of a tensor; `node` is the node whose cost it joins."""

    tensor: str
    nbytes: int
    to_blocked: bool   # ReorderInput; else ReorderOutput
    node: str          # the blocked consumer (to_blocked) or the blocked producer


def blocked_nodes(nodes: Sequence[gs.Node], block: int, fused: Iterable[str] = ()) -> set[str]:
    """Names of the nodes that run in the blocked layout (see the module docstring); none if block <= 0."""
    return {n.name for n in nodes if id(n) in _blocked_ids(nodes, block, fused)}


def _blocked_ids(nodes: Sequence[gs.Node], block: int, fused: Iterable[str] = ()) -> set[int]:
    if block <= 0:
        return set()
    fused = set(fused)
    members = {id(n) for n in nodes}
    blocked: set[int] = set()

    def is_blocked(t: gs.Tensor) -> bool:
        producer = t.inputs[0] if len(t.inputs) == 1 else None
        return producer is not None and id(producer) in members and id(producer) in blocked

    for node in nodes:  # topological order
        variables = [t for t in node.inputs if not isinstance(t, gs.Constant) and t.name]
        if node.name in fused and variables:  # blocked when all it reads is (a residual from a plain tensor is not)
            if all(is_blocked(t) for t in variables):
                blocked.add(id(node))
            continue
        if node.op == "Conv":
            ok = _conv_blocked(node, block)
        elif node.op in BLOCKED_POOLS:
            ok = (len([t for t in node.outputs if t.name]) == 1 and _channels(node.inputs[0]) % block == 0
                  and len(_shape(node.inputs[0])) == 4)
        elif node.op in _FOLLOW_UNARY:
            ok = len(variables) == 1 and is_blocked(variables[0])
        elif node.op == "Mul":
            ok = len(variables) == 1 and len(node.inputs) == 2 and is_blocked(variables[0])
        elif node.op in _FOLLOW_BINARY:
            ok = (len(variables) == 2 and len(node.inputs) == 2 and all(is_blocked(t) for t in variables)
                  and _shape(variables[0]) == _shape(variables[1]))
        elif node.op == "Concat":
            ok = (_axis(node) == 1 and bool(variables) and len(variables) == len(node.inputs)
                  and all(is_blocked(t) and _channels(t) % block == 0 for t in variables))
        elif node.op in ("Upsample", "Resize"):
            ok = bool(variables) and is_blocked(variables[0]) and node.attrs.get("mode", "nearest") in (
                "nearest", b"nearest")
        else:
            ok = False
        if ok:
            blocked.add(id(node))
    return blocked


def conversions(nodes: Sequence[gs.Node], block: int, fused: Iterable[str] = (),
                outputs: Iterable[str] = ()) -> list[Conversion]:
    """The layout conversions running `nodes` as one session takes (see the module docstring).

    `outputs` names tensors that leave the session besides those read outside `nodes`
    or read by nobody (graph outputs).
    """
    nodes = list(nodes)
    blocked = _blocked_ids(nodes, block, fused)
    if not blocked:
        return []
    members = {id(n) for n in nodes}
    leaving = set(outputs)
    out: list[Conversion] = []
    seen: set[tuple[str, bool]] = set()
    for node in nodes:
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant) or not t.name:
                continue
            producer = t.inputs[0] if len(t.inputs) == 1 and id(t.inputs[0]) in members else None
            plain_source = producer is None or id(producer) not in blocked
            if id(node) in blocked and plain_source and i == 0 and _reads_blocked(node, block):
                if (t.name, True) not in seen:
                    seen.add((t.name, True))
                    out.append(Conversion(t.name, _nbytes(t), True, node.name))
        if id(node) not in blocked:
            continue
        for k, t in enumerate(node.outputs):
            if not t.name or (k > 0 and not t.outputs and t.name not in leaving):  # an unused extra output
                continue
            readers_plain = any(id(c) not in blocked for c in t.outputs)
            if (readers_plain or not t.outputs or t.name in leaving) and (t.name, False) not in seen:
                seen.add((t.name, False))
                out.append(Conversion(t.name, _nbytes(t), False, node.name))
    return out


def channel_padding(node: gs.Node, block: int) -> float:
    """How much more arithmetic a blocked conv does than its channels need (1.0 for any other node).

    The blocked kernels work on whole blocks: output channels round up to a
    multiple of `block`, and so do input channels read blocked (a group-1 conv
    reading fewer than `block` channels reads them plain, unpadded); a
    depthwise conv's channels round up once. A 24-channel 3x3 conv with
    16-channel blocks computes 32 x 32 channel pairs, 1.78x its 24 x 24.
    """
    dims = _conv_dims(node)
    if block <= 0 or dims is None:
        return 1.0
    out_ch, in_per_group, group = dims

    def up(c: int) -> float:
        return -(-c // block) * block / c

    if group > 1:
        return up(out_ch) if in_per_group == 1 and out_ch == group else 1.0
    return up(out_ch) * (up(in_per_group) if in_per_group >= block else 1.0)


def _reads_blocked(node: gs.Node, block: int) -> bool:
    """False for a group-1 conv with fewer than `block` input channels: it reads plain NCHW directly."""
    if node.op != "Conv":
        return True
    dims = _conv_dims(node)
    return not (dims is not None and dims[2] == 1 and dims[1] < block)


def _conv_dims(node: gs.Node) -> tuple[int, int, int] | None:
    """(output channels, input channels per group, group) of a 2-D Conv with constant weights; else None."""
    w = node.inputs[1] if node.op == "Conv" and len(node.inputs) > 1 else None
    if not isinstance(w, gs.Constant) or len(w.shape) != 4:
        return None
    return int(w.shape[0]), int(w.shape[1]), int(node.attrs.get("group", 1))


def _conv_blocked(node: gs.Node, block: int) -> bool:
    dims = _conv_dims(node)
    if dims is None:
        return False
    out_ch, in_per_group, group = dims
    if group > 1:
        if in_per_group == 1 and out_ch == group:  # depthwise: channels padded to whole blocks
            return True
        if out_ch % block:
            return False
        return in_per_group % block == 0 and out_ch % group == 0 and (out_ch // group) % block == 0
    return in_per_group < block or in_per_group % 4 == 0  # the last block partly filled


def _shape(t: gs.Tensor) -> list:
    return list(t.shape) if t.shape is not None else []


def _channels(t: gs.Tensor) -> int:
    shape = _shape(t)
    return int(shape[1]) if len(shape) > 1 and isinstance(shape[1], int) else -1


def _axis(node: gs.Node) -> int:
    axis = int(node.attrs.get("axis", 1))
    rank = len(_shape(node.outputs[0])) if node.outputs else 4
    return axis + rank if axis < 0 else axis


def _nbytes(t: gs.Tensor) -> int:
    from edgec.ir import tensor_nbytes
    return tensor_nbytes(t)
