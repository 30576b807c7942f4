"""Exporter conventions the `load` pass normalises, so no later pass meets them.

- **Constant nodes become initializers.** torch writes Clip bounds, GroupNorm
  scales and Reshape shapes as Constant nodes (shared between consumers), as
  paddle2onnx does Clip bounds: as node outputs they would look like data, be
  cut across boards, hide a ReLU6 from the fusion pass and fail TensorRT's
  "must be an initializer" checks. As initializers they are constants
  everywhere: a stage that reads one gets its own copy.
- **Opsets.** A model older than opset 7 (the oldest ONNX Runtime loads) is
  upgraded with onnx's version converter to :data:`UPGRADE_TO`; one newer than
  this onnx release knows is refused, naming the newest it does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.errors import EdgecError

OLDEST_OPSET = 7  # ONNX Runtime loads opset 7 and later (onnxruntime docs, "ONNX Runtime compatibility")
UPGRADE_TO = 13  # the newest opset every unit here loads: TensorRT 8.2's parser stops at 13
_VALUE_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def check_opset(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """The model at an opset edgec handles: as it is, or upgraded from below opset 7; EdgecError otherwise."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if version is None:
        return model  # no ONNX-domain op: nothing to convert
    if version > newest:
        raise EdgecError(f"the model imports ONNX opset {version}, newer than any this edgec knows (the newest is "
                         f"{newest}, onnx {onnx.__version__}); export it at opset {newest} or lower", where=str(path))
    if version >= OLDEST_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, UPGRADE_TO)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # the converter raises RuntimeError / ValidationError with C++ messages
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgecError(f"the model imports ONNX opset {version}, older than {OLDEST_OPSET} (the oldest ONNX "
                         f"Runtime loads), and onnx's version converter cannot upgrade it ({first}); re-export "
                         f"it at opset {OLDEST_OPSET} or newer", where=str(path)) from None
    return upgraded


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn the main graph's Constant nodes into initializers of the same name; returns how many.

    A Constant whose output is a graph output stays a node (an initializer is not a computed output), as does
    one holding a sparse tensor or strings, which no backend here reads as a weight.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    kept, made = [], []
    for node in graph.node:
        value = _constant_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if value is None or node.output[0] in outputs:
            kept.append(node)
            continue
        made.append(numpy_helper.from_array(value, node.output[0]))
    if made:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(made)
        model.ir_version = max(model.ir_version, 4)  # initializers that are not graph inputs
    return len(made)


def _constant_value(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.name not in _VALUE_ATTRS:
            continue
        value = numpy_helper.to_array(attr.t) if attr.name == "value" else helper.get_attribute_value(attr)
        if attr.name == "value":
            return value if value.dtype.kind in "biufc?" else None
        dtype = np.float32 if "float" in attr.name else np.int64
        return np.asarray(value, dtype=dtype)
    return None
