"""Routing frames into a step: which segment gets each frame, and when a step's end marker may go on.

A step's fan-out (edgec.runtime.pipeline.Step) is done by whoever sends into
it, the driver or the segment before it:

- "one": the step's only segment gets every frame;
- "replica": each frame goes to one replica, dealt in proportion to the
  replicas' weights (their predicted speed) by smooth weighted round robin,
  which spreads a replica's frames evenly through the stream (weights 0.75 and
  0.25: A A B A, A A B A, ...);
- "slice": every segment gets every frame (a runtime that joins slices uses it).

A replica whose queue stays full past REDEAL_AFTER_S loses the frame to a
live replica that can take it (`Dealer.wait_writable`): that is how a device
gets past a replica that died before the driver's `skip` reached it.

Every message may name replicas to `skip`: the driver puts there the replicas
it has found dead, so dealers everywhere deal around them; frames that a dead
replica held are sent again by the driver (edgec.runtime.driver) and duplicate
results dropped there, so nothing is lost and nothing arrives twice.

The end marker of a run goes to every live segment of a step; a segment after
a step of several waits for the marker from each live one (`EndGather`)
before passing it on, so the sink sees it after every frame. Python 3.6 syntax.
"""

import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import zmq

REDEAL_AFTER_S = 0.5  # how long a replica's full queue holds a frame before another replica may take it


class Dealer:
    """The fan-out into one step: a PUSH socket per segment of the step, and the choice among them."""

    def __init__(self, fan_out: str, targets: Sequence[Tuple[str, float, zmq.Socket]]) -> None:
        if not targets:
            raise ValueError("a step needs at least one segment to deal to")
        self.fan_out = fan_out
        self.names = [t[0] for t in targets]
        self.weights = [float(t[1]) for t in targets]
        self.sockets = [t[2] for t in targets]
        self._current = [0.0] * len(targets)
        self._pending: Optional[int] = None  # picked for the next frame, not yet sent

    def live(self, skip: Iterable[str] = ()) -> List[int]:
        gone = set(skip)
        return [i for i, n in enumerate(self.names) if n not in gone]

    def pick(self, skip: Iterable[str] = ()) -> List[int]:
        """The targets of the next frame (kept until `taken()`, so a retry after back-pressure picks the same)."""
        live = self.live(skip)
        if not live:
            raise NoReplicaLeft("every segment of the step is gone: {}".format(", ".join(self.names)))
        if self.fan_out == "slice":
            return live
        if len(self.names) == 1:
            return live
        if self._pending is not None and self._pending in live:
            return [self._pending]
        total = sum(self.weights[i] for i in live)
        for i in live:
            self._current[i] += self.weights[i]
        best = max(live, key=lambda i: (self._current[i], -i))
        self._current[best] -= total
        self._pending = best
        return [best]

    def taken(self) -> None:
        self._pending = None

    def wait_writable(self, targets: List[int], skip: Iterable[str], ready: Any,
                      redeal_after_s: float = REDEAL_AFTER_S) -> Optional[List[int]]:
        """Wait until the first of `targets` can take a message, while `ready()` says go on (None if stopped).

        In a replica step, a replica whose queue stays full for `redeal_after_s` hands the frame to another
        live replica that can take it: a dead replica's queue never drains, and a device learns that the
        driver gave up on it only from the frames that come after, so without this a dealer would wait on
        it forever with the frame that tells it so queued behind. A frame handed on is sent once, so
        nothing is duplicated; the dealing's fairness is kept by charging the replica that took it."""
        first = targets[0]
        start = time.monotonic()
        while not self.sockets[first].poll(100, zmq.POLLOUT):
            if not ready():
                return None
            if self.fan_out != "replica" or time.monotonic() - start < redeal_after_s:
                continue
            for other in self.live(skip):
                if other != first and self.sockets[other].poll(0, zmq.POLLOUT):
                    total = sum(self.weights[i] for i in self.live(skip))
                    self._current[first] += total
                    self._current[other] -= total
                    self._pending = other
                    return [other]
        return targets

    def send(self, targets: Sequence[int], frames: List[Any], ready: Any) -> bool:
        """Send `frames` to each target, waiting out back-pressure while `ready()` says go on; False if stopped."""
        for i in targets:
            sock = self.sockets[i]
            while not sock.poll(100, zmq.POLLOUT):
                if not ready():
                    return False
            sock.send_multipart(frames, copy=False)
        self.taken()
        return True


class NoReplicaLeft(Exception):
    """Every segment a frame could go to is gone."""


class EndGather:
    """Collects a run's end markers from the live segments of the step before; says when to pass one on."""

    def __init__(self, senders: Sequence[str]) -> None:
        self.senders = list(senders)
        self._got = {}  # type: Dict[str, Dict[str, Set[str]]]
        self._stats = {}  # type: Dict[str, List[Any]]
        self._done = {}  # type: Dict[str, Set[Tuple[str, ...]]]

    def add(self, run: str, via: Optional[str], skip: Sequence[str], stats: Sequence[Any]) -> Optional[List[Any]]:
        """Record an end marker; the stats to pass on once every live sender's marker is in, else None."""
        got = self._got.setdefault(run, {})
        got.setdefault(via or "", set()).update(skip)
        seen = self._stats.setdefault(run, [])
        for s in stats:
            if s not in seen:
                seen.append(s)
        skipped = set(skip)
        for s in got.values():
            skipped |= s
        live = [s for s in self.senders if s not in skipped]
        if len(self.senders) > 1 and not all(s in got for s in live):
            return None
        key = tuple(sorted(skipped))
        done = self._done.setdefault(run, set())
        if key in done:
            return None
        done.add(key)
        return list(seen)


__all__ = ["Dealer", "EndGather", "NoReplicaLeft"]
