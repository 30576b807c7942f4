"""Ops whose newer form `onnx.version_converter` cannot take down, rewritten by hand where it is exact.

Used by :func:`edgec.backends.opset.convert_opset` before it restamps or
converts the rest: attributes that became inputs (or inputs that became
attributes) go back to the older form; the Softmax family, which changed
meaning at opset 13, keeps its meaning with its axis moved last.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from edgec.errors import EdgecError


def schema_at(op: str, opset: int, domain: str = "") -> defs.OpSchema | None:
    """The op's schema in force at `opset`; None where the op does not exist there."""
    try:
        return defs.get_schema(op, opset, domain)
    except defs.SchemaError:
        return None


# op -> (version that made the attribute an input, attribute name)
_INPUT_WAS_ATTRIBUTE = {
    **{op: (18, "axes") for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                                   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
    "ReduceSum": (13, "axes"), "Squeeze": (13, "axes"), "Unsqueeze": (13, "axes"), "Split": (13, "split"),
}


def rewrite_new_forms(model: onnx.ModelProto, node: onnx.NodeProto, source: int, target: int,
                      shapes: dict[str, list[int | None]], consts: dict[str, np.ndarray]) -> None:
    """Rewrite attributes added in newer opsets into what older versions take, where it is exact.

    Split-18 `num_outputs` -> a `split` input (static input shape needed);
    Pad-18 `axes` input -> full-rank `pads`; a constant `axes` input (Reduce*-18,
    ReduceSum/Squeeze/Unsqueeze-13) or `split` input (Split-13) -> the attribute
    older versions take.
    """
    moved = _INPUT_WAS_ATTRIBUTE.get(node.op_type)
    if moved is not None and source >= moved[0] > target and len(node.input) > 1 and node.input[1]:
        value = consts.get(node.input[1])
        noop = next((a.i for a in node.attribute if a.name == "noop_with_empty_axes"), 0)
        if value is not None and value.size and not noop:
            kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
            del node.attribute[:]
            node.attribute.extend(kept + [helper.make_attribute(moved[1], [int(v) for v in value.reshape(-1)])])
            del node.input[1:]
            return
    if node.op_type == "Split" and source >= 18 > target:
        n_out = next((a.i for a in node.attribute if a.name == "num_outputs"), None)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        shape = shapes.get(node.input[0])
        if n_out is None or shape is None or len(node.input) > 1 and node.input[1]:
            return
        dim = shape[axis] if -len(shape) <= axis < len(shape) else None
        if not isinstance(dim, int):
            return
        chunk = -(-dim // n_out)
        sizes = [min(chunk, dim - k * chunk) for k in range(n_out)]
        name = fresh_name(model, f"{node.name or node.output[0]}_split")
        model.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name))
        del node.input[1:]
        node.input.append(name)
        kept = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(kept)
    elif node.op_type == "Pad" and source >= 18 > target and len(node.input) > 3 and node.input[3]:
        axes = consts.get(node.input[3])
        pads = consts.get(node.input[1])
        shape = shapes.get(node.input[0])
        if axes is None or pads is None or shape is None:
            return
        rank = len(shape)
        full = np.zeros(2 * rank, np.int64)
        for k, ax in enumerate(axes.tolist()):
            ax = ax + rank if ax < 0 else ax
            full[ax] = pads[k]
            full[ax + rank] = pads[k + len(axes)]
        name = fresh_name(model, f"{node.name or node.output[0]}_pads")
        model.graph.initializer.append(numpy_helper.from_array(full, name))
        node.input[1] = name
        del node.input[3:]


_SOFTMAX_FAMILY = ("Softmax", "LogSoftmax", "Hardmax")


def softmax_over_last_axis(model: onnx.ModelProto, source: int, target: int,
                           shapes: dict[str, list[int | None]]) -> set[str]:
    """Softmax-family nodes going from opset >= 13 (one axis) to < 13 (flatten to 2-D at `axis`).

    Over the last axis both mean the same; any other axis is moved last by a
    Transpose on each side. Returns the first outputs of the nodes now safe to
    restamp; raises EdgecError where the input rank is unknown.
    """
    safe: set[str] = set()
    if not source >= 13 > target:
        return safe
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type not in _SOFTMAX_FAMILY or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        shape = shapes.get(node.input[0])
        if shape is None:
            raise EdgecError(no_form(node, source, target, "its input rank is unknown, and the older version "
                                                            "flattens the input at `axis`"))
        rank = len(shape)
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        axis = axis + rank if axis < 0 else axis
        kept = [a for a in node.attribute if a.name != "axis"]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("axis", rank - 1)])
        if axis == rank - 1:
            nodes.append(node)
        else:
            perm = [d for d in range(rank) if d != axis] + [axis]
            back = [perm.index(d) for d in range(rank)]
            base = node.name or node.output[0]
            moved_in, moved_out = fresh_name(model, f"{base}_in_last"), fresh_name(model, f"{base}_out_last")
            output = node.output[0]
            nodes.append(helper.make_node("Transpose", [node.input[0]], [moved_in], perm=perm,
                                          name=fresh_name(model, f"{base}_to_last")))
            node.input[0], node.output[0] = moved_in, moved_out
            nodes.append(node)
            nodes.append(helper.make_node("Transpose", [moved_out], [output], perm=back,
                                          name=fresh_name(model, f"{base}_from_last")))
        safe.add(node.output[0])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return safe


def fresh_name(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output} | \
            {i.name for i in model.graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def no_form(node: onnx.NodeProto, source: int, target: int, why: str) -> str:
    since = schema_at(node.op_type, source)
    version = since.since_version if since else source
    return (f"node '{node.name or node.output[0]}' ({node.op_type}-{version}) has no form at opset {target}: {why}; "
            f"place it on a unit whose runtime reads opset {version} or newer, or export the model "
            f"at opset {target} or lower")


def tensor_info(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, list], dict[str, np.ndarray]]:
    """Element type and shape of every tensor shape inference can reach, and small constants."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - best effort; restamping then checks less
        inferred = model
    types: dict[str, int] = {}
    shapes: dict[str, list] = {}
    g = inferred.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.HasField("tensor_type"):
            tt = v.type.tensor_type
            types[v.name] = tt.elem_type
            if tt.HasField("shape"):
                shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        types[t.name] = t.data_type
        shapes[t.name] = list(t.dims)
        if int(np.prod(t.dims)) <= 4096:
            consts[t.name] = numpy_helper.to_array(t)
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return types, shapes, consts
