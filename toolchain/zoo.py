"""The model-zoo architectures the onnx package bundles, and random-weight versions of them.

The bundled files (onnx/backend/test/data/light) are real architectures whose
weights are constants (ConstantOfShape): every output is the same whatever a
split does. `randomize_weights` folds them into initializers and draws
random ones with fan-in scaling, so activations stay in range through deep
networks and a wrong split shows in the outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxsim
from onnx import numpy_helper

ZOO = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
       "vgg19", "zfnet512")


def zoo_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def zoo_models() -> dict[str, Path]:
    """Name -> path of each bundled zoo model."""
    return {name: zoo_dir() / f"light_{name}.onnx" for name in ZOO}


def randomize_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The same architecture with constant weights folded and replaced by random values.

    BatchNormalization statistics are then set to what each BN actually sees
    on random input (a few sweeps, since each changes what follows), so
    residual networks do not blow up and outputs such as softmax stay far
    from saturation.
    """
    model, _ = onnxsim.simplify(model, check_n=0, perform_optimization=False)
    rng = np.random.default_rng(seed)
    roles = _weight_roles(model)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind != "f" or arr.size <= 1:
            continue
        new = _draw(rng, arr, roles.get(init.name, "other"))
        init.CopyFrom(numpy_helper.from_array(new.astype(arr.dtype), init.name))
    _calibrate_batchnorm(model, rng)
    return model


def _calibrate_batchnorm(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """Set each BN's running mean/var to the statistics of what reaches it.

    One run of a probe in which every BN is in training mode (opset 15,
    momentum 0) gives exactly these statistics, each BN already seeing the
    normalised output of the ones before it.
    """
    from edgec.runtime.session import inference_session

    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return
    probe = onnx.version_converter.convert_version(model, max(15, _opset(model)))
    bns = [n for n in probe.graph.node if n.op_type == "BatchNormalization"]
    stats = []
    for i, node in enumerate(bns):
        del node.attribute[:]
        node.attribute.extend([onnx.helper.make_attribute("epsilon", 1e-5),
                               onnx.helper.make_attribute("momentum", 0.0),
                               onnx.helper.make_attribute("training_mode", 1)])
        del node.output[1:]
        node.output.extend([f"__bn{i}_mean", f"__bn{i}_var"])
        stats.append((node.input[3], node.input[4]))
    probe.graph.output.extend(onnx.ValueInfoProto(name=f"__bn{i}_{k}") for i in range(len(bns)) for k in ("mean", "var"))
    sess = inference_session(probe.SerializeToString())
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    values = sess.run([f"__bn{i}_{k}" for i in range(len(bns)) for k in ("mean", "var")], feeds)
    inits = {t.name: t for t in model.graph.initializer}
    for i, (mean_name, var_name) in enumerate(stats):
        for name, value in ((mean_name, values[2 * i]), (var_name, values[2 * i + 1] + 1e-3)):
            shape = numpy_helper.to_array(inits[name]).shape
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32).reshape(shape), name))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def write_random_zoo_model(name: str, path: str | Path, seed: int = 0) -> Path:
    model = randomize_weights(onnx.load(str(zoo_models()[name])), seed)
    onnx.save(model, str(path))
    return Path(path)


def _weight_roles(model: onnx.ModelProto) -> dict[str, str]:
    roles: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            roles[node.input[1]] = "conv"
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            roles[node.input[1]] = "gemm_t" if trans_b else "gemm"
        elif node.op_type == "BatchNormalization":
            for name, role in zip(node.input[1:], ("bn_scale", "bn_bias", "bn_mean", "bn_var")):
                roles[name] = role
    return roles


def _draw(rng: np.random.Generator, arr: np.ndarray, role: str) -> np.ndarray:
    if role == "conv":
        fan_in = int(np.prod(arr.shape[1:]))
        return rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    if role in ("gemm", "gemm_t"):
        fan_in = arr.shape[1] if role == "gemm_t" else arr.shape[0]
        return rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(np.sqrt(1.0 / fan_in))
    if role in ("bn_scale", "bn_var"):
        return rng.uniform(0.5, 1.5, arr.shape).astype(np.float32)
    return rng.uniform(-0.1, 0.1, arr.shape).astype(np.float32)
