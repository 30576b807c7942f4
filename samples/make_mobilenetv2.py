"""Build MobileNetV2 1.0 (224x224, 1000 classes) as ONNX, opset 13, random weights.

Sandler et al. 2018, Table 2: a 3x3 stem, 17 inverted-residual blocks (1x1
expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 linear projection, residual Add when
stride 1 and widths match), a 1x1 conv to 1280, global pooling and a classifier.
BatchNormalization is folded into the conv biases (as exported for inference);
ReLU6 is Clip(0, 6). 300 M multiply-adds.

    python samples/make_mobilenetv2.py mobilenetv2.onnx
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (expansion t, output channels c, repeats n, first stride s)
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
            numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
        ]
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def _param(self, name: str, shape: list[int], fan_in: int) -> str:
        data = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        name = self._name("conv")
        w = self._param(f"{name}_w", [cout, cin // group, k, k], cin // group * k * k)
        b = self._param(f"{name}_b", [cout], cout)
        y = f"{name}_out"
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=group))
        if not relu6:
            return y
        act = self._name("relu6")
        self.nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [f"{act}_out"], name=act))
        return f"{act}_out"

    def block(self, x: str, cin: int, cout: int, stride: int, t: int) -> str:
        hidden = cin * t
        y = self.conv(x, cin, hidden, 1) if t != 1 else x
        y = self.conv(y, hidden, hidden, 3, stride=stride, group=hidden)
        y = self.conv(y, hidden, cout, 1, relu6=False)
        if stride == 1 and cin == cout:
            add = self._name("add")
            self.nodes.append(helper.make_node("Add", [x, y], [f"{add}_out"], name=add))
            y = f"{add}_out"
        return y


def build_mobilenetv2(seed: int = 0, num_classes: int = 1000) -> onnx.ModelProto:
    """MobileNetV2 1.0 at 224x224 with random weights."""
    b = _Builder(seed)
    x = b.conv("input", 3, 32, 3, stride=2)
    cin = 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            x = b.block(x, cin, c, s if i == 0 else 1, t)
            cin = c
    x = b.conv(x, cin, 1280, 1)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool_out"], name="pool"))
    b.nodes.append(helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1))
    w = b._param("fc_w", [num_classes, 1280], 1280)
    bias = b._param("fc_b", [num_classes], num_classes)
    b.nodes.append(helper.make_node("Gemm", ["flat_out", w, bias], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes, "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_classes])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgec-samples")
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else "mobilenetv2.onnx"
    onnx.save(build_mobilenetv2(), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
