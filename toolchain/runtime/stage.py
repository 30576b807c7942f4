"""One stage: its sub-model, checked against the manifest's sha256, under ONNX Runtime.

A sub-model whose weights are in an external-data file beside it (the manifest's
`external_data`) has that file checked too, and ONNX Runtime loads it from its
path, so it finds the weights.

The stage's `session` dict in the manifest is applied as edgec.runtime.session
reads it: thread affinities are dropped, with a note, when the process does not
hold those cores (a plan run on another machine with `edgec run --local`), and a
TensorRT stage runs on the CPU provider, with a note, where this onnxruntime has
no TensorRT execution provider, so a plan can be checked anywhere. Without
intra_op_num_threads, a stage uses one thread per core its process is pinned to.
"""


import hashlib
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from edgec.errors import EdgecError
from edgec.manifest import StageSpec
from edgec.runtime.session import inference_session, providers_for, runnable_settings, session_options
from edgec.runtime.trust import anchored, check_session


class ModelMismatch(EdgecError):
    """A sub-model whose bytes are not the ones the manifest names."""


def read_checked(out_dir: str, stage: StageSpec) -> bytes:
    """The sub-model's bytes, refused unless they hash to the manifest's sha256."""
    path = os.path.join(out_dir, stage.model)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise EdgecError(f"stage {stage.name}: cannot read its sub-model ({exc.strerror})", where=path) from None
    _check_digest(stage, "sub-model", hashlib.sha256(data).hexdigest(), stage.sha256, path)
    return data


def checked_model(out_dir: str, stage: StageSpec) -> Union[bytes, str]:
    """What ONNX Runtime loads for the stage, each file checked against its sha256 in the manifest.

    The sub-model's bytes; or, for a sub-model with its weights in an external-data file beside it, its
    path (ONNX Runtime finds the weights file from there).
    """
    data = read_checked(out_dir, stage)
    if stage.external_data is None:
        return data
    path = os.path.join(out_dir, stage.external_data["path"])
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    except OSError as exc:
        raise EdgecError(f"stage {stage.name}: cannot read its weights file ({exc.strerror}); copy it with the "
                         f"sub-model", where=path) from None
    _check_digest(stage, "weights file", digest.hexdigest(), stage.external_data["sha256"], path)
    return os.path.join(out_dir, stage.model)


def _check_digest(stage: StageSpec, what: str, digest: str, expected: str, path: str) -> None:
    if digest != expected:
        raise ModelMismatch(f"stage {stage.name} (device {stage.device}): {what} sha256 {digest[:12]}... does not "
                            f"match {expected[:12]}... in manifest.json; refusing to load it. "
                            f"Copy the bundle again or recompile", where=path)


class StageRunner:
    """A loaded stage: `run(env)` reads its inputs from env and returns its outputs by name."""

    def __init__(self, out_dir: str, stage: StageSpec, threads: Optional[int] = None) -> None:
        self.stage = stage
        data = checked_model(out_dir, stage)
        where = f"manifest.json: stage {stage.name} session"
        check_session(stage.session, out_dir, where)
        self.notes: List[str] = []
        settings = anchored(runnable_settings(stage.session, self.notes), out_dir)
        self.options = session_options(settings, threads, where)
        providers = providers_for(settings, self.notes)
        try:
            self.session = inference_session(data, settings, providers=providers, options=self.options)
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
