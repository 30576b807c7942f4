"""One stage: its sub-model, checked against the manifest's sha256, under ONNX Runtime.

A stage's `session` dict in the manifest holds ONNX Runtime settings; all
that is there is applied:

    intra_op_num_threads, inter_op_num_threads      ints
    execution_mode                                  "sequential" | "parallel"
    graph_optimization_level                        "disable_all" | "basic" | "extended" | "all"
    config: {"session.intra_op_thread_affinities": "1;2", ...}   session config entries
    "session.xxx": "..."                            a config entry given at top level
    providers                                       list of execution provider names
    any other SessionOptions attribute              set as given (enable_mem_pattern, ...)

Without intra_op_num_threads, a stage uses one thread per core its process is pinned to.
What the backends write besides (edgec.backends): `provider`, `cores` and
`main_thread_core` of a CPU stage describe its pinning; the thread affinities
are dropped, with a note, when the process does not hold those cores (a plan
run on another machine with `edgec run --local`). A TensorRT stage's `engine`,
`ort_tensorrt_ep` and build facts: it runs under ONNX Runtime's TensorRT
execution provider where this onnxruntime has it, else on the CPU provider,
with a note, so a plan can be checked anywhere.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import onnxruntime as ort

from edgec.errors import EdgecError
from edgec.runtime.plan import StagePlan

_EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
_OPT_LEVELS = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelMismatch(EdgecError):
    """A sub-model whose bytes are not the ones the manifest names."""


def read_checked(out_dir: str, stage: StagePlan) -> bytes:
    """The sub-model's bytes, refused unless they hash to the manifest's sha256."""
    path = os.path.join(out_dir, stage.model)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise EdgecError(f"stage {stage.name}: cannot read its sub-model ({exc.strerror})", where=path) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != stage.sha256:
        raise ModelMismatch(f"stage {stage.name} (device {stage.device}): sub-model sha256 {digest[:12]}... does not "
                            f"match {stage.sha256[:12]}... in manifest.json; refusing to load it. "
                            f"Copy the bundle again or recompile", where=path)
    return data


_DESCRIPTIVE = {"provider", "cores", "main_thread_core",  # neon: how the launcher pins the process
                "engine", "build", "precision", "workspace_mib", "bindings_dtype", "tensorrt",
                "ort_tensorrt_ep"}  # tensorrt: the engine and its build; see providers_for
AFFINITY_KEY = "session.intra_op_thread_affinities"


def session_options(settings: Mapping[str, Any], threads: Optional[int] = None,
                    where: str = "session") -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads and "intra_op_num_threads" not in settings:
        so.intra_op_num_threads = int(threads)
    for key, value in settings.items():
        if key == "providers" or key in _DESCRIPTIVE:
            continue
        if key == "execution_mode":
            so.execution_mode = _enum(_EXECUTION_MODES, value, key, where)
        elif key == "graph_optimization_level":
            so.graph_optimization_level = _enum(_OPT_LEVELS, value, key, where)
        elif key in ("config", "config_entries", "session_config_entries"):
            if not isinstance(value, dict):
                raise EdgecError(f"{key}: expected an object of config entries", where=where)
            for k, v in value.items():
                so.add_session_config_entry(str(k), str(v))
        elif "." in key:
            so.add_session_config_entry(key, str(value))
        elif hasattr(so, key) and not key.startswith("_") and not callable(getattr(so, key)):
            try:
                setattr(so, key, value)
            except (TypeError, RuntimeError) as exc:
                raise EdgecError(f"{key}: cannot set {value!r} ({exc})", where=where) from None
        else:
            raise EdgecError(f"unknown ONNX Runtime session setting '{key}'", where=where)
    return so


def _enum(table: Mapping[str, Any], value: Any, key: str, where: str) -> Any:
    if isinstance(value, int):
        return type(next(iter(table.values())))(value)
    name = str(value).lower()
    for prefix in ("ort_enable_", "ort_"):
        if name.startswith(prefix) and name[len(prefix):] in table:
            name = name[len(prefix):]
    if name not in table:
        raise EdgecError(f"{key}: '{value}' is not one of {', '.join(table)}", where=where)
    return table[name]


def runnable_settings(settings: Mapping[str, Any], notes: Optional[List[str]] = None) -> Dict[str, Any]:
    """The stage's settings, less thread affinities naming cores this process does not hold (and no more
    threads than it holds then)."""
    out = dict(settings)
    cores = settings.get("cores")
    if cores and hasattr(os, "sched_getaffinity") and not set(cores) <= os.sched_getaffinity(0):
        for key in ("config", "config_entries", "session_config_entries"):
            if isinstance(out.get(key), dict) and AFFINITY_KEY in out[key]:
                out[key] = {k: v for k, v in out[key].items() if k != AFFINITY_KEY}
                if notes is not None:
                    notes.append(f"cores {list(cores)} are not all this process's; thread affinities dropped")
        out.pop(AFFINITY_KEY, None)
        if "intra_op_num_threads" in out:
            out["intra_op_num_threads"] = min(int(out["intra_op_num_threads"]), len(os.sched_getaffinity(0)))
    return out


def providers_for(settings: Mapping[str, Any], notes: Optional[List[str]] = None) -> List[Any]:
    """Execution providers: the TensorRT EP with the stage's options where available, else the CPU provider."""
    trt = settings.get("ort_tensorrt_ep")
    if isinstance(trt, dict):
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            return [(p, trt.get(p, {})) if p in trt else p for p in trt.get("providers", [])]
        if notes is not None:
            notes.append("this onnxruntime has no TensorRT execution provider; running the GPU stage on the CPU")
        return ["CPUExecutionProvider"]
    return list(settings.get("providers") or ["CPUExecutionProvider"])


class StageRunner:
    """A loaded stage: `run(env)` reads its inputs from env and returns its outputs by name."""

    def __init__(self, out_dir: str, stage: StagePlan, threads: Optional[int] = None) -> None:
        self.stage = stage
        data = read_checked(out_dir, stage)
        where = f"manifest.json: stage {stage.name} session"
        self.notes: List[str] = []
        settings = runnable_settings(stage.session, self.notes)
        so = self.options = session_options(settings, threads, where)
        providers = providers_for(settings, self.notes)
        try:
            self.session = ort.InferenceSession(data, so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EdgecError(f"stage {stage.name}: ONNX Runtime cannot load the sub-model: {exc}",
                             where=os.path.join(out_dir, stage.model)) from None
        self.input_names = [t.name for t in stage.inputs]
        self.output_names = [t.name for t in stage.outputs]

    def run(self, env: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feeds = {n: env[n] for n in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


def run_segment(runners: Sequence[StageRunner], env: Dict[str, np.ndarray],
                on_stage: Optional[Any] = None) -> Dict[str, np.ndarray]:
    """Run stages in order, each reading what the frame and earlier stages made."""
    for runner in runners:
        if on_stage is not None:
            on_stage(runner.stage)
        env.update(runner.run(env))
    return env
