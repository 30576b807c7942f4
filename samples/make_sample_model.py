"""Write samples/models/resnet50.onnx: the bundled ResNet-50 architecture with random weights.

    python samples/make_sample_model.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgec.zoo import write_random_zoo_model

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models" / "resnet50.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_random_zoo_model("resnet50", out)
    print(f"wrote {out}")
