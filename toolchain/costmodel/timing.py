"""Timing ONNX Runtime sessions on a machine others share: the medians and CPU times the cost model is fitted to.

`time_session` times runs only while other processes leave the CPUs idle
(`CpuMeter` reads /proc/stat), or, for a one-thread session, by the calling
thread's CPU time, which other processes' time slices do not inflate. Used by
the micro-benchmarks (edgec.costmodel.microbench) and benchmarks/cost_model.py.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx


class CpuMeter:
    """How much CPU time other processes took (and the hypervisor stole) since the last reading.

    From /proc/stat less this process's own ticks; reads 0 where /proc is missing.
    """

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        try:
            cpu = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        idle = cpu[3] + cpu[4]
        return sum(cpu), sum(cpu) - idle, int(own[11]) + int(own[12])

    def others(self) -> float:
        """Fraction of all CPUs' time used by others since the last call."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return 0.0
        return max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])


def wait_until_idle(max_wait_s: float = 60.0, threshold: float = 0.1) -> float:
    """Wait (up to max_wait_s) until other processes leave the CPUs idle; returns their last share."""
    deadline = time.monotonic() + max_wait_s
    meter = CpuMeter()
    while True:
        time.sleep(0.5)
        busy = meter.others()
        if busy <= threshold or time.monotonic() >= deadline:
            return busy


def session(model: onnx.ModelProto | str | Path, threads: int, cores: Sequence[int] | None = None):
    """An ONNX Runtime CPU session with the backend's settings."""
    from edgec.runtime.session import AFFINITY_KEY, inference_session

    settings: dict = {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
                      "graph_optimization_level": "all"}
    if cores and threads > 1:
        # one entry per thread except the caller's; processor ids are 1-based
        settings[AFFINITY_KEY] = ";".join(str(c + 1) for c in list(cores)[1:threads])
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return inference_session(data, settings)


def time_session(sess, feeds: dict[str, np.ndarray], runs: int = 10, warmup: int = 3,
                 budget_s: float = 10.0, max_others: float = 0.1, cpu_time: bool = False) -> float:
    """Median ms of `runs` runs after `warmup`, counting only runs while other processes were idle (one thread:
    the fastest run's CPU time, see `cpu_time`).

    Runs go in rounds of at least 50 ms; a round in which others took more than
    `max_others` of the CPUs is timed again, until `budget_s` is spent (then the
    least disturbed rounds count).

    `cpu_time`: a one-thread session (intra_op_num_threads 1 runs every kernel on the calling thread) is
    timed by the calling thread's CPU time instead, which time slices given to other processes do not
    inflate: on a shared machine a one-core run's wall time is 1-3x its CPU time, from one run to the next.
    Its CPU time still grows while the host's other load competes for caches and memory (spells of seconds
    to minutes, 1.2-1.5x, that this machine does not see), and more for a large model than for a short chain
    that stays in cache, so the fastest run is taken, not the median: the estimate of an undisturbed run
    for every size of work alike.
    """
    for _ in range(warmup):
        sess.run(None, feeds)
    if cpu_time:
        times = []
        for _ in range(runs):
            t = time.thread_time()
            sess.run(None, feeds)
            times.append((time.thread_time() - t) * 1e3)
        return min(times)
    rounds: list[tuple[float, list[float]]] = []
    clean: list[float] = []
    start = time.perf_counter()
    while len(clean) < runs:
        meter = CpuMeter()
        times = []
        t_round = time.perf_counter()
        while len(times) < runs - len(clean) or time.perf_counter() - t_round < 0.05:
            t = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - t) * 1e3)
        others = meter.others()
        rounds.append((others, times))
        if others <= max_others:
            clean += times
        if time.perf_counter() - start > budget_s:
            break
    if len(clean) < runs:
        clean = [t for _, ts in sorted(rounds, key=lambda r: r[0]) for t in ts][:runs]
    return statistics.median(clean)


def random_feeds(sess) -> dict[str, np.ndarray]:
    """A random float32 input for every session input."""
    rng = np.random.default_rng(1)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in sess.get_inputs()}
