"""Measuring a unit profile on the machine itself (``edgec profile -o FILE``).

The micro-benchmarks (:mod:`edgec.costmodel.microbench`) time one op per benchmark in
the middle of a chain, under the backend's ONNX Runtime settings, three passes
over all of them keeping each chain's fastest time (a slow spell of a shared
machine then misses at least one pass); this module fits the profile to them:

- ``overhead_ms``: per node, from a chain of tiny Relus;
- ``bandwidth_gbs``: from streaming element-wise ops on activation-sized
  tensors and a weight-streaming GEMV (both are in ``sources``);
- ``peak_gflops``: the best dense throughput (GEMM, 1x1 and 3x3 conv);
- ``efficiency[class]``: the geometric mean over the class's benchmarks of the
  efficiency that makes the roofline reproduce the measured time; for
  ``memory`` (layout ops, no arithmetic) the fraction of the activation
  bandwidth they reach;
- ``layout_block``: ONNX Runtime's NCHWc block on this machine, read off an
  optimized graph (:func:`edgec.costmodel.microbench.nchwc_block_size`);
- ``grouped_shape``: how a grouped conv's efficiency falls with few channels
  per group and few output positions, fitted to grouped benches of four shapes
  (:func:`fit_grouped_shape`); ``efficiency.grouped`` is then the efficiency
  of a large GEMM;
- ``im2col_bandwidth_gbs`` and ``group_overhead_ms``: from grouped 3x3 convs
  the runtime does not run blocked (:func:`fit_im2col`): what they take beyond
  their GEMMs is the column buffer written and read back, and a fixed cost per
  group;
- ``overlap``: how much of the shorter of a node's compute and memory time the
  runtime hides behind the longer, from convs whose weights take about as long
  to stream as their arithmetic (ResNet-50's last stage; :func:`fit_overlap`),
  fitted in turn with the efficiencies;
- ``plain_efficiency``: as ``efficiency``, from the pools ONNX Runtime runs
  in plain layout (channels no multiple of the block;
  :func:`edgec.costmodel.microbench.plain_benches`, run only where it has the layout);
- ``layout_efficiency``: from chains of ONNX Runtime's own conversion ops
  (:func:`edgec.costmodel.microbench.layout_benches`, run only where it has the layout):
  the geometric mean of the fraction of the activation bandwidth they reach
  (read + write of the converted bytes, after one node overhead each).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgec.costmodel.work import OP_CLASSES
from edgec.costmodel.microbench import (Bench, BenchResult, bench_result, default_benches, layout_benches,
                                        nchwc_block_size, overhead_bench, plain_benches, run_benches)
from edgec.costmodel.profile import UnitProfile, default_grouped_efficiency, profile_file_json

# told after each micro-benchmark: (unit, bench, benches timed so far, of how many)
OnBench = Callable[[str, str, int, int], None]


# -- fitting ---------------------------------------------------------------------------------


def fit_profile(results: Sequence[BenchResult], overhead_ms: float, threads: int,
                cores: Sequence[int] | None, name: str = "host.cpu", layout_block: int = 0) -> UnitProfile:
    """Fit peak, bandwidth and per-class efficiencies to benchmark results (see the module docstring)."""
    sources: dict[str, str] = {"overhead_ms": f"measured: chain of tiny Relus, {overhead_ms * 1e3:.1f} us per node"}
    balanced = [r for r in results if r.overlap]
    results = [r for r in results if not r.overlap]
    dense = [r for r in results if r.op_class in ("conv", "pointwise", "gemm") and r.work.flops > 0]
    rates = {r.name: r.work.flops / (max(r.ms - overhead_ms, 1e-6) * 1e6) for r in dense}
    best = max(rates, key=rates.get)  # type: ignore[arg-type]
    peak = rates[best]
    sources["peak_gflops"] = f"measured: best dense throughput, {best}"
    weights = [r for r in results if _streams_weights(r)]
    streaming = [r for r in results if _streams_activations(r)]
    streaming = streaming or [r for r in results if r.op_class == "memory"]
    act_bws = [r.work.activation_bytes / (max(r.ms - overhead_ms, 1e-6) * 1e6) for r in streaming]
    act_bandwidth = statistics.median(act_bws) if act_bws else 10.0
    sources["activation_bandwidth_gbs"] = "measured: median over " + ", ".join(r.name for r in streaming)
    bws = [r.work.param_bytes / (max(r.ms - overhead_ms - r.work.activation_bytes / act_bandwidth / 1e6, 1e-6) * 1e6)
           for r in weights]
    bandwidth = statistics.median(bws) if bws else act_bandwidth
    sources["bandwidth_gbs"] = "measured: weight streaming in " + ", ".join(r.name for r in weights)
    probe = UnitProfile(name, peak, bandwidth, {c: 1.0 for c in OP_CLASSES}, overhead_ms, threads,
                        activation_bandwidth_gbs=act_bandwidth)
    im2col = [r for r in results if r.channels_per_group is not None]
    gemm_only = [r for r in results if r.channels_per_group is None]  # the GEMM's efficiency, without im2col
    grouped_shape = fit_grouped_shape([r for r in gemm_only if r.op_class == "grouped" and not r.plain], probe)
    probe = replace(probe, grouped_shape=grouped_shape)
    eff = _class_efficiencies([r for r in gemm_only if not r.plain], probe)
    overlap = 1.0
    if balanced:  # the efficiencies and the overlap from each other, twice over
        for _ in range(2):
            overlap = fit_overlap(balanced, replace(probe, efficiency={**probe.efficiency, **eff}))
            eff = _class_efficiencies([r for r in gemm_only if not r.plain], replace(probe, overlap=overlap))
        sources["overlap"] = "measured: " + ", ".join(f"{r.name} {r.ms:.3f} ms" for r in balanced)
        top = max((eff[c] for c in ("conv", "pointwise", "gemm") if c in eff), default=1.0)
        if top > 1:  # the arithmetic runs faster than the best dense rate measured, its unhidden weights taken out
            peak, eff = peak * top, {c: e / top for c, e in eff.items()}
            sources["peak_gflops"] += ", its weight stream not hidden (overlap) taken out"
        probe = replace(probe, peak_gflops=peak, overlap=overlap)
    plain = _class_efficiencies([r for r in results if r.plain], probe) if layout_block > 0 else {}
    layout = [r for r in results if r.op_class == "memory" and r.work.activation_bytes > 0]
    if layout:  # copies with strides: the fraction of the activation bandwidth they reach
        logs = [math.log(min(probe.memory_ms(0, r.work.activation_bytes) / max(r.ms - overhead_ms, 1e-6), 1.0))
                for r in layout]
        eff["memory"] = math.exp(sum(logs) / len(logs))
    fallback = eff.get("elementwise", 0.05)
    if "grouped" not in eff and "conv" in eff and "depthwise" in eff:
        eff["grouped"] = default_grouped_efficiency(eff["conv"], eff["depthwise"])
    for cls in OP_CLASSES:
        if cls not in eff:
            eff[cls] = 1.0 if cls == "memory" else fallback
    sources["efficiency"] = "measured: " + "; ".join(f"{r.name} {r.ms:.3f} ms" for r in results)
    layout_eff = fit_layout_efficiency(results, overhead_ms, act_bandwidth) if layout_block > 0 else 1.0
    unblocked = [r for r in im2col if layout_block <= 0 or r.channels_per_group % layout_block]
    fitted = UnitProfile(name, peak, bandwidth, eff, overhead_ms, threads, activation_bandwidth_gbs=act_bandwidth,
                         grouped_shape=grouped_shape, overlap=overlap)
    im2col_bandwidth, group_ms = fit_im2col(unblocked, fitted)
    if im2col_bandwidth:
        sources["im2col_bandwidth_gbs"] = "measured: " + ", ".join(r.name for r in unblocked)
    if group_ms:
        sources["group_overhead_ms"] = "measured: with the im2col bandwidth, " + ", ".join(r.name for r in unblocked)
    sources["layout_block"] = (f"measured: ONNX Runtime blocks {layout_block} channels (NCHWc)" if layout_block
                               else "measured: ONNX Runtime converts no layouts here")
    if any(grouped_shape):
        sources["grouped_shape"] = "measured: fitted to the grouped benches' GEMM shapes"
    return UnitProfile(name, peak, bandwidth, eff, overhead_ms, threads,
                       tuple(cores) if cores is not None else None, sources, act_bandwidth,
                       layout_block, layout_eff, plain, grouped_shape, im2col_bandwidth_gbs=im2col_bandwidth,
                       overlap=overlap, group_overhead_ms=group_ms)


def fit_overlap(results: Sequence[BenchResult], fitted: UnitProfile) -> float:
    """The share of the shorter of compute and memory time the runtime hides behind the longer (the profile's
    ``overlap``): the mean over benches whose weights stream about as long as their arithmetic takes of
    1 - (measured - overhead - the longer) / the shorter, each within 0 and 1; 1.0 (the roofline) without them.

    A chain of such convs streams each conv's weights (megabytes, past the core's cache) while it computes with
    them; a runtime that fetched them all in flight would reach the roofline, one that waited for each line
    the sum of the two."""
    shares = []
    for r in results:
        compute = fitted.compute_ms(r.work.flops, r.op_class)
        memory = fitted.memory_ms(r.work.param_bytes, r.work.activation_bytes)
        if min(compute, memory) > 0:
            hidden = 1 - (r.ms - fitted.overhead_ms - max(compute, memory)) / min(compute, memory)
            shares.append(min(max(hidden, 0.0), 1.0))
    return sum(shares) / len(shares) if shares else 1.0


def fit_im2col_bandwidth(results: Sequence[BenchResult], fitted: UnitProfile) -> float | None:
    """Bandwidth at which the runtime writes and reads back the column buffer of convs it runs as im2col + one
    GEMM per group: the geometric mean over the im2col benches of 2 x column bytes / (measured - the GEMM's
    predicted time); None without such a bench, or where their GEMMs alone take all of their time."""
    logs = []
    for r in results:
        rest = r.ms - fitted.node_ms(r.work)  # the profile has no im2col bandwidth yet: GEMM and overhead only
        if r.work.column_bytes > 0 and rest > 0:
            logs.append(math.log(2 * r.work.column_bytes / (rest * 1e6)))
    return math.exp(sum(logs) / len(logs)) if logs else None


def fit_im2col(results: Sequence[BenchResult], fitted: UnitProfile) -> tuple[float | None, float | None]:
    """(im2col bandwidth, per-group ms) of grouped convs run as im2col + one GEMM per group: what the benches take
    beyond their GEMMs, `rest` = 2 x column bytes / bandwidth + groups x per-group ms, by least squares over
    benches of different bytes per group (a large buffer over few groups, a small one over as many); with
    fewer than two such benches, or a fit with either term not positive, the bandwidth alone
    (:func:`fit_im2col_bandwidth`) and no per-group term."""
    rows = [(2 * r.work.column_bytes / 1e6, float(r.work.groups), r.ms - fitted.node_ms(r.work))
            for r in results if r.work.column_bytes > 0 and r.work.groups > 1]
    if len({round(x / g, 6) for x, g, _ in rows}) >= 2:
        (per_byte, per_group), *_ = np.linalg.lstsq(np.array([(x, g) for x, g, _ in rows]),
                                                    np.array([t for _, _, t in rows]), rcond=None)
        per_byte, per_group = float(per_byte), float(per_group)
        if per_byte > 0 and per_group > 0:
            return 1 / per_byte, per_group
    return fit_im2col_bandwidth(results, fitted), None


def _streams_activations(r: BenchResult) -> bool:
    """An element-wise op of at most one FLOP per 4 bytes it moves (Add, Relu): its time is its activations
    streamed, so the activation bandwidth is fitted to it, and it says nothing about arithmetic. (Counted as
    arithmetic, the slower of two such benches, a little under the median bandwidth, would set the
    element-wise efficiency far below what Sigmoid or Erf reach.)"""
    return r.op_class == "elementwise" and r.work.flops <= r.work.bytes_moved / 4


def _streams_weights(r: BenchResult) -> bool:
    """A GEMM at batch 1 or 2 (a GEMV): each fp32 weight in at most two multiply-adds, so its time is the
    weights streamed from DRAM; the bandwidth is fitted to it, which leaves its arithmetic efficiency open."""
    return r.op_class == "gemm" and r.work.param_bytes >= r.work.flops


def _compute_bound(r: BenchResult, probe: UnitProfile) -> bool:
    """The bench took longer than its node overhead plus streaming its bytes: its time is arithmetic."""
    kernel = r.ms - probe.overhead_ms
    return kernel > 0 and probe.memory_ms(r.work.param_bytes, r.work.activation_bytes) < kernel


def fit_grouped_shape(results: Sequence[BenchResult], probe: UnitProfile) -> tuple[float, float]:
    """(reduction, pixels) of ``grouped_shape`` that make the grouped benches' efficiencies agree best.

    Least squares in log space over a grid, on the compute-bound benches; (0, 0) unless three or more of
    them vary in both dimensions.
    """
    shaped = [r for r in results if r.work.reduction > 0 and r.work.pixels > 0 and r.work.flops > 0
              and _compute_bound(r, probe)]
    if (len(shaped) < 3 or len({r.work.reduction for r in shaped}) < 2
            or len({r.work.pixels for r in shaped}) < 2):
        return (0.0, 0.0)
    logs = [math.log(r.work.flops / (probe.peak_gflops * 1e6 * (r.ms - probe.overhead_ms))) for r in shaped]

    def spread(reduction: float, pixels: float) -> float:
        vals = [lg + math.log((1 + reduction / r.work.reduction) * (1 + pixels / r.work.pixels))
                for lg, r in zip(logs, shaped)]
        mean = sum(vals) / len(vals)
        return sum((v - mean) ** 2 for v in vals)

    grid = [0.5 * i for i in range(129)]  # 0 .. 64
    best = min(((spread(k, n), k, n) for k in grid for n in grid), key=lambda t: t[0])
    return (best[1], best[2])


def _class_efficiencies(results: Sequence[BenchResult], probe: UnitProfile) -> dict[str, float]:
    """Per op class: geometric mean over its compute-bound benches of flops / (peak x kernel time), each
    bench's flops scaled by the profile's GEMM-shape factor (grouped convs)."""
    eff: dict[str, float] = {}
    for cls in OP_CLASSES:
        logs = []
        for r in results:
            if (r.op_class != cls or r.work.flops <= 0 or not _compute_bound(r, probe) or _streams_weights(r)
                    or _streams_activations(r)):
                continue  # memory-bound (or lost in the node overhead): says nothing about arithmetic efficiency
            # the part of the memory time the runtime does not hide behind the arithmetic (overlap < 1) is no arithmetic
            kernel = r.ms - probe.overhead_ms - (1 - probe.overlap) * probe.memory_ms(r.work.param_bytes,
                                                                                      r.work.activation_bytes)
            flops = r.work.flops * probe.grouped_shape_factor(r.work)
            logs.append(math.log(min(flops / (probe.peak_gflops * 1e6 * kernel), 4.0)))
        if logs:
            eff[cls] = math.exp(sum(logs) / len(logs))
    return eff


def fit_layout_efficiency(results: Sequence[BenchResult], overhead_ms: float, act_bandwidth_gbs: float) -> float:
    """Fraction of the activation bandwidth layout conversions reach: geometric mean over the
    conversion benches (op class ``layout``), each conversion one node that reads and writes its tensor;
    1.0 without such a bench."""
    logs = []
    for r in results:
        if r.op_class != "layout" or not r.conversions:
            continue
        kernel = max(r.ms - r.conversions * overhead_ms, 1e-6)
        logs.append(math.log(min(2 * r.converted_bytes / (act_bandwidth_gbs * 1e6) / kernel, 4.0)))
    return math.exp(sum(logs) / len(logs)) if logs else 1.0


# -- entry points ----------------------------------------------------------------------------


def measure_host_profile(threads: int, cores: list[int] | None = None, *,
                         benches: Sequence[Bench] | None = None, runs: int = 15, passes: int = 3,
                         name: str = "host.cpu", on_bench: OnBench | None = None) -> dict:
    """Measure one compute unit of this machine; returns its profile as JSON (a file's ``units`` entry).

    `threads` is the unit's core count (the backend's ``intra_op_num_threads``);
    `cores` pins the threads (and this process, while measuring) to those CPU ids;
    every bench is timed `passes` times over (:func:`edgec.costmodel.microbench.run_benches`).
    """
    saved = os.sched_getaffinity(0) if cores and hasattr(os, "sched_getaffinity") else None
    try:
        if saved is not None:
            os.sched_setaffinity(0, set(cores or []))
        block = nchwc_block_size()
        benches = unit_benches(block, benches)
        report = None if on_bench is None else (lambda bench, done, total: on_bench(name, bench, done, total))
        overhead_result, *results = run_benches(benches, threads, cores, runs=runs, passes=passes, on_bench=report)
    finally:
        if saved is not None:
            os.sched_setaffinity(0, saved)
    return fit_profile(results, overhead_result.ms, threads, cores, name, block).to_json()


def unit_benches(block: int, benches: Sequence[Bench] | None = None) -> list[Bench]:
    """What measuring a unit times: the overhead bench first, then `benches` (default: the default benches), and
    where ONNX Runtime has a blocked layout of `block` channels, its conversions and plain-layout pools."""
    return [overhead_bench()] + list(benches or default_benches()) + (
        layout_benches() + plain_benches(block) if block else [])


def fit_bench_times(benches: Sequence[Bench], times: Sequence[Sequence[float]], threads: int,
                    cores: Sequence[int] | None, block: int, name: str = "host.cpu") -> UnitProfile:
    """The profile fitted to :func:`unit_benches`' chain times (per bench, its short and long chain's ms)."""
    overhead_result, *results = [bench_result(b, (t[0], t[1])) for b, t in zip(benches, times)]
    return fit_profile(results, overhead_result.ms, threads, cores, name, block)


def host_description() -> dict:
    """What machine and runtime measured a profile."""
    import onnxruntime as ort

    return {"machine": platform.machine(), "processor": platform.processor() or _cpu_model(),
            "system": platform.system(), "cpu_count": os.cpu_count(), "onnxruntime": ort.__version__,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_profile(path: str | Path, units: dict[str, tuple[int, list[int] | None]] | None = None,
                  on_bench: OnBench | None = None, passes: int = 3) -> dict:
    """Measure the given units (name -> (threads, cores)) and write a profile file; returns its JSON.
    `on_bench(unit, bench, done, total)` is told after each micro-benchmark; every bench is timed `passes`
    times over, spread across the measurement (its fastest kept).

    Without `units`, one unit ``cpu`` with every core of this machine.
    """
    import json

    if units is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        units = {"cpu": (len(cpus), None)}
    measured = {name: measure_host_profile(threads, cores, name=name, on_bench=on_bench, passes=passes)
                for name, (threads, cores) in units.items()}
    doc = profile_file_json(measured, host_description())
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
