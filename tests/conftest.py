"""Shared fixtures: random-weight zoo models (made once per test session) and small models in ONNX text."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from edgec.zoo import write_random_zoo_model

REPO = Path(__file__).resolve().parent.parent
TRIO = REPO / "samples" / "clusters" / "edge-trio.json"
TRIO_WIFI = REPO / "samples" / "clusters" / "edge-trio-wifi.json"

# Two inputs, two outputs; `mid` is a graph output that also feeds later nodes;
# b1..b3 are three branches that all cross a boundary placed after them.
MULTI = """
<ir_version: 8, opset_import: ["" : 17]>
multi (float[1,8] x, float[1,8] y) => (float[1,8] mid, float[1,8] out) <float[8,8] w1, float[8,8] w4>
{
    a = MatMul(x, w1)
    mid = Add(a, y)
    b1 = Sigmoid(mid)
    b2 = Tanh(mid)
    b3 = Relu(mid)
    c1 = Add(b1, b2)
    c2 = Mul(c1, b3)
    d = MatMul(c2, w4)
    e = Add(d, mid)
    out = Add(e, x)
}
"""


@pytest.fixture(scope="session")
def random_zoo(tmp_path_factory):
    """name -> path of the zoo model with random weights, written on first use."""
    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = write_random_zoo_model(name, folder / f"{name}.onnx")
        return cache[name]

    return get


def save_text_model(text: str, path: Path, seed: int = 0) -> Path:
    """Parse ONNX text syntax, give float initializers random values, save."""
    import numpy as np
    from onnx import numpy_helper

    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    # `<float[8,8] w>` declarations that nothing defines become random initializers
    defined = {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output}
    for vi in list(model.graph.value_info):
        if vi.name not in defined:
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            model.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, dtype), vi.name))
            model.graph.value_info.remove(vi)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array(rng.standard_normal(arr.shape).astype(arr.dtype) * 0.5, init.name))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
