"""Energy per frame: unit power (active and idle), network energy per byte, and a plan's predicted energy.

A plan's energy per frame, at its predicted streaming rate (one frame per
bottleneck period), is

    sum over stages   share x active_w(unit) x stage ms   (the power a unit adds to its board's idle
                                                          draw while it computes, times how long it does)
  + sum over boards the plan uses   idle_w(board) x period (a board that runs nothing can be switched off)
  + sum over transfers   share x bytes x NETWORK_NJ_PER_BYTE

``share`` is a replica's weight (1 for a stage alone in its step). Figures per
unit: ``BUILTIN_POWER`` by built-in profile name; a measured profile file
(`edgec profile`) may give ``"power": {"active_w": .., "idle_w": ..}`` in a
unit's entry, and that wins (``idle_w`` there is the whole board's). A unit
with neither has no power figures: its plan's energy is None and
``--objective energy`` refuses it (``MissingPower``).

The Jetson Nano has two power modes (nvpmodel): MAXN 10 W (4 cores at
1479 MHz, GPU 921.6 MHz) and 5 W (2 cores at 918 MHz, GPU 640 MHz). A device's
``"power_mode": "5W"`` in cluster.json takes ``NANO_5W``'s figures (default
MAXN); it changes power only: the built-in latency profiles are MAXN's, so a
board run in 5 W mode wants a profile measured in that mode too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from edgec.cluster import Cluster, ComputeUnit, Device
from edgec.errors import EdgecError


@dataclass(frozen=True)
class UnitPower:
    active_w: float  # what the board draws above idle while this unit computes at full load
    idle_w: float  # the whole board at idle
    source: str


_PIDRAMBLE = ("Raspberry Pi 4 B, Raspbian, HDMI off: idle 540 mA = 2.7 W, `stress --cpu 4` 1280 mA = 6.4 W at "
              "5.0 V (Jeff Geerling, pidramble.com/wiki/benchmarks/power-consumption)")
_NANO_MODES = ("NVIDIA L4T Development Guide 32.x, 'Supported Modes and Power Efficiency': MAXN 10 W "
               "(4 cores 1479 MHz, GPU 921.6 MHz), 5 W (2 cores 918 MHz, GPU 640 MHz)")
_NANO_PARTS = ("module idle about 1.25 W and its budget split between CPU and GPU: Holly et al., 'Profiling "
               "Energy Consumption of Deep Neural Networks on NVIDIA Jetson Nano', IGSC 2020 (module power "
               "under DNN load within the 10 W budget); assumption: CPU 4 cores 3.5 W, GPU 4.0 W above idle")
_SBC_BENCH = ("ODROID-XU4, all 8 cores busy: 5.5 W at 500 MHz to 8.5 W at 1400 MHz (whole setup, sbc-bench "
              "Efficiency_Graphing.md, T. Kaiser); the A7 cluster stays at 1.4 GHz while the A15s climb, and "
              "'consumption increases massively' above 1.4 GHz")
_XU3_REPORT = ("Exynos 5422 per-cluster sensors: A7 cluster under 1 W, A15 cluster several W at 2 GHz (Gensh et "
               "al., 'Experiments with Odroid-XU3 board', Newcastle CS-TR-1471, 2015); assumption: big 5.5 W, "
               "LITTLE 0.9 W above a 3.0 W idle board")

BUILTIN_POWER: dict[str, UnitPower] = {
    "raspberry-pi-4.cpu": UnitPower(6.4 - 2.7, 2.7, _PIDRAMBLE),
    "jetson-nano.cpu": UnitPower(3.5, 1.25, f"{_NANO_MODES}; {_NANO_PARTS}"),
    "jetson-nano.gpu": UnitPower(4.0, 1.25, f"{_NANO_MODES}; {_NANO_PARTS}"),
    "odroid-xu4.big": UnitPower(5.5, 3.0, f"{_SBC_BENCH}; {_XU3_REPORT}"),
    "odroid-xu4.little": UnitPower(0.9, 3.0, f"{_SBC_BENCH}; {_XU3_REPORT}"),
}
# the Nano in its 5 W mode: the same module idle, CPU and GPU within the 5 W budget (2 cores, lower clocks)
NANO_5W: dict[str, UnitPower] = {
    "jetson-nano.cpu": UnitPower(1.6, 1.25, f"{_NANO_MODES}; assumption: half the cores at 62% clock"),
    "jetson-nano.gpu": UnitPower(2.2, 1.25, f"{_NANO_MODES}; assumption: GPU at 640 of 921.6 MHz"),
}

# Gigabit Ethernet: a 1000BASE-T PHY draws about 0.5 W per port whether it sends or not (Christensen et al.,
# 'IEEE 802.3az: the road to Energy Efficient Ethernet', IEEE Communications Magazine 48(11), 2010); at the
# line rate of 125 MB/s that is 4 nJ per byte per end, 8 nJ per byte for the two ends of a hop
NETWORK_NJ_PER_BYTE = 8.0


class MissingPower(EdgecError):
    """A unit has no power figures."""


POWER_MODES: dict[str, dict[str, UnitPower]] = {"MAXN": {}, "5W": NANO_5W}


def unit_power(device: Device, unit: ComputeUnit, mode: str | None = None) -> UnitPower | None:
    """The unit's power figures: its measured profile's, else the built-in ones of its profile in power mode
    `mode` (a board without that mode has none), else None."""
    if device.profile_path:
        try:
            with open(device.profile_path, encoding="utf-8") as f:
                entry = json.load(f).get("units", {}).get(unit.name, {})
        except (OSError, ValueError, AttributeError):
            entry = {}
        power = entry.get("power") if isinstance(entry, dict) else None
        if isinstance(power, dict):
            active, idle = power.get("active_w"), power.get("idle_w")
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in (active, idle)):
                return UnitPower(float(active), float(idle), f"measured ({device.profile_path})")
    if unit.profile:
        if mode in (None, "MAXN"):
            return BUILTIN_POWER.get(unit.profile)
        return POWER_MODES.get(mode, {}).get(unit.profile)
    return None


def power_mode(cluster: Cluster, device: str) -> str | None:
    """The device's `power_mode` in cluster.json, if it names one."""
    for d in cluster.spec.get("devices", []):
        if isinstance(d, dict) and d.get("name") == device:
            return d.get("power_mode")
    return None


def require_power(cluster: Cluster, unit_ids: Iterable[str]) -> None:
    """Raise MissingPower naming the first unit without power figures."""
    for uid in unit_ids:
        dev, unit = uid.split(".", 1)
        device = cluster.devices[dev]
        mode = power_mode(cluster, dev)
        if mode not in (None, "MAXN") and unit_power(device, device.units[unit], mode) is None:
            raise MissingPower(f"--objective energy: device '{dev}' names power_mode {mode}, which unit '{uid}' "
                               f"has no figures for (built in: the Jetson Nano's units); drop power_mode or give "
                               f"the device a measured profile with \"power\"")
        if unit_power(device, device.units[unit], mode) is None:
            raise MissingPower(
                f"--objective energy: unit '{uid}' has no power figures; give device '{dev}' a measured profile "
                f"whose unit '{unit}' has \"power\": {{\"active_w\": W, \"idle_w\": W}}, or leave the unit out "
                f"of the cluster")


@dataclass(frozen=True)
class ActiveStage:
    """What energy needs of a stage: where it runs, its ms per frame and its share of the frames."""

    device: str
    unit: str
    ms: float
    share: float = 1.0


def plan_energy_mj(cluster: Cluster, stages: Iterable[ActiveStage], period_ms: float,
                   network_bytes: float) -> float | None:
    """Predicted energy per frame (mJ) of a plan; None if one of its units has no power figures.

    `network_bytes`: bytes per frame over the network (each hop counted once, replicas by their share).
    """
    total = 0.0
    idle: dict[str, float] = {}
    for st in stages:
        device = cluster.devices[st.device]
        power = unit_power(device, device.units[st.unit], power_mode(cluster, st.device))
        if power is None:
            return None
        total += st.share * power.active_w * st.ms
        idle[st.device] = max(idle.get(st.device, 0.0), power.idle_w)
    total += sum(idle.values()) * period_ms
    total += network_bytes * NETWORK_NJ_PER_BYTE * 1e-6  # nJ -> mJ
    return total


def parse_power_option(text: str) -> tuple[str, tuple[float, float]]:
    """`edgec profile --power NAME=ACTIVE_W,IDLE_W` -> (name, (active, idle))."""
    name, sep, values = text.partition("=")
    try:
        active, idle = (float(v) for v in values.split(","))
    except ValueError:
        active = idle = -1.0
    if not sep or not name or not (active >= 0 and idle >= 0) or active == float("inf") or idle == float("inf"):
        raise EdgecError(f"--power '{text}': expected NAME=ACTIVE_W,IDLE_W with two non-negative watts, e.g. "
                         f"cpu=3.7,2.7")
    return name, (active, idle)


def record_measured_power(path, powers: dict[str, tuple[float, float]]) -> dict:
    """Add measured power figures to the units of the profile file at `path`; its JSON."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    missing = [name for name in powers if name not in doc["units"]]
    if missing:
        raise EdgecError(f"--power {missing[0]}: no such unit in the profile (units: {', '.join(doc['units'])}); "
                         f"name one of them, or add it with --unit")
    for name, (active, idle) in powers.items():
        doc["units"][name]["power"] = {"active_w": active, "idle_w": idle}
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=1) + "\n")
    return doc
