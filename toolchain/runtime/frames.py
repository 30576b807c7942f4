"""Input frames for a run: read from an .npz a user gives, or random ones shaped as the plan's inputs."""


from typing import Callable, Dict, List, Sequence

import numpy as np

from edgec.errors import EdgecError
from edgec.runtime import wire
from edgec.manifest import TensorSpec
from edgec.runtime.pipeline import Pipeline

Frame = Dict[str, np.ndarray]


def load_frames(path: str, plan: Pipeline) -> List[Frame]:
    """Frames from an .npz: per graph input, one array of the input's shape, or a stack of them."""
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read inputs as .npz: {exc}", where=path) from None
    counts = set()
    for spec in plan.inputs:
        if spec.name not in arrays:
            raise EdgecError(f"no array named '{spec.name}'; the model's inputs are "
                             f"{', '.join(s.name for s in plan.inputs)}", where=path)
        arr = arrays[spec.name]
        if arr.dtype != np.dtype(spec.dtype):
            raise EdgecError(f"'{spec.name}' is {arr.dtype}, the plan expects {spec.dtype}", where=path)
        if tuple(arr.shape) == tuple(spec.shape):
            arrays[spec.name] = arr[None]
        elif tuple(arr.shape[1:]) != tuple(spec.shape):
            raise EdgecError(f"'{spec.name}' is {list(arr.shape)}; expected {list(spec.shape)} or "
                             f"[frames, {', '.join(map(str, spec.shape))}]", where=path)
        counts.add(arrays[spec.name].shape[0])
    if len(counts) > 1:
        raise EdgecError(f"inputs hold different numbers of frames: {sorted(counts)}", where=path)
    n = counts.pop() if counts else 1
    return [{s.name: wire.contiguous(arrays[s.name][k]) for s in plan.inputs} for k in range(n)]


def random_frames(inputs: Sequence[TensorSpec], count: int, seed: int = 0) -> List[Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        frame = {}
        for spec in inputs:
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                values = rng.standard_normal(spec.shape)
            elif dtype.kind == "b":
                values = rng.integers(0, 2, spec.shape)
            else:
                values = rng.integers(0, 10, spec.shape)
            frame[spec.name] = np.asarray(values, dtype=dtype)  # a 0-d array for a scalar, not a numpy scalar
        frames.append(frame)
    return frames


def cycle(frames: Sequence[Frame]) -> Callable[[int], Frame]:
    return lambda seq: frames[seq % len(frames)]
