"""The wire format between the driver and the device workers.

A message is a ZeroMQ multipart message: one small JSON header, then one raw
buffer per tensor (C order, the header's dtype). Nothing is pickled.

    header = {"v": 1, "kind": "data" | "error" | "end", "run": "<run id>", "seq": 17,
              "tensors": [{"name": "x", "dtype": "float32", "shape": [1, 3, 224, 224]}, ...],
              "error": {"device": ..., "stage": ..., "message": ...},   # kind "error"
              "stats": [{...}, ...]}                                      # kind "end"

`data` carries one frame's tensors. `error` stands in for a frame that a
stage could not compute: it travels on to the sink so the driver accounts for
every frame. `end` closes a run; each segment appends its timing totals to it.
Everything received is checked: the header's form, buffer sizes against
dtype x shape, and the tensor names, dtypes and shapes against what the
receiving stage expects.
"""


import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgec.runtime import limits

VERSION = 1
KINDS = ("data", "error", "end")
DTYPES = frozenset(["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float16", "float32", "float64"])
MAX_HEADER_BYTES = limits.MAX_HEADER_BYTES

_DTYPE_NAMES = {np.dtype(n): n for n in DTYPES}  # numpy's dtype.name is slow to compute, per message
# name -> (dtype name, shape)
Expect = Mapping[str, Tuple[str, Sequence[int]]]


def contiguous(value: Any) -> np.ndarray:
    """`value` as a C-contiguous array of its own shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    arr = np.asarray(value)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


class WireError(Exception):
    """A message that does not have the form, sizes or tensors it should."""

    def __init__(self, message: str, seq: Optional[int] = None, run: Optional[str] = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.run = run


@dataclass
class Message:
    kind: str
    run: str
    seq: int
    tensors: Dict[str, np.ndarray] = field(default_factory=dict)
    header: Dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> Dict[str, Any]:
        return self.header.get("error") or {}


def encode(kind: str, run: str, seq: int, tensors: Sequence[Tuple[str, np.ndarray]] = (),
           **extra: Any) -> List[Any]:
    """Frames of one message: the JSON header, then each tensor's buffer (not copied)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    specs = []
    buffers: List[Any] = []
    for name, arr in tensors:
        arr = contiguous(arr)
        dtype = _DTYPE_NAMES.get(arr.dtype)
        if dtype is None:
            raise WireError(f"tensor '{name}': dtype {arr.dtype.str} cannot be sent (native byte order: "
                            f"{', '.join(sorted(DTYPES))})")
        specs.append({"name": name, "dtype": dtype, "shape": [int(d) for d in arr.shape]})
        buffers.append(memoryview(arr.reshape(-1).view(np.uint8)))
    header = {"v": VERSION, "kind": kind, "run": run, "seq": int(seq), "tensors": specs}
    header.update(extra)
    return [json.dumps(header, separators=(",", ":")).encode()] + buffers


def encode_error(run: str, seq: int, device: str, stage: str, message: str) -> List[Any]:
    return encode("error", run, seq, error={"device": device, "stage": stage, "message": message})


def peek(frames: Sequence[Any]) -> Dict[str, Any]:
    """The header of a message, checked for form only."""
    if not frames:
        raise WireError("empty message")
    raw = _bytes(frames[0])
    try:
        limits.check_header_bytes(raw)
        header = json.loads(raw.decode("utf-8"))
    except limits.LimitExceeded as exc:
        raise WireError(str(exc)) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("header is not JSON") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    seq = header.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None
    run = header.get("run") if isinstance(header.get("run"), str) else None
    if header.get("v") != VERSION:
        raise WireError(f"wire version {header.get('v')!r}, expected {VERSION}", seq, run)
    if header.get("kind") not in KINDS:
        raise WireError(f"unknown message kind {header.get('kind')!r}", seq, run)
    if seq is None:
        raise WireError("header has no valid sequence number", None, run)
    if run is None:
        raise WireError("header has no run id", seq, None)
    if not isinstance(header.get("tensors", []), list):
        raise WireError("header 'tensors' is not a list", seq, run)
    if len(header.get("tensors", [])) > limits.MAX_TENSORS:
        raise WireError(f"header lists more than {limits.MAX_TENSORS} tensors", seq, run)
    if header["kind"] == "end":
        stats = header.get("stats", [])
        if not isinstance(stats, list) or len(stats) > limits.MAX_STATS or \
                not all(isinstance(s, dict) for s in stats):
            raise WireError("end message whose 'stats' is not a list of objects", seq, run)
    if header["kind"] == "error" and not isinstance(header.get("error"), dict):
        raise WireError("error message without an 'error' object", seq, run)
    return header


def decode(frames: Sequence[Any], expect: Optional[Expect] = None, max_bytes: Optional[int] = None) -> Message:
    """Check and unpack a message; arrays share the received buffers where alignment allows.

    With `expect`, a data message must carry exactly those tensor names, each
    with the expected dtype and shape. With `max_bytes` (limits.frame_bytes),
    a larger message is refused before its header is read.
    """
    if max_bytes is not None:
        size = limits.message_bytes(frames)
        if size > max_bytes:
            raise WireError(f"message of {size} bytes is larger than a frame of this stage ({max_bytes} bytes)")
    header = peek(frames)
    seq, run, kind = header["seq"], header["run"], header["kind"]
    specs = header.get("tensors", [])
    if len(frames) - 1 != len(specs):
        raise WireError(f"header lists {len(specs)} tensors but {len(frames) - 1} buffers came", seq, run)
    tensors: Dict[str, np.ndarray] = {}
    for spec, frame in zip(specs, frames[1:]):
        name, arr = _tensor(spec, frame, seq, run)
        if name in tensors:
            raise WireError(f"tensor '{name}' is sent twice", seq, run)
        tensors[name] = arr
    if kind == "data" and expect is not None:
        got, want = set(tensors), set(expect)
        if got != want:
            parts = []
            if want - got:
                parts.append("missing " + ", ".join(sorted(want - got)))
            if got - want:
                parts.append("unexpected " + ", ".join(sorted(got - want)))
            raise WireError("tensor names are not what the stage expects: " + "; ".join(parts), seq, run)
        for name, (dtype, shape) in expect.items():
            arr = tensors[name]
            if _DTYPE_NAMES.get(arr.dtype) != dtype or list(arr.shape) != list(shape):
                raise WireError(f"tensor '{name}' is {arr.dtype.name}{list(arr.shape)}, the stage expects "
                                f"{dtype}{list(shape)}", seq, run)
    return Message(kind, run, seq, tensors, header)


def _tensor(spec: Any, frame: Any, seq: int, run: str) -> Tuple[str, np.ndarray]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise WireError("tensor entry without a name", seq, run)
    name = spec["name"]
    dtype, shape = spec.get("dtype"), spec.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"tensor '{name}': dtype {dtype!r} is not allowed", seq, run)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise WireError(f"tensor '{name}': shape {shape!r} is not a list of sizes", seq, run)
    buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
    dt = np.dtype(dtype)
    try:
        want = limits.tensor_bytes(dtype, shape)
    except limits.LimitExceeded as exc:
        raise WireError(f"tensor '{name}': {exc}", seq, run) from None
    if buf.nbytes != want:
        raise WireError(f"tensor '{name}': {buf.nbytes} bytes for {dtype}{shape}, expected {want}", seq, run)
    arr = np.frombuffer(buf, dtype=dt).reshape(shape)
    if not arr.flags.aligned:
        arr = arr.copy()
    return name, arr


def _bytes(frame: Any) -> bytes:
    if hasattr(frame, "bytes"):
        return frame.bytes
    return bytes(frame)
