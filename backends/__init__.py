"""Backends: one module per target, and a registry a unit's `backend` name resolves through.

Importing the package registers the built-in targets: `neon` (ONNX Runtime's
CPU provider on ARM cores) and `tensorrt` (the Jetson Nano's GPU).
"""

from edgec.backends import neon, tensorrt  # noqa: F401  (registers them)
from edgec.backends.registry import backend_class, backend_for, register

__all__ = ["backend_class", "backend_for", "register"]
