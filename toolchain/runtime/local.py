"""`edgec run --local`: every device of a plan as its own process on this machine.

Each device process (`python -m edgec.runtime serve`) listens on 127.0.0.1
(free ports) and is pinned to the cores of its stages' compute units, as the
manifest names them. Cores this machine does not have are folded onto the ones
it has (core c -> available[c mod n]), with a note; the device processes get
their cores on the command line. `edgec serve` on a board pins the same way.
"""


import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from edgec.runtime.deployment import Deployment, local_deployment
from edgec.runtime.pipeline import Pipeline, read_pipeline


def plan_cores(plan: Pipeline) -> Tuple[Dict[str, List[int]], List[str]]:
    """Device -> the cores of the units its stages run on, mapped onto this machine's cores; and notes.

    A device gets [] (unpinned) where this system cannot pin, or where the manifest names no cores for
    one of its stages (written by an edgec before stages carried their cores).
    """
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores: Dict[str, List[int]] = {}
    notes: List[str] = []
    for device in plan.devices:
        wanted = plan.cores(device)
        if not available:
            cores[device] = []
            continue
        if wanted is None:
            notes.append(f"device {device}: the manifest names no cores for its stages; running unpinned "
                         f"(recompile with this edgec to pin)")
            cores[device] = []
            continue
        mapped = sorted({c if c in available else available[c % len(available)] for c in wanted})
        if mapped != sorted(wanted):
            notes.append(f"device {device}: cores {sorted(wanted)} are not all on this machine; using {mapped}")
        cores[device] = mapped
    return cores, notes


class LocalCluster:
    """Start, watch and stop one process per device; a context manager."""

    def __init__(self, out_dir: str, keys_dir: Optional[str] = None, pin: bool = True,
                 cores: Optional[Dict[str, Sequence[int]]] = None, hwm: int = 2,
                 python: str = sys.executable) -> None:
        self.out_dir = out_dir
        self.plan = read_pipeline(out_dir)
        self.keys_dir = keys_dir
        self.hwm = hwm
        self.python = python
        self.notes: List[str] = []
        if cores is not None:
            self.cores = {d: list(c) for d, c in cores.items()}
        elif pin:
            self.cores, self.notes = plan_cores(self.plan)
        else:
            self.cores = {}
        self.deployment: Deployment = local_deployment(self.plan)
        self.folder = tempfile.mkdtemp(prefix="edgec-local-")
        self.deployment_path = os.path.join(self.folder, "deployment.json")
        self.deployment.write(self.deployment_path)
        self.procs: Dict[str, subprocess.Popen] = {}
        self._logs: Dict[str, str] = {}

    def command(self, device: str) -> List[str]:
        cmd = [self.python, "-m", "edgec.runtime", "serve", self.out_dir, "--device", device,
               "--deployment", self.deployment_path, "--hwm", str(self.hwm)]
        if self.cores.get(device):
            cmd += ["--cores", ",".join(map(str, self.cores[device]))]
        else:
            cmd += ["--no-pin"]
        if self.keys_dir is not None:
            cmd += ["--keys", self.keys_dir]
        return cmd

    def start(self) -> "LocalCluster":
        for device in self.plan.devices:
            log = os.path.join(self.folder, f"{device}.log")
            self._logs[device] = log
            with open(log, "wb") as f:
                self.procs[device] = subprocess.Popen(self.command(device), stdout=f, stderr=subprocess.STDOUT,
                                                      stdin=subprocess.DEVNULL)
        return self

    def problems(self) -> List[Tuple[str, str]]:
        """(device, what happened) for every device process that has exited."""
        out = []
        for device, proc in self.procs.items():
            code = proc.poll()
            if code is None:
                continue
            how = f"killed by signal {-code} ({_signame(-code)})" if code < 0 else f"exited with code {code}"
            last = self.last_log_line(device)
            out.append((device, f"process {proc.pid} {how}" + (f": {last}" if last else "")))
        return out

    def last_log_line(self, device: str) -> str:
        try:
            with open(self._logs[device], "rb") as f:
                lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errors = [ln for ln in lines if ln.startswith("edgec:") and "serving stages" not in ln]
        return (errors or lines or [""])[-1][:500]

    def log(self, device: str) -> str:
        with open(self._logs[device], "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, grace_s: float = 3.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "unknown"


def run_local(out_dir: str, frames, n_frames: int, keys_dir: Optional[str] = None, timeout_s: float = 10.0,
              pin: bool = True, on_result=None, on_start=None):
    """Start the plan's devices here, run the frames through them, stop them; the driver's RunResult."""
    from edgec.runtime.driver import Driver
    from edgec.runtime.frames import cycle

    with LocalCluster(out_dir, keys_dir=keys_dir, pin=pin) as cluster:
        if on_start is not None:
            on_start(cluster)
        driver = Driver(out_dir, cluster.deployment, keys_dir, timeout_s=timeout_s, watch=cluster.problems)
        result = driver.run(cycle(frames) if not callable(frames) else frames, n_frames, on_result)
        result.notes = cluster.notes + result.notes
        return result


__all__ = ["LocalCluster", "run_local", "plan_cores"]
