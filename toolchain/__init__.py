"""edgec: split one ONNX model across a cluster of heterogeneous edge boards.

    import edgec
    result = edgec.compile("model.onnx", "cluster.json", "out/")
    report = edgec.verify("out/")

The compiler side (onnx, onnxsim, graphsurgeon) loads on first use of these
names, so a board that only serves stages (edgec.runtime) imports numpy,
pyzmq and onnxruntime alone. Python 3.6 syntax, as the runtime is.
"""

import importlib
from typing import Any

from edgec.errors import EdgecError

__version__ = "0.1.0"

_API = ("compile", "verify", "analyze", "report", "CompileResult", "VerifyResult", "OutputCheck")
__all__ = list(_API) + ["EdgecError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("edgec.api"), name)
    raise AttributeError(f"module 'edgec' has no attribute {name!r}")
