"""What the runtime trusts in out/: the manifest by its digest, each file by its sha256, and only session
options that cannot reach outside the bundle.

`edgec compile` writes `manifest.sha256` beside manifest.json, in the format of
`sha256sum` (`sha256sum -c manifest.sha256` checks it on a board by hand). The
runtime refuses a manifest whose digest does not match: a changed tensor
shape, session option or file digest is a changed plan, and a changed plan is
compiled, not edited. The digest detects a change; it says nothing of who made
it (CURVE keys guard the network, file permissions the board).

Every file manifest.json lists under a device's folder is checked against its
sha256 by that device before it serves (its sub-models by edgec.runtime.stage as
it loads them, the rest here): its launcher, README, session and provider
options.

A stage's `session` may only hold the ONNX Runtime settings in SESSION_KEYS,
config entries in CONFIG_KEYS and TensorRT provider options in TRT_KEYS, whose
paths must stay inside out/: nothing in a manifest makes ONNX Runtime write a
file (optimized_model_filepath, profiling) or load a library. Python 3.6
syntax: it runs on the boards.
"""

import hashlib
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional

from edgec.errors import EdgecError

DIGEST_FILE = "manifest.sha256"

SESSION_KEYS = frozenset([
    "intra_op_num_threads", "inter_op_num_threads", "execution_mode", "graph_optimization_level",
    "enable_mem_pattern", "enable_mem_reuse", "enable_cpu_mem_arena", "log_severity_level", "providers",
    "config", "config_entries", "session_config_entries", "disabled_optimizers",
    # descriptive: how the launcher pins the process, what the TensorRT stage was built for
    "provider", "cores", "main_thread_core", "engine", "build", "precision", "workspace_mib", "bindings_dtype",
    "tensorrt", "ort_tensorrt_ep",
])
CONFIG_KEYS = frozenset([
    "session.intra_op_thread_affinities", "session.inter_op.allow_spinning", "session.intra_op.allow_spinning",
    "session.disable_prepacking", "session.set_denormal_as_zero", "session.use_env_allocators",
    "session.disable_cpu_ep_fallback", "session.dynamic_block_base",
])
# graph transformers a stage may turn off: an int8 stage keeps its fp32 stem's pooling in fp32 (edgec.backends.int8)
DISABLED_OPTIMIZERS = frozenset(["QDQPropagationTransformer"])
PROVIDERS = frozenset(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
TRT_KEYS = frozenset([
    "device_id", "trt_fp16_enable", "trt_int8_enable", "trt_max_workspace_size", "trt_engine_cache_enable",
    "trt_engine_cache_path", "trt_max_partition_iterations", "trt_min_subgraph_size", "trt_timing_cache_enable",
    "trt_timing_cache_path", "trt_builder_optimization_level", "trt_dla_enable", "trt_dla_core",
])
_TRT_PATHS = ("trt_engine_cache_path", "trt_timing_cache_path")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(out_dir: str) -> str:
    """Write manifest.sha256 for out_dir/manifest.json; its digest."""
    digest = file_sha256(os.path.join(out_dir, "manifest.json"))
    with open(os.path.join(out_dir, DIGEST_FILE), "w", encoding="utf-8") as f:
        f.write("{}  manifest.json\n".format(digest))
    return digest


def check_manifest_digest(out_dir: str) -> None:
    """Refuse out_dir/manifest.json unless it hashes to the digest in manifest.sha256 beside it."""
    where = os.path.join(out_dir, "manifest.json")
    try:
        with open(os.path.join(out_dir, DIGEST_FILE), "r", encoding="utf-8") as f:
            expected = f.read().split()[:1]
    except OSError:
        raise EdgecError("no {} beside it: copy the whole out/ folder, or recompile with this edgec".format(
            DIGEST_FILE), where=where) from None
    try:
        got = file_sha256(where)
    except OSError as exc:
        raise EdgecError("cannot read it ({})".format(exc.strerror), where=where) from None
    if expected != [got]:
        raise EdgecError("sha256 {}... does not match {} ({}...): the manifest was changed after it was compiled; "
                         "refusing it. Copy the bundle again or recompile".format(
                             got[:12], DIGEST_FILE, (expected or ["nothing"])[0][:12]), where=where)


def check_listed_files(out_dir: str, files: Iterable[Mapping[str, Any]], under: Optional[str] = None,
                       skip: Iterable[str] = ()) -> None:
    """Every file of the manifest's `files` (those under folder `under`, if given) present, with its sha256."""
    skipped = set(skip)
    for entry in files:
        rel = str(entry.get("path", ""))
        if rel in skipped or (under is not None and not rel.startswith(under.rstrip("/") + "/")):
            continue
        path = os.path.join(out_dir, rel)
        if not _inside(out_dir, path):
            raise EdgecError("files[]: '{}' is outside the bundle; refusing the manifest".format(rel),
                             where=os.path.join(out_dir, "manifest.json"))
        try:
            got = file_sha256(path)
        except OSError as exc:
            raise EdgecError("cannot read {} ({}), which manifest.json lists; copy the whole out/ folder".format(
                rel, exc.strerror), where=path) from None
        if got != entry.get("sha256"):
            raise EdgecError("sha256 {}... does not match {}... in manifest.json: the file was changed after it "
                             "was compiled; refusing it. Copy the bundle again or recompile".format(
                                 got[:12], str(entry.get("sha256"))[:12]), where=path)


def check_session(settings: Mapping[str, Any], out_dir: str, where: str) -> None:
    """Refuse session settings outside the allow-lists, or provider paths outside out_dir."""
    for key, value in settings.items():
        if key in SESSION_KEYS:
            continue
        if key.startswith("session.") and key in CONFIG_KEYS:
            continue
        raise EdgecError("session setting '{}' is not one the runtime allows (allowed: {}, and config entries {})"
                         .format(key, ", ".join(sorted(SESSION_KEYS - {"provider", "cores", "main_thread_core"})),
                                 ", ".join(sorted(CONFIG_KEYS))), where=where)
    for key in ("config", "config_entries", "session_config_entries"):
        entries = settings.get(key)
        if isinstance(entries, Mapping):
            for name in entries:
                if name not in CONFIG_KEYS:
                    raise EdgecError("{}: config entry '{}' is not one the runtime allows (allowed: {})".format(
                        key, name, ", ".join(sorted(CONFIG_KEYS))), where=where)
    disabled = settings.get("disabled_optimizers")
    if disabled is not None and (not isinstance(disabled, list)
                                 or not all(isinstance(d, str) and d in DISABLED_OPTIMIZERS for d in disabled)):
        raise EdgecError("disabled_optimizers {!r}: the runtime allows a list of {} only".format(
            disabled, ", ".join(sorted(DISABLED_OPTIMIZERS))), where=where)
    providers: List[Any] = list(settings.get("providers") or [])
    trt = settings.get("ort_tensorrt_ep")
    if isinstance(trt, Mapping):
        providers += list(trt.get("providers") or [])
        for name, opts in trt.items():
            if name == "providers":
                continue
            if name not in PROVIDERS or not isinstance(opts, Mapping):
                raise EdgecError("ort_tensorrt_ep: '{}' is not a provider's options".format(name), where=where)
            for opt, value in opts.items():
                if name == "TensorrtExecutionProvider" and opt not in TRT_KEYS:
                    raise EdgecError("ort_tensorrt_ep: TensorRT option '{}' is not one the runtime allows".format(
                        opt), where=where)
                if opt in _TRT_PATHS and not _inside(out_dir, os.path.join(out_dir, str(value))):
                    raise EdgecError("ort_tensorrt_ep: {} '{}' is outside the bundle; it must be a folder "
                                     "inside out/".format(opt, value), where=where)
    for p in providers:
        if p not in PROVIDERS:
            raise EdgecError("execution provider '{}' is not one the runtime allows ({})".format(
                p, ", ".join(sorted(PROVIDERS))), where=where)


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def anchored(settings: Mapping[str, Any], out_dir: str) -> Dict[str, Any]:
    """The settings with the TensorRT provider's folders (relative to out/ in the manifest) made absolute, so
    a device finds its engine cache whatever folder it was started from."""
    out = dict(settings)
    trt = settings.get("ort_tensorrt_ep")
    if isinstance(trt, Mapping) and isinstance(trt.get("TensorrtExecutionProvider"), Mapping):
        opts = dict(trt["TensorrtExecutionProvider"])
        for key in _TRT_PATHS:
            if key in opts:
                opts[key] = os.path.join(os.path.abspath(out_dir), str(opts[key]))
        out["ort_tensorrt_ep"] = dict(trt, TensorrtExecutionProvider=opts)
    return out
