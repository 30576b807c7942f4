"""The driver: feed frames to the first segment, collect results from the last, account for every frame.

Results are delivered in sequence order (reordered if they arrive out of
order). Every input frame ends as its outputs or as an explicit error: a stage
that fails on a frame sends an error in its place; a device that dies, or
that stays silent (no heartbeat) past the timeout, ends the run with a
failure naming the device and its stages, and every frame not delivered by
then is listed as failed; except a device whose every segment is a replica
with a live sibling on another device: its frames are dealt again to the
others (edgec.runtime.dealing), the run goes on and its notes say so.
Nothing is dropped or duplicated silently.
"""


import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import zmq

from edgec.errors import EdgecError
from edgec.runtime import limits, wire
from edgec.runtime.dealing import Dealer, EndGather
from edgec.runtime.deployment import Deployment, load_deployment
from edgec.runtime.keys import DRIVER, Keys, load_keys
from edgec.runtime.frames import Frame, cycle
from edgec.runtime.pipeline import Pipeline, read_pipeline
from edgec.runtime.restarts import Restarts
from edgec.runtime.runlock import refuse_if_busy
from edgec.runtime.trust import check_manifest_digest

DEFAULT_TIMEOUT_S = 10.0
HEARTBEAT_S = 0.5  # as the device workers send them
STARTUP_TIMEOUT_S = 60.0  # for device processes a launcher here started and watches (they load models first)

# called for each frame, in order: (seq, outputs or None, error or None)
OnResult = Callable[[int, Optional[Frame], Optional[str]], None]
# names problems of the device processes (for a launcher that owns them): [(device, what happened)]
Watch = Callable[[], List[Tuple[str, str]]]


class RunFailed(Exception):
    """The run could not finish: a device died or went silent."""


@dataclass
class RunResult:
    frames: int
    outputs: List[Optional[Frame]]  # in sequence order; None where the frame failed
    errors: Dict[int, str]  # seq -> why that frame has no outputs
    failure: Optional[str] = None  # what ended the run early
    stats: List[Dict[str, Any]] = field(default_factory=list)  # per segment, from the workers
    wall_s: float = 0.0
    latencies_s: List[float] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.errors and len(self.outputs) == self.frames

    @property
    def delivered(self) -> int:
        return sum(o is not None for o in self.outputs)

    @property
    def fps(self) -> float:
        return self.delivered / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        """One line per problem, or 'ok'."""
        lines = []
        if self.failure:
            lines.append(self.failure)
        for seq, err in _group_errors(self.errors):
            lines.append(f"{seq}: {err}")
        return "\n".join(lines) if lines else "ok"


def _group_errors(errors: Mapping[int, str]) -> List[Tuple[str, str]]:
    """Runs of consecutive frames with the same error, as ("frames 3-9", error)."""
    out: List[Tuple[str, str]] = []
    seqs = sorted(errors)
    i = 0
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1 and errors[seqs[j + 1]] == errors[seqs[i]]:
            j += 1
        label = f"frame {seqs[i]}" if i == j else f"frames {seqs[i]}-{seqs[j]} ({j - i + 1})"
        out.append((label, errors[seqs[i]]))
        i = j + 1
    return out


class Driver:
    """Feeds a plan served by its devices (`edgec serve`, or a local launcher) and collects the results."""

    def __init__(self, out_dir: str, deployment: Optional[Deployment] = None, keys_dir: Optional[str] = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, startup_timeout_s: Optional[float] = None,
                 hwm: int = 2, max_in_flight: Optional[int] = None, watch: Optional[Watch] = None) -> None:
        self.plan: Pipeline = read_pipeline(out_dir)
        check_manifest_digest(out_dir)
        self.deployment = deployment if deployment is not None else load_deployment(None, self.plan)
        self.keys: Optional[Keys] = None
        if keys_dir is not None:
            self.keys = load_keys(keys_dir, DRIVER, self.plan.devices)
        if timeout_s < 2 * HEARTBEAT_S:
            raise EdgecError(f"--timeout {timeout_s:g}: at least {2 * HEARTBEAT_S:g} s, two heartbeats of a device")
        self.timeout_s = timeout_s
        if startup_timeout_s is None:  # serving devices: --timeout; local ones that a watch sees die: longer
            startup_timeout_s = timeout_s if watch is None else max(timeout_s, STARTUP_TIMEOUT_S)
        self.startup_timeout_s = startup_timeout_s
        self.hwm = hwm
        self.max_in_flight = max_in_flight or 2 * len(self.plan.segments) + 2
        self.watch = watch
        self.input_names = list(self.plan.segments[0].receives)
        self.output_names = list(self.plan.segments[-1].sends)
        self._expect_out = self.plan.expect(self.output_names)
        self._max_result_bytes = limits.frame_bytes(self._expect_out)

    def run(self, frames: Callable[[int], Frame], n_frames: int, on_result: Optional[OnResult] = None) -> RunResult:
        """Send frames(0) .. frames(n_frames - 1) through the pipeline; return once each has an outcome."""
        ctx = zmq.Context()
        try:
            return _Run(self, ctx, frames, n_frames, on_result).go()
        finally:
            ctx.destroy(linger=0)

    def _socket(self, ctx: zmq.Context, kind: int, device: str) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RCVHWM, self.hwm if kind != zmq.SUB else 100)
        if self.keys is not None:
            self.keys.client(sock, device)
        return sock


class _Run:
    def __init__(self, driver: Driver, ctx: zmq.Context, frames: Callable[[int], Frame], n: int,
                 on_result: Optional[OnResult]) -> None:
        self.d, self.frames, self.n, self.on_result = driver, frames, n, on_result
        plan, dep = driver.plan, driver.deployment
        self.run_id = uuid.uuid4().hex[:12]
        self.ctx = ctx
        # connected only once every device is up and no other run is using them (_connect)
        self.dealer: Optional[Dealer] = None
        self.pull: Optional[zmq.Socket] = None
        self.restarts = Restarts(settle_s=2 * HEARTBEAT_S)
        self.ends = EndGather([seg.names for seg in plan.last.segments])
        self.lost: List[str] = []  # devices whose replicas were found dead
        self.skip: List[str] = []  # their segments, which every dealer now deals around
        self.resent: set = set()  # frames sent again after a replica died: a second result is dropped
        self.to_resend: List[int] = []
        self.subs: Dict[zmq.Socket, str] = {}
        for device in plan.devices:
            sub = driver._socket(ctx, zmq.SUB, device)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(dep.status(plan, device))
            self.subs[sub] = device
        self.beats: Dict[str, Dict[str, Any]] = {}
        self.seen: Dict[str, float] = {}
        self.results: Dict[int, Tuple[Optional[Frame], Optional[str]]] = {}
        self.sent_at: Dict[int, float] = {}
        self.errors: Dict[int, str] = {}
        self.outputs: List[Optional[Frame]] = []
        self.latencies: List[float] = []
        self.notes: List[str] = []
        self.stats: List[Dict[str, Any]] = []
        self.next_send = 0
        self.next_deliver = 0
        self.end_sent = False
        self.end_seen = False
        self.last_progress = time.monotonic()
        self.stale = 0

    # the loop ----------------------------------------------------------------
    def go(self) -> RunResult:
        t0 = time.monotonic()
        failure = None
        try:
            self._wait_ready()
            self._connect()
            t0 = time.monotonic()
            while not (self.next_deliver >= self.n and self.end_seen):
                self._step()
        except RunFailed as exc:
            failure = str(exc)
        wall = time.monotonic() - t0
        if failure is not None:
            for seq in range(self.next_deliver, self.n):
                if seq not in self.errors:
                    self.errors[seq] = "not delivered: the run failed (" + failure.split(";")[0].split(": ")[0] + ")"
                    self.outputs.append(None)
        if self.stale:
            self.notes.append(f"ignored {self.stale} messages left from an earlier run")
        return RunResult(self.n, self.outputs, self.errors, failure, self.stats, wall, self.latencies, self.notes)

    def _connect(self) -> None:
        d, plan, dep = self.d, self.d.plan, self.d.deployment
        refuse_if_busy(self.beats, self.run_id, 4 * HEARTBEAT_S, dep.results(plan))
        targets = []
        for seg in plan.first.segments:
            sock = d._socket(self.ctx, zmq.PUSH, seg.device)
            sock.connect(dep.segment_input(plan, seg))
            targets.append((seg.names, seg.weight, sock))
        self.dealer = Dealer(plan.first.fan_out, targets)
        self.pull = d._socket(self.ctx, zmq.PULL, plan.last.segments[0].device)
        self.pull.setsockopt(zmq.MAXMSGSIZE, limits.part_bytes(d._expect_out))
        for seg in plan.last.segments:
            self.pull.connect(dep.results(plan, segment=seg))

    def _wait_ready(self) -> None:
        """Until every device has sent a heartbeat: its sub-models are loaded and its sockets bound."""
        deadline = time.monotonic() + self.d.startup_timeout_s
        poller = zmq.Poller()
        for sub in self.subs:
            poller.register(sub, zmq.POLLIN)
        while len(self.seen) < len(self.subs):
            self._check_watch()
            if time.monotonic() > deadline:
                missing = [d for d in self.d.plan.devices if d not in self.seen]
                raise RunFailed("; ".join(self._not_up(d) for d in missing))
            for sock, _ in poller.poll(100):
                self._on_beat(sock)
        now = time.monotonic()
        for d in self.seen:
            self.seen[d] = now
        self.last_progress = now

    def _not_up(self, device: str) -> str:
        ep = self.d.deployment.devices[device]
        keys = ("CURVE keys in use: the device must serve with --keys, with the same keys as this driver"
                if self.d.keys else "no CURVE keys in use: a device serving with --keys refuses this driver; "
                                    "pass --keys")
        return (f"device {device} (stages {', '.join(self.d.plan.stage_names(device))}) did not come up within "
                f"{self.d.startup_timeout_s:g} s: no heartbeat from host {ep.host} port {ep.port} "
                f"({self.d.deployment.status(self.d.plan, device)}); {keys}; is `edgec serve` running there and "
                f"the port open? Fix host/port in the deployment file")

    def _step(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        for sub in self.subs:
            poller.register(sub, zmq.POLLIN)
        in_flight = self.next_send - self.next_deliver
        want_send = bool(self.to_resend) or (self.next_send < self.n and in_flight < self.d.max_in_flight) or \
                    (self.next_send >= self.n and not self.end_sent)
        push = None
        if want_send:
            push = self.dealer.sockets[self.dealer.pick(self.skip)[0]]
            poller.register(push, zmq.POLLOUT)
        events = dict(poller.poll(100))
        if events.get(self.pull):
            self._on_result()
        for sub in self.subs:
            if events.get(sub):
                self._on_beat(sub)
        if want_send and events.get(push):
            self._send()
        self._check_health()

    def _send(self) -> None:
        if self.to_resend:
            seq = self.to_resend.pop(0)
            if seq >= self.next_deliver and seq not in self.results:
                self.dealer.send(self.dealer.pick(self.skip), self._encode(seq), lambda: True)
        elif self.next_send < self.n:
            seq = self.next_send
            msg = self._encode(seq)
            self.dealer.send(self.dealer.pick(self.skip), msg, lambda: True)
            self.sent_at[seq] = time.monotonic()
            self.next_send += 1
        else:
            self._send_end()

    def _encode(self, seq: int) -> List[Any]:
        try:
            frame = self.frames(seq)
            extra = {"skip": self.skip} if self.skip else {}
            return wire.encode("data", self.run_id, seq, [(n, frame[n]) for n in self.d.input_names], **extra)
        except KeyError as exc:
            raise EdgecError(f"frame {seq} has no tensor {exc}; the plan's first stage needs "
                             f"{', '.join(self.d.input_names)}") from None

    def _send_end(self) -> None:
        end = wire.encode("end", self.run_id, self.n, stats=[], via="source", skip=self.skip)
        self.dealer.send(self.dealer.live(self.skip), end, lambda: True)
        self.end_sent = True

    def _lose_replicas(self, device: str, what: str) -> bool:
        """Deal the frames of a dead device to the live replicas of its steps; False if the device held a
        step alone (the run cannot go on without it)."""
        if device in self.lost:
            return True
        mine = self.d.plan.replicas_of(device)
        if mine is None:
            return False
        skip = self.skip + [seg.names for seg in mine]
        for seg in mine:
            step = self.d.plan.steps[seg.step]
            if all(o.names in skip for o in step.segments):
                return False
        self.lost.append(device)
        self.skip = skip
        pending = [seq for seq in range(self.next_deliver, self.next_send) if seq not in self.results]
        self.notes.append(f"device {device} (stages {', '.join(self.d.plan.stage_names(device))}) {what}; "
                          f"its replicas are out of the plan and {len(pending)} frames in flight were dealt "
                          f"again to the others")
        self.resent.update(pending)
        self.to_resend.extend(pending)  # sent as the live replicas take them (_step), never blocking the loop
        self.end_sent = False  # then the end marker again: every step after the lost replicas stops waiting for them
        self.last_progress = time.monotonic()
        return True

    def _on_result(self) -> None:
        frames = self.pull.recv_multipart(copy=False)
        try:
            msg = wire.decode(frames, self.d._expect_out, self.d._max_result_bytes)
        except wire.WireError as exc:
            if exc.run is not None and exc.run != self.run_id:
                self.stale += 1
                return
            if exc.seq is None or not 0 <= exc.seq < self.n:
                raise RunFailed(f"the results socket sent a malformed message: {exc}") from None
            self._record(exc.seq, None, f"result rejected by the driver: {exc}")
            return
        if msg.run != self.run_id:
            self.stale += 1
            return
        if msg.kind == "end":
            stats = self.ends.add(msg.run, msg.header.get("via"), list(msg.header.get("skip") or []) + self.skip,
                                  msg.header.get("stats") or [])
            if stats is not None:
                self.stats = stats
                self.end_seen = True
            self.last_progress = time.monotonic()
            return
        if msg.seq in self.resent and (msg.seq < self.next_deliver or msg.seq in self.results):
            return  # the first of the two results of a frame dealt again is kept
        if not 0 <= msg.seq < self.n or msg.seq >= self.next_send:
            raise RunFailed(f"the pipeline returned frame {msg.seq}, which was never sent")
        if msg.seq in self.restarts.lost:
            self.notes.append(f"frame {msg.seq} came back after it was counted lost; dropped")
            return
        self.restarts.arrived(msg.seq)
        if msg.kind == "error":
            e = msg.error
            self._record(msg.seq, None, f"device {e.get('device')} stage {e.get('stage')}: {e.get('message')}")
        else:
            self._record(msg.seq, {k: msg.tensors[k] for k in self.d.output_names}, None)
        for seq in self.restarts.settle(msg.seq, 0.0, True):
            self._record(seq, None, self.restarts.reason())

    def _record(self, seq: int, outputs: Optional[Frame], error: Optional[str]) -> None:
        if seq < self.next_deliver or seq in self.results:
            raise RunFailed(f"frame {seq} came back twice")
        self.results[seq] = (outputs, error)
        self.last_progress = time.monotonic()
        while self.next_deliver in self.results:  # in order, whatever order they came in
            seq = self.next_deliver
            out, err = self.results.pop(seq)
            self.latencies.append(time.monotonic() - self.sent_at.pop(seq))
            if err is not None:
                self.errors[seq] = err
            self.outputs.append(out)
            if self.on_result is not None:
                self.on_result(seq, out, err)
            self.next_deliver += 1

    def _on_beat(self, sub: zmq.Socket) -> None:
        raw = sub.recv()
        try:
            beat = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        device = self.subs[sub]
        if not isinstance(beat, dict) or beat.get("device") != device:
            return
        note = self.restarts.on_beat(device, beat.get("pid"), [s for s in range(self.next_deliver, self.next_send)
                                                                if s not in self.results], self.next_send)
        if note:
            self.notes.append(note)
        before = self.beats.get(device, beat).get("rejected", 0)
        self.beats[device] = beat
        self.seen[device] = time.monotonic()
        if int(beat.get("rejected") or 0) > int(before or 0):
            self.notes.append(f"device {device} rejected a message that was not a frame of any run: "
                              f"{beat.get('last_rejection')}")

    # health ------------------------------------------------------------------
    def _check_watch(self) -> None:
        if self.d.watch is None:
            return
        problems = [(dev, what) for dev, what in self.d.watch()
                    if not self._lose_replicas(dev, what)]
        if problems:
            raise RunFailed("; ".join(f"device {dev} (stages {', '.join(self.d.plan.stage_names(dev))}) {what}"
                                      for dev, what in problems) + self._where())

    def _check_health(self) -> None:
        self._check_watch()
        now = time.monotonic()
        computing = any(b.get("busy") and b.get("run") == self.run_id for b in self.beats.values())
        for seq in self.restarts.settle(None, now - self.last_progress, computing):
            self._record(seq, None, self.restarts.reason())
        timeout = self.d.timeout_s
        for device in self.d.plan.devices:
            silent = now - self.seen.get(device, now)
            if device in self.lost:
                continue
            if silent > timeout and self._lose_replicas(device, f"silent for {silent:.1f} s"):
                continue
            if silent > timeout:
                beat = self.beats.get(device, {})
                doing = f", last seen computing frame {beat['seq']} in stage {beat['busy']}" if beat.get("busy") else ""
                raise RunFailed(f"device {device} (stages {', '.join(self.d.plan.stage_names(device))}) silent for "
                                f"{silent:.1f} s (timeout {timeout:g} s){doing}: it died, hung or lost its "
                                f"network" + self._where())
        waiting = self.next_deliver < self.next_send or (self.end_sent and not self.end_seen)
        if waiting and now - self.last_progress > timeout:
            busy = [(d, b) for d, b in self.beats.items() if b.get("busy") and b.get("run") == self.run_id]
            if busy:
                d, b = busy[0]
                since = float(b.get("busy_s") or 0.0) + (now - self.seen.get(d, now))
                if since > timeout:
                    raise RunFailed(f"device {d} stage {b['busy']} has been computing frame {b['seq']} for "
                                    f"{since:.1f} s (timeout {timeout:g} s)")
                return
            raise RunFailed(f"no result for {now - self.last_progress:.1f} s (timeout {timeout:g} s) and no device "
                            f"is computing one: frames from {self.next_deliver} were lost in transit "
                            f"(a device restarted?)")

    def _where(self) -> str:
        return f"; frames delivered: {self.next_deliver} of {self.n}"


def stack_outputs(result: RunResult, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Delivered outputs stacked per name (frames that failed are left out), plus their sequence numbers."""
    seqs = [k for k, o in enumerate(result.outputs) if o is not None]
    out = {n: np.stack([result.outputs[k][n] for k in seqs]) if seqs else np.zeros((0,)) for n in names}
    out["seq"] = np.array(seqs, dtype=np.int64)
    return out


def transport_table(stats: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per segment, ms per frame: compute, transport, and transport as a share of the stage's time.

    A stage's time is the wall time of its main loop per frame: compute plus
    recv, decode, encode and send. Transport is the CPU time those four took on
    the main loop plus the CPU time of ZeroMQ's threads, which move the bytes
    beside it (CPU times, so work the I/O thread does while preempting the main
    loop on a shared core is counted once). Waiting on a full downstream queue
    (back-pressure) is reported apart, as `blocked`.
    """
    rows = []
    for s in stats:
        n = max(int(s.get("frames", 0)), 1)
        sec = s.get("seconds", {})
        cpu = s.get("cpu_seconds") or sec
        io = ("recv", "decode", "encode", "send")
        main_wall = sum(float(sec.get(k, 0.0)) for k in io)
        main_cpu = sum(float(cpu.get(k, 0.0)) for k in io)
        zmq_cpu = s.get("zmq_cpu")
        background = float(zmq_cpu if zmq_cpu is not None else s.get("background_cpu", 0.0))
        compute = float(sec.get("compute", 0.0))
        transport = main_cpu + background
        stage_time = compute + main_wall
        rows.append({"device": s.get("device"), "stages": ",".join(s.get("stages", [])), "frames": s.get("frames", 0),
                     "compute_ms": 1e3 * compute / n, "transport_ms": 1e3 * transport / n,
                     "main_loop_ms": 1e3 * main_cpu / n, "background_ms": 1e3 * background / n,
                     "stage_ms": 1e3 * stage_time / n,
                     "blocked_ms": 1e3 * float(sec.get("blocked", 0.0)) / n,
                     "transport_share": transport / stage_time if stage_time > 0 else 0.0})
    return rows


def run_plan(out_dir: str, frames: Sequence[Frame], n_frames: int, deployment: Optional[str] = None,
             keys_dir: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
             on_result: Optional[OnResult] = None) -> RunResult:
    """Run frames through a plan whose devices are already serving."""
    plan = read_pipeline(out_dir)
    driver = Driver(out_dir, load_deployment(deployment, plan), keys_dir, timeout_s=timeout_s)
    return driver.run(cycle(frames), n_frames, on_result)


__all__ = ["Driver", "RunResult", "RunFailed", "stack_outputs", "transport_table", "run_plan", "DEFAULT_TIMEOUT_S"]


