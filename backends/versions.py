"""What a board's ONNX Runtime loads: the highest opset and IR version of its release.

ONNX Runtime -> ONNX release it builds against (sources: microsoft/onnxruntime
docs/Versioning.md version matrix and each release's notes; ONNX release ->
IR and opset from `onnx.helper.VERSION_TABLE`, i.e. onnx/onnx docs/Versioning.md):

| ORT  | ONNX   | max opset | max IR |
|------|--------|-----------|--------|
| 1.6, 1.7 | 1.8   | 13 | 7  |
| 1.8  | 1.9    | 14 | 7  |
| 1.9, 1.10 | 1.10 | 15 | 8  |
| 1.11 | 1.11   | 16 | 8  |
| 1.12, 1.13 | 1.12 | 17 | 8 |
| 1.14 | 1.13   | 18 | 8  |
| 1.15 | 1.14   | 19 | 9  |
| 1.16 | 1.14.1 | 19 | 9  |
| 1.17 | 1.15   | 20 | 9  |
| 1.18 - 1.20 | 1.16 | 21 | 10 |
| 1.21 | 1.17   | 22 | 10 |

The max IR is the IR_VERSION of that ONNX release: ORT refuses a model whose
ir_version is above it ("Unsupported model IR version"). Older copies of the
ORT table list IR 7 for 1.9/1.10; the loader's limit is ONNX 1.10's IR 8.
A runtime newer than the table is given the newest row (a lower bound).
"""

from __future__ import annotations

from typing import Any

from edgec.errors import EdgecError

ORT_ONNX_RELEASE: dict[tuple[int, int], str] = {
    (1, 6): "1.8.0", (1, 7): "1.8.0", (1, 8): "1.9.0", (1, 9): "1.10.0", (1, 10): "1.10.0",
    (1, 11): "1.11.0", (1, 12): "1.12.0", (1, 13): "1.12.0", (1, 14): "1.13.0", (1, 15): "1.14.0",
    (1, 16): "1.14.1", (1, 17): "1.15.0", (1, 18): "1.16.0", (1, 19): "1.16.0", (1, 20): "1.16.0",
    (1, 21): "1.17.0",
}


def ort_release(ort_version: str) -> str:
    """The ONNX release an ONNX Runtime release builds against, e.g. "1.10" -> "1.10.0" (no onnx import:
    boards check their cluster spec with it)."""
    try:
        major, minor = (int(p) for p in str(ort_version).split(".")[:2])
    except ValueError:
        raise EdgecError(f"onnxruntime version '{ort_version}' is not MAJOR.MINOR (e.g. 1.10)") from None
    known = sorted(ORT_ONNX_RELEASE)
    if (major, minor) < known[0]:
        raise EdgecError(f"onnxruntime {ort_version} is older than {known[0][0]}.{known[0][1]}, the oldest edgec "
                         f"targets; install a newer onnxruntime on the board")
    return ORT_ONNX_RELEASE[max(k for k in known if k <= (major, minor))]


def ort_versions(ort_version: str) -> tuple[int, int]:
    """(max opset, max IR version) an ONNX Runtime release loads, e.g. "1.10" -> (15, 8)."""
    return onnx_release_versions(ort_release(ort_version))


def onnx_release_versions(release: str) -> tuple[int, int]:
    """(opset, IR version) of an ONNX release, from onnx.helper.VERSION_TABLE."""
    from onnx import helper

    for row in helper.VERSION_TABLE:
        if row[0] == release:
            return int(row[2]), int(row[1])
    raise KeyError(release)


def target_versions(device: Any) -> tuple[int, int]:
    """(max opset, max IR version) the board's ONNX Runtime loads.

    The opset is the lower of the device's declared `max_opset` and what its
    `onnxruntime` release implements.
    """
    opset, ir = ort_versions(device.onnxruntime)
    return min(int(device.max_opset), opset), ir
