"""A device restarted during a run: take it back, and name exactly the frames its restart lost.

A device's heartbeat carries its process id. When a device comes back with
another one, every frame then sent and not yet delivered is *at risk*: it may
have been queued on, or computing in, the process that died. ZeroMQ
reconnects to the new process by itself, and frames still queued upstream go
through. An at-risk frame is declared lost once a frame sent after the
restart has come back (a chain delivers in order, so nothing older is still
on its way), or once nothing has come back for `settle_s` while no device
computes a frame of the run. A lost frame that arrives after all is dropped
with a note. Python 3.6 syntax: it runs on the boards.
"""

from typing import Dict, Iterable, List, Optional, Set


class Restarts:
    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self.pids: Dict[str, int] = {}
        self.at_risk: Set[int] = set()
        self.mark = 0  # frames sent before the latest restart
        self.devices: List[str] = []  # devices restarted since the at-risk frames were settled
        self.lost: Set[int] = set()

    def on_beat(self, device: str, pid: object, undelivered: Iterable[int], sent: int) -> Optional[str]:
        """Record `device`'s pid; a note when it is another one than before (the device restarted)."""
        if not isinstance(pid, int):
            return None
        before = self.pids.get(device)
        self.pids[device] = pid
        if before is None or before == pid:
            return None
        self.at_risk |= set(undelivered)
        self.mark = sent
        if device not in self.devices:
            self.devices.append(device)
        return "device {} restarted (pid {} -> {}) with frames {} in flight; taken back".format(
            device, before, pid, _ranges(sorted(self.at_risk)) or "none")

    def settle(self, delivered_seq: Optional[int], idle_s: float, computing: bool) -> List[int]:
        """At-risk frames now known lost: after frame `delivered_seq` came back, or after `idle_s` of silence."""
        if not self.at_risk:
            return []
        if delivered_seq is not None and delivered_seq >= self.mark:
            gone = sorted(s for s in self.at_risk if s < delivered_seq)
        elif delivered_seq is None and idle_s > self.settle_s and not computing:
            gone = sorted(self.at_risk)
        else:
            return []
        self.at_risk -= set(gone)
        self.lost |= set(gone)
        return gone

    def arrived(self, seq: int) -> None:
        self.at_risk.discard(seq)

    def reason(self) -> str:
        return "lost: device {} restarted while the frame was in flight".format(", ".join(self.devices))


def _ranges(seqs: List[int]) -> str:
    parts = []
    i = 0
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1:
            j += 1
        parts.append(str(seqs[i]) if i == j else "{}-{}".format(seqs[i], seqs[j]))
        i = j + 1
    return ", ".join(parts)
