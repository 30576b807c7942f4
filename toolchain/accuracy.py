"""Accuracy of a plan whose stages run in lower-precision variants, measured on calibration frames.

`--calib data.npz` holds one array per model input with a leading frame axis
(N x the input's shape, the input's dtype) and optionally `labels` (N ints in
[0, classes), classes = the first output's last dimension). The metric is
top-1 against the labels when given, else the agreement of top-1 with the
fp32 model; SQNR (dB) of the outputs against fp32 is reported beside it.

Variants are emulated on this machine's CPU as the boards compute them, by
each stage's backend (`Backend.emulate`):

- fp16 (TensorRT on the Nano): edgec.backends.fp16.to_fp16 (fp32 inputs and
  outputs kept), run under ONNX Runtime CPU: every weight
  and every activation is stored in fp16, arithmetic between them is fp32
  (ONNX Runtime casts around fp16 nodes it has no kernel for). TensorRT's
  fp16 kernels also accumulate in fp32 on sm_53 convolutions, so what differs
  from the board is the order of accumulation, not the rounding of storage.
  onnxconverter-common's float16 conversion (1.16, keep_io_types) is not
  used: it writes a model ONNX Runtime refuses when a graph output is also
  read inside the graph, which is every stage that relays a tensor it makes
  (tests/test_accuracy.py shows the case).
- int8 (ONNX Runtime CPU on the ARM boards): onnxruntime.quantization's
  static QDQ quantization (MinMax calibration on the stage's own inputs, as
  the fp32 model computes them on the calibration frames), run under ONNX
  Runtime with its graph optimizations, which fuse the QDQ pairs into the same
  int8 kernels the board's ONNX Runtime runs.

Results are cached by what determines them (source model, calibration file,
stage ranges, variants, onnxruntime version) in out/accuracy-cache.json, read
from the previous out/ and written into the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from edgec.errors import EdgecError

CACHE_FILE = "accuracy-cache.json"
LABELS = "labels"
MAX_QUANT_FRAMES = 128  # calibration frames handed to a variant that needs them (int8's MinMax ranges)


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Calibration:
    """Calibration frames: per model input an N x shape array, and optional labels."""

    path: str
    sha256: str
    frames: dict[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def count(self) -> int:
        return len(next(iter(self.frames.values())))

    def frame(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.frames.items()}

    @property
    def metric(self) -> str:
        return "top1" if self.labels is not None else "agreement"


def load_calibration(path: str | os.PathLike, inputs: Sequence[InputSpec], classes: int | None) -> Calibration:
    """Read and check `path`; an EdgecError names the file, the array and what to do."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read calibration data as .npz: {str(exc).splitlines()[0]}", where=where) from None
    names = [s.name for s in inputs]
    stray = sorted(set(arrays) - set(names) - {LABELS})
    if stray:
        raise EdgecError(f"array '{stray[0]}' is not a model input; expected arrays "
                         f"{', '.join(names)} (N frames each) and optionally '{LABELS}'", where=where)
    count = None
    frames = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise EdgecError(f"no array named '{spec.name}' (a model input); the file holds "
                             f"{', '.join(sorted(arrays)) or 'nothing'}", where=where)
        arr = arrays[spec.name]
        if arr.dtype != np.dtype(spec.dtype):
            raise EdgecError(f"'{spec.name}' is {arr.dtype}, the model's input is {spec.dtype}; convert it",
                             where=where)
        if arr.ndim != len(spec.shape) + 1 or tuple(arr.shape[1:]) != tuple(spec.shape) or arr.shape[0] == 0:
            raise EdgecError(f"'{spec.name}' has shape {list(arr.shape)}; expected N x {list(spec.shape)} "
                             f"(N >= 1 frames of the model input)", where=where)
        if count is not None and arr.shape[0] != count:
            raise EdgecError(f"'{spec.name}' holds {arr.shape[0]} frames, other inputs {count}", where=where)
        count = arr.shape[0]
        frames[spec.name] = np.ascontiguousarray(arr)
    labels = arrays.get(LABELS)
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != count or labels.dtype.kind not in "iu":
            raise EdgecError(f"'{LABELS}' is {labels.dtype}{list(labels.shape)}; expected {count} integer class "
                             f"indices, one per frame", where=where)
        if classes is not None and (labels.min() < 0 or labels.max() >= classes):
            bad = int(labels[(labels < 0) | (labels >= classes)][0])
            raise EdgecError(f"'{LABELS}' holds class {bad}, outside 0..{classes - 1} (the model's first output "
                             f"has {classes} classes)", where=where)
        labels = labels.astype(np.int64)
    return Calibration(where, hashlib.sha256(data).hexdigest(), frames, labels)


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        out.append(InputSpec(v.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name,
                             tuple(int(d.dim_value) for d in tt.shape.dim)))
    return out


def classes_of(model: onnx.ModelProto) -> int | None:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].dim_value > 0 else None


# -- variants as the boards compute them ------------------------------------------------------------


def variant_session(model: onnx.ModelProto, variant: str) -> ort.InferenceSession:
    """A CPU session running `model` (already in `variant`) the way the board's runtime would."""
    from edgec.backends.int8 import INT8_SESSION
    from edgec.runtime.session import inference_session

    # fp32 as verify runs it (no rewrite, so fp32 stages reproduce the original); others as the board does
    settings: dict = {"graph_optimization_level": "disable_all" if variant == "fp32" else "all"}
    if variant == "int8":
        settings.update(INT8_SESSION)
    return inference_session(model.SerializeToString(), settings, 1)


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Score:
    accuracy: float  # top-1 vs labels, or top-1 agreement with fp32
    sqnr_db: float  # outputs vs fp32 (inf: identical)


def top1(outputs: np.ndarray) -> np.ndarray:
    """Per frame, the index of the largest value of the output (N x ...)."""
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def score(reference: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> Score:
    truth = labels if labels is not None else top1(reference)
    acc = float((top1(got) == truth).mean())
    ref, err = reference.astype(np.float64), got.astype(np.float64) - reference.astype(np.float64)
    noise = float((err ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10 * np.log10(max(float((ref ** 2).sum()), 1e-300) / noise)
    return Score(acc, sqnr)


@dataclass
class StageRun:
    """One stage of a plan as measured: its fp32 sub-model, its variant, and a key naming its group range."""

    model: onnx.ModelProto
    variant: str
    key: str  # the stage's groups, e.g. "g0..g7"
    # (model, variant, calibration values of its inputs) -> the model computing on this CPU what the unit
    # computes in that variant: the stage's backend's `emulate`
    emulate: Callable[[onnx.ModelProto, str, Sequence[Mapping[str, np.ndarray]]], onnx.ModelProto] | None = None


@dataclass
class Measurer:
    """Runs plans on the calibration frames; remembers results in memory and in an on-disk cache."""

    model: onnx.ModelProto  # the fp32 model the stages were cut from (weights inline)
    calibration: Calibration
    source_sha256: str
    cache: dict[str, dict[str, float]] = field(default_factory=dict)
    _sessions: dict[tuple[str, str], ort.InferenceSession] = field(default_factory=dict)
    _variant_models: dict[tuple[str, str], onnx.ModelProto] = field(default_factory=dict)
    _activations: dict[str, np.ndarray] = field(default_factory=dict)
    _reference: np.ndarray | None = None
    _foreign_reference: bool = False
    reference_sha256: str = ""  # whose fp32 outputs the plan is scored against ("": its own)
    runs: int = 0  # plans measured (not found in the cache)

    def compare_with(self, other: "Measurer") -> None:
        """Score against `other`'s fp32 outputs (a user variant is judged against the original model)."""
        self._reference = other.reference()
        self._foreign_reference = True
        self.reference_sha256 = other.source_sha256

    @property
    def output(self) -> str:
        return self.model.graph.output[0].name

    def reference(self) -> np.ndarray:
        if self._reference is None:
            self._reference = self.activations([self.output])[self.output]
        return self._reference

    def activations(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The fp32 model's values of tensors `names` on every frame (N x shape)."""
        missing = [n for n in names if n not in self._activations]
        if missing:
            m = onnx.ModelProto()
            m.CopyFrom(self.model)
            have = {o.name for o in m.graph.output}
            values = {v.name: v for v in m.graph.value_info}
            for n in missing:
                if n not in have and n not in {i.name for i in m.graph.input}:
                    m.graph.output.append(values[n])
            sess = variant_session(m, "fp32")
            outs = [o.name for o in m.graph.output]
            cols: dict[str, list[np.ndarray]] = {n: [] for n in missing}
            for i in range(self.calibration.count):
                feed = self.calibration.frame(i)
                got = dict(zip(outs, sess.run(outs, feed)))
                got.update(feed)
                for n in missing:
                    cols[n].append(got[n])
            self._activations.update({n: np.stack(v) for n, v in cols.items()})
        return {n: self._activations[n] for n in names}

    def variant_model(self, stage: StageRun) -> onnx.ModelProto:
        key = (stage.key, stage.variant)
        if key not in self._variant_models:
            if stage.variant == "fp32":
                model = stage.model
            else:
                assert stage.emulate is not None, f"stage {stage.key}: no emulation for {stage.variant}"
                names = [i.name for i in stage.model.graph.input]
                acts = self.activations(names)
                feeds = [{n: acts[n][i] for n in names} for i in range(min(self.calibration.count, MAX_QUANT_FRAMES))]
                model = stage.emulate(stage.model, stage.variant, feeds)
            self._variant_models[key] = model
        return self._variant_models[key]

    def _session(self, stage: StageRun) -> ort.InferenceSession:
        key = (stage.key, stage.variant)
        if key not in self._sessions:
            self._sessions[key] = variant_session(self.variant_model(stage), stage.variant)
        return self._sessions[key]

    def cache_key(self, stages: Sequence[StageRun]) -> str:
        text = "|".join([self.source_sha256, self.reference_sha256, self.calibration.sha256, ort.__version__]
                        + [f"{s.key}:{s.variant}" for s in stages])
        return hashlib.sha256(text.encode()).hexdigest()

    def measure(self, stages: Sequence[StageRun]) -> Score:
        """Run the chain of `stages` (each in its variant) on every frame and score its first output."""
        key = self.cache_key(stages)
        if key in self.cache:
            return Score(**self.cache[key])
        if all(s.variant == "fp32" for s in stages) and not self._foreign_reference:
            ref = self.reference()
            result = score(ref, ref, self.calibration.labels)
        else:
            sessions = [(self._session(s), [i.name for i in s.model.graph.input], [o.name for o in s.model.graph.output])
                        for s in stages]
            got = []
            for i in range(self.calibration.count):
                env = self.calibration.frame(i)
                for sess, ins, outs in sessions:
                    env.update(zip(outs, sess.run(outs, {n: env[n] for n in ins})))
                got.append(env[self.output])
            result = score(self.reference(), np.stack(got), self.calibration.labels)
        self.runs += 1
        self.cache[key] = {"accuracy": result.accuracy, "sqnr_db": result.sqnr_db}
        return result


def read_cache(out_dir: str | os.PathLike) -> dict[str, dict[str, float]]:
    """The previous compile's measurements in `out_dir` (empty if none or unreadable: it is only a cache)."""
    try:
        data = json.loads((Path(out_dir) / CACHE_FILE).read_text())
        return {k: {"accuracy": float(v["accuracy"]), "sqnr_db": float(v["sqnr_db"])}
                for k, v in data["entries"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_cache(out_dir: str | os.PathLike, cache: Mapping[str, Mapping[str, float]]) -> None:
    entries = {k: {"accuracy": v["accuracy"], "sqnr_db": v["sqnr_db"] if np.isfinite(v["sqnr_db"]) else 1e9}
               for k, v in cache.items()}
    (Path(out_dir) / CACHE_FILE).write_text(json.dumps({"version": 1, "entries": entries}, indent=1) + "\n")


def stream_accuracy(paths: Sequence[tuple[float, float]]) -> float:
    """A stream's accuracy when frames are dealt to replicas: the dealing-weighted mean of each replica
    path's accuracy, (weight, accuracy) pairs whose weights sum to 1 (a chain is one path of weight 1)."""
    total = sum(w for w, _ in paths)
    if not paths or abs(total - 1.0) > 1e-6:
        raise ValueError(f"replica weights must sum to 1, got {total}")
    return float(sum(w * a for w, a in paths))
