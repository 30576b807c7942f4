"""Reproduce the setting of Parthasarathy & Krishnamachari, "Partitioning and Placement of Deep Neural
Networks on Distributed Edge Devices to Maximize Inference Throughput" (ITNAC 2022, arXiv:2210.12219),
and print the bottleneck of the optimal partitioner against their random and greedy baselines.

Setting, as in the paper and its code (github.com/ANRGUSC/SEIFER, joint_optimization.ipynb):
N nodes dropped uniformly in a 150 x 150 square, link bandwidth between nodes i and j
log2(1 + 283230 / d_ij^2) Mbps, node memories uniform in 64..512 MiB, and a bottleneck that
counts communication only: the largest transfer time between consecutive partitions. As there,
the input image is already on the first node and the result is not sent back, so no source or
sink transfer counts (the problem has no graph-input tensor and no graph output). The model is
VGG-16 at 224 x 224 in fp32, one item per layer; its 553 MB of weights fit no single node.

    python benchmarks/partition_paper.py [--trials 50] [--nodes 5 10 20 30 40 50]

"ours" is edgec's optimal partitioner: exact while N <= 12, a beam search beyond. For N <= 12 the
"beam gap" column runs the beam search anyway and gives its mean excess over the exact optimum.
Ratios are medians of per-trial ratios; a baseline that finds no plan in a trial is left out of its
median and counted under "fail".
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from edgec.passes.partition.baselines import greedy_partition, random_partition
from edgec.passes.partition.optimal import Infeasible, solve
from edgec.passes.partition.problem import PartitionProblem, Tensor

# VGG-16, configuration D of Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
# Image Recognition" (ICLR 2015, arXiv:1409.1556), 224 x 224 x 3 input: each layer's output shape
# (channels, height, width) and parameter count (weights + biases), as in the Keras VGG16 summary.
VGG16: list[tuple[str, tuple[int, int, int], int]] = [
    ("conv1_1", (64, 224, 224), 1_792),
    ("conv1_2", (64, 224, 224), 36_928),
    ("pool1", (64, 112, 112), 0),
    ("conv2_1", (128, 112, 112), 73_856),
    ("conv2_2", (128, 112, 112), 147_584),
    ("pool2", (128, 56, 56), 0),
    ("conv3_1", (256, 56, 56), 295_168),
    ("conv3_2", (256, 56, 56), 590_080),
    ("conv3_3", (256, 56, 56), 590_080),
    ("pool3", (256, 28, 28), 0),
    ("conv4_1", (512, 28, 28), 1_180_160),
    ("conv4_2", (512, 28, 28), 2_359_808),
    ("conv4_3", (512, 28, 28), 2_359_808),
    ("pool4", (512, 14, 14), 0),
    ("conv5_1", (512, 14, 14), 2_359_808),
    ("conv5_2", (512, 14, 14), 2_359_808),
    ("conv5_3", (512, 14, 14), 2_359_808),
    ("pool5", (512, 7, 7), 0),
    ("fc6", (4096, 1, 1), 102_764_544),
    ("fc7", (4096, 1, 1), 16_781_312),
    ("fc8", (1000, 1, 1), 4_097_000),
]
INPUT_ELEMENTS = 3 * 224 * 224
FP32 = 4
assert sum(p for _, _, p in VGG16) == 138_357_544

MIB = 1024 ** 2
SIDE = 150.0


def vgg16_on(nodes: np.ndarray, memory: np.ndarray) -> PartitionProblem:
    """VGG-16 on nodes at the given positions with the given memories, links as in the paper."""
    names = tuple(name for name, _, _ in VGG16)
    out = np.array([FP32 * c * h * w for _, (c, h, w), _ in VGG16])
    inp = np.concatenate(([FP32 * INPUT_ELEMENTS], out[:-1]))
    distance = np.linalg.norm(nodes[:, None, :] - nodes[None, :, :], axis=-1)
    np.fill_diagonal(distance, 1.0)  # unused: a device never sends to itself
    mbps = np.log2(1 + 283230 / distance ** 2)
    n, nd = len(names), len(nodes)
    tensors = tuple(Tensor(names[i], int(out[i]), i, (i + 1,)) for i in range(n - 1))
    return PartitionProblem(names, tuple(f"node{k}" for k in range(nd)), np.zeros((n, nd)),
                            np.array([FP32 * p for _, _, p in VGG16]), inp + out, memory,
                            mbps * 1e6 / 8, np.zeros((nd, nd)), tensors, source=0, sink=0)


def trial(nodes: int, seed: int) -> dict[str, tuple[float, float]] | None:
    """Bottleneck (ms) and solve time (ms) per algorithm for one random cluster; None if no plan exists."""
    rng = np.random.default_rng(seed)
    problem = vgg16_on(rng.uniform(0, SIDE, size=(nodes, 2)), rng.uniform(64, 512, size=nodes) * MIB)
    runs = {
        "ours": lambda: solve(problem, "throughput", comm_only=True),
        "random": lambda: random_partition(problem, "throughput", seed, comm_only=True),
        "greedy": lambda: greedy_partition(problem, "throughput", comm_only=True),
    }
    if nodes <= 12:
        runs["beam"] = lambda: solve(problem, "throughput", comm_only=True, max_exact_devices=0)
    result = {}
    for name, run in runs.items():
        start = time.perf_counter()
        try:
            plan = run()
        except Infeasible:
            if name == "ours":
                return None
            continue
        result[name] = (plan.bottleneck_ms, (time.perf_counter() - start) * 1000)
    return result


def _median(results: list[dict[str, tuple[float, float]]], name: str, over: str | None = None) -> float:
    """Median bottleneck of ``name``, or of its ratio to ``over``, over the trials where both found a plan."""
    values = [r[name][0] / (r[over][0] if over else 1.0) for r in results if name in r and (over or name) in r]
    return float(np.median(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 10, 20, 30, 40, 50])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = (f"{'N':>3} {'plans':>5} {'ours ms':>9} {'random ms':>10} {'greedy ms':>10} "
              f"{'random/ours':>11} {'greedy/ours':>11} {'beam gap':>9} {'solve ms':>9} "
              f"{'random fail':>11} {'greedy fail':>11}")
    print("VGG-16 (fp32, 224x224), communication-only bottleneck, medians over trials with a plan")
    print(header)
    print("-" * len(header))
    for nodes in args.nodes:
        results = [r for t in range(args.trials) if (r := trial(nodes, args.seed * 100_003 + nodes * 1_000 + t))]
        median = partial(_median, results)
        fails = {name: sum(name not in r for r in results) for name in ("random", "greedy")}
        gaps = [r["beam"][0] / r["ours"][0] - 1 for r in results if "beam" in r]
        beam = f"{100 * np.mean(gaps):8.2f}%" if gaps else f"{'-':>9}"
        solve_ms = float(np.median([r["ours"][1] for r in results])) if results else float("nan")
        print(f"{nodes:>3} {len(results):>5} {median('ours'):9.1f} {median('random'):10.1f} "
              f"{median('greedy'):10.1f} {median('random', 'ours'):11.2f} {median('greedy', 'ours'):11.2f} "
              f"{beam} {solve_ms:9.1f} {fails['random']:>11} {fails['greedy']:>11}")


if __name__ == "__main__":
    main()
