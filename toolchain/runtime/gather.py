"""Joining the slices of a frame: the fan-in after a step of spatial slices.

Every segment of a step of slices computes one band of rows of every frame and
sends what it makes; the segment after the step gets one message per slice
for each frame. `SliceGather` tells each message's slice by the tensors it
carries (each slice sends its own, as the manifest's `sends` say), checks
their dtypes and shapes, and hands the segment the union once every slice of
the frame is in; the Concat that merges the bands is in the segment's own
sub-model. An error from one slice stands for the frame: it is passed on once
and the frame's other slices are dropped. Python 3.6 syntax: it runs on the
boards.
"""

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from edgec.runtime import wire

Expect = Dict[str, Tuple[str, Tuple[int, ...]]]


class SliceGather:
    """Collects each frame's slices from the senders (segment names -> what each sends)."""

    def __init__(self, senders: Dict[str, Expect]) -> None:
        self.senders = dict(senders)
        self._by_names = {frozenset(e): name for name, e in self.senders.items()}
        self._parts = {}  # type: Dict[Tuple[str, int], Dict[str, Any]]
        self._got = {}  # type: Dict[Tuple[str, int], Set[str]]
        self._failed = set()  # type: Set[Tuple[str, int]]

    def add(self, msg: wire.Message, skip: Sequence[str] = ()) -> Optional[Dict[str, Any]]:
        """Take one slice of a frame; the frame's tensors once every live slice is in, else None.
        Raises WireError for a message that is no slice's."""
        key = (msg.run, msg.seq)
        sender = self._by_names.get(frozenset(msg.tensors))
        if sender is None:
            raise wire.WireError("tensors {} are not what any slice of the step before sends ({})".format(
                sorted(msg.tensors), "; ".join("{}: {}".format(n, sorted(e)) for n, e in self.senders.items())),
                msg.seq, msg.run)
        for name, (dtype, shape) in self.senders[sender].items():
            arr = msg.tensors[name]
            if arr.dtype.name != dtype or tuple(arr.shape) != tuple(shape):
                raise wire.WireError("tensor '{}' is {}{}, the slice sends {}{}".format(
                    name, arr.dtype.name, list(arr.shape), dtype, list(shape)), msg.seq, msg.run)
        if key in self._failed:
            return None
        got = self._got.setdefault(key, set())
        if sender in got:
            raise wire.WireError("slice {} of frame {} came twice".format(sender, msg.seq), msg.seq, msg.run)
        got.add(sender)
        self._parts.setdefault(key, {}).update(msg.tensors)
        live = [s for s in self.senders if s not in set(skip)]
        if not all(s in got for s in live):
            return None
        del self._got[key]
        return self._parts.pop(key)

    def fail(self, run: str, seq: int) -> bool:
        """A slice of the frame failed: True the first time (pass the error on), False after."""
        key = (run, seq)
        if key in self._failed:
            return False
        self._failed.add(key)
        self._parts.pop(key, None)
        self._got.pop(key, None)
        return True

    def pending(self) -> List[Tuple[str, int]]:
        return sorted(self._got)
