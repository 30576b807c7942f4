"""Micro-benchmarks for measuring a unit profile (see :mod:`edgec.costmodel.profiler`, which fits them).

Each benchmark is a chain of one op repeated, run under ONNX Runtime's CPU
provider with the settings the backend uses: ``intra_op_num_threads`` = the
unit's cores, sequential execution, graph optimization level ALL, threads
pinned to the unit's cores. Timing the chain at two lengths and taking the
difference gives the time of one op in the middle of a graph, free of the
session's fixed costs (input/output handling, layout reorders at the graph's
edges). How a chain is timed on a shared machine is edgec.costmodel.timing's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from edgec.costmodel.timing import random_feeds, session, time_session, wait_until_idle
from edgec.costmodel.work import VIEW_OPS, NodeWork, node_work

OPSET = 13
_NCHWC = "com.microsoft.nchwc"
_F = TensorProto.FLOAT


@dataclass(frozen=True)
class Bench:
    """One micro-benchmark: `build(length)` makes a model with the op repeated `length` times."""

    name: str
    op_class: str
    build: Callable[[int], onnx.ModelProto]
    lengths: tuple[int, int] = (1, 5)
    conversions: int = 0          # layout conversions per step in a blocked-layout runtime
    converted_bytes: int = 0      # bytes of the tensors they convert, all of them
    plain: bool = False           # runs in plain layout on a runtime with a blocked one
    # a grouped 3x3 conv bench: channels per group (a blocked-layout runtime runs it blocked, without im2col,
    # only when they are whole blocks); None for every other bench
    channels_per_group: int | None = None
    # weights about as heavy as the arithmetic: the profile's ``overlap`` is fitted to it, no efficiency
    overlap: bool = False


@dataclass(frozen=True)
class BenchResult:
    name: str
    op_class: str
    ms: float            # one op, fixed costs removed
    work: NodeWork
    conversions: int = 0
    converted_bytes: int = 0
    plain: bool = False
    channels_per_group: int | None = None
    overlap: bool = False


# -- model builders --------------------------------------------------------------------------

_rng = np.random.default_rng(0)


def _const(name: str, shape: Sequence[int]) -> onnx.TensorProto:
    fan = max(int(np.prod(shape[1:])) if len(shape) > 1 else 1, 1)
    return numpy_helper.from_array((_rng.standard_normal(shape) / math.sqrt(fan)).astype(np.float32), name)


def _model(nodes: list, inits: list, x_shape: Sequence[int], y_name: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x0", _F, list(x_shape))],
        [helper.make_tensor_value_info(y_name, _F, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _conv_chain(c: int, hw: int, k: int, group: int = 1) -> Callable[[int], onnx.ModelProto]:
    def build(length: int) -> onnx.ModelProto:
        nodes, inits = [], []
        for i in range(length):
            inits += [_const(f"w{i}", [c, c // group, k, k]), _const(f"b{i}", [c])]
            nodes.append(helper.make_node("Conv", [f"x{i}", f"w{i}", f"b{i}"], [f"x{i + 1}"], name=f"conv{i}",
                                          kernel_shape=[k, k], pads=[k // 2] * 4, group=group))
        return _model(nodes, inits, [1, c, hw, hw], f"x{length}")
    return build


def _matmul_chain(m: int, k: int) -> Callable[[int], onnx.ModelProto]:
    def build(length: int) -> onnx.ModelProto:
        nodes, inits = [], []
        for i in range(length):
            inits.append(_const(f"w{i}", [k, k]))
            nodes.append(helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"x{i + 1}"], name=f"mm{i}"))
        return _model(nodes, inits, [m, k], f"x{length}")
    return build


def _gemv_chain(k: int) -> Callable[[int], onnx.ModelProto]:
    """Fully connected layers at batch 1: weights streamed from DRAM once each."""
    def build(length: int) -> onnx.ModelProto:
        nodes, inits = [], []
        for i in range(length):
            inits += [_const(f"w{i}", [k, k]), _const(f"b{i}", [k])]
            nodes.append(helper.make_node("Gemm", [f"x{i}", f"w{i}", f"b{i}"], [f"x{i + 1}"], name=f"fc{i}", transB=1))
        return _model(nodes, inits, [1, k], f"x{length}")
    return build


def _unary_chain(op: str, shape: Sequence[int], **attrs: object) -> Callable[[int], onnx.ModelProto]:
    def build(length: int) -> onnx.ModelProto:
        nodes = [helper.make_node(op, [f"x{i}"], [f"x{i + 1}"], name=f"{op.lower()}{i}", **attrs)
                 for i in range(length)]
        return _model(nodes, [], shape, f"x{length}")
    return build


def _add_chain(shape: Sequence[int]) -> Callable[[int], onnx.ModelProto]:
    """x_{i+1} = x_i + x_{i-1}: two distinct inputs, like a residual Add."""
    def build(length: int) -> onnx.ModelProto:
        nodes = [helper.make_node("Relu", ["x0"], ["x1"], name="relu0")]
        for i in range(1, length + 1):
            nodes.append(helper.make_node("Add", [f"x{i}", f"x{i - 1}"], [f"x{i + 1}"], name=f"add{i}"))
        return _model(nodes, [], shape, f"x{length + 1}")
    return build


def _bn_chain(c: int, hw: int) -> Callable[[int], onnx.ModelProto]:
    def build(length: int) -> onnx.ModelProto:
        nodes, inits = [], []
        for i in range(length):
            inits += [numpy_helper.from_array(np.full([c], v, np.float32), f"{n}{i}")
                      for n, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
            nodes.append(helper.make_node("BatchNormalization", [f"x{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"],
                                          [f"x{i + 1}"], name=f"bn{i}"))
        return _model(nodes, inits, [1, c, hw, hw], f"x{length}")
    return build


def _concat_chain(c: int, hw: int) -> Callable[[int], onnx.ModelProto]:
    """x_{i+1} = Concat(x_i[:, :c/2], x_i[:, c/2:]) on the channel axis, via Split."""
    def build(length: int) -> onnx.ModelProto:
        nodes = []
        for i in range(length):
            nodes.append(helper.make_node("Split", [f"x{i}"], [f"a{i}", f"b{i}"], name=f"split{i}", axis=1))
            nodes.append(helper.make_node("Concat", [f"b{i}", f"a{i}"], [f"x{i + 1}"], name=f"concat{i}", axis=1))
        return _model(nodes, [], [1, c, hw, hw], f"x{length}")
    return build


def _shuffle_chain(c: int, hw: int, groups: int) -> Callable[[int], onnx.ModelProto]:
    """ShuffleNet's channel shuffle: Reshape to groups, Transpose, Reshape back."""
    def build(length: int) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.array([1, groups, c // groups, hw, hw], np.int64), "split_shape"),
                 numpy_helper.from_array(np.array([1, c, hw, hw], np.int64), "flat_shape")]
        nodes = []
        for i in range(length):
            nodes += [
                helper.make_node("Reshape", [f"x{i}", "split_shape"], [f"g{i}"], name=f"reshape{i}a"),
                helper.make_node("Transpose", [f"g{i}"], [f"t{i}"], name=f"transpose{i}", perm=[0, 2, 1, 3, 4]),
                helper.make_node("Reshape", [f"t{i}", "flat_shape"], [f"x{i + 1}"], name=f"reshape{i}b"),
            ]
        return _model(nodes, inits, [1, c, hw, hw], f"x{length}")
    return build


def _reorder_chain(c: int, hw: int) -> Callable[[int], onnx.ModelProto]:
    """ONNX Runtime's own layout conversions, NCHW -> NCHWc -> NCHW, repeated: two per step."""
    def build(length: int) -> onnx.ModelProto:
        nodes = []
        for i in range(length):
            nodes += [helper.make_node("ReorderInput", [f"x{i}"], [f"b{i}"], name=f"to_blocked{i}", domain=_NCHWC),
                      helper.make_node("ReorderOutput", [f"b{i}"], [f"x{i + 1}"], name=f"to_plain{i}", domain=_NCHWC,
                                       channels=c)]
        shapes = [helper.make_tensor_value_info(f"{k}{i}", _F, [1, c, hw, hw]) for i in range(length) for k in "xb"]
        graph = helper.make_graph(nodes, "bench", shapes[:1], [helper.make_tensor_value_info(f"x{length}", _F, None)],
                                  value_info=shapes[1:] + [helper.make_tensor_value_info(f"x{length}", _F, [1, c, hw, hw])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(_NCHWC, 1)])
        model.ir_version = 8
        return model
    return build


def layout_benches() -> list[Bench]:
    """Layout conversions at CNN stage sizes, channels whole and partial blocks; only for a runtime with NCHWc."""
    return [Bench(f"reorder {c}ch {hw}x{hw}", "layout", _reorder_chain(c, hw), conversions=2,
                  converted_bytes=2 * c * hw * hw * 4)
            for c, hw in ((96, 56), (200, 28), (400, 14), (800, 7))]


def plain_benches(block: int) -> list[Bench]:
    """Pools over a channel count that is no multiple of the block: ONNX Runtime runs them in plain layout."""
    c = block + block // 2
    return [
        Bench(f"maxpool3x3 {c}ch 56x56 (plain)", "pool",
              _unary_chain("MaxPool", [1, c, 56, 56], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), plain=True),
        Bench(f"avgpool3x3 {c}ch 28x28 (plain)", "pool",
              _unary_chain("AveragePool", [1, c, 28, 28], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), plain=True),
    ]


def default_benches() -> list[Bench]:
    """Representative ops per class, at the sizes ImageNet CNNs run them."""
    return [
        Bench("conv3x3 64ch 56x56", "conv", _conv_chain(64, 56, 3)),
        Bench("conv3x3 256ch 14x14", "conv", _conv_chain(256, 14, 3)),
        Bench("conv1x1 256ch 28x28", "pointwise", _conv_chain(256, 28, 1)),
        Bench("conv1x1 512ch 14x14", "pointwise", _conv_chain(512, 14, 1)),
        Bench("dw3x3 144ch 56x56", "depthwise", _conv_chain(144, 56, 3, group=144)),
        Bench("dw3x3 576ch 14x14", "depthwise", _conv_chain(576, 14, 3, group=576)),
        # ShuffleNet's grouped 1x1 bottlenecks, one small GEMM per group: 6 to 130 channels per group
        # and 3136 to 49 positions, so that the fit sees how the GEMM's shape sets its efficiency.
        # Channels per group are no multiple of 8, so no runtime runs these blocked.
        Bench("gconv1x1 g4 24ch 56x56", "grouped", _conv_chain(24, 56, 1, group=4)),
        Bench("gconv1x1 g4 136ch 28x28", "grouped", _conv_chain(136, 28, 1, group=4)),
        Bench("gconv1x1 g4 272ch 14x14", "grouped", _conv_chain(272, 14, 1, group=4)),
        Bench("gconv1x1 g4 520ch 7x7", "grouped", _conv_chain(520, 7, 1, group=4)),
        # ResNeXt-50 32x4d's first two grouped 3x3 convs (4 and 8 channels per group, 32 groups): a runtime
        # without a blocked kernel for them runs im2col + one small GEMM per group; the fit takes the column
        # buffer's bandwidth from them (profiler.fit_im2col_bandwidth)
        Bench("gconv3x3 g32 128ch 56x56", "grouped", _conv_chain(128, 56, 3, group=32), channels_per_group=4),
        Bench("gconv3x3 g32 256ch 28x28", "grouped", _conv_chain(256, 28, 3, group=32), channels_per_group=8),
        # the same 32 groups of 8 at the last stage's 7x7: few pixels per group, so what each group costs beside
        # its bytes and arithmetic shows (profiler.fit_im2col: the profile's group_overhead_ms)
        Bench("gconv3x3 g32 256ch 7x7", "grouped", _conv_chain(256, 7, 3, group=32), channels_per_group=8),
        # ResNet-50's last stage: weights (9 and 4 MB a conv) streamed about as long as the arithmetic takes;
        # how much of the shorter the runtime hides behind the longer is the profile's overlap (fit_overlap)
        Bench("conv3x3 512ch 7x7 (weights)", "conv", _conv_chain(512, 7, 3), overlap=True),
        Bench("conv1x1 1024ch 7x7 (weights)", "pointwise", _conv_chain(1024, 7, 1), overlap=True),
        Bench("matmul 256x512x512", "gemm", _matmul_chain(256, 512)),
        # a transformer encoder's projections (BERT-base, 128 tokens): activations times weights, as MatMul
        Bench("matmul 128x768x768", "gemm", _matmul_chain(128, 768)),
        Bench("fc 4096x4096", "gemm", _gemv_chain(4096), lengths=(1, 3)),
        Bench("add 256ch 28x28", "elementwise", _add_chain([1, 256, 28, 28])),
        Bench("relu 64ch 112x112", "elementwise", _unary_chain("Relu", [1, 64, 112, 112])),
        Bench("sigmoid 256ch 28x28", "elementwise", _unary_chain("Sigmoid", [1, 256, 28, 28])),
        Bench("maxpool3x3 64ch 56x56", "pool", _unary_chain("MaxPool", [1, 64, 56, 56], kernel_shape=[3, 3],
                                                           pads=[1, 1, 1, 1])),
        Bench("avgpool3x3 256ch 28x28", "pool", _unary_chain("AveragePool", [1, 256, 28, 28], kernel_shape=[3, 3],
                                                            pads=[1, 1, 1, 1])),
        Bench("batchnorm 256ch 28x28", "norm", _bn_chain(256, 28)),
        Bench("lrn5 96ch 27x27", "other", _unary_chain("LRN", [1, 96, 27, 27], size=5)),
        Bench("softmax 1000x64", "norm", _unary_chain("Softmax", [64, 1000], axis=1)),
        Bench("split+concat 256ch 28x28", "memory", _concat_chain(256, 28)),
        Bench("channel shuffle 240ch 28x28", "memory", _shuffle_chain(240, 28, 3)),
    ]


def nchwc_block_size() -> int:
    """Channels per block of ONNX Runtime's blocked layout on this machine (0: it uses none).

    Read off the optimized graphs of two convs: a 16-channel conv is blocked if the
    runtime has the layout at all; a conv of 4 groups of 8 channels only if blocks are 8 wide.
    """
    import tempfile

    from edgec.runtime.session import inference_session

    def blocked(channels: int, group: int = 1) -> bool:
        model = _conv_chain(channels, 8, 1, group)(1)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "opt.onnx")
            inference_session(model.SerializeToString(), {"graph_optimization_level": "all",
                                                          "optimized_model_filepath": path})
            optimized = onnx.load(path)
        return any(n.op_type == "ReorderInput" for n in optimized.graph.node)

    if not blocked(16):
        return 0
    return 8 if blocked(32, group=4) else 16


def overhead_bench() -> Bench:
    return Bench("relu 1x16 (overhead)", "elementwise", _unary_chain("Relu", [1, 16]), lengths=(1, 33))


def time_bench(bench: Bench, threads: int, cores: Sequence[int] | None = None, runs: int = 15) -> tuple[float, float]:
    """ms of the bench's chain at its short and its long length (time_session: the median; one thread: the
    fastest run's CPU time)."""
    times = []
    if threads > 1:
        wait_until_idle(20.0)
    for length in bench.lengths:
        sess = session(bench.build(length), threads, cores)
        times.append(time_session(sess, random_feeds(sess), runs=runs, budget_s=5.0, cpu_time=threads == 1))
    return times[0], times[1]


def bench_result(bench: Bench, times: tuple[float, float]) -> BenchResult:
    """One op of the bench from its chain's two times, the chain's fixed costs removed."""
    short, long_ = bench.lengths
    ms = max((times[1] - times[0]) / (long_ - short), 1e-6)
    models = [bench.build(length) for length in (short, long_)]
    totals = [_sum_work(m) for m in models]
    step = [(b - a) / (long_ - short) for a, b in zip(*totals)]
    work = NodeWork(step[0], int(step[1]), int(step[2]), int(step[3]), bench.op_class,
                    *_conv_shape(models[1], bench.op_class))
    if bench.channels_per_group is not None:
        last = _last_work(models[1], bench.op_class)
        work = replace(work, column_bytes=last.column_bytes, groups=last.groups)
    return BenchResult(bench.name, bench.op_class, ms, work, bench.conversions,
                       bench.converted_bytes, bench.plain, bench.channels_per_group, bench.overlap)


def run_benches(benches: Sequence[Bench], threads: int, cores: Sequence[int] | None = None, runs: int = 15,
                passes: int = 1, on_bench: Callable[[str, int, int], None] | None = None) -> list[BenchResult]:
    """Time every bench `passes` times over, in turn, keeping each chain length's fastest median.

    Slow spells of a shared machine only ever add time, and they last seconds:
    passes spread over the whole measurement, with the fastest kept per chain,
    leave one out (taking the difference of two chains timed in different
    states would not).
    """
    best: list[list[float]] = [[math.inf, math.inf] for _ in benches]
    for p in range(passes):
        report = None if on_bench is None else (
            lambda name, k, p=p: on_bench(name, p * len(benches) + k, passes * len(benches)))
        bench_pass(benches, best, threads, cores, runs, report)
    return [bench_result(bench, (t[0], t[1])) for bench, t in zip(benches, best)]


def bench_pass(benches: Sequence[Bench], best: list[list[float]], threads: int, cores: Sequence[int] | None = None,
               runs: int = 15, on_bench: Callable[[str, int], None] | None = None) -> None:
    """Time every bench once more, keeping in `best` (per bench, [short, long]) each chain length's fastest median;
    `on_bench(bench name, benches timed in this pass)` is told after each."""
    for k, bench in enumerate(benches):
        times = time_bench(bench, threads, cores, runs)
        best[k] = [min(a, b) for a, b in zip(best[k], times)]
        if on_bench is not None:
            on_bench(bench.name, k + 1)


def _last_work(model: onnx.ModelProto, op_class: str) -> NodeWork:
    """The work of the last node of the bench's class in the chain: the op the bench times (its im2col buffer
    and group count)."""
    return [w for w in map(node_work, gs.import_onnx(model).nodes) if w.op_class == op_class][-1]


def _conv_shape(model: onnx.ModelProto, op_class: str) -> tuple[int, int]:
    """(reduction, pixels) of the last node of the bench's class in the chain: the op the bench times."""
    works = [w for w in map(node_work, gs.import_onnx(model).nodes) if w.op_class == op_class]
    return (works[-1].reduction, works[-1].pixels) if works else (0, 0)


def _sum_work(model: onnx.ModelProto) -> tuple[float, int, int, int]:
    """Work of the nodes the cost model charges for more than overhead (views move no data)."""
    works = [node_work(n) for n in gs.import_onnx(model).nodes if n.op not in VIEW_OPS]
    return (sum(w.flops for w in works), sum(w.param_bytes for w in works),
            sum(w.input_bytes for w in works), sum(w.output_bytes for w in works))
