"""Bounds on what a peer can make the runtime parse or hold: header size and nesting, tensor sizes,
message sizes.

Everything here runs before a received header is trusted: a header's JSON
nesting is measured on the raw bytes before the JSON parser sees it (a deeply
nested header cannot drive it into recursion), tensor sizes are multiplied as
Python integers under a ceiling (a shape like [2**32, 2**32] or [2**70] cannot
overflow into a small byte count), and a message is held to what the manifest
says one frame of the receiving socket carries (`frame_bytes`), which also
becomes ZeroMQ's ZMQ_MAXMSGSIZE so a larger message is dropped by the
transport before it is buffered. Python 3.6 syntax: it runs on the boards.
"""

import re
from typing import Any, Iterable, Mapping, Sequence, Tuple

import numpy as np

MAX_HEADER_BYTES = 64 * 1024  # a header lists names, dtypes and shapes: a few hundred bytes per tensor
MAX_HEADER_DEPTH = 8  # the deepest a valid header goes: {"stats": [{"seconds": {...}}]}
MAX_TENSORS = 1024  # per message
MAX_DIMS = 32  # ONNX Runtime's own limit on a tensor's rank is far below what JSON can say
MAX_TENSOR_BYTES = 1 << 33  # 8 GiB: no edge board holds one tensor larger
MAX_STATS = 4096  # entries of an `end` message's stats: one per segment
HEADROOM = 1 << 16  # bytes allowed beyond a frame's tensors: the header

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class LimitExceeded(ValueError):
    """A message beyond what the runtime accepts; the message says which bound and by how much."""


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text `raw`, counted without parsing it."""
    if not raw:
        return 0
    brackets = _STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)  # a header has a few dozen
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    return max(0, int(np.cumsum(np.where((codes == 0x5B) | (codes == 0x7B), 1, -1)).max()))


def check_header_bytes(raw: bytes) -> None:
    """Refuse a header too large or too deeply nested to parse safely."""
    if len(raw) > MAX_HEADER_BYTES:
        raise LimitExceeded("header of {} bytes is too large (limit {})".format(len(raw), MAX_HEADER_BYTES))
    depth = json_depth(raw)
    if depth > MAX_HEADER_DEPTH:
        raise LimitExceeded("header nests {} levels deep (limit {})".format(depth, MAX_HEADER_DEPTH))


def tensor_bytes(dtype: str, shape: Sequence[Any]) -> int:
    """Bytes of a tensor of `dtype` and `shape` (checked sizes), refused past MAX_TENSOR_BYTES."""
    if len(shape) > MAX_DIMS:
        raise LimitExceeded("{} dimensions (limit {})".format(len(shape), MAX_DIMS))
    total = np.dtype(dtype).itemsize
    if any(int(d) > MAX_TENSOR_BYTES for d in shape):  # even beside a 0: numpy cannot make such a shape
        raise LimitExceeded("{}{} has a dimension over {}".format(dtype, list(shape), MAX_TENSOR_BYTES))
    for d in shape:
        total *= int(d)  # Python integers: no overflow
        if total > MAX_TENSOR_BYTES:
            raise LimitExceeded("{}{} is more than {} bytes".format(dtype, list(shape), MAX_TENSOR_BYTES))
    return total


def frame_bytes(expect: Mapping[str, Tuple[str, Sequence[int]]]) -> int:
    """The most bytes one message of a socket that receives `expect` may hold: its tensors plus a header."""
    return sum(tensor_bytes(dtype, shape) for dtype, shape in expect.values()) + HEADROOM


def part_bytes(expect: Mapping[str, Tuple[str, Sequence[int]]]) -> int:
    """ZMQ_MAXMSGSIZE for such a socket: its largest single part (a tensor, or the header)."""
    return max([tensor_bytes(dtype, shape) for dtype, shape in expect.values()] + [MAX_HEADER_BYTES])


def message_bytes(frames: Iterable[Any]) -> int:
    total = 0
    for frame in frames:
        buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
        total += buf.nbytes
    return total
