"""`verify`: run the original model and the chained sub-models, and compare outputs.

Both run under onnxruntime (CPU, graph optimizations off so neither side is
rewritten) on the same inputs: the user's .npz, or seeded random ones (floats
uniform in a range the user can set, standard normal by default). Every element
of every output is held to Polygraphy's comparison, ``|got - expected| <= atol +
rtol * |expected|``, with defaults atol 1e-5 and rtol 1e-4: a split plan is the
same arithmetic as the original but for float reordering (folded BN, fused
bias), which stays within a few ulps of each value; atol keeps outputs that sit
near zero from failing on rounding alone.

Before anything runs, the bundle is held to its manifest (`check_bundle`): the
manifest to its digest, every file it lists to its sha256, every stage's
session settings to the runtime's allow-list, and every sub-model's inputs and
outputs to the names, dtypes and shapes the manifest gives them (the runtime
checks frames against the manifest, so a manifest that disagrees with its
sub-models fails every frame).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from edgec.errors import EdgecError
from edgec.manifest import Manifest, StageSpec, TensorSpec, read_manifest
from edgec.runtime.frames import random_frames
from edgec.runtime.session import inference_session
from edgec.runtime.stage import checked_model
from edgec.runtime.trust import check_listed_files, check_manifest_digest, check_session
from edgec.variant_checks import AccuracyCheck, StageCheck, check_accuracy, check_stages, stage_frames

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5


@dataclass
class OutputCheck:
    """One output compared element by element: ``|got - expected| <= atol + rtol * |expected|``."""

    name: str
    max_abs_error: float
    max_rel_error: float  # max of |got - expected| / |expected| over elements with expected != 0
    value_range: float  # max - min of the expected output
    mismatches: int  # elements outside the tolerance
    size: int
    worst_index: tuple[int, ...]  # where |got - expected| - (atol + rtol * |expected|) is largest
    atol: float
    rtol: float

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


@dataclass
class VerifyResult:
    outputs: list[OutputCheck]  # end to end; empty for a plan with int8 stages (judged by its accuracy)
    atol: float
    rtol: float
    stages: list[StageCheck] = field(default_factory=list)  # each stage at its variant's tolerance
    accuracy: AccuracyCheck | None = None  # the plan on its calibration frames against the floor

    @property
    def passed(self) -> bool:
        return (all(o.passed for o in self.outputs) and all(s.passed for s in self.stages)
                and (self.accuracy is None or self.accuracy.passed))


def verify(out: str | os.PathLike, *, model: str | os.PathLike | None = None,
           inputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None, seed: int = 0,
           rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
           input_range: tuple[float, float] | None = None, calibration: str | os.PathLike | None = None) -> VerifyResult:
    """Compare the compiled plan in `out` with the original model.

    `inputs`: an .npz path or arrays by name (default: one seeded random frame; floats standard normal, or
    uniform in `input_range`). Stages in a variant other than fp32 are checked one by one at their variant's
    tolerance (edgec.variant_checks); a plan compiled with calibration data is run on it (`calibration`, else
    the file the manifest names) and its accuracy held to the manifest's floor.
    """
    if rtol < 0 or atol < 0:
        raise EdgecError(f"tolerances must be >= 0, got rtol {rtol:g}, atol {atol:g}")
    if input_range is not None and not input_range[0] < input_range[1]:
        raise EdgecError(f"--input-range {input_range[0]:g},{input_range[1]:g}: expected LOW,HIGH with LOW < HIGH")
    manifest = read_manifest(out)
    check_bundle(Path(out), manifest)
    model_path = Path(model) if model is not None else Path(manifest.source_model["path"])
    if not model_path.is_file():
        raise EdgecError("original model not found; pass it with --model", where=str(model_path))
    if inputs is not None:
        feeds = _load_inputs(inputs, manifest.inputs)
    else:
        feeds = random_inputs(manifest.inputs, seed, input_range)
    checks = []
    if all(s.variant != "int8" for s in manifest.stages):
        expected = run_original(model_path, feeds, [o.name for o in manifest.outputs])
        for via, path in chain_paths(manifest):  # every replica computes on some path
            got = run_chain(Path(out), manifest, feeds, path)
            checks += [compare(name if not via else f"{name} (via {via})", expected[name], got[name],
                               rtol=rtol, atol=atol) for name in expected]
    stages = []
    if any(s.variant != "fp32" for s in manifest.stages):
        frames = (stage_frames(manifest, None if calibration is None else str(calibration))
                  if inputs is None else None) or [feeds]
        stages = check_stages(Path(out), manifest, model_path, frames,
                              compare=lambda name, exp, got: compare(name, exp, got, rtol=rtol, atol=atol),
                              fp32_checked=bool(checks))
    accuracy = check_accuracy(Path(out), manifest, None if calibration is None else str(calibration))
    return VerifyResult(checks, atol, rtol, stages, accuracy)


def check_bundle(out: Path, manifest: Manifest) -> None:
    """The manifest against its digest, the files against the manifest, the manifest against the sub-models."""
    check_manifest_digest(str(out))
    models = []
    for stage in manifest.stages:  # sub-models first: their errors name the stage
        checked_model(str(out), stage)
        models += [stage.model] + ([stage.external_data["path"]] if stage.external_data else [])
    check_listed_files(str(out), manifest.files, skip=models)
    for stage in manifest.stages:
        check_session(stage.session, str(out), f"manifest.json: stage {stage.name} session")
        path = out / stage.model
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception as exc:  # onnx raises its own exception types
            raise EdgecError(f"stage {stage.name}: cannot read its sub-model: {_first_line(exc)}", where=str(path)) from None
        inits = {t.name for t in graph.initializer}
        for what, specs, values in (("input", stage.inputs, [v for v in graph.input if v.name not in inits]),
                                    ("output", stage.outputs, list(graph.output))):
            _match_io(stage.name, what, specs, values, str(path))


def _match_io(stage: str, what: str, specs: list[TensorSpec], values: list, where: str) -> None:
    """The sub-model's graph inputs (or outputs) are the manifest's: same names, in order, dtypes, shapes."""
    got_names, want_names = [v.name for v in values], [t.name for t in specs]
    if got_names != want_names:
        raise EdgecError(f"manifest.json: stage {stage} lists {what}s {want_names}, the sub-model has {got_names}; "
                         f"recompile", where=where)
    for spec, value in zip(specs, values):
        ttype = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name if ttype.elem_type else "?"
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in ttype.shape.dim]
        if dtype != spec.dtype or shape != list(spec.shape):
            raise EdgecError(f"manifest.json: stage {stage} {what} '{spec.name}' is {spec.dtype}{list(spec.shape)}, "
                             f"the sub-model's is {dtype}{shape}; recompile", where=where)


def random_inputs(specs: list[TensorSpec], seed: int = 0,
                  input_range: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """One seeded random frame: the same one `edgec run` sends first with the same seed (floats uniform in
    `input_range` where given)."""
    frame = random_frames(specs, 1, seed)[0]
    if input_range is not None:
        rng = np.random.default_rng(seed)
        low, high = input_range
        for spec in specs:
            if np.dtype(spec.dtype).kind == "f":
                frame[spec.name] = rng.uniform(low, high, spec.shape).astype(spec.dtype)
    return frame


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
    try:
        sess = session(_runnable(model, path))
        return dict(zip(outputs, sess.run(outputs, {n: feeds[n] for n in names})))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise EdgecError(f"ONNX Runtime cannot run the original model: {_first_line(exc)}", where=str(path)) from None


def chain_paths(manifest: Manifest) -> list[tuple[str, list[StageSpec]]]:
    """The ways through the plan that together run every stage once: the first copy of each replicated step,
    then, for each other replica, the same with that replica in its step's place (slices of a step all run).
    Each with a label naming the replica it adds ('' for the first)."""
    steps = manifest.steps()
    order = range(len(steps))
    chosen = {i: ([steps[i][0]] if steps[i][0].parallel == "replica" else steps[i]) for i in order}
    paths = [("", [st for i in order for st in chosen[i]])]
    for i in order:
        if steps[i][0].parallel == "replica":
            for other in steps[i][1:]:
                paths.append((other.name, [st for j in order for st in (chosen[j] if j != i else [other])]))
    return paths


def run_chain(out: Path, manifest: Manifest, feeds: Mapping[str, np.ndarray],
              stages: list[StageSpec] | None = None) -> dict[str, np.ndarray]:
    """Run the stages (default: all, in manifest order), each reading what earlier stages made."""
    env = dict(feeds)
    for stage in (manifest.stages if stages is None else stages):
        model = checked_model(str(out), stage)  # EdgecError naming the file if missing or not the manifest's
        try:
            sess = session(model)
            result = sess.run([o.name for o in stage.outputs], {i.name: env[i.name] for i in stage.inputs})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EdgecError(f"stage {stage.name}: ONNX Runtime cannot run its sub-model: {_first_line(exc)}; "
                             f"recompile, or report the model", where=str(out / stage.model)) from None
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


def compare(name: str, expected: np.ndarray, got: np.ndarray, *, rtol: float = DEFAULT_RTOL,
            atol: float = DEFAULT_ATOL) -> OutputCheck:
    """Element by element: |got - expected| <= atol + rtol * |expected| (NaN only where expected has NaN)."""
    exp = np.asarray(expected).astype(np.float64)
    act = np.asarray(got).astype(np.float64)
    if exp.shape != act.shape:
        return OutputCheck(name, float("inf"), float("inf"), 0.0, max(exp.size, 1), exp.size, (), atol, rtol)
    both_nan = np.isnan(exp) & np.isnan(act)
    same_inf = np.isinf(exp) & (exp == act)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(exp - act))
    diff = np.where(np.isnan(diff), np.inf, diff)
    excess = diff - (atol + rtol * np.abs(np.where(np.isfinite(exp), exp, 0.0)))
    finite = exp[np.isfinite(exp)]
    nonzero = np.abs(exp) > 0
    return OutputCheck(
        name=name,
        max_abs_error=float(diff.max()) if diff.size else 0.0,
        max_rel_error=float((diff[nonzero] / np.abs(exp[nonzero])).max()) if nonzero.any() else 0.0,
        value_range=float(finite.max() - finite.min()) if finite.size else 0.0,
        mismatches=int((excess > 0).sum()),
        size=int(exp.size),
        worst_index=tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), exp.shape)) if exp.size else (),
        atol=atol, rtol=rtol)


def _runnable(model: onnx.ModelProto, path: Path) -> str | bytes:
    """The original as ONNX Runtime can run it: its file, or, for an opset older than ONNX Runtime loads, the
    upgrade the load pass compiled from."""
    from edgec.passes.conventions import OLDEST_OPSET, check_opset

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OLDEST_OPSET)
    if opset >= OLDEST_OPSET:
        return str(path)
    return check_opset(model, path).SerializeToString()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
