"""`verify`: run the original model and the chained sub-models, and compare outputs.

Both run under onnxruntime (CPU, graph optimizations off so neither side is
rewritten) on the same inputs: seeded random ones, or the user's .npz. An
output passes when its max abs error is within `rtol` of its value range
(fp32 plans: 1e-4), which is scale-free across outputs such as logits and
probabilities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from edgec.errors import EdgecError
from edgec.manifest import Manifest, TensorSpec, read_manifest
from edgec.runtime.frames import random_frames
from edgec.runtime.session import inference_session
from edgec.runtime.stage import checked_model

DEFAULT_RTOL = 1e-4


@dataclass
class OutputCheck:
    name: str
    max_abs_error: float
    max_rel_error: float
    value_range: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_error <= self.tolerance)


@dataclass
class VerifyResult:
    outputs: list[OutputCheck]
    rtol: float

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


def verify(out: str | os.PathLike, *, model: str | os.PathLike | None = None,
           inputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None, seed: int = 0,
           rtol: float = DEFAULT_RTOL) -> VerifyResult:
    """Compare the compiled plan in `out` with the original model."""
    manifest = read_manifest(out)
    model_path = Path(model) if model is not None else Path(manifest.source_model["path"])
    if not model_path.is_file():
        raise EdgecError("original model not found; pass it with --model", where=str(model_path))
    feeds = _load_inputs(inputs, manifest.inputs) if inputs is not None else random_inputs(manifest.inputs, seed)
    expected = run_original(model_path, feeds, [o.name for o in manifest.outputs])
    got = run_chain(Path(out), manifest, feeds)
    checks = [_compare(name, expected[name], got[name], rtol) for name in expected]
    return VerifyResult(checks, rtol)


def random_inputs(specs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """One seeded random frame: the same one `edgec run` sends first with the same seed."""
    return random_frames(specs, 1, seed)[0]


def session(model: str | bytes, *, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    """A CPU session, graph optimizations off unless `optimize`, so the model runs as written."""
    return inference_session(model, {} if optimize else {"graph_optimization_level": "disable_all"}, threads or None)


def run_original(path: Path, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    model = onnx.load(str(path), load_external_data=False)  # the inputs' names are all it needs
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise EdgecError(f"the original model needs input '{missing[0]}', which the plan does not take; "
                         f"is --model the model this plan was compiled from?", where=str(path))
    sess = session(str(path))
    return dict(zip(outputs, sess.run(outputs, {n: feeds[n] for n in names})))


def run_chain(out: Path, manifest: Manifest, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the stages in manifest order, each reading what earlier stages made."""
    env = dict(feeds)
    for stage in manifest.stages:
        sess = session(checked_model(str(out), stage))
        result = sess.run([o.name for o in stage.outputs], {i.name: env[i.name] for i in stage.inputs})
        env.update(zip((o.name for o in stage.outputs), result))
    return {o.name: env[o.name] for o in manifest.outputs}


def _load_inputs(inputs: str | os.PathLike | Mapping[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        feeds = dict(inputs)
        where = "inputs"
    else:
        where = str(inputs)
        try:
            with np.load(inputs) as npz:
                feeds = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise EdgecError(f"cannot read inputs as .npz: {exc}", where=where) from None
    for spec in specs:
        if spec.name not in feeds:
            raise EdgecError(f"no array named '{spec.name}'; the model's inputs are "
                             f"{', '.join(s.name for s in specs)}", where=where)
        arr = feeds[spec.name]
        if list(arr.shape) != spec.shape or arr.dtype != np.dtype(spec.dtype):
            raise EdgecError(f"'{spec.name}' is {arr.dtype}{list(arr.shape)}, the plan expects "
                             f"{spec.dtype}{spec.shape}", where=where)
    return feeds


def _compare(name: str, expected: np.ndarray, got: np.ndarray, rtol: float) -> OutputCheck:
    exp = expected.astype(np.float64)
    act = got.astype(np.float64)
    diff = np.abs(exp - act)
    value_range = float(exp.max() - exp.min()) if exp.size else 0.0
    scale = value_range if value_range > 0 else max(float(np.abs(exp).max()) if exp.size else 0.0, 1.0)
    max_abs = float(diff.max()) if diff.size else 0.0
    peak = float(np.abs(exp).max()) if exp.size else 0.0
    max_rel = max_abs / peak if peak > 0 else max_abs  # relative to the output's largest magnitude
    if not np.all(np.isfinite(act)) and not np.array_equal(np.isfinite(act), np.isfinite(exp)):
        max_abs = float("inf")
    return OutputCheck(name, max_abs, max_rel, value_range, rtol * scale)
