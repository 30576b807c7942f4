"""What `verify` checks of a plan whose stages run lower-precision variants.

Each stage is fed the original model's own values of its inputs and its
outputs are held to its variant's tolerance against the original's values:

- fp32: element by element, ``|got - expected| <= atol + rtol * |expected|`` (verify's tolerances);
- fp16 (the sub-model stays fp32 in out/, the engine computes fp16): the
  sub-model converted as the variants pass measured it (edgec.backends.fp16.to_fp16),
  held to edgec.backends.fp16's rule, max abs error <= max(1e-2 x the output's
  range, sqrt(depth) x the model's own response to fp16-rounded inputs);
- int8 (the QDQ sub-model in out/): the outputs' SQNR against fp32 at least
  INT8_MIN_SQNR_DB. Uniform 8-bit rounding of one tensor gives ~40 dB; 20 dB
  (noise at 1% of the signal's power) leaves room for the rounding of every
  tensor of a stage to add up, and still catches wrong scales or a broken
  zero point, which fall below 0 dB.

The plan as a whole is run on the calibration frames (each fp16 stage
emulated) and its accuracy, top-1 against the labels or agreement of top-1
with the original, must reach the floor the manifest records. With replicas,
each way a frame can be dealt through the plan is run, and the accuracy is
their mean weighted by the share of frames each takes, as the manifest
predicts it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from edgec.accuracy import InputSpec, load_calibration, score, variant_session
from edgec.backends.fp16 import check_fp16, to_fp16
from edgec.errors import EdgecError
from edgec.manifest import Manifest, StageSpec
from edgec.runtime.stage import checked_model

INT8_MIN_SQNR_DB = 20.0


@dataclass
class StageCheck:
    stage: str
    variant: str
    measure: str  # what was compared, in words
    value: float
    limit: float
    passed: bool


@dataclass
class AccuracyCheck:
    metric: str
    accuracy: float
    floor: float
    manifest_accuracy: float | None
    frames: int

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.floor - 1e-12


def _stage_model(out: Path, stage: StageSpec) -> onnx.ModelProto:
    data = checked_model(str(out), stage)
    return onnx.load(data) if isinstance(data, str) else onnx.load_from_string(data)


def _run_variant(model: onnx.ModelProto, variant: str):
    """A session computing the stage as its board does: fp16 stages through the fp16 conversion."""
    if variant == "fp16":
        return variant_session(to_fp16(model), "fp16")
    return variant_session(model, variant)


def reference_values(source: Path, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The source model's values of `names` (those it has) on one frame (an opset older than ONNX Runtime
    loads is upgraded as the load pass upgrades it)."""
    from edgec.passes.conventions import OLDEST_OPSET, check_opset

    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OLDEST_OPSET)
    if opset < OLDEST_OPSET:
        model = check_opset(model, source)
    model = onnx.shape_inference.infer_shapes(model)
    have = {o.name for o in model.graph.output}
    infos = {v.name: v for v in model.graph.value_info}
    for n in names:
        if n not in have and n in infos:
            model.graph.output.append(infos[n])
    outs = [o.name for o in model.graph.output]
    got = dict(zip(outs, variant_session(model, "fp32").run(outs, dict(feeds))))
    got.update(feeds)
    return {n: got[n] for n in names if n in got}


def check_stages(out: Path, manifest: Manifest, source: Path, frames: list[Mapping[str, np.ndarray]], *,
                 compare: Callable[[str, np.ndarray, np.ndarray], Any], fp32_checked: bool = False) -> list[StageCheck]:
    """Each stage on the original's values of its inputs, over `frames`, at its variant's tolerance;
    `compare(name, expected, got)` is verify's element-wise comparison (fp32 stages). With `fp32_checked`,
    verify's end-to-end comparison has run every fp32 stage on a chain of fp32 sub-models, which is the
    stronger check: an intermediate tensor's elements near zero fail a relative tolerance on rounding alone."""

    names = sorted({t.name for s in manifest.stages for t in s.inputs + s.outputs})
    refs = [reference_values(source, feeds, names) for feeds in frames]
    checks = []
    for stage in manifest.stages:
        tensors = [t.name for t in stage.inputs + stage.outputs]
        missing = [n for n in tensors if n not in refs[0]]
        if missing:
            checks.append(StageCheck(stage.name, stage.variant, f"'{missing[0]}' is not a tensor of the original; "
                                     "its stage is checked end to end only", 0.0, 0.0, True))
            continue
        if fp32_checked and stage.variant == "fp32":
            checks.append(StageCheck(stage.name, "fp32", "checked end to end (the chain's outputs)", 0.0, 0.0, True))
            continue
        model = _stage_model(out, stage)
        outs = [o.name for o in stage.outputs]
        if stage.variant == "fp16":
            half = to_fp16(model)
            results = [c for ref in refs for c in check_fp16(model, {t.name: ref[t.name] for t in stage.inputs},
                                                              fp16_model=half)]
            worst = max(results, key=lambda c: c.max_abs_error / max(c.tolerance, 1e-30))
            checks.append(StageCheck(stage.name, "fp16", f"max abs error of '{worst.output}' (fp16 rule)",
                                     worst.max_abs_error, worst.tolerance, all(c.passed for c in results)))
            continue
        sess = _run_variant(model, stage.variant)
        got = [sess.run(outs, {t.name: ref[t.name] for t in stage.inputs}) for ref in refs]
        if stage.variant == "int8":
            sqnr = min(score(np.stack([ref[o] for ref in refs]), np.stack([g[j] for g in got]), None).sqnr_db
                       for j, o in enumerate(outs))
            checks.append(StageCheck(stage.name, "int8", "min SQNR of its outputs, dB", sqnr, INT8_MIN_SQNR_DB,
                                     bool(sqnr >= INT8_MIN_SQNR_DB)))
        else:
            cmp = [compare(o, ref[o], g[j]) for ref, g in zip(refs, got)
                   for j, o in enumerate(outs)]
            checks.append(StageCheck(stage.name, stage.variant, "elements outside atol + rtol x |expected|",
                                     float(sum(c.mismatches for c in cmp)), 0.0, all(c.passed for c in cmp)))
    return checks


def stage_frames(manifest: Manifest, calibration: str | None, count: int = 8) -> list[dict[str, np.ndarray]] | None:
    """Up to `count` calibration frames to check stages on (lower precision is calibrated for real values,
    not random ones); None when the plan names no calibration file."""
    path = calibration or ((manifest.accuracy or {}).get("calibration") or {}).get("path")
    if path is None or not Path(path).is_file():
        return None
    cal = load_calibration(path, [_spec(t) for t in manifest.inputs], None)
    return [cal.frame(i) for i in range(min(count, cal.count))]


def check_accuracy(out: Path, manifest: Manifest, calibration: str | None) -> AccuracyCheck | None:
    """The plan's accuracy on the calibration frames against the manifest's floor; None if it records none."""
    record = manifest.accuracy or {}
    if record.get("floor") is None and record.get("calibration") is None:
        return None
    path = calibration or (record.get("calibration") or {}).get("path")
    if path is None or not Path(path).is_file():
        raise EdgecError("the plan's accuracy is checked on its calibration frames; pass them with --calib",
                         where=str(path or out))
    inputs = [_spec(t) for t in manifest.inputs]
    cal = load_calibration(path, inputs, manifest.outputs[0].shape[-1] if manifest.outputs[0].shape else None)
    sessions = {s.name: _run_variant(_stage_model(out, s), s.variant) for s in manifest.stages}
    name = manifest.outputs[0].name
    reference = None
    if cal.labels is None:
        ref_model = Path((record.get("reference_model") or {}).get("path") or manifest.source_model["path"])
        ref_sess = variant_session(onnx.load(str(ref_model)), "fp32")
        reference = np.stack([ref_sess.run([name], cal.frame(i))[0] for i in range(cal.count)])
    accuracy = 0.0
    for weight, stages in dealt_paths(manifest):  # a stream's accuracy: the dealing-weighted mean of its paths'
        got = []
        for i in range(cal.count):
            env = cal.frame(i)
            for stage in stages:
                outs = [o.name for o in stage.outputs]
                env.update(zip(outs, sessions[stage.name].run(outs, {t.name: env[t.name] for t in stage.inputs})))
            got.append(env[name])
        got_arr = np.stack(got)
        accuracy += weight * score(got_arr if reference is None else reference, got_arr, cal.labels).accuracy
    floor = record.get("floor")
    return AccuracyCheck(cal.metric, accuracy, floor if floor is not None else 0.0,
                         manifest.predicted.get("accuracy"), cal.count)


def dealt_paths(manifest: Manifest) -> list[tuple[float, list[StageSpec]]]:
    """Every way a frame can go through the plan, with the share of frames that go that way: a step of
    replicas deals each frame to one of them by its weight, independently of the other steps (as the
    variants pass predicts, edgec.passes.variants.replica_paths); every slice of a step of slices runs."""
    choices = [[(float(st.weight), [st]) for st in step] if step[0].parallel == "replica" else [(1.0, step)]
               for step in manifest.steps()]
    return [(float(np.prod([w for w, _ in combo])), [st for _, group in combo for st in group])
            for combo in itertools.product(*choices)]


def _spec(t) -> InputSpec:
    return InputSpec(t.name, t.dtype, tuple(t.shape))
