"""Serve one device: run its stages on the frames that arrive, pass the results on.

One process per device. Each of the device's segments (consecutive stages
of the plan on one of its compute units) has an input socket (PULL, bound) and
output sockets (PUSH: connected to the next step's inputs and dealt among
them, edgec.runtime.dealing; or bound as a results socket for a segment of
the last step). Every segment is served by its own thread, pinned to its
unit's cores, so the units of a board compute different frames at once
(ONNX Runtime releases the GIL while it computes). While a segment computes frame k,
ZeroMQ's I/O thread already receives frame k+1 and sends frame k-1; high-water
marks bound every queue, so a slow device holds back the ones before it.

A heartbeat thread publishes the device's state on its status socket: the
driver tells a dead or hung device from a slow one by it.

    python -m edgec.runtime serve OUT --device NAME [--deployment FILE] [--cores 0,1] [--keys DIR]
"""


import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import zmq

from edgec.errors import EdgecError
from edgec.runtime import limits, wire
from edgec.runtime.dealing import Dealer, EndGather, NoReplicaLeft
from edgec.runtime.deployment import Deployment, load_deployment
from edgec.runtime.gather import SliceGather
from edgec.runtime.keys import DRIVER, Keys, load_keys
from edgec.runtime.pipeline import Pipeline, Segment, read_pipeline
from edgec.runtime.stage import StageRunner
from edgec.runtime.trust import check_listed_files, check_manifest_digest

DEFAULT_HWM = 2
HEARTBEAT_S = 0.5
_TIMERS = ("recv", "decode", "compute", "encode", "send", "blocked")


@dataclass
class _Counters:
    run: Optional[str] = None  # the run these totals are of: a new run starts from zero
    frames: int = 0
    errors: int = 0
    times: Dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in _TIMERS})  # wall clock
    cpu: Dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in _TIMERS})  # this thread's CPU
    stage_compute: Dict[str, float] = field(default_factory=dict)
    cpu_process: float = 0.0
    cpu_main: float = 0.0


class _SegmentWorker:
    def __init__(self, plan: Pipeline, segment: Segment, runners: List[StageRunner]) -> None:
        self.segment = segment
        self.runners = runners
        self.expect = plan.expect(segment.receives)
        self.max_bytes = limits.frame_bytes(self.expect)  # what one frame for this segment can hold
        self.sends = list(segment.sends)
        self.input: Optional[zmq.Socket] = None
        self.output: Optional[Dealer] = None
        self.ends = EndGather([s.names for s in plan.upstream(segment).segments]
                              if plan.upstream(segment) is not None else ["source"])
        before = plan.upstream(segment)
        self.gather = None  # type: Optional[SliceGather]
        if before is not None and before.parallel == "slice":  # one message per slice of each frame
            self.gather = SliceGather({seg.names: plan.expect(seg.sends) for seg in before.segments})
        self.counters = _Counters()
        self._cpu0 = (time.process_time(), time.thread_time(), zmq_thread_cpu())


def zmq_thread_cpu() -> Optional[float]:
    """CPU seconds used so far by this process's ZeroMQ threads (Linux; None elsewhere)."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm", "r") as f:
                if not f.read().startswith("ZMQbg"):
                    continue
            with open(f"/proc/self/task/{tid}/schedstat", "r") as f:
                total += int(f.read().split()[0])  # ns on CPU
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def pin_to_cores(cores: Optional[Sequence[int]]) -> Optional[List[int]]:
    """Pin this process (and every thread it starts later) to `cores`."""
    if not cores:
        return None
    if not hasattr(os, "sched_setaffinity"):
        print("edgec: this system cannot pin processes to cores; running unpinned", file=sys.stderr)
        return None
    try:
        os.sched_setaffinity(0, set(int(c) for c in cores))
    except OSError as exc:
        raise EdgecError(f"cannot pin to cores {list(cores)} ({exc.strerror}); this machine has cores "
                         f"{sorted(os.sched_getaffinity(0))}") from None
    return sorted(int(c) for c in cores)


class DeviceWorker:
    """The stages of one device, served over ZeroMQ until `stop()`."""

    def __init__(self, out_dir: str, device: str, deployment: Optional[Deployment] = None,
                 cores: Optional[Sequence[int]] = None, keys_dir: Optional[str] = None,
                 hwm: int = DEFAULT_HWM, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.plan = read_pipeline(out_dir)
        if device not in self.plan.devices:
            raise EdgecError(f"device '{device}' runs no stage of this plan; devices with stages: "
                             f"{', '.join(self.plan.devices)}", where=out_dir)
        self.device = device
        check_manifest_digest(out_dir)
        models = [p for st in self.plan.stages for p in [st.model] + ([st.external_data["path"]] if
                                                                       st.external_data else [])]
        check_listed_files(out_dir, self.plan.manifest.files, under=device, skip=models)  # models: StageRunner
        self.deployment = deployment if deployment is not None else load_deployment(None, self.plan)
        self.cores = pin_to_cores(cores)  # before any thread exists: ORT's and ZeroMQ's inherit it
        threads = len(self.cores) if self.cores else None
        self._segment_cores = {}  # type: Dict[int, List[int]]
        self.keys: Optional[Keys] = None
        if keys_dir is not None:
            self.keys = load_keys(keys_dir, device, list(self.plan.devices) + [DRIVER])
        self.segments = []  # type: List[_SegmentWorker]
        for seg in self.plan.segments_of(device):
            own = _unit_cores(seg, self.cores)
            self._segment_cores[seg.index] = own
            n = len(own) if own else threads
            self.segments.append(_SegmentWorker(self.plan, seg, [StageRunner(out_dir, st, n) for st in seg.stages]))
        self.hwm = hwm
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._state: Dict[str, Any] = {"busy": None, "seq": None, "run": None, "since": None,
                                       "frames": 0, "rejected": 0, "last_rejection": None, "active": None,
                                       "ended": None}
        self.ctx: Optional[zmq.Context] = None
        self._auth: Any = None
        self._status: Optional[zmq.Socket] = None

    # set-up ------------------------------------------------------------------
    def bind(self) -> None:
        try:
            self._bind_all()
        except BaseException:
            self.close()
            raise

    def _bind_all(self) -> None:
        ctx = self.ctx = zmq.Context()
        if self.keys is not None:
            self._auth = self.keys.authenticator(ctx)
        plan, dep = self.plan, self.deployment
        for sw in self.segments:
            sw.input = self._socket(zmq.PULL)
            sw.input.setsockopt(zmq.MAXMSGSIZE, limits.part_bytes(sw.expect))  # larger: dropped unread
            _bind(sw.input, dep.segment_input(plan, sw.segment, bind=True))
            if self.keys is None:
                _bind(sw.input, _inproc(sw.segment))
        for sw in self.segments:
            nxt = plan.next_step(sw.segment)
            if nxt is None:
                results = self._socket(zmq.PUSH)
                _bind(results, dep.results(plan, bind=True, segment=sw.segment))
                sw.output = Dealer("one", [("sink", 1.0, results)])
            else:
                targets = []
                for seg in nxt.segments:
                    sock = self._socket(zmq.PUSH, server=seg.device)
                    here = seg.device == self.device and self.keys is None
                    sock.connect(_inproc(seg) if here else dep.segment_input(plan, seg))
                    targets.append((seg.names, seg.weight, sock))
                sw.output = Dealer(nxt.fan_out, targets)
        self._status = self._socket(zmq.PUB)
        _bind(self._status, dep.status(plan, self.device, bind=True))

    def _socket(self, kind: int, server: Optional[str] = None) -> zmq.Socket:
        """A socket this device binds (server None) or connects to device `server`."""
        assert self.ctx is not None
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        hwm = 10 if kind == zmq.PUB else self.hwm  # options apply to connections made after them
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if self.keys is not None:
            if server is None:
                self.keys.server(sock)
            else:
                self.keys.client(sock, server)
        return sock

    def endpoints(self) -> List[str]:
        plan, dep = self.plan, self.deployment
        lines = [f"status  {dep.status(plan, self.device, bind=True)}"]
        for sw in self.segments:
            lines.append(f"input   {dep.segment_input(plan, sw.segment, bind=True)}  (stages {sw.segment.names})")
        for seg in plan.final_segments(self.device):
            lines.append(f"results {dep.results(plan, bind=True, segment=seg)}")
        return lines

    # serving -----------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def serve(self) -> None:
        if self.ctx is None:
            self.bind()
        beat = threading.Thread(target=self._heartbeat, name="edgec-heartbeat", daemon=True)
        beat.start()
        workers = [threading.Thread(target=self._serve_segment, args=(sw,), name=f"edgec-{sw.segment.names}",
                                    daemon=True) for sw in self.segments[1:]]
        for w in workers:
            w.start()
        try:
            if self.segments:
                self._serve_segment(self.segments[0])
        finally:
            self._stop.set()
            for w in workers:
                w.join(timeout=5)
            beat.join(timeout=2)
            self.close()

    def _serve_segment(self, sw: _SegmentWorker) -> None:
        """One segment's loop, on its own thread pinned to its unit's cores (the first on the main thread)."""
        own = self._segment_cores.get(sw.segment.index)
        if own and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, set(own))  # Linux: 0 is the calling thread
            except OSError:
                pass  # keeps the process's cores
        assert sw.input is not None
        while not self._stop.is_set():
            if sw.input.poll(100, zmq.POLLIN):
                self._handle(sw)

    def close(self) -> None:
        for sw in self.segments:
            socks = [sw.input] + (list(sw.output.sockets) if sw.output is not None else [])
            for sock in socks:
                if sock is not None:
                    sock.close(0)
            sw.input = sw.output = None
        if self._status is not None:
            self._status.close(0)
            self._status = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    def _handle(self, sw: _SegmentWorker) -> None:
        assert sw.input is not None
        c = sw.counters
        t0, u0 = time.perf_counter(), time.thread_time()
        frames = sw.input.recv_multipart(copy=False)
        t1, u1 = time.perf_counter(), time.thread_time()
        try:
            msg = wire.decode(frames, sw.expect if sw.gather is None else None, sw.max_bytes)
            joined = None
            if sw.gather is not None and msg.kind == "data":
                joined = sw.gather.add(msg, msg.header.get("skip") or [])
                if joined is None:
                    return  # the frame's other slices are still to come
                msg.tensors = joined
        except wire.WireError as exc:
            self._reject(sw, exc)
            return
        t2, u2 = time.perf_counter(), time.thread_time()
        if msg.kind != "error" and c.run != msg.run:  # a run after one that failed: its totals start afresh
            self._stats(sw)
            c = sw.counters
            c.run = msg.run
        if msg.kind == "error":
            if sw.gather is not None and not sw.gather.fail(msg.run, msg.seq):
                return  # another slice of this frame failed first: its error went on
            c.errors += 1
            self._send(sw, [frames[0].bytes], count=False)
            return
        if msg.kind == "end":
            self._state["ended"] = msg.run  # the run is over here: the deployment is free for another
            header = dict(msg.header)
            stats = sw.ends.add(msg.run, header.get("via"), header.get("skip") or [], header.get("stats") or [])
            if stats is None:
                return  # waiting for the end marker of another segment of the step before
            header["stats"] = stats + [self._stats(sw)]
            header["via"] = sw.segment.names
            self._send(sw, [json.dumps(header, separators=(",", ":")).encode()], count=False,
                       skip=header.get("skip"), broadcast=True)
            return
        c.times["recv"] += t1 - t0
        c.times["decode"] += t2 - t1
        c.cpu["recv"] += u1 - u0
        c.cpu["decode"] += u2 - u1
        env = dict(msg.tensors)
        st = self._state
        st.update(run=msg.run, seq=msg.seq)
        try:
            for runner in sw.runners:
                st.update(busy=runner.stage.name, since=time.monotonic())
                s0 = time.perf_counter()
                env.update(runner.run(env))
                dt = time.perf_counter() - s0
                c.times["compute"] += dt
                c.stage_compute[runner.stage.name] = c.stage_compute.get(runner.stage.name, 0.0) + dt
            t3, u3 = time.perf_counter(), time.thread_time()
            skip = msg.header.get("skip")
            out = wire.encode("data", msg.run, msg.seq, [(n, env[n]) for n in sw.sends], **({"skip": skip} if skip else {}))
            c.times["encode"] += time.perf_counter() - t3
            c.cpu["encode"] += time.thread_time() - u3
        except Exception as exc:  # a stage failing on one frame: report it in that frame's place
            stage = st.get("busy") or sw.segment.names
            st.update(busy=None, since=None)
            c.errors += 1
            self._send(sw, wire.encode_error(msg.run, msg.seq, self.device, str(stage),
                                             f"{type(exc).__name__}: {exc}"), count=False)
            return
        st.update(busy=None, since=None, active=time.monotonic())
        self._send(sw, out, count=True, skip=skip)
        c.frames += 1
        st["frames"] += 1

    def _send(self, sw: _SegmentWorker, frames: List[Any], count: bool, skip: Optional[List[str]] = None,
              broadcast: bool = False) -> None:
        """Send downstream (to the step after, dealt by its fan-out; `broadcast`: to each of its live
        segments), waiting out back-pressure (a full queue) apart from the send itself."""
        assert sw.output is not None
        dealer = sw.output
        try:
            targets = dealer.live(skip or []) if broadcast else dealer.pick(skip or [])
        except NoReplicaLeft:
            return  # the driver knows: it found every replica of the step dead
        if not targets:
            return
        t0 = time.perf_counter()
        if not broadcast:
            targets = dealer.wait_writable(targets, skip or [], lambda: not self._stop.is_set())
            if targets is None:
                return
        t1, u1 = time.perf_counter(), time.thread_time()
        if not dealer.send(targets, frames, lambda: not self._stop.is_set()):
            return
        if count:
            sw.counters.times["blocked"] += t1 - t0
            sw.counters.times["send"] += time.perf_counter() - t1
            sw.counters.cpu["send"] += time.thread_time() - u1

    def _reject(self, sw: _SegmentWorker, exc: wire.WireError) -> None:
        text = f"stage {sw.segment.names}: rejected a message: {exc}"
        if exc.seq is not None and exc.run is not None:
            sw.counters.errors += 1
            self._send(sw, wire.encode_error(exc.run, exc.seq, self.device, sw.segment.names,
                                             f"rejected a message: {exc}"), count=False)
        else:
            self._state["rejected"] += 1
            self._state["last_rejection"] = text
        print(f"edgec: device {self.device}: {text}", file=sys.stderr, flush=True)

    def _stats(self, sw: _SegmentWorker) -> Dict[str, Any]:
        c = sw.counters
        p0, m0, z0 = sw._cpu0
        p1, m1, z1 = time.process_time(), time.thread_time(), zmq_thread_cpu()
        stats = {"device": self.device, "segment": sw.segment.index, "stages": [s.name for s in sw.segment.stages],
                 "cores": self.cores, "frames": c.frames, "errors": c.errors,
                 "seconds": {k: round(v, 6) for k, v in c.times.items()},
                 "cpu_seconds": {k: round(v, 6) for k, v in c.cpu.items() if k not in ("compute", "blocked")},
                 "stage_compute": {k: round(v, 6) for k, v in c.stage_compute.items()},
                 # CPU time of this process's other threads (ZeroMQ I/O, heartbeat): transport work
                 # that happens beside the main loop
                 "background_cpu": round(max(0.0, (p1 - p0) - (m1 - m0)), 6),
                 # of which ZeroMQ's own threads (I/O, reaper), where the system tells; both are per
                 # process, so a device with several segments counts them in each segment's totals
                 "zmq_cpu": round(z1 - z0, 6) if z0 is not None and z1 is not None else None}
        sw.counters = _Counters(run=c.run)
        sw._cpu0 = (p1, m1, z1)
        return stats

    def _heartbeat(self) -> None:
        sock = self._status
        assert sock is not None
        stages = self.plan.stage_names(self.device)
        while True:
            st = dict(self._state)
            since = st.pop("since")
            active = st.pop("active")
            # how long since this device last finished a frame (of run `run`): a driver tells a deployment
            # that another run is using from an idle one by it
            st["idle_s"] = round(time.monotonic() - active, 3) if active is not None else None
            # how long the current stage has been computing, by this device's clock
            st["busy_s"] = round(time.monotonic() - since, 3) if since is not None and st.get("busy") else None
            beat = {"device": self.device, "pid": os.getpid(), "stages": stages, **st}
            try:
                sock.send(json.dumps(beat).encode(), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            if self._stop.wait(self.heartbeat_s):
                break


def _unit_cores(segment: Segment, process_cores: Optional[List[int]]) -> Optional[List[int]]:
    """The cores of the segment's unit, as this process holds them (a unit's core this machine lacks folds
    onto one it has, as `edgec run --local` folds a device's); None when the process is not pinned."""
    if not process_cores:
        return None
    wanted = list(segment.stages[0].cores)
    if not wanted:
        return None
    return sorted({c if c in process_cores else process_cores[c % len(process_cores)] for c in wanted})


def _inproc(segment: Segment) -> str:
    """The in-process address of a segment's input: a hop between two units of this device passes the
    tensors' buffers to the next worker thread without a copy or a socket (not with CURVE keys: those
    hops go over the deployment's TCP address, as from other devices)."""
    return "inproc://segment-{}".format(segment.index)


def _bind(sock: zmq.Socket, addr: str) -> None:
    try:
        sock.bind(addr)
    except zmq.ZMQError as exc:
        raise EdgecError(f"cannot listen on {addr}: {exc}; fix host/port in the deployment file") from None


def serve_device(out_dir: str, device: str, deployment: Optional[str] = None, cores: Optional[Sequence[int]] = None,
                 keys_dir: Optional[str] = None, hwm: int = DEFAULT_HWM, log: Any = sys.stderr) -> None:
    """Serve `device` until SIGINT or SIGTERM."""
    plan = read_pipeline(out_dir)
    dep = load_deployment(deployment, plan)
    worker = DeviceWorker(out_dir, device, dep, cores=cores, keys_dir=keys_dir, hwm=hwm)
    worker.bind()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: worker.stop())
    pinned = f"pinned to cores {worker.cores}" if worker.cores else "not pinned"
    print(f"edgec: device {device}: serving stages {', '.join(plan.stage_names(device))} ({pinned}"
          f"{', CURVE' if keys_dir else ''})", file=log, flush=True)
    for line in worker.endpoints():
        print(f"  {line}", file=log, flush=True)
    if keys_dir is None:
        print(f"edgec: WARNING: device {device} serves without CURVE keys: anyone who can reach these ports "
              f"can feed it frames and read its results. Run `edgec keys` and serve with --keys", file=log,
              flush=True)
    for seg in worker.segments:
        for runner in seg.runners:
            for note in runner.notes:
                print(f"edgec: stage {runner.stage.name}: {note}", file=log, flush=True)
    worker.serve()


def parse_cores(text: Optional[str]) -> Optional[List[int]]:
    if not text:
        return None
    try:
        return [int(c) for c in text.replace(" ", "").split(",") if c]
    except ValueError:
        raise EdgecError(f"--cores {text}: expected core ids like 0,1") from None
