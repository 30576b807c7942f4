"""Built-in unit profiles of the reference boards, and the rough profile of a unit with none.

Each figure cites shared/device-facts.md (``sources``). They are calibrated so
that ResNet-50 and MobileNetV2 at 224x224 land within 25% of the ncnn
measurements listed there (``benchmarks/published_latency.py`` prints the
table). A profile measured on the board (``edgec profile -o FILE``) wins over
these (edgec.costmodel.resolve).
"""

from __future__ import annotations

from edgec.cluster import ComputeUnit
from edgec.costmodel.profile import UnitProfile, default_grouped_efficiency

_FACTS = "device-facts.md"

# -- built-in profiles -----------------------------------------------------------------------
#
# ResNet-50 = 8.21 GFLOP (4.09 GMAC), MobileNetV2 = 0.62 GFLOP. One calibration recipe for every
# ARM CPU unit: peak and DRAM bandwidth from the hardware; conv = 1.5 x pointwise (ncnn runs 3x3
# stride-1 convs as Winograd F(6,3), fewer multiplies than counted), depthwise = 0.3 x pointwise,
# gemm (batch-1 FC) = 0.5 x pointwise, grouped = sqrt(conv x depthwise) (default_grouped_efficiency:
# neither calibration model has a grouped conv); then pointwise efficiency and the effective
# activation bandwidth (im2col/packing touch each activation several times) are solved so that
# ResNet-50 and MobileNetV2 reproduce the published pair. The XU4 big cluster has no published pair; it takes the
# A72's efficiencies x 0.6 (see its sources).


def _cite(line: str) -> str:
    return f"{_FACTS}: {line}"


def _eff(conv: float, pointwise: float, depthwise: float, gemm: float,
         elementwise: float = 0.05, pool: float = 0.05, norm: float = 0.05,
         memory: float = 1.0, other: float = 0.02) -> dict[str, float]:
    return {"conv": conv, "pointwise": pointwise, "depthwise": depthwise,
            "grouped": default_grouped_efficiency(conv, depthwise), "gemm": gemm,
            "elementwise": elementwise, "pool": pool, "norm": norm, "memory": memory, "other": other}


def _arm_eff(pointwise: float) -> dict[str, float]:
    return _eff(conv=round(1.5 * pointwise, 3), pointwise=pointwise, depthwise=round(0.3 * pointwise, 3),
                gemm=round(0.5 * pointwise, 3))


_NCNN = "Measured latencies (ncnn benchmark, Tencent/ncnn benchmark/README.md, 224x224, fp32)"
_RECIPE = "calibration recipe in edgec/board_profiles.py"

BUILTIN_PROFILES: dict[str, UnitProfile] = {
    "raspberry-pi-4.cpu": UnitProfile(
        name="raspberry-pi-4.cpu",
        peak_gflops=57.6,  # 4 cores x 8 FLOP/cycle x 1.8 GHz, the clock the ncnn figures were taken at
        bandwidth_gbs=4.0,
        activation_bandwidth_gbs=1.1,
        efficiency=_arm_eff(0.46),
        overhead_ms=0.1,
        threads=4,
        sources={
            "peak_gflops": _cite("Raspberry Pi 4 (BCM2711) | cpu | 4x Cortex-A72 | 1.5 GHz (1.8 on later boards); "
                                 "FLOP/cycle A72 8 (wlog.flatlib.jp); x 1.8 GHz as in 'Raspberry Pi 4 (A72 @1.8 GHz)'"),
            "bandwidth_gbs": "LPDDR4-3200 x32 = 12.8 GB/s theoretical, ~1/3 sustained by the A72 cluster (assumption)",
            "activation_bandwidth_gbs": f"fitted, {_RECIPE}",
            "efficiency": _cite(f"{_NCNN}: Raspberry Pi 4 (A72 @1.8 GHz), 4 threads | 61.9 ms | 262.8 ms; {_RECIPE}"),
            "overhead_ms": "ncnn per-layer dispatch and thread barrier, ~0.1 ms on a quad A72 (assumption)",
        },
    ),
    "jetson-nano.cpu": UnitProfile(
        name="jetson-nano.cpu",
        peak_gflops=45.8,  # 4 cores x 8 FLOP/cycle x 1.43 GHz
        bandwidth_gbs=6.0,
        activation_bandwidth_gbs=2.6,
        efficiency=_arm_eff(0.74),
        overhead_ms=0.08,
        threads=4,
        sources={
            "peak_gflops": _cite("Jetson Nano | cpu | 4x Cortex-A57 | 1.43 GHz | ARMv8.0-A, NEON | "
                                 "~46 GFLOP/s (assumes 8 FLOP/cycle)"),
            "bandwidth_gbs": _cite("Nano: 4 GB LPDDR4 (25.6 GB/s) shared by CPU and GPU; "
                                   "~1/4 sustained by the A57 cluster (assumption)"),
            "activation_bandwidth_gbs": f"fitted, {_RECIPE}",
            "efficiency": _cite(f"{_NCNN}: Jetson Nano CPU, 4 threads | 33.8 ms | 204.1 ms; {_RECIPE}"),
            "overhead_ms": "ncnn per-layer dispatch and thread barrier, ~0.08 ms on a quad A57 (assumption)",
        },
    ),
    "jetson-nano.gpu": UnitProfile(
        name="jetson-nano.gpu",
        peak_gflops=472.0,  # fp16 under TensorRT: 2 x the 236 GFLOP/s fp32 peak (128 cores x 2 x 921 MHz)
        bandwidth_gbs=20.0,
        activation_bandwidth_gbs=10.0,
        efficiency=_eff(conv=0.24, pointwise=0.16, depthwise=0.048, gemm=0.08,
                        elementwise=0.05, pool=0.05, norm=0.05, other=0.02),
        overhead_ms=0.05,
        threads=1,
        runtime="tensorrt",
        sources={
            "peak_gflops": _cite("Jetson Nano | gpu | 128 Maxwell CUDA cores, sm_53 | 921 MHz | fp16 at 2x fp32 | "
                                 "~236 GFLOP/s fp32, ~472 fp16"),
            "bandwidth_gbs": _cite("Nano: 4 GB LPDDR4 (25.6 GB/s) shared by CPU and GPU; ~80% sustained (assumption)"),
            "activation_bandwidth_gbs": f"fitted, {_RECIPE}",
            "efficiency": _cite(
                f"{_NCNN}: Jetson Nano GPU (Vulkan, not TensorRT) | 13.0 ms | 93.1 ms. Mapped to TensorRT fp16 "
                "by expressing the efficiencies against the fp16 peak: the prediction equals the Vulkan figure, "
                "an upper bound for TensorRT fp16 (which fuses more and uses fp16 math), since device-facts.md "
                "has no TensorRT latency; a profile measured on the Nano replaces it"),
            "overhead_ms": "one kernel launch per fused layer, ~50 us on the Nano's Maxwell GPU (assumption)",
        },
    ),
    "odroid-xu4.little": UnitProfile(
        name="odroid-xu4.little",
        peak_gflops=11.2,  # 4 cores x 2 FLOP/cycle x 1.4 GHz
        bandwidth_gbs=1.5,
        activation_bandwidth_gbs=0.3,
        efficiency=_arm_eff(0.44),
        overhead_ms=0.2,
        threads=4,
        sources={
            "peak_gflops": _cite("Odroid XU4 | LITTLE | 4x Cortex-A7 | 1.4 GHz | ARMv7-A, NEON | "
                                 "~11 GFLOP/s (2 FLOP/cycle/core)"),
            "bandwidth_gbs": "Exynos 5422 LPDDR3 2x32-bit, 14.9 GB/s theoretical; the A7 cluster's 512 KB L2 and "
                             "bus sustain ~1/10 (assumption)",
            "activation_bandwidth_gbs": f"fitted, {_RECIPE}",
            "efficiency": _cite(f"{_NCNN}: Cortex-A7 x4 @1.2 GHz (Allwinner H2+), 4 threads | 277.6 ms | 1606.9 ms, "
                                f"x 1.2/1.4 for the XU4's 1.4 GHz: 237.9 / 1377.3 ms; {_RECIPE}"),
            "overhead_ms": "ncnn per-layer dispatch and thread barrier, ~0.2 ms on a quad A7 (assumption)",
        },
    ),
    "odroid-xu4.big": UnitProfile(
        name="odroid-xu4.big",
        peak_gflops=64.0,  # 4 cores x 8 FLOP/cycle x 2.0 GHz
        bandwidth_gbs=3.5,
        activation_bandwidth_gbs=1.0,
        efficiency=_arm_eff(0.28),
        overhead_ms=0.1,
        threads=4,
        sources={
            "peak_gflops": _cite("Odroid XU4 (Exynos 5422) | big | 4x Cortex-A15 | 2.0 GHz | ARMv7-A, NEON (vfpv4) | "
                                 "~64 GFLOP/s (8 FLOP/cycle/core)"),
            "bandwidth_gbs": "Exynos 5422 LPDDR3 2x32-bit, 14.9 GB/s theoretical, ~1/4 sustained by the A15 cluster; "
                             "activations scaled from the A72's fitted 1.1 by 3.5/4.0 (assumption)",
            "activation_bandwidth_gbs": "the A72's fitted activation bandwidth x 3.5/4.0 (assumption)",
            "efficiency": "no published measurement: the A72's (RPi 4) fitted efficiencies x 0.6. Same 8 FLOP/cycle "
                          "(wlog.flatlib.jp, in device-facts.md), but ARMv7 NEON has 16 q registers to AArch64's "
                          "32, so ncnn's armv7 GEMM micro-kernels are half the size (more loads per FMA), and the "
                          "XU4's passive cooling holds the A15s below 2.0 GHz under a 4-thread load (assumption)",
            "overhead_ms": "ncnn per-layer dispatch and thread barrier, ~0.1 ms on a quad A15 (assumption)",
        },
    ),
}


# Published whole-model latencies the built-in profiles are calibrated against (ms, 224x224, fp32,
# ncnn benchmark as listed in device-facts.md). XU4 LITTLE: the Cortex-A7 x4 @1.2 GHz figures x 1.2/1.4.
PUBLISHED_MS: dict[str, dict[str, float]] = {
    "raspberry-pi-4.cpu": {"mobilenetv2": 61.9, "resnet50": 262.8},
    "jetson-nano.cpu": {"mobilenetv2": 33.8, "resnet50": 204.1},
    "jetson-nano.gpu": {"mobilenetv2": 13.0, "resnet50": 93.1},
    "odroid-xu4.little": {"mobilenetv2": 277.6 * 1.2 / 1.4, "resnet50": 1606.9 * 1.2 / 1.4},
}


def catalog_profile(unit: ComputeUnit) -> UnitProfile:
    """A rough profile from the catalog's sustained gflops, for a unit with no profile at all."""
    note = "catalog gflops (sustained whole-model figure); no profile measured: run `edgec profile -o FILE`"
    eff = _eff(conv=1.0, pointwise=1.0, depthwise=0.2, gemm=0.5,
               elementwise=0.1, pool=0.1, norm=0.1, memory=1.0, other=0.1)
    return UnitProfile(f"catalog:{unit.name}", unit.gflops, 10.0 if unit.kind == "cpu" else 20.0, eff, 0.02,
                       max(len(unit.cores), 1), tuple(unit.cores),
                       {"peak_gflops": note, "bandwidth_gbs": note, "efficiency": note, "overhead_ms": note})
