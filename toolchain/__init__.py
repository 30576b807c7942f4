"""edgec: split one ONNX model across a cluster of heterogeneous edge boards.

    import edgec
    result = edgec.compile("model.onnx", "cluster.json", "out/")
    report = edgec.verify("out/")
"""

__version__ = "0.1.0"

from edgec.api import CompileResult, OutputCheck, VerifyResult, analyze, compile, verify  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402

__all__ = ["compile", "verify", "analyze", "CompileResult", "VerifyResult", "OutputCheck", "EdgecError", "__version__"]
