"""Progress on long work: shown on a terminal, absent from piped output and with --quiet."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest
from rich.console import Console

from edgec.errors import EdgecError
from edgec.ir import Program
from edgec.manifest import read_manifest
from edgec.pipeline import PassManager, PassResult, ShowProgress
from edgec.progress import Counter, progress_console

from conftest import MULTI, save_text_model
from test_runtime_local import compile_for_hosts


@dataclass(frozen=True)
class Sleep:
    name: ClassVar[str] = "slow-pass"
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()
    seconds: float = 0.4
    fail: bool = False

    def run(self, program: Program) -> PassResult:
        time.sleep(self.seconds)
        if self.fail:
            raise EdgecError("it broke")
        return PassResult(program, False)


def terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100), buf


def test_a_pass_longer_than_the_threshold_shows_and_a_short_one_does_not():
    console, buf = terminal()
    PassManager([Sleep(0.5)], [ShowProgress(console, after_s=0.05)], given=frozenset()).run(Program.empty())
    assert "pass 1/1: slow-pass" in buf.getvalue()
    console, buf = terminal()
    PassManager([Sleep(0.05)], [ShowProgress(console, after_s=2.0)], given=frozenset()).run(Program.empty())
    assert buf.getvalue() == ""


def test_a_failing_pass_takes_its_progress_line_down():
    console, _ = terminal()
    shown = ShowProgress(console, after_s=0.05)
    with pytest.raises(EdgecError):
        PassManager([Sleep(0.3, fail=True)], [shown], given=frozenset()).run(Program.empty())
    assert shown._shown is None and shown._timer is None


def test_progress_only_on_a_terminal_and_never_when_quiet():
    console, _ = terminal()
    assert progress_console(console) is console
    assert progress_console(console, quiet=True) is None
    assert progress_console(Console(file=io.StringIO())) is None  # piped
    with Counter(None, "frames", 3) as bar:  # no console: counts nothing, draws nothing
        bar.advance()


def test_profile_reports_each_micro_benchmark_as_it_is_timed(monkeypatch):
    from edgec.costmodel import microbench
    from edgec.costmodel.microbench import overhead_bench, run_benches

    # the timing itself waits for an idle machine (seconds each); the reporting around it is what is tested
    monkeypatch.setattr(microbench, "time_bench", lambda bench, threads, cores, runs: (0.1, 0.5))
    seen: list[tuple[str, int, int]] = []
    bench = overhead_bench()
    run_benches([bench, bench], 1, runs=2, passes=2, on_bench=lambda *told: seen.append(told))
    assert seen == [(bench.name, k, 4) for k in range(1, 5)]
    console, buf = terminal()
    with Counter(console, "micro-benchmarks", None) as bar:
        bar.show(3, 4, f"cpu: {bench.name}")
        bar.progress.refresh()
    assert f"cpu: {bench.name}" in buf.getvalue() and "3/4" in buf.getvalue()


def run_cli(args: list[str], tty: bool) -> str:
    """stdout+stderr of `edgec ARGS`, on a pseudo-terminal or a pipe."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    if not tty:
        return subprocess.run([sys.executable, "-m", "edgec.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300).stdout
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgec.cli", *args], stdout=follower, stderr=follower,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    return compile_for_hosts(save_text_model(MULTI, tmp / "multi.onnx"), tmp, [1, 0, 1])


def test_run_shows_its_frames_on_a_terminal_only(plan):
    args = ["run", str(plan), "--local", "--no-pin", "--frames", "12"]
    shown = run_cli(args, tty=True)
    assert "frames" in shown and "12/12" in shown and "━" in shown
    stats = json.loads((plan / "run-stats.json").read_text())  # and the run left its statistics for the report
    assert stats["delivered"] == 12 and set(stats["stages"]) == {s.name for s in read_manifest(plan).stages}
    assert all(s["frames"] == 12 and s["compute_ms"] > 0 for s in stats["stages"].values())
    for text in (run_cli(args, tty=False), run_cli(args + ["--quiet"], tty=True)):
        assert "12 of 12 frames" in text  # the run itself printed its report
        assert "━" not in text and "12/12" not in text and "\x1b[?25l" not in text
