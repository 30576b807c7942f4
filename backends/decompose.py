"""Function ops a target's opset lacks, rewritten as their ONNX function bodies.

HardSwish (opset 14), Mish (18), Gelu (20), LayerNormalization (17), CastLike
(15) and others are defined by ONNX as functions of older ops: HardSwish(x) =
x * HardSigmoid(x; 1/6, 1/2). A unit whose runtime stops at an older opset
(TensorRT 8.2 at 13, an old ONNX Runtime) runs the body instead, so placement
is decided by cost, not by op spelling. The bodies are ONNX's own
(``OpSchema.function_body``, or ``get_context_dependent_function`` for ops
whose body depends on attributes or input types); this module only
instantiates them: formal names bound to the node's tensors, internal names
made unique, attribute references resolved, Constant nodes made initializers.
"""

from __future__ import annotations

import onnx
from onnx import defs, helper, numpy_helper

MAX_ROUNDS = 4  # a body may use function ops of its own (Gelu's uses CastLike)


def needs_body(op_type: str, domain: str, target: int) -> bool:
    """Whether an ONNX-domain op has no schema at opset `target` (so a body is its only form there)."""
    if domain not in ("", "ai.onnx"):
        return False
    try:
        defs.get_schema(op_type, target, "")
    except defs.SchemaError:
        return True
    return False


def has_body(op_type: str, opset: int) -> bool:
    try:
        schema = defs.get_schema(op_type, opset, "")
    except defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def expand_for_opset(model: onnx.ModelProto, source: int, target: int) -> int:
    """Replace, in place, every main-graph node whose op has no schema at `target` but a function body at
    `source` with that body; returns how many nodes were expanded. Shape inference types the bodies'
    inputs, which context-dependent bodies need."""
    expanded = 0
    for _ in range(MAX_ROUNDS):
        todo = {k for k, n in enumerate(model.graph.node)  # positions: protobuf wrappers are not stable objects
                if needs_body(n.op_type, n.domain, target) and has_body(n.op_type, source)}
        if not todo:
            break
        types = _types(model)
        nodes: list[onnx.NodeProto] = []
        inits: list[onnx.TensorProto] = []
        for k, node in enumerate(model.graph.node):
            if k in todo:
                body, consts = instantiate(node, source, types)
                nodes += body
                inits += consts
                expanded += 1
            else:
                nodes.append(node)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(inits)
    return expanded


def instantiate(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto]) -> \
        tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The node's function body with its tensors: (nodes, initializers made of the body's Constant nodes)."""
    schema = defs.get_schema(node.op_type, opset, "")
    if schema.has_function:
        fn = schema.function_body
    else:
        in_types = [types.get(i, onnx.TypeProto()).SerializeToString() for i in node.input]
        fn = onnx.FunctionProto()
        fn.ParseFromString(schema.get_context_dependent_function(node.SerializeToString(), in_types))
    prefix = f"{node.name or node.op_type}__"
    rename = {formal: actual for formal, actual in zip(fn.input, node.input)}
    rename.update({formal: "" for formal in list(fn.input)[len(node.input):]})
    rename.update({formal: actual for formal, actual in zip(fn.output, node.output)})
    attrs = {a.name: a for a in node.attribute}
    defaults = {a.name: a for a in fn.attribute_proto}
    defaults.update({name: a.default_value for name, a in schema.attributes.items()
                     if a.default_value.type != onnx.AttributeProto.UNDEFINED})
    body: list[onnx.NodeProto] = []
    consts: list[onnx.TensorProto] = []
    for k, inner in enumerate(fn.node):
        new = onnx.NodeProto()
        new.CopyFrom(inner)
        new.name = f"{prefix}{k}_{inner.op_type}"
        del new.input[:]
        new.input.extend(rename.get(i, f"{prefix}{i}") if i else "" for i in inner.input)
        del new.output[:]
        new.output.extend(rename.get(o, f"{prefix}{o}") if o else "" for o in inner.output)
        resolved = []
        for a in inner.attribute:
            if a.ref_attr_name:
                source = attrs.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if source is None:
                    continue  # an optional attribute the node leaves out: the body op's default applies
                a = helper.make_attribute(a.name, helper.get_attribute_value(source))
            resolved.append(a)
        del new.attribute[:]
        new.attribute.extend(resolved)
        value = next((a for a in new.attribute if a.name == "value"), None)
        if new.op_type == "Constant" and value is not None and value.type == onnx.AttributeProto.TENSOR:
            consts.append(numpy_helper.from_array(numpy_helper.to_array(value.t), new.output[0]))
            continue
        body.append(new)
    return body, consts


def _types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001  (inference is best effort here: bodies that need no types still expand)
        inferred = model
    g = inferred.graph
    out = {v.name: v.type for v in list(g.input) + list(g.value_info) + list(g.output)}
    for t in g.initializer:
        out.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return out
