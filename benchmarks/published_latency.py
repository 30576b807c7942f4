"""Built-in unit profiles against published latencies: ResNet-50 and MobileNetV2 at 224x224.

Predicted ms (the cost model with each built-in profile) next to the ncnn
benchmark figures in shared/device-facts.md and the error. The XU4 LITTLE
target is the Cortex-A7 x4 @1.2 GHz figure scaled to 1.4 GHz; the XU4 big has
no published figure (its profile is derived, see its sources).

    python benchmarks/published_latency.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from edgec.costmodel.predict import predict_ms
from edgec.costmodel.builtin import BUILTIN_PROFILES, PUBLISHED_MS

ROOT = Path(__file__).resolve().parents[1]


def reference_models() -> dict[str, gs.Graph]:
    """ResNet-50 (ONNX's bundled zoo file, weights folded by onnxsim) and the MobileNetV2 sample."""
    import onnxsim

    sys.path.insert(0, str(ROOT / "samples"))
    try:
        from make_mobilenetv2 import build_mobilenetv2
    finally:
        sys.path.remove(str(ROOT / "samples"))
    resnet, ok = onnxsim.simplify(onnx.load(str(Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx")))
    assert ok, "onnxsim failed on light_resnet50.onnx"
    return {"resnet50": gs.import_onnx(resnet), "mobilenetv2": gs.import_onnx(build_mobilenetv2())}


def table() -> list[tuple[str, str, float, float | None]]:
    """(profile, model, predicted ms, published ms or None) for every built-in profile."""
    models = reference_models()
    rows = []
    for key, profile in BUILTIN_PROFILES.items():
        for model, graph in models.items():
            rows.append((key, model, predict_ms(graph.nodes, profile), PUBLISHED_MS.get(key, {}).get(model)))
    return rows


def main() -> int:
    print(f"{'unit profile':20s} {'model':12s} {'predicted ms':>13s} {'published ms':>13s} {'error %':>8s}")
    worst = 0.0
    for key, model, pred, pub in table():
        if pub is None:
            print(f"{key:20s} {model:12s} {pred:13.1f} {'-':>13s} {'-':>8s}")
            continue
        err = (pred - pub) / pub * 100
        worst = max(worst, abs(err))
        print(f"{key:20s} {model:12s} {pred:13.1f} {pub:13.1f} {err:+8.1f}")
    print(f"\nworst error {worst:.1f}% (target <= 25%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
