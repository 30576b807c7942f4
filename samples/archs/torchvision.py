"""torchvision classification models (as torchvision defines them, v0.13+), 1x3x224x224, 1000 classes.

Each function follows torchvision's module of the same name: widths, strides, kernel sizes,
groups and where the stride sits. BatchNormalization that directly follows a conv is folded
into its bias, as torch.onnx.export (eval) does; BN that does not follow a conv (DenseNet's
pre-activation norm1 and norm5, after a Concat) is kept. Dropout is absent (inference). torch's
adaptive average pool to the size the features already have (VGG 7x7, AlexNet 6x6 at 224) is
the identity and is left out. ConvNeXt and the ViTs are built at opset 17, with the
LayerNormalization op and GELU as its Erf body, as torch exports them at opset 17.
"""

from __future__ import annotations

import math

import onnx

from .builders import Builder

# -- ResNet (v1.5: the stride is on the bottleneck's 3x3) ----------------------------------------


def _resnet(name: str, block: str, layers: list[int]) -> onnx.ModelProto:
    b = Builder(name)
    x = b.conv("input", 64, 7, 2, act="relu")
    x = b.pool(x, "max", 3, 2, 1)
    cin, expansion = 64, 4 if block == "bottleneck" else 1
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            cout = planes * expansion
            if block == "basic":
                y = b.conv(x, planes, 3, stride, act="relu")
                y = b.conv(y, planes, 3, gain=0.5)
            else:
                y = b.conv(x, planes, 1, act="relu")
                y = b.conv(y, planes, 3, stride, act="relu")
                y = b.conv(y, cout, 1, gain=0.5)
            short = b.conv(x, cout, 1, stride, gain=0.5) if stride != 1 or cin != cout else x
            x = b.act(b.add(y, short), "relu")
            cin = cout
    return b.finish(b.fc(b.gap(x), 1000, gain=1.0))


def resnet18() -> onnx.ModelProto:
    return _resnet("resnet18", "basic", [2, 2, 2, 2])


def resnet34() -> onnx.ModelProto:
    return _resnet("resnet34", "basic", [3, 4, 6, 3])


def resnet50() -> onnx.ModelProto:
    return _resnet("resnet50", "bottleneck", [3, 4, 6, 3])


def resnet101() -> onnx.ModelProto:
    return _resnet("resnet101", "bottleneck", [3, 4, 23, 3])


def resnet152() -> onnx.ModelProto:
    return _resnet("resnet152", "bottleneck", [3, 8, 36, 3])


# -- VGG (no BN) and AlexNet --------------------------------------------------------------------

_VGG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def _classifier(b: Builder, x: str, hidden: int = 4096) -> onnx.ModelProto:
    x = b.fc(b.flatten(x), hidden, act="relu")
    x = b.fc(x, hidden, act="relu")
    return b.finish(b.fc(x, 1000, gain=1.0))


def _vgg(name: str) -> onnx.ModelProto:
    b = Builder(name)
    x = "input"
    for v in _VGG[name]:
        x = b.pool(x, "max", 2, 2) if v == "M" else b.conv(x, v, 3, act="relu")
    return _classifier(b, x)


def vgg11() -> onnx.ModelProto:
    return _vgg("vgg11")


def vgg13() -> onnx.ModelProto:
    return _vgg("vgg13")


def vgg16() -> onnx.ModelProto:
    return _vgg("vgg16")


def vgg19() -> onnx.ModelProto:
    return _vgg("vgg19")


def alexnet() -> onnx.ModelProto:
    """torchvision's single-tower 'one weird trick' AlexNet: 64-192-384-256-256."""
    b = Builder("alexnet")
    x = b.pool(b.conv("input", 64, 11, 4, 2, act="relu"), "max", 3, 2)
    x = b.pool(b.conv(x, 192, 5, act="relu"), "max", 3, 2)
    x = b.conv(b.conv(x, 384, 3, act="relu"), 256, 3, act="relu")
    x = b.pool(b.conv(x, 256, 3, act="relu"), "max", 3, 2)
    return _classifier(b, x)


# -- SqueezeNet --------------------------------------------------------------------------------


def _fire(b: Builder, x: str, squeeze: int, e1: int, e3: int) -> str:
    s = b.conv(x, squeeze, 1, act="relu")
    return b.concat([b.conv(s, e1, 1, act="relu"), b.conv(s, e3, 3, act="relu")])


def _squeezenet(name: str, version: str) -> onnx.ModelProto:
    b = Builder(name)
    pool = lambda t: b.pool(t, "max", 3, 2, ceil=True)  # noqa: E731
    if version == "1_0":
        x = pool(b.conv("input", 96, 7, 2, pad=0, act="relu"))
        plan = [(16, 64), (16, 64), (32, 128), "M", (32, 128), (48, 192), (48, 192), (64, 256), "M", (64, 256)]
    else:
        x = pool(b.conv("input", 64, 3, 2, pad=0, act="relu"))
        plan = [(16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192), (64, 256), (64, 256)]
    for p in plan:
        x = pool(x) if p == "M" else _fire(b, x, p[0], p[1], p[1])
    x = b.conv(x, 1000, 1, act="relu", gain=1.0)
    return b.finish(b.gap(x))


def squeezenet1_0() -> onnx.ModelProto:
    return _squeezenet("squeezenet1_0", "1_0")


def squeezenet1_1() -> onnx.ModelProto:
    return _squeezenet("squeezenet1_1", "1_1")


# -- DenseNet (pre-activation: norm1 and norm5 stay BatchNormalization) --------------------------


def _densenet(name: str, blocks: list[int], growth: int = 32, init: int = 64, bn_size: int = 4) -> onnx.ModelProto:
    b = Builder(name)
    x = b.pool(b.conv("input", init, 7, 2, act="relu"), "max", 3, 2, 1)
    features = [x]
    for i, n in enumerate(blocks):
        for _ in range(n):
            cat = b.concat(features) if len(features) > 1 else features[0]
            y = b.conv(b.act(b.bn(cat), "relu"), bn_size * growth, 1, bias=True, act="relu")  # norm2 folded
            features.append(b.conv(y, growth, 3, bias=False))
        x = b.concat(features)
        if i != len(blocks) - 1:
            x = b.conv(b.act(b.bn(x), "relu"), b.shape[x][1] // 2, 1, bias=False)
            features = [b.pool(x, "avg", 2, 2)]
    x = b.act(b.bn(x), "relu")
    return b.finish(b.fc(b.gap(x), 1000, gain=1.0))


def densenet121() -> onnx.ModelProto:
    return _densenet("densenet121", [6, 12, 24, 16])


def densenet169() -> onnx.ModelProto:
    return _densenet("densenet169", [6, 12, 32, 32])


# -- MobileNets, MnasNet, EfficientNet -----------------------------------------------------------


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def mobilenet_v2() -> onnx.ModelProto:
    b = Builder("mobilenet_v2")
    x, cin = b.conv("input", 32, 3, 2, act="relu6"), 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            x = _inverted(b, x, cin * t, c, 3, s if i == 0 else 1, "relu6")
            cin = c
    x = b.conv(x, 1280, 1, act="relu6")
    return b.finish(b.fc(b.gap(x), 1000, gain=1.0))


def _inverted(b: Builder, x: str, hidden: int, cout: int, k: int, stride: int, act: str,
              se: int = 0, se_act: str = "relu", se_gate: str = "sigmoid") -> str:
    """Inverted residual / MBConv: 1x1 expand (when widths differ), kxk depthwise, optional SE, 1x1 project."""
    cin = b.shape[x][1]
    y = b.conv(x, hidden, 1, act=act) if hidden != cin else x
    y = b.conv(y, hidden, k, stride, group=hidden, act=act)
    if se:
        y = b.se(y, se, se_act, se_gate)
    y = b.conv(y, cout, 1, gain=1.0)
    return b.add(x, y) if stride == 1 and cin == cout else y


_MV3 = {  # in, kernel, expanded, out, SE, activation, stride
    "large": [(16, 3, 16, 16, 0, "relu", 1), (16, 3, 64, 24, 0, "relu", 2), (24, 3, 72, 24, 0, "relu", 1),
              (24, 5, 72, 40, 1, "relu", 2), (40, 5, 120, 40, 1, "relu", 1), (40, 5, 120, 40, 1, "relu", 1),
              (40, 3, 240, 80, 0, "hswish", 2), (80, 3, 200, 80, 0, "hswish", 1),
              (80, 3, 184, 80, 0, "hswish", 1), (80, 3, 184, 80, 0, "hswish", 1),
              (80, 3, 480, 112, 1, "hswish", 1), (112, 3, 672, 112, 1, "hswish", 1),
              (112, 5, 672, 160, 1, "hswish", 2), (160, 5, 960, 160, 1, "hswish", 1),
              (160, 5, 960, 160, 1, "hswish", 1)],
    "small": [(16, 3, 16, 16, 1, "relu", 2), (16, 3, 72, 24, 0, "relu", 2), (24, 3, 88, 24, 0, "relu", 1),
              (24, 5, 96, 40, 1, "hswish", 2), (40, 5, 240, 40, 1, "hswish", 1), (40, 5, 240, 40, 1, "hswish", 1),
              (40, 5, 120, 48, 1, "hswish", 1), (48, 5, 144, 48, 1, "hswish", 1),
              (48, 5, 288, 96, 1, "hswish", 2), (96, 5, 576, 96, 1, "hswish", 1),
              (96, 5, 576, 96, 1, "hswish", 1)],
}


def _mobilenet_v3(variant: str, opset: int) -> onnx.ModelProto:
    b = Builder(f"mobilenet_v3_{variant}", opset=opset)
    x = b.conv("input", 16, 3, 2, act="hswish")
    for _, k, exp, out, se, act, s in _MV3[variant]:
        x = _inverted(b, x, exp, out, k, s, act, _divisible(exp / 4) if se else 0, "relu", "hsigmoid")
    x = b.conv(x, 6 * b.shape[x][1], 1, act="hswish")
    x = b.fc(b.gap(x), 1280 if variant == "large" else 1024, act="hswish")
    return b.finish(b.fc(x, 1000, gain=1.0))


def mobilenet_v3_large(opset: int = 13) -> onnx.ModelProto:
    return _mobilenet_v3("large", opset)


def mobilenet_v3_small(opset: int = 13) -> onnx.ModelProto:
    return _mobilenet_v3("small", opset)


def mnasnet1_0() -> onnx.ModelProto:
    """torchvision MNASNet 1.0 (MnasNet-B1: no SE), depths 32-16-24-40-80-96-192-320."""
    b = Builder("mnasnet1_0")
    x = b.conv("input", 32, 3, 2, act="relu")
    x = b.conv(x, 32, 3, group=32, act="relu")
    x = b.conv(x, 16, 1, gain=1.0)
    for cout, k, s, t, n in [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2),
                             (192, 5, 2, 6, 4), (320, 3, 1, 6, 1)]:
        for i in range(n):
            x = _inverted(b, x, b.shape[x][1] * t, cout, k, s if i == 0 else 1, "relu")
    x = b.conv(x, 1280, 1, act="relu")
    return b.finish(b.fc(b.mean_hw(x), 1000, gain=1.0))


def efficientnet_b0() -> onnx.ModelProto:
    b = Builder("efficientnet_b0")
    x = b.conv("input", 32, 3, 2, act="silu")
    for t, k, s, cin, cout, n in [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
                                  (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                                  (6, 3, 1, 192, 320, 1)]:
        for i in range(n):
            c = b.shape[x][1]
            x = _inverted(b, x, c * t, cout, k, s if i == 0 else 1, "silu", max(1, c // 4), "silu", "sigmoid")
    x = b.conv(x, 1280, 1, act="silu")
    return b.finish(b.fc(b.gap(x), 1000, gain=1.0))


# -- ShuffleNetV2, RegNet, GoogLeNet ----------------------------------------------------------


def shufflenet_v2_x1_0() -> onnx.ModelProto:
    b = Builder("shufflenet_v2_x1_0")
    x = b.pool(b.conv("input", 24, 3, 2, act="relu"), "max", 3, 2, 1)
    for cout, n in [(116, 4), (232, 8), (464, 4)]:
        for i in range(n):
            half = cout // 2
            if i == 0:
                left = b.conv(b.conv(x, b.shape[x][1], 3, 2, group=b.shape[x][1], gain=1.0), half, 1, act="relu")
                right = x
            else:
                left, right = b.split(x, [half, half])
            right = b.conv(right, half, 1, act="relu")
            right = b.conv(right, half, 3, 2 if i == 0 else 1, group=half, gain=1.0)
            right = b.conv(right, half, 1, act="relu")
            x = b.channel_shuffle(b.concat([left, right]), 2)
    x = b.conv(x, 1024, 1, act="relu")
    return b.finish(b.fc(b.mean_hw(x), 1000, gain=1.0))


def regnet_y_400mf() -> onnx.ModelProto:
    """RegNetY-400MF: depth 16, w0 48, wa 27.89, wm 2.09, group width 8, SE 0.25 of the block input."""
    b = Builder("regnet_y_400mf")
    x = b.conv("input", 32, 3, 2, act="relu")
    for width, depth in _regnet_stages(16, 48, 27.89, 2.09, 8):
        for i in range(depth):
            cin, stride = b.shape[x][1], 2 if i == 0 else 1
            y = b.conv(x, width, 1, act="relu")
            y = b.conv(y, width, 3, stride, group=width // 8, act="relu")
            y = b.se(y, int(round(0.25 * cin)), "relu", "sigmoid")
            y = b.conv(y, width, 1, gain=0.5)
            short = b.conv(x, width, 1, stride, gain=0.5) if cin != width or stride != 1 else x
            x = b.act(b.add(y, short), "relu")
    return b.finish(b.fc(b.gap(x), 1000, gain=1.0))


def _regnet_stages(depth: int, w0: int, wa: float, wm: float, group: int) -> list[tuple[int, int]]:
    """torchvision BlockParams.from_init_params: quantized per-block widths, grouped into stages."""
    widths = []
    for i in range(depth):
        cap = round(math.log((i * wa + w0) / w0) / math.log(wm))
        widths.append(int(round(w0 * wm ** cap / 8)) * 8)
    stages: list[list[int]] = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    # widths compatible with the group width (bottleneck multiplier 1)
    return [(int(round(w / min(group, w))) * min(group, w), d) for w, d in stages]


def _inception(b: Builder, x: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> str:
    b1 = b.conv(x, c1, 1, act="relu")
    b2 = b.conv(b.conv(x, c3r, 1, act="relu"), c3, 3, act="relu")
    b3 = b.conv(b.conv(x, c5r, 1, act="relu"), c5, 3, act="relu")  # torchvision's "5x5" branch is 3x3
    b4 = b.conv(b.pool(x, "max", 3, 1, 1, ceil=True), pp, 1, act="relu")
    return b.concat([b1, b2, b3, b4])


def googlenet() -> onnx.ModelProto:
    """torchvision GoogLeNet without the auxiliary heads and without transform_input."""
    b = Builder("googlenet")
    pool = lambda t, k=3: b.pool(t, "max", k, 2, ceil=True)  # noqa: E731
    x = pool(b.conv("input", 64, 7, 2, act="relu"))
    x = pool(b.conv(b.conv(x, 64, 1, act="relu"), 192, 3, act="relu"))
    for cfg in [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
                (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M2",
                (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]:
        x = pool(x, 3 if cfg == "M" else 2) if isinstance(cfg, str) else _inception(b, x, *cfg)
    return b.finish(b.fc(b.gap(x), 1000, gain=1.0))


# -- ConvNeXt and ViT (opset 17) ----------------------------------------------------------------


def _layernorm2d(b: Builder, x: str, eps: float = 1e-6) -> str:
    """torchvision LayerNorm2d: permute to NHWC, LayerNorm over C, permute back."""
    return b.transpose(b.layernorm(b.transpose(x, [0, 2, 3, 1]), eps), [0, 3, 1, 2])


def convnext_tiny() -> onnx.ModelProto:
    b = Builder("convnext_tiny", opset=17)
    x = _layernorm2d(b, b.conv("input", 96, 4, 4, pad=0, gain=1.0))
    for i, (dim, depth) in enumerate([(96, 3), (192, 3), (384, 9), (768, 3)]):
        if i > 0:
            x = b.conv(_layernorm2d(b, x), dim, 2, 2, pad=0, gain=1.0)
        for _ in range(depth):
            y = b.conv(x, dim, 7, group=dim, gain=1.0)
            y = b.layernorm(b.transpose(y, [0, 2, 3, 1]), 1e-6)
            y = b.linear(b.linear(y, 4 * dim, act="gelu"), dim, gain=1.0)
            y = b.transpose(y, [0, 3, 1, 2])
            y = b.mul(y, b.const(0.1 * b.rng.random((dim, 1, 1), dtype="float32"), b.fresh("layer_scale")))
            x = b.add(y, x)
    x = b.gap(x, flatten=False)
    x = b.flatten(_layernorm2d(b, x))
    return b.finish(b.fc(x, 1000, gain=1.0))


def attention(b: Builder, x: str, heads: int) -> str:
    """nn.MultiheadAttention(x, x, x) as torch exports it: one in-projection, per-head scaled
    QK^T, Softmax, AV, the out-projection."""
    n, tokens, dim = b.shape[x]
    hd = dim // heads
    qkv = b.linear(x, 3 * dim, gain=1.0)
    qkv = b.transpose(b.reshape(qkv, [n, tokens, 3, heads, hd]), [2, 0, 3, 1, 4])  # 3, N, H, T, hd
    q, k, v = (b.reshape(t, [n, heads, tokens, hd]) for t in b.split(qkv, [1, 1, 1], axis=0))
    q = b.mul(q, b.scalar(1.0 / math.sqrt(hd)))
    att = b.softmax(b.matmul(q, b.transpose(k, [0, 1, 3, 2])), -1)
    y = b.reshape(b.transpose(b.matmul(att, v), [0, 2, 1, 3]), [n, tokens, dim])
    return b.linear(y, dim, gain=1.0)


def _vit(name: str, patch: int, dim: int, depth: int, heads: int, mlp: int, size: int = 224) -> onnx.ModelProto:
    b = Builder(name, (1, 3, size, size), opset=17)
    x = b.conv("input", dim, patch, patch, pad=0, gain=1.0)
    x = b.transpose(b.reshape(x, [1, dim, -1]), [0, 2, 1])
    cls = b.const(0.02 * b.rng.standard_normal((1, 1, dim), dtype="float32"), "class_token")
    x = b.concat([cls, x], axis=1)
    tokens = b.shape[x][1]
    x = b.add(x, b.const(0.02 * b.rng.standard_normal((1, tokens, dim), dtype="float32"), "pos_embedding"))
    for _ in range(depth):
        x = b.add(x, attention(b, b.layernorm(x, 1e-6), heads))
        y = b.linear(b.linear(b.layernorm(x, 1e-6), mlp, act="gelu"), dim, gain=1.0)
        x = b.add(x, y)
    x = b.layernorm(x, 1e-6)
    x = b.op("Gather", [x, b.const(0, "index_0", dtype="int64")], [1, dim], axis=1)
    return b.finish(b.fc(x, 1000, gain=1.0))


def vit_b_16() -> onnx.ModelProto:
    return _vit("vit_b_16", 16, 768, 12, 12, 3072)


def vit_tiny() -> onnx.ModelProto:
    """torchvision's VisionTransformer at DeiT-Tiny size: patch 16, dim 192, depth 12, 3 heads, MLP 768."""
    return _vit("vit_tiny", 16, 192, 12, 3, 768)
