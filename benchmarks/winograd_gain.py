"""ncnn's Winograd speed-up on 3x3 stride-1 convs: the same layers with Winograd on and off, in one run.

ncnn runs a dense 3x3 stride-1 conv with Winograd (F(6,3), F(4,3) or F(2,3),
picked per shape); with ``use_winograd_convolution`` off it runs the same conv
as im2col + SGEMM, which is how ONNX Runtime's MLAS runs every conv. The ratio
of the two times is the factor by which ncnn's figures understate ONNX Runtime
on that work (``WINOGRAD_GAIN_NCNN`` in edgec.costmodel.builtin, which
benchmarks/published_latency.py uses to convert ncnn figures per conv class).

The layers are the 3x3 stride-1 convs of a calibration model's ncnn benchmark
graph (samples/archs/ncnn_params; ResNet-50 by default), each distinct shape
timed alone as a one-layer ncnn net with zero weights, Winograd on and off
interleaved, the fastest of the repeats (the least disturbed by other load).
Needs the `ncnn` Python package (``pip install -e '.[bench]'``).

    python benchmarks/winograd_gain.py [--model resnet50] [--threads 1] [--repeats 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "samples" / "archs" / "ncnn_params"


def conv3x3s1_layers(param_text: str) -> list[tuple[str, tuple[int, int, int], dict[str, str]]]:
    """(name, input (c, h, w), layer params) of every dense 3x3 stride-1 dilation-1 Convolution in an ncnn .param."""
    shapes: dict[str, tuple[int, int, int]] = {}
    layers = []
    for line in param_text.splitlines()[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        inputs, outputs = parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out]
        params = dict(p.split("=", 1) for p in parts[4 + n_in + n_out:])
        hint = params.get("-23330")
        if hint:  # output shape hints: count, then (dims, w, h, c) per output
            values = [int(v) for v in hint.split(",")[1:]]
            for i, blob in enumerate(outputs):
                dims, w, h, c = values[4 * i:4 * i + 4]
                shapes[blob] = (c, h, w) if dims == 3 else (w, 1, 1)
        kernel = params.get("1", "0")
        if (kind == "Convolution" and kernel == "3" and params.get("11", kernel) == "3"
                and params.get("3", "1") == "1" and params.get("13", params.get("3", "1")) == "1"
                and params.get("2", "1") == "1" and inputs[0] in shapes):
            layers.append((name, shapes[inputs[0]], params))
    return layers


def _net(shape: tuple[int, int, int], params: dict[str, str], winograd: bool, threads: int):
    import ncnn

    c, h, w = shape
    body = " ".join(f"{k}={v}" for k, v in params.items() if k != "-23330")
    text = f"7767517\n2 2\nInput data 0 1 data 0={w} 1={h} 2={c}\nConvolution conv 1 1 data out {body}\n"
    net = ncnn.Net()
    net.opt.use_winograd_convolution = winograd
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.load_param_mem(text)
    net.load_model(ncnn.DataReaderFromEmpty())  # zero weights: the kernels' time does not depend on values
    return net


def _time(net, data) -> float:
    ex = net.create_extractor()
    start = time.perf_counter()
    ex.input("data", data)
    ex.extract("out")
    return (time.perf_counter() - start) * 1e3


def measure(model: str, threads: int, repeats: int) -> list[tuple[str, tuple[int, int, int], int, float, float]]:
    """Per distinct 3x3 stride-1 layer: (first layer's name x count, input shape, output channels, ms with
    Winograd, ms without); ms is the fastest of the repeats (the least disturbed by other load)."""
    import ncnn
    import numpy as np

    distinct: dict[tuple, list] = {}
    for name, shape, params in conv3x3s1_layers((PARAMS / f"{model}.param").read_text()):
        key = (shape, tuple(sorted(params.items())))
        distinct.setdefault(key, [name, shape, params, 0])[3] += 1
    out = []
    for name, shape, params, count in distinct.values():
        array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        data = ncnn.Mat(array)  # wraps `array` without a copy: keep it alive
        nets = {flag: _net(shape, params, flag, threads) for flag in (True, False)}
        for net in nets.values():
            _time(net, data)  # first run packs the weights
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeats):
            for flag, net in nets.items():
                times[flag].append(_time(net, data))
        out.append((f"{name} x{count}", shape, int(params["0"]), count * min(times[True]), count * min(times[False])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="ncnn benchmark graph (samples/archs/ncnn_params)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        import ncnn  # noqa: F401
    except ImportError:
        print("winograd_gain.py: needs the ncnn Python package: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if not (PARAMS / f"{args.model}.param").exists():
        print(f"winograd_gain.py: {PARAMS / args.model}.param not found; pick a file of {PARAMS}", file=sys.stderr)
        return 2
    rows = measure(args.model, args.threads, args.repeats)
    print(f"ncnn {ncnn.__version__}, {args.threads} thread(s), {args.model}: dense 3x3 stride-1 convs, fastest of "
          f"{args.repeats}, Winograd on and off interleaved; ms x the layers of that shape")
    print(f"  {'layer':22s} {'input c,h,w':>14s} {'out c':>6s} {'winograd ms':>12s} {'im2col+gemm ms':>15s} {'gain':>6s}")
    for name, (c, h, w), m, on, off in rows:
        print(f"  {name[:22]:22s} {f'{c},{h},{w}':>14s} {m:6d} {on:12.3f} {off:15.3f} {off / on:6.2f}")
    on, off = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"  total {len(rows)} layers: {on:.2f} ms with Winograd, {off:.2f} ms without: gain {off / on:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
