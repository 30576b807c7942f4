"""The protobuf wire format, as far as large ONNX weights need it.

A model's weights are most of its bytes. Reading them into a parsed
ModelProto costs their size twice (the file's bytes and the message), and
every serialization once more. Here a model file is read with its large
``raw_data`` fields left where they are: :func:`scan_model` returns the
model's bytes without them and, per initializer index, where its data lies in
the file, so the values can be read on demand. :func:`tensor_field` encodes
one initializer around raw data written separately: a serialized ModelProto
followed by ``graph { initializer { ... } }`` parses as one model (protobuf
merges a repeated embedded message field), so weights can be streamed into a
sub-model file after its structure.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MODEL_GRAPH = 7          # ModelProto.graph
_GRAPH_INITIALIZER = 5    # GraphProto.initializer
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 8, 9  # TensorProto fields


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


@dataclass(frozen=True)
class RawSpan:
    """Where one initializer's raw data lies in the file: its index in graph.initializer, offset, length."""

    index: int
    offset: int
    length: int


def scan_model(path: Path, min_bytes: int) -> tuple[bytes, list[RawSpan]]:
    """The model file's bytes less each initializer's ``raw_data`` of `min_bytes` or more, and where those were.

    Only the bytes kept are read; the weights' pages are never touched.
    """
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            return b"", []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            out = bytearray()
            spans: list[RawSpan] = []
            count = [0]
            for tag, start, body, end in _fields(mm, 0, size):
                if tag == (_MODEL_GRAPH << 3 | _LEN):
                    graph = _scan_graph(mm, body, end, min_bytes, spans, count)
                    out += _varint(tag) + _varint(len(graph)) + graph
                else:
                    out += mm[start:end]
            return bytes(out), spans


def _scan_graph(mm: mmap.mmap, start: int, end: int, min_bytes: int, spans: list[RawSpan],
                count: list[int]) -> bytes:
    out = bytearray()
    for tag, field_start, body, field_end in _fields(mm, start, end):
        if tag == (_GRAPH_INITIALIZER << 3 | _LEN):
            raw = next(((b, e) for t, _, b, e in _fields(mm, body, field_end)
                        if t == (_TENSOR_RAW << 3 | _LEN) and e - b >= min_bytes), None)
            if raw is not None:
                tensor = bytearray()
                for t, s, _, e in _fields(mm, body, field_end):
                    if t != (_TENSOR_RAW << 3 | _LEN):
                        tensor += mm[s:e]
                spans.append(RawSpan(count[0], raw[0], raw[1] - raw[0]))
                out += _varint(tag) + _varint(len(tensor)) + tensor
            else:
                out += mm[field_start:field_end]
            count[0] += 1
        else:
            out += mm[field_start:field_end]
    return bytes(out)


def _fields(buf: mmap.mmap | bytes, pos: int, end: int):
    """(tag, field start, body start, field end) of each field in buf[pos:end]."""
    while pos < end:
        start = pos
        tag, pos = _read_varint(buf, pos, end)
        kind = tag & 7
        if kind == _VARINT:
            _, pos = _read_varint(buf, pos, end)
            body = pos
        elif kind == _LEN:
            length, body = _read_varint(buf, pos, end)
            pos = body + length
        elif kind == _I64:
            body, pos = pos, pos + 8
        elif kind == _I32:
            body, pos = pos, pos + 4
        else:
            raise WireError(f"unsupported wire type {kind} at byte {start}")
        if pos > end:
            raise WireError(f"field at byte {start} runs past the end of its message")
        yield tag, start, body, pos


def _read_varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError(f"truncated or malformed varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(field: int, payload_length: int) -> bytes:
    return _varint(field << 3 | _LEN) + _varint(payload_length)


def tensor_field(name: str, data_type: int, dims: list[int], raw_length: int) -> bytes:
    """The bytes that come before `raw_length` bytes of raw data to append one initializer to a serialized model.

    What follows them must be exactly the tensor's raw data (little-endian).
    """
    head = b"".join(_varint(_TENSOR_DIMS << 3 | _VARINT) + _varint(d) for d in dims)
    head += _varint(_TENSOR_TYPE << 3 | _VARINT) + _varint(data_type)
    encoded = name.encode()
    head += _len_field(_TENSOR_NAME, len(encoded)) + encoded
    head += _len_field(_TENSOR_RAW, raw_length)
    tensor_length = len(head) + raw_length
    initializer = _len_field(_GRAPH_INITIALIZER, tensor_length)
    graph_length = len(initializer) + tensor_length
    return _len_field(_MODEL_GRAPH, graph_length) + initializer + head
