"""One run per deployment at a time: a driver refuses to start while another run is using the devices.

Every device's heartbeat says which run it last computed a frame of (`run`),
how long ago (`idle_s`), whether that run's `end` has passed it (`ended`) and
what it is computing now (`busy`). A driver reads one heartbeat of every
device before it connects to the first input or the results socket; a device
computing, or that finished a frame of another run within `window_s` of a run
not ended, means another driver is feeding the deployment, and this one
refuses, naming it, without touching that run's frames or results. A driver
that died leaves its run unended: the deployment is free again `window_s`
after its last frame. Python 3.6 syntax: it runs on the boards.
"""

from typing import Any, Dict, Mapping, Optional

from edgec.errors import EdgecError


class DeploymentBusy(EdgecError):
    """Another run is using the deployment's devices."""


def other_run(beats: Mapping[str, Dict[str, Any]], run_id: str, window_s: float) -> Optional[str]:
    """Why the devices are busy with a run other than `run_id`, or None when they are free."""
    for device, beat in beats.items():
        run = beat.get("run")
        if not isinstance(run, str) or run == run_id or beat.get("ended") == run:
            continue
        idle = beat.get("idle_s")
        if beat.get("busy"):
            return "device {} is computing frame {} of run {} in stage {}".format(
                device, beat.get("seq"), run, beat.get("busy"))
        if isinstance(idle, (int, float)) and idle < window_s:
            return "device {} finished frame {} of run {} {:.1f} s ago".format(device, beat.get("seq"), run, idle)
    return None


def refuse_if_busy(beats: Mapping[str, Dict[str, Any]], run_id: str, window_s: float, where: str) -> None:
    why = other_run(beats, run_id, window_s)
    if why is not None:
        raise DeploymentBusy("another run is using this deployment ({}); wait for it to finish, or serve a second "
                             "copy of the plan on other ports and run against that deployment".format(why),
                             where=where)
