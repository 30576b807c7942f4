"""MatMul + constant bias turned into Gemm."""

from __future__ import annotations


import numpy as np
import onnx_graphsurgeon as gs

from edgec.passes.rewrites.base import (Rule, const_value, describe, node_position, producer, remove_node,
                                        sole_consumer_blocker)



def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts one way (numpy rules) to ``target``."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


class MatMulAddIntoGemm(Rule):
    """Turn MatMul(A, B) + constant bias into Gemm(A, B, C).

    Rewrite cases:
    - Add(MatMul(A, B), C) and Add(C, MatMul(A, B)): Gemm(A, B, C), named as the
      MatMul was, writing the Add's output tensor.
    Not applied: A is not 2-D; B is not a constant 2-D tensor; C is not a
    constant or does not broadcast to [M, N]; the MatMul output has another
    reader or is a graph output; non-float types (Gemm in old opsets).
    """

    name = "matmul-add-into-gemm"
    anchor = ("Add",)
    pattern = "MatMul(A[M,K], B:const[K,N]) -> Add(C:const)"

    def _parts(self, add: gs.Node) -> tuple[gs.Node, gs.Tensor] | None:
        for i in (0, 1):
            mm = producer(add.inputs[i])
            if mm is not None and mm.op == "MatMul":
                return mm, add.inputs[1 - i]
        return None

    def check(self, graph: gs.Graph, add: gs.Node) -> str | None:
        parts = self._parts(add)
        if parts is None:
            return f"{describe(add)} has no MatMul input"
        mm, c = parts
        if add.inputs[0] is add.inputs[1]:
            return f"{describe(add)} adds the MatMul output to itself"
        reason = sole_consumer_blocker(graph, mm, mm.outputs[0])
        if reason:
            return reason
        a, b = mm.inputs
        if a.shape is None or len(a.shape) != 2:
            rank = "unknown rank" if a.shape is None else f"rank {len(a.shape)}"
            return f"{describe(mm)} input A has {rank}, Gemm needs 2-D"
        if not isinstance(b, gs.Constant) or len(b.shape) != 2:  # shape and dtype only: the weights stay unread
            return f"{describe(mm)} input B is not a constant 2-D tensor"
        if not np.issubdtype(b.dtype, np.floating):
            return f"{describe(mm)} weight is {np.dtype(b.dtype)}, Gemm here needs a float type"
        c_value = const_value(c)
        if c_value is None:
            return f"bias of {describe(add)} is not constant"
        target = (a.shape[0], b.shape[1])
        if not _broadcasts_to(c_value.shape, target):
            return f"bias of {describe(add)} has shape {list(c_value.shape)}, not broadcastable to {list(target)}"
        if graph.opset < 7:
            return f"opset {graph.opset} Gemm needs the broadcast attribute"
        return None

    def rewrite(self, graph: gs.Graph, add: gs.Node) -> None:
        mm, c = self._parts(add)
        a, b = mm.inputs
        y = add.outputs[0]
        name = mm.name
        position = node_position(graph, mm)
        remove_node(graph, add)
        remove_node(graph, mm)
        gemm = gs.Node("Gemm", name=name, inputs=[a, b, c], outputs=[y])
        graph.nodes.insert(position, gemm)
