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


def session_options(settings: Mapping[str, Any], threads: Optional[int] = None,
                    where: str = "session") -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads and "intra_op_num_threads" not in settings:
        so.intra_op_num_threads = int(threads)
    for key, value in settings.items():
        if key == "providers":
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


class StageRunner:
    """A loaded stage: `run(env)` reads its inputs from env and returns its outputs by name."""

    def __init__(self, out_dir: str, stage: StagePlan, threads: Optional[int] = None) -> None:
        self.stage = stage
        data = read_checked(out_dir, stage)
        where = f"manifest.json: stage {stage.name} session"
        so = self.options = session_options(stage.session, threads, where)
        providers: List[Any] = list(stage.session.get("providers") or ["CPUExecutionProvider"])
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
