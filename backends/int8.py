"""int8 lowering of a sub-model: static QDQ quantization by onnxruntime.quantization.

The ONNX Runtime CPU stages on the ARM boards run int8 as a QDQ model (the
sub-model in out/ is the quantized one); the variants pass measures the same
model on this machine's CPU (edgec.accuracy).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx.version_converter

MAX_QUANT_FRAMES = 128  # calibration frames the MinMax ranges are taken from
QDQ_OPSET = 13


def int8_model(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> onnx.ModelProto:
    """Static QDQ int8 quantization (onnxruntime.quantization, MinMax) calibrated on `feeds` (the model's inputs).

    Activations uint8, weights int8 (U8S8), per tensor: the form ONNX Runtime's CPU provider fuses into its
    integer kernels on x86-64 and ARM alike (S8S8 measured 2x slower than fp32 on this project's x86 host; see
    benchmarks/variants.py). A model below opset 13 is first converted to 13, where ONNX Runtime fuses the
    QDQ pairs (at the zoo's opset 9 it does not, and int8 runs no faster than fp32).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([dict(f) for f in feeds[:MAX_QUANT_FRAMES]])

        def get_next(self):
            return next(self.items, None)

    root = logging.getLogger()
    level = root.level
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), QDQ_OPSET)
    if opset < QDQ_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, QDQ_OPSET)
        except Exception:  # noqa: BLE001 - a model the converter cannot lift is quantized at its own opset
            pass
    with tempfile.TemporaryDirectory(prefix="edgec-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        root.setLevel(logging.ERROR)  # its advice to pre-process is printed on every call
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=False)
        finally:
            root.setLevel(level)
        return onnx.load(str(dst))
