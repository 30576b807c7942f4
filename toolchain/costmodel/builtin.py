"""Built-in unit profiles of the reference boards, and the rough profile of a unit with none.

Each profile describes the runtime the bundle runs on that unit: ONNX Runtime's
CPU provider on the ARM cores, a TensorRT fp16 engine on the Nano's GPU. Each
figure cites where it comes from (``sources``); two per unit are solved from
two published whole-model latencies (the calibration recipe below), and every
other published figure of that unit is validation
(``benchmarks/published_latency.py`` prints both). A profile measured on the
board (``edgec profile -o FILE``) wins over these (edgec.costmodel.resolve).
"""

from __future__ import annotations

from edgec.cluster import ComputeUnit
from edgec.costmodel.profile import UnitProfile, default_grouped_efficiency

_FACTS = "device-facts.md"
_DATA = "benchmarks/data/published_latency.json"

# -- what the ARM CPU profiles model: ONNX Runtime's MLAS, read from its source and observed here --------------
#
# - every conv is im2col + SGEMM (onnxruntime #12834: "MLAS only has the IM2COL + Gemm implementation of Conv";
#   convolve.cpp: MlasConvPrepare picks GemmDirect for 1x1 stride-1 unpadded convs, else ExpandThenGemm(Segmented));
#   no Winograd, so a 3x3 conv reaches the 1x1's efficiency per FLOP (tests/test_runtime_ops.py times both);
# - a depthwise conv is that too, one GEMM of depth 9 and height 1 per channel (onnxruntime #26688, 2025-12, adds
#   the first dedicated ARM64 depthwise kernel, after the ORT versions the boards run), and so is a grouped one: the
#   whole column buffer of each group is written and read back (work.py's column_bytes), mostly from L2:
#   ``im2col_bandwidth_gbs`` = 2 x the activation bandwidth (assumption). A dense conv's im2col runs in cache-sized
#   segments interleaved with its GEMM and is not charged (a 3x3 conv takes about the 1x1's time per FLOP here);
# - the im2col/packing passes and the kernel do not overlap at batch 1: ``overlap`` 0, compute + memory;
# - data movement (Concat, Split, Slice, Transpose) is one copy at DRAM speed: ``copy_bandwidth_gbs`` =
#   ``bandwidth_gbs``; Reshape/Flatten/Squeeze are views (ORT reuses the buffer; only the node overhead).
#
# Calibration recipe (every ARM CPU unit): peak from the cores, clock and FLOP/cycle; DRAM bandwidth and the per-node
# overhead are assumptions (sources); every GEMM-based class (conv, pointwise, depthwise, grouped, gemm) shares one
# efficiency E (MLAS runs them all through the same SGEMM); elementwise, pool and norm 0.05 and other 0.02 of peak for
# their arithmetic (memory-bound in practice). E and the activation bandwidth A are then solved (alternating
# bisections, edgec.costmodel.calibrate) so that a compute-heavy model (ResNet-50; ResNet-18 on the XU4 big, which has
# no ResNet-50 figure) and a depthwise-heavy one (MobileNetV2) reproduce their published latency x the ORT/ncnn ratio
# of their Winograd share (ort_over_ncnn below).
#
# The Nano GPU (TensorRT fp16): fp16 buffers (``float_bytes`` 2); 3x3 stride-1 convs run as Winograd F(2x2,3x3) on
# Maxwell (cuDNN's fused Winograd kernels, 36 -> 16 multiplies: ``winograd_gain`` 2.25); pointwise chains fused into
# the conv (runtime_fusion); one kernel launch per remaining layer. E is solved from ResNet-50 and the DRAM bandwidth
# (activations and copies at the same bandwidth) from AlexNet, whose 61 M FC weights dominate.

# ncnn figures -> ONNX Runtime ms, per conv class. ncnn runs dense 3x3 stride-1 convs as Winograd, MLAS as im2col +
# SGEMM (above), so the ratio between them depends on a model's share s of FLOPs in such convs:
#   ORT ms / ncnn ms = ORT_OVER_NCNN / (1 - s + s / WINOGRAD_GAIN_NCNN)
# ORT_OVER_NCNN (the ratio on all other work) is solved from the only published same-board pair, YOLOv8n and YOLOv8s
# on one Raspberry Pi 4 (their 3x3 stride-1 shares from their layer lists: benchmarks/published_latency.py
# yolov8_conv_macs, which reproduces Ultralytics' 8.7 and 28.6 GFLOPs), and WINOGRAD_GAIN_NCNN is measured: ncnn's
# own 3x3 stride-1 layers of the ResNet-50 calibration graph with Winograd on and off (benchmarks/winograd_gain.py).
YOLOV8_ORT_NCNN_MS: dict[str, tuple[float, float]] = {"YOLOv8n": (560.04, 414.73), "YOLOv8s": (1436.33, 1042.39)}
YOLOV8_WINOGRAD_SHARE: dict[str, float] = {"YOLOv8n": 0.664, "YOLOv8s": 0.611}
WINOGRAD_GAIN_NCNN = 1.6
WINOGRAD_GAIN_NCNN_SOURCE = (
    "measured: benchmarks/winograd_gain.py, ncnn 1.0.20261020 (pip), the 16 dense 3x3 stride-1 convs of ncnn's "
    "resnet50.param (a calibration model), each alone with use_winograd_convolution on and off: 1.51-1.67 in two runs "
    "on a loaded x86-64 host (AVX-512), one thread; ncnn's ARM kernels use the same F(6,3)/F(4,3)/F(2,3) transforms "
    "(assumed to save the same share on the boards)")


def _winograd_factor(share: float) -> float:
    return 1.0 - share + share / WINOGRAD_GAIN_NCNN


ORT_OVER_NCNN = round(sum(ort / ncnn * _winograd_factor(YOLOV8_WINOGRAD_SHARE[m])
                          for m, (ort, ncnn) in YOLOV8_ORT_NCNN_MS.items()) / len(YOLOV8_ORT_NCNN_MS), 3)
ORT_OVER_NCNN_SOURCE = (
    f"ONNX Runtime / ncnn = {ORT_OVER_NCNN} on work other than dense 3x3 stride-1 convs, and that / (1 - s + s / "
    f"{WINOGRAD_GAIN_NCNN}) for a model with share s of its FLOPs in them (ncnn's Winograd gain, {WINOGRAD_GAIN_NCNN}: "
    "benchmarks/winograd_gain.py). Solved from ORT / ncnn = 1.35 (YOLOv8n, s 0.664) and 1.38 (YOLOv8s, s 0.611), "
    "640x640 fp32, same Raspberry Pi 4, same study (Ultralytics RPi guide, YOLOv8-era 'Detailed Comparison Table'; "
    "published_latency.md 'Ratios between runtimes'). The only published same-board pair; assumed for the Nano CPU "
    "(A57), XU4 big (A15) and LITTLE (A7) too, where no ONNX Runtime figure exists")


def ort_over_ncnn(winograd_share: float) -> float:
    """ONNX Runtime ms per ncnn ms (same board, clock, threads) of a model with this share of its FLOPs in dense 3x3
    stride-1 convs, which ncnn runs as Winograd and ONNX Runtime's MLAS as im2col + SGEMM."""
    return ORT_OVER_NCNN / _winograd_factor(winograd_share)


# clock (GHz) each profile's peak assumes: published figures at another clock are scaled to it
BUILTIN_CLOCK_GHZ: dict[str, float] = {
    "raspberry-pi-4.cpu": 1.8, "jetson-nano.cpu": 1.43, "jetson-nano.gpu": 0.9216,
    "odroid-xu4.big": 2.0, "odroid-xu4.little": 1.4,
}

# the two calibration models of each unit (architectures registry names)
CALIBRATION_MODELS: dict[str, tuple[str, str]] = {
    "raspberry-pi-4.cpu": ("ncnn_resnet50", "ncnn_mobilenet_v2"),
    "jetson-nano.cpu": ("ncnn_resnet50", "ncnn_mobilenet_v2"),
    "odroid-xu4.big": ("ncnn_resnet18", "ncnn_mobilenet_v2"),
    "odroid-xu4.little": ("ncnn_resnet50", "ncnn_mobilenet_v2"),
    "jetson-nano.gpu": ("resnet50", "alexnet"),
}


def _cite(line: str) -> str:
    return f"{_FACTS}: {line}"


def _eff(conv: float, pointwise: float, depthwise: float, gemm: float,
         elementwise: float = 0.05, pool: float = 0.05, norm: float = 0.05,
         memory: float = 1.0, other: float = 0.02) -> dict[str, float]:
    return {"conv": conv, "pointwise": pointwise, "depthwise": depthwise,
            "grouped": default_grouped_efficiency(conv, depthwise), "gemm": gemm,
            "elementwise": elementwise, "pool": pool, "norm": norm, "memory": memory, "other": other}


def gemm_eff(e: float) -> dict[str, float]:
    """One efficiency for every class the runtime runs through its SGEMM (conv, pointwise, depthwise, grouped, gemm)."""
    return _eff(conv=e, pointwise=e, depthwise=e, gemm=e)


def ort_cpu_profile(name: str, *, peak: float, bandwidth: float, e: float, act: float, overhead: float,
                    sources: dict[str, str]) -> UnitProfile:
    """An ONNX Runtime ARM CPU profile of the recipe above: E and A free, the rest from the hardware."""
    return UnitProfile(name=name, peak_gflops=peak, bandwidth_gbs=bandwidth, activation_bandwidth_gbs=act,
                       efficiency=gemm_eff(e), overhead_ms=overhead, threads=4, sources=sources,
                       copy_bandwidth_gbs=bandwidth, im2col_bandwidth_gbs=2 * act, overlap=0.0)


def trt_gpu_profile(name: str, *, peak: float, bandwidth: float, e: float, overhead: float,
                    sources: dict[str, str]) -> UnitProfile:
    """A TensorRT fp16 profile of the recipe above: E and the DRAM bandwidth free."""
    return UnitProfile(name=name, peak_gflops=peak, bandwidth_gbs=bandwidth, activation_bandwidth_gbs=bandwidth,
                       efficiency=gemm_eff(e), overhead_ms=overhead, threads=1, sources=sources, runtime="tensorrt",
                       copy_bandwidth_gbs=bandwidth, winograd_gain=2.25, float_bytes=2)


def _cpu_sources(unit: str, peak: str, bandwidth: str, overhead: str) -> dict[str, str]:
    first, second = CALIBRATION_MODELS[unit]
    solved = (f"solved with the activation bandwidth from {first} and {second} ({_DATA}, clock-scaled to "
              f"{BUILTIN_CLOCK_GHZ[unit]} GHz) x ORT/ncnn (per conv class: {ORT_OVER_NCNN} / (1 - s + s / {WINOGRAD_GAIN_NCNN})); recipe in edgec/costmodel/builtin.py")
    return {
        "runtime": "ONNX Runtime CPU provider (MLAS: im2col + SGEMM, no Winograd, depthwise via im2col)",
        "peak_gflops": peak, "bandwidth_gbs": bandwidth, "copy_bandwidth_gbs": "= bandwidth_gbs: a copy streams at "
        "DRAM speed (assumption)", "efficiency": solved, "activation_bandwidth_gbs": solved,
        "im2col_bandwidth_gbs": "2 x activation bandwidth: the column buffer stays in L2 (assumption)",
        "overlap": "0: im2col/packing passes and the SGEMM kernel run one after the other at batch 1 (assumption)",
        "overhead_ms": overhead, "ort_over_ncnn": ORT_OVER_NCNN_SOURCE,
    }


BUILTIN_PROFILES: dict[str, UnitProfile] = {
    "raspberry-pi-4.cpu": ort_cpu_profile(
        "raspberry-pi-4.cpu", peak=57.6, bandwidth=4.0, e=0.517, act=3.83, overhead=0.02,
        sources=_cpu_sources(
            "raspberry-pi-4.cpu",
            _cite("Raspberry Pi 4 (BCM2711) | cpu | 4x Cortex-A72 | 1.5 GHz (1.8 on later boards); FLOP/cycle A72 8 "
                  "(wlog.flatlib.jp); x 1.8 GHz, the clock of the 2023 ncnn run"),
            "LPDDR4-3200 x32 = 12.8 GB/s theoretical, ~1/3 sustained by the A72 cluster (assumption)",
            "ONNX Runtime per-node dispatch and 4-thread pool join on a quad A72, ~20 us (assumption)")),
    "jetson-nano.cpu": ort_cpu_profile(
        "jetson-nano.cpu", peak=45.8, bandwidth=6.0, e=0.786, act=10.41, overhead=0.02,
        sources=_cpu_sources(
            "jetson-nano.cpu",
            _cite("Jetson Nano | cpu | 4x Cortex-A57 | 1.43 GHz | ARMv8.0-A, NEON | ~46 GFLOP/s (assumes 8 FLOP/cycle)"),
            _cite("Nano: 4 GB LPDDR4 (25.6 GB/s) shared by CPU and GPU; ~1/4 sustained by the A57 cluster (assumption)"),
            "ONNX Runtime per-node dispatch and 4-thread pool join on a quad A57, ~20 us (assumption)")),
    "jetson-nano.gpu": trt_gpu_profile(
        "jetson-nano.gpu", peak=472.0, bandwidth=11.2, e=0.491, overhead=0.02,
        sources={
            "runtime": "TensorRT fp16 engine (trtexec --fp16), as the bundle builds it",
            "peak_gflops": _cite("Jetson Nano | gpu | 128 Maxwell CUDA cores, sm_53 | 921 MHz | fp16 at 2x fp32 | "
                                 "~236 GFLOP/s fp32, ~472 fp16"),
            "efficiency": f"solved from torchvision resnet50 (torch2trt fp16, 29.8 ms, {_DATA}); recipe in "
                          "edgec/costmodel/builtin.py",
            "bandwidth_gbs": f"solved from torchvision alexnet (torch2trt fp16, 14.7 ms: 61 M fp16 FC weights); "
                             f"{_FACTS}: 25.6 GB/s LPDDR4 theoretical",
            "activation_bandwidth_gbs": "= bandwidth_gbs (the Nano GPU's 256 KB L2 holds no layer's activations)",
            "copy_bandwidth_gbs": "= bandwidth_gbs",
            "winograd_gain": "2.25: Winograd F(2x2,3x3) (36 -> 16 multiplies), which cuDNN/TensorRT pick for 3x3 "
                             "stride-1 convs on Maxwell",
            "float_bytes": "2: fp16 engine (--fp16); the Nano has no INT8 speed-up",
            "overhead_ms": "one kernel launch per unfused layer, ~20 us on the Nano's Maxwell GPU (assumption)",
        }),
    "odroid-xu4.little": ort_cpu_profile(
        "odroid-xu4.little", peak=11.2, bandwidth=1.5, e=0.545, act=3.08, overhead=0.05,
        sources=_cpu_sources(
            "odroid-xu4.little",
            _cite("Odroid XU4 | LITTLE | 4x Cortex-A7 | 1.4 GHz | ARMv7-A, NEON | ~11 GFLOP/s (2 FLOP/cycle/core)"),
            "Exynos 5422 LPDDR3 2x32-bit, 14.9 GB/s theoretical; the A7 cluster's 512 KB L2 and bus sustain ~1/10 "
            "(assumption)",
            "ONNX Runtime per-node dispatch and 4-thread pool join on a quad A7, ~50 us (assumption)")),
    "odroid-xu4.big": ort_cpu_profile(
        "odroid-xu4.big", peak=64.0, bandwidth=3.5, e=0.331, act=9.19, overhead=0.02,
        sources=_cpu_sources(
            "odroid-xu4.big",
            _cite("Odroid XU4 (Exynos 5422) | big | 4x Cortex-A15 | 2.0 GHz | ARMv7-A, NEON (vfpv4) | "
                  "~64 GFLOP/s (8 FLOP/cycle/core)"),
            "Exynos 5422 LPDDR3 2x32-bit, 14.9 GB/s theoretical, ~1/4 sustained by the A15 cluster (assumption)",
            "ONNX Runtime per-node dispatch and 4-thread pool join on a quad A15, ~20 us (assumption)")),
}


def catalog_profile(unit: ComputeUnit) -> UnitProfile:
    """A rough profile from the catalog's sustained gflops, for a unit with no profile at all."""
    note = "catalog gflops (sustained whole-model figure); no profile measured: run `edgec profile -o FILE`"
    eff = _eff(conv=1.0, pointwise=1.0, depthwise=0.2, gemm=0.5,
               elementwise=0.1, pool=0.1, norm=0.1, memory=1.0, other=0.1)
    return UnitProfile(f"catalog:{unit.name}", unit.gflops, 10.0 if unit.kind == "cpu" else 20.0, eff, 0.02,
                       max(len(unit.cores), 1), tuple(unit.cores),
                       {"peak_gflops": note, "bandwidth_gbs": note, "efficiency": note, "overhead_ms": note})
