"""BatchNormalization folded into the Conv before it."""

from __future__ import annotations


import numpy as np
import onnx_graphsurgeon as gs

from edgec.passes.rewrites.base import (Rule, const_value, describe, fresh_name, optional_input, producer,
                                        remove_node, sole_consumer_blocker, used)



class BatchNormIntoConv(Rule):
    """Fold an inference BatchNormalization into the Conv before it.

    Rewrite cases:
    - Conv(X, W) -> BN: the Conv gets a bias input ``b' = (0 - mean) * k + beta``;
    - Conv(X, W, b) -> BN: ``b' = (b - mean) * k + beta``;
    with ``k = scale / sqrt(var + epsilon)`` per output channel and ``W' = W * k``.
    New constants are made (the old W may be shared); the Conv writes the BN's
    output tensor, so the name the rest of the graph reads is kept.
    Not applied: the Conv output has another reader or is a graph output; W,
    the Conv bias or any BN parameter is not a constant; BN in training mode
    or with its running-statistics outputs used; non-float types.
    """

    name = "bn-into-conv"
    anchor = ("BatchNormalization",)
    pattern = "Conv(X, W, b?) -> BatchNormalization(scale, B, mean, var)"

    def check(self, graph: gs.Graph, bn: gs.Node) -> str | None:
        conv = producer(bn.inputs[0])
        if conv is None or conv.op != "Conv":
            return f"{describe(bn)} does not follow a Conv"
        if bn.inputs[0] is not conv.outputs[0]:
            return f"{describe(bn)} does not read the Conv output"
        reason = sole_consumer_blocker(graph, conv, conv.outputs[0])
        if reason:
            return reason
        if bn.attrs.get("training_mode", 0):
            return f"{describe(bn)} is in training mode"
        if not bn.attrs.get("spatial", 1):
            return f"{describe(bn)} has spatial=0"
        if any(used(graph, t) for t in bn.outputs[1:]):
            return f"{describe(bn)} running statistics outputs are used"
        w = const_value(conv.inputs[1])
        if w is None:
            return f"{describe(conv)} weight is not constant"
        if not np.issubdtype(w.dtype, np.floating):
            return f"{describe(conv)} weight is {w.dtype}, not a float type"
        bias = optional_input(conv, 2)
        if bias is not None and const_value(bias) is None:
            return f"{describe(conv)} bias is not constant"
        for label, index in (("scale", 1), ("B", 2), ("mean", 3), ("var", 4)):
            value = const_value(bn.inputs[index])
            if value is None:
                return f"BN {label} is not constant"
            if value.size != w.shape[0]:
                return f"BN {label} has {value.size} values for {w.shape[0]} output channels"
        return None

    def rewrite(self, graph: gs.Graph, bn: gs.Node) -> None:
        conv = producer(bn.inputs[0])
        w = const_value(conv.inputs[1])
        channels = w.shape[0]
        scale, beta, mean, var = (const_value(bn.inputs[i]).astype(np.float64).reshape(channels)
                                  for i in range(1, 5))
        bias = optional_input(conv, 2)
        b = const_value(bias).astype(np.float64).reshape(channels) if bias is not None else np.zeros(channels)
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        new_w = (w.astype(np.float64) * k.reshape((channels,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        new_b = ((b - mean) * k + beta).astype(w.dtype)
        w_name = fresh_name(graph, f"{conv.name}.weight_bn")
        b_name = fresh_name(graph, f"{conv.name}.bias_bn")
        conv.inputs[1] = gs.Constant(w_name, new_w)
        if len(conv.inputs) > 2:
            conv.inputs[2] = gs.Constant(b_name, new_b)
        else:
            conv.inputs.append(gs.Constant(b_name, new_b))
        y = bn.outputs[0]
        remove_node(graph, bn)
        conv.outputs[0] = y
