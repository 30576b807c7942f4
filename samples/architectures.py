"""Reference architectures as ONNX graphs with random weights, for checking the cost model
against published per-board latencies (ncnn benchmark README, torch2trt's Jetson Nano table).

Two families, built without torch:

* torchvision definitions (``archs/torchvision.py``, one short function each): resnet18-152
  (v1.5), vgg11-19, alexnet, squeezenet1_0/1_1, densenet121/169, mobilenet_v2/v3, shufflenet_v2,
  mnasnet1_0, efficientnet_b0, regnet_y_400mf, googlenet, convnext_tiny, vit_b_16, vit_tiny.
  1x3x224x224, opset 13 (opset 17 for convnext_tiny and the ViTs), BN folded into conv biases.
* ncnn benchmark definitions (``archs/ncnn.py``): every ``benchmark/*.param`` of Tencent/ncnn
  converted layer by layer, named ``ncnn_<param name>``, at benchncnn's input size. These are the
  graphs the ncnn README timed (Caffe ResNet-50 with the stride on the 1x1, SqueezeNet v1.1 at
  227, MobileNet v1, ShuffleNet v1 g=3, ...).

    python samples/architectures.py --list
    python samples/architectures.py resnet50 -o resnet50.onnx
    python samples/architectures.py ncnn_mobilenet_v3 --check

In Python (with ``samples/`` on sys.path): ``from architectures import ARCHITECTURES``;
``ARCHITECTURES["resnet50"]()`` returns a shape-inferred ``onnx.ModelProto``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

import onnx

try:  # samples/ on sys.path (a script run, the tests)
    from archs import ncnn, torchvision
    from archs.builders import count_macs, count_params
except ModuleNotFoundError:  # imported as samples.architectures from the repository root
    from samples.archs import ncnn, torchvision
    from samples.archs.builders import count_macs, count_params

TORCHVISION = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg13", "vgg16", "vgg19",
    "alexnet", "squeezenet1_0", "squeezenet1_1", "densenet121", "densenet169", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0", "mnasnet1_0", "efficientnet_b0",
    "regnet_y_400mf", "googlenet", "convnext_tiny", "vit_b_16", "vit_tiny",
]

ARCHITECTURES: dict[str, Callable[[], onnx.ModelProto]] = {
    **{name: getattr(torchvision, name) for name in TORCHVISION},
    **{f"ncnn_{name}": functools.partial(ncnn.build, name) for name in ncnn.models()},
}

__all__ = ["ARCHITECTURES", "count_macs", "count_params"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="architecture (see --list)")
    parser.add_argument("-o", "--output", help="ONNX file to write (default: NAME.onnx)")
    parser.add_argument("--list", action="store_true", help="list the architectures and exit")
    parser.add_argument("--check", action="store_true", help="also run onnx.checker (full_check)")
    args = parser.parse_args(argv)
    if args.list:
        for name in ARCHITECTURES:
            print(name)
        return 0
    if args.name is None:
        parser.error("give an architecture name, or --list")
    if args.name not in ARCHITECTURES:
        parser.error(f"unknown architecture {args.name!r}; --list shows them")
    model = ARCHITECTURES[args.name]()
    if args.check:
        onnx.checker.check_model(model, full_check=True)
    out = args.output or f"{args.name}.onnx"
    onnx.save(model, out)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    print(f"wrote {out}: input {shape}, opset {model.opset_import[0].version}, "
          f"{count_macs(model) / 1e6:.1f} M MACs, {count_params(model) / 1e6:.3f} M params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
