"""The board's command line: serve a device, run frames through a plan, make CurveZMQ keys.

    python -m edgec.runtime serve OUT --device NAME [--deployment FILE] [--cores 0,1 | --no-pin] [--keys DIR]
    python -m edgec.runtime run OUT [--local] [--inputs x.npz] [--frames N] [--output y.npz] ...
    python -m edgec.runtime keys OUT [--folder DIR] [--force]

It needs argparse and the runtime only (no typer, rich or compiler side), so a
board installed as its README says runs it; `edgec serve|run|keys` call the
same functions. A user error prints one line `edgec: <what>` and exits 2.
Python 3.6 syntax: it runs on the boards.
"""

import argparse
import sys
from typing import Any, Callable, List, Optional, Sequence

from edgec.errors import EdgecError

DEFAULT_TIMEOUT_S = 10.0  # as edgec.runtime.driver's


def serve(out: str, device: str, deployment: Optional[str] = None, cores: Optional[str] = None,
          no_pin: bool = False, keys: Optional[str] = None, hwm: int = 2, log: Any = None) -> None:
    """Serve DEVICE's stages until SIGINT/SIGTERM, pinned to `cores` or else to the cores the manifest names."""
    from edgec.runtime.device import parse_cores, serve_device
    from edgec.runtime.local import plan_cores
    from edgec.runtime.pipeline import read_pipeline

    log = log or sys.stderr
    pinned = parse_cores(cores)
    if pinned is None and not no_pin:
        pipeline = read_pipeline(out)
        if device in pipeline.devices:
            by_device, notes = plan_cores(pipeline)
            pinned = by_device.get(device) or None
            for note in notes:
                if note.startswith("device {}:".format(device)):
                    print("edgec: " + note, file=log, flush=True)
    serve_device(out, device, deployment, pinned, keys, hwm, log=log)


def run(out: str, inputs: Optional[str] = None, frames: Optional[int] = None, local: bool = False,
        deployment: Optional[str] = None, keys: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT_S,
        output: Optional[str] = None, no_pin: bool = False, seed: int = 0, log: Any = None, err: Any = None,
        on_result: Optional[Callable[[int, Any, Optional[str]], None]] = None) -> int:
    """Feed frames to the plan's first device, collect results from the last, print a report and write
    out/run-stats.json; 0 if every frame came back, else 1. `on_result(seq, outputs, error)` sees each frame."""
    import numpy as np

    from edgec.runtime.deployment import load_deployment
    from edgec.runtime.driver import Driver, stack_outputs
    from edgec.runtime.frames import cycle, load_frames, random_frames
    from edgec.runtime.pipeline import read_pipeline

    log, err = log or sys.stdout, err or sys.stderr
    pipeline = read_pipeline(out)
    data = load_frames(inputs, pipeline) if inputs else random_frames(pipeline.inputs, 1, seed)
    n = frames if frames is not None else len(data)
    if n < 1:
        raise EdgecError("--frames {}: send at least one frame".format(n))
    if local:
        if deployment is not None:
            raise EdgecError("--local picks its own ports; leave out --deployment")
        from edgec.runtime.interrupt import terminate_as_interrupt
        from edgec.runtime.local import LocalCluster

        with terminate_as_interrupt(), LocalCluster(out, keys_dir=keys, pin=not no_pin) as cluster:
            for note in cluster.notes:
                print("edgec: " + note, file=err, flush=True)
            driver = Driver(out, cluster.deployment, keys, timeout_s=timeout, watch=cluster.problems)
            result = driver.run(cycle(data), n, on_result)
    else:
        driver = Driver(out, load_deployment(deployment, pipeline), keys, timeout_s=timeout)
        result = driver.run(cycle(data), n, on_result)
    if output is not None:
        np.savez(output, **stack_outputs(result, driver.output_names))
    for line in report(result):
        print(line, file=log)
    if result.stats:
        from edgec.runtime.run_stats import write_run_stats

        note = write_run_stats(out, pipeline.manifest, result)
        if note is not None:
            result.notes.append(note)
    for note in result.notes:
        print("edgec: note: " + note, file=err)
    if not result.ok:
        print("edgec: run failed: " + result.summary(), file=err, flush=True)
        return 1
    return 0


def report(result: Any) -> List[str]:
    """A run's throughput and latency, then per segment what compute and transport took per frame."""
    from edgec.runtime.driver import transport_table

    lat = sorted(result.latencies_s)
    p50 = lat[len(lat) // 2] * 1e3 if lat else 0.0
    lines = ["{} of {} frames in {:.2f} s: {:.1f} fps, latency p50 {:.1f} ms".format(
        result.delivered, result.frames, result.wall_s, result.fps, p50)]
    rows = [[str(r["device"]), r["stages"], str(r["frames"]), "{:.2f}".format(r["compute_ms"]),
             "{:.3f}".format(r["transport_ms"]), "{:.2f}%".format(100 * r["transport_share"]),
             "{:.2f}".format(r["blocked_ms"])] for r in transport_table(result.stats)]
    if rows:
        head = ["device", "stages", "frames", "compute ms", "transport ms", "transport share", "blocked ms"]
        widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
        lines.append("per frame, measured in the device processes:")
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head] + rows]
    return lines


def keys(out: str, folder: Optional[str] = None, force: bool = False, log: Any = None) -> None:
    """A CurveZMQ keypair per device of the plan and one for the driver."""
    import os

    from edgec.runtime.keys import DRIVER, make_keys
    from edgec.runtime.pipeline import read_pipeline

    pipeline = read_pipeline(out)
    target = folder if folder is not None else os.path.join(out, "keys")
    names = make_keys(target, list(pipeline.devices) + [DRIVER], overwrite=force)
    print("wrote keys for {} to {}/ (public/*.key: copy to every board; private/NAME.key_secret: only to "
          "board NAME)".format(", ".join(names), target), file=log or sys.stdout)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one `edgec:` line and exit 2, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print("edgec: {}; see `{} --help`".format(message, self.prog), file=sys.stderr, flush=True)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m edgec.runtime", description="Serve and run a plan that edgec compiled.")
    sub = ap.add_subparsers(dest="command", metavar="{serve,run,keys}")
    sub.required = True
    s = sub.add_parser("serve", help="run one device's stages: receive frames, compute, send results on")
    s.add_argument("out", help="folder written by edgec compile (the device's bundle)")
    s.add_argument("--device", required=True, help="the device to serve, as named in the cluster")
    s.add_argument("--deployment", help="deployment JSON: device -> host/port")
    s.add_argument("--cores", help="pin to these core ids, e.g. 0,1 (default: the cores its units declare)")
    s.add_argument("--no-pin", action="store_true", help="do not pin the process to cores")
    s.add_argument("--keys", help="keys folder from `edgec keys` (CURVE on)")
    s.add_argument("--hwm", type=int, default=2, help="high-water mark of each queue, in messages")
    r = sub.add_parser("run", help="feed frames to the plan's first device, collect results from the last")
    r.add_argument("out", help="folder written by edgec compile")
    r.add_argument("--inputs", help=".npz: per input one frame, or a stack [N, ...] (default: seeded random)")
    r.add_argument("--frames", type=int, help="frames to send, cycling through the inputs (default: as many as given)")
    r.add_argument("--local", action="store_true", help="start every device as its own process here (loopback)")
    r.add_argument("--deployment", help="deployment JSON of the serving devices")
    r.add_argument("--keys", help="keys folder from `edgec keys` (CURVE on)")
    r.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds a device may stay silent before the run fails")
    r.add_argument("--output", help="write the outputs, stacked per name, to this .npz")
    r.add_argument("--no-pin", action="store_true", help="with --local: do not pin device processes to cores")
    r.add_argument("--seed", type=int, default=0, help="seed for random inputs")
    k = sub.add_parser("keys", help="make a CurveZMQ keypair per device and one for the driver")
    k.add_argument("out", help="folder written by edgec compile")
    k.add_argument("--folder", help="where to write them (default: OUT/keys)")
    k.add_argument("--force", action="store_true", help="replace existing keys")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.out, args.device, args.deployment, args.cores, args.no_pin, args.keys, args.hwm)
        elif args.command == "run":
            sys.exit(run(args.out, args.inputs, args.frames, args.local, args.deployment, args.keys, args.timeout,
                         args.output, args.no_pin, args.seed))
        else:
            keys(args.out, args.folder, args.force)
    except EdgecError as exc:
        print("edgec: {}".format(exc), file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        sys.exit(getattr(exc, "exit_code", 130))
