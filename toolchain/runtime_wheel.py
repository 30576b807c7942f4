"""The board runtime as its own wheel, `edgec-runtime`, shipped in every bundle.

A board installs the runtime alone, with only what it imports:

    python3 -m pip install out/edgec_runtime-<version>-py3-none-any.whl            # numpy, pyzmq
    python3 -m pip install 'out/edgec_runtime-<version>-py3-none-any.whl[cpu]'     # + onnxruntime from PyPI

(The Nano's onnxruntime comes from NVIDIA's JetPack wheel, so ONNX Runtime is an
extra, not a requirement.) The wheel holds edgec's shared modules (errors,
jsonfile, manifest, the lazy package root) and edgec.runtime, nothing of the
compiler; it requires Python 3.6 or later, the dataclasses backport on 3.6.
Any pip from 9 on installs it (JetPack's is 9): a pure-Python wheel is a zip
with its metadata, written here with fixed timestamps so a bundle's digest
depends on its content only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from edgec import __version__

NAME = "edgec_runtime"
WHEEL_NAME = f"{NAME}-{__version__}-py3-none-any.whl"
REQUIRES_PYTHON = ">=3.6"
REQUIRES = ["numpy>=1.13", "pyzmq>=17", 'dataclasses; python_version < "3.7"']
EXTRAS = {"cpu": ["onnxruntime>=1.10"]}
SHARED = ("__init__.py", "errors.py", "jsonfile.py", "manifest.py")  # what the runtime imports of edgec
_EPOCH = (1980, 1, 1, 0, 0, 0)


def sources(toolchain: Path | None = None) -> dict[str, bytes]:
    """Archive path -> bytes of every module the wheel holds."""
    root = toolchain or Path(__file__).resolve().parent
    files = {f"edgec/{name}": (root / name).read_bytes() for name in SHARED}
    for path in sorted((root / "runtime").glob("*.py")):
        files[f"edgec/runtime/{path.name}"] = path.read_bytes()
    return files


def metadata() -> str:
    lines = ["Metadata-Version: 2.1", "Name: edgec-runtime", f"Version: {__version__}",
             "Summary: Serve and run plans compiled by edgec on an edge board (numpy, pyzmq, onnxruntime only)",
             "License: Apache-2.0", f"Requires-Python: {REQUIRES_PYTHON}"]
    lines += [f"Requires-Dist: {req}" for req in REQUIRES]
    for extra, reqs in EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {req}; extra == "{extra}"' for req in reqs]
    return "\n".join(lines) + "\n"


def build() -> bytes:
    """The wheel's bytes."""
    dist = f"{NAME}-{__version__}.dist-info"
    files = dict(sources())
    files[f"{dist}/METADATA"] = metadata().encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edgec\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/top_level.txt"] = b"edgec\n"
    record = [f"{name},sha256={_urlsafe_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
