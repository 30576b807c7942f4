"""ONNX Runtime sessions: the one place that turns settings into SessionOptions and an InferenceSession.

The runtime's stages, `edgec verify`, shape probing, the micro-benchmarks and
the benchmarks all build their sessions here, so a setting means the same
everywhere. Settings are a dict, as a stage's `session` in the manifest holds them:

    intra_op_num_threads, inter_op_num_threads      ints
    execution_mode                                  "sequential" | "parallel"
    graph_optimization_level                        "disable_all" | "basic" | "extended" | "all"
    config: {"session.intra_op_thread_affinities": "1;2", ...}   session config entries
    "session.xxx": "..."                            a config entry given at top level
    providers                                       list of execution provider names
    disabled_optimizers                             list of ONNX Runtime graph transformers not to run
                                                    (an int8 stage: ["QDQPropagationTransformer"], see
                                                    edgec.backends.int8); InferenceSession's keyword since
                                                    ONNX Runtime 1.8 (microsoft/onnxruntime #7126), which
                                                    every board's release has
    any other SessionOptions attribute              set as given (enable_mem_pattern, ...)

Without intra_op_num_threads, `threads` (one per core the process is pinned to)
sets it. What the backends write besides (edgec.backends): `provider`, `cores`
and `main_thread_core` of a CPU stage describe its pinning; the thread
affinities are dropped, with a note, when the process does not hold those
cores (`runnable_settings`). A TensorRT stage's `engine`, `ort_tensorrt_ep`
and build facts: it runs under ONNX Runtime's TensorRT execution provider
where this onnxruntime has it, else on the CPU provider, with a note
(`providers_for`). Python 3.6 syntax: it runs on the boards.
"""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import onnxruntime as ort

from edgec.errors import EdgecError

AFFINITY_KEY = "session.intra_op_thread_affinities"
_EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
_OPT_LEVELS = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_CONFIG_KEYS = ("config", "config_entries", "session_config_entries")
DISABLED_OPTIMIZERS = "disabled_optimizers"  # an InferenceSession argument, not a SessionOptions attribute
_DESCRIPTIVE = {"provider", "cores", "main_thread_core",  # neon: how the launcher pins the process
                "engine", "build", "precision", "workspace_mib", "bindings_dtype", "tensorrt",
                "ort_tensorrt_ep"}  # tensorrt: the engine and its build; see providers_for


def inference_session(model: Union[bytes, str], settings: Optional[Mapping[str, Any]] = None,
                      threads: Optional[int] = None, providers: Optional[Sequence[Any]] = None,
                      where: str = "session", options: Optional[ort.SessionOptions] = None) -> ort.InferenceSession:
    """An InferenceSession of `model` (serialized bytes or a path) with `settings` applied.

    Providers: `providers` if given, else the settings' (providers_for); the CPU provider by default.
    `options`: the session_options(settings, threads) a caller built already and keeps (ONNX Runtime
    may run with less than was asked, e.g. sequentially). ONNX Runtime's own errors pass through:
    a caller that loads a user's model says which one failed.
    """
    settings = settings or {}
    so = options if options is not None else session_options(settings, threads, where)
    chosen = list(providers) if providers is not None else providers_for(settings)
    disabled = settings.get(DISABLED_OPTIMIZERS)
    if disabled:
        if not isinstance(disabled, (list, tuple)) or not all(isinstance(d, str) for d in disabled):
            raise EdgecError("{}: expected a list of transformer names".format(DISABLED_OPTIMIZERS), where=where)
        return ort.InferenceSession(model, so, providers=chosen, disabled_optimizers=list(disabled))
    return ort.InferenceSession(model, so, providers=chosen)


def session_options(settings: Mapping[str, Any], threads: Optional[int] = None,
                    where: str = "session") -> ort.SessionOptions:
    """SessionOptions with every setting applied (see the module docstring); errors name `where`."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads and "intra_op_num_threads" not in settings:
        so.intra_op_num_threads = int(threads)
    for key, value in settings.items():
        if key in ("providers", DISABLED_OPTIMIZERS) or key in _DESCRIPTIVE:
            continue
        if key == "execution_mode":
            so.execution_mode = _enum(_EXECUTION_MODES, value, key, where)
        elif key == "graph_optimization_level":
            so.graph_optimization_level = _enum(_OPT_LEVELS, value, key, where)
        elif key in _CONFIG_KEYS:
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
        for key in _CONFIG_KEYS:
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
