"""Where each device listens: the manifest's devices plus a small deployment file.

    {"devices": {"rpi4": {"host": "10.0.0.12", "port": 5550},
                 "xu4":  {"host": "10.0.0.11", "port": 5550, "bind": "0.0.0.0"}}}

Every socket a device offers is bound by that device, at its `host` (or at
`bind`, only when given: nothing binds to all interfaces unless asked), on
consecutive ports from `port`:

    port + 0        status (PUB): heartbeats, progress
    port + 1 + i    input (PULL) of the device's i-th segment, in pipeline order
    port + 1 + n + j  results (PUSH) of the device's j-th segment of the last step (a step of
                      replicas may put several on one device)

Workers connect to the next segment's input; the driver connects to the first
segment's input, the results socket and every status socket.

`edgec compile` writes out/deployment.json (DEPLOYMENT_FILE) from the cluster
spec: each device's `host` (default 127.0.0.1), `port` (default 5550 + 10 x
its position, or past the device before's ports where it needs more than 10) and `bind`. The launchers and `run` use it unless given another
file; it is not covered by the manifest's digest, so a deployment can be moved
to other addresses by editing it (the same file on every board and on the
machine that runs `run`). Without it, the same defaults come from the manifest's
cluster spec. For `edgec run --local`, every device gets 127.0.0.1 and free
ports.
"""


import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from edgec.errors import EdgecError
from edgec.jsonfile import read_json
from edgec.runtime.pipeline import Pipeline, Segment

DEFAULT_PORT = 5550
DEPLOYMENT_FILE = "deployment.json"


@dataclass(frozen=True)
class DeviceEndpoint:
    host: str
    port: int
    bind: Optional[str] = None


@dataclass
class Deployment:
    devices: Dict[str, DeviceEndpoint]
    transport: str = "tcp"

    # ports ---------------------------------------------------------------
    def ports_needed(self, plan: Pipeline, device: str) -> int:
        return 1 + len(plan.segments_of(device)) + len(plan.final_segments(device))

    def _port(self, plan: Pipeline, device: str, offset: int) -> int:
        return self._endpoint(device).port + offset

    def _endpoint(self, device: str) -> DeviceEndpoint:
        try:
            return self.devices[device]
        except KeyError:
            raise EdgecError(f"device '{device}' has no entry in the deployment; add "
                             f'"{device}": {{"host": ..., "port": ...}}') from None

    def _addr(self, device: str, port: int, bind: bool) -> str:
        ep = self._endpoint(device)
        host = (ep.bind or ep.host) if bind else ep.host
        if bind and host in ("0.0.0.0", "::"):
            host = "*"
        return f"{self.transport}://{host}:{port}"

    # endpoints -----------------------------------------------------------
    def status(self, plan: Pipeline, device: str, bind: bool = False) -> str:
        return self._addr(device, self._port(plan, device, 0), bind)

    def segment_input(self, plan: Pipeline, segment: Segment, bind: bool = False) -> str:
        i = [s.index for s in plan.segments_of(segment.device)].index(segment.index)
        return self._addr(segment.device, self._port(plan, segment.device, 1 + i), bind)

    def results(self, plan: Pipeline, bind: bool = False, segment: Optional[Segment] = None) -> str:
        """The results socket of `segment` (default: the last segment), one of the last step's."""
        segment = plan.segments[-1] if segment is None else segment
        device = segment.device
        j = [s.index for s in plan.final_segments(device)].index(segment.index)
        return self._addr(device, self._port(plan, device, 1 + len(plan.segments_of(device)) + j), bind)

    def to_json(self) -> Dict[str, Any]:
        devices: Dict[str, Any] = {}
        for name, ep in self.devices.items():
            entry: Dict[str, Any] = {"host": ep.host, "port": ep.port}
            if ep.bind:
                entry["bind"] = ep.bind
            devices[name] = entry
        return {"devices": devices, "transport": self.transport}

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")


def load_deployment(path: Optional[str], plan: Pipeline) -> Deployment:
    """The deployment file at `path`; else out/deployment.json; else the default one from the manifest."""
    if path is None:
        beside = os.path.join(plan.out_dir, DEPLOYMENT_FILE)
        if not os.path.isfile(beside):
            return default_deployment(plan)
        path = beside
    data = read_json(path, missing="deployment file not found; pass the deployment JSON with --deployment, or "
                                   "leave it out for the hosts in the manifest's cluster spec")
    return parse_deployment(data, plan, path)


def parse_deployment(data: Any, plan: Pipeline, where: str = "deployment") -> Deployment:
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise EdgecError('expected {"devices": {"<device>": {"host": ..., "port": ...}}}', where=where)
    transport = data.get("transport", "tcp")
    if transport != "tcp":
        raise EdgecError(f"$.transport: '{transport}' is not supported; use tcp", where=where)
    devices = {}
    for name, entry in data["devices"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("host"), str):
            raise EdgecError(f"$.devices.{name}: needs a host", where=where)
        port = entry.get("port", DEFAULT_PORT)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise EdgecError(f"$.devices.{name}.port: {port!r} is not a port number", where=where)
        bind = entry.get("bind")
        if bind is not None and not isinstance(bind, str):
            raise EdgecError(f"$.devices.{name}.bind: expected an address", where=where)
        devices[name] = DeviceEndpoint(entry["host"], port, bind)
    missing = [d for d in plan.devices if d not in devices]
    if missing:
        raise EdgecError(f"$.devices: no entry for device {', '.join(missing)}", where=where)
    dep = Deployment(devices, transport)
    _check_overlaps(dep, plan, where)
    return dep


def default_deployment(plan: Pipeline) -> Deployment:
    devices = {}  # type: Dict[str, DeviceEndpoint]
    dep = Deployment(devices)
    default = DEFAULT_PORT
    for k, name in enumerate(plan.devices):
        spec = plan.device_spec(name)
        devices[name] = DeviceEndpoint(spec.get("host", "127.0.0.1"), int(spec.get("port", default)),
                                       spec.get("bind"))
        # the next default: 10 ports on, or past this device's ports where it needs more (many stages)
        default = max(DEFAULT_PORT + 10 * (k + 1), default + dep.ports_needed(plan, name))
    _check_overlaps(dep, plan, "manifest.json: cluster")
    return dep


def local_deployment(plan: Pipeline, host: str = "127.0.0.1") -> Deployment:
    """Every device on this machine, each on a run of free ports."""
    devices: Dict[str, DeviceEndpoint] = {}
    taken: List[int] = []
    dep = Deployment(devices)
    for name in plan.devices:
        n = dep.ports_needed(plan, name)
        base = _free_port_run(host, n, taken)
        taken.extend(range(base, base + n))
        devices[name] = DeviceEndpoint(host, base)
    return dep


def _free_port_run(host: str, n: int, taken: List[int]) -> int:
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        if base + n >= 65536 or any(p in taken for p in range(base, base + n)):
            continue
        if all(_port_free(host, p) for p in range(base, base + n)):
            return base
    raise EdgecError(f"no run of {n} free ports on {host}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _check_overlaps(dep: Deployment, plan: Pipeline, where: str) -> None:
    used: Dict[Any, str] = {}
    for name in plan.devices:
        ep = dep.devices[name]
        for port in range(ep.port, ep.port + dep.ports_needed(plan, name)):
            key = (ep.host, port)
            if key in used:
                raise EdgecError(f"$.devices.{name}: port {port} on {ep.host} is also used by {used[key]}; "
                                 f"each device needs {dep.ports_needed(plan, name)} ports from its base port",
                                 where=where)
            used[key] = name
