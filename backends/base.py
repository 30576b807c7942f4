"""The Backend base class, and a device's bundle.

A backend is everything edgec knows about one target: a kind of compute unit
and the runtime that runs a stage there. Passes ask it; they hold no target
names. Its questions are kept apart as in torch.fx's `operator_support.py`
(support predicate / proposer / materializer):

- capability: `supports(node, opset)` (None = yes, else the reason);
- boundaries: `bindable_dtypes` (what a stage's inputs and outputs may be;
  None = anything) and `copy_ms(nbytes)` (moving a tensor between the
  process's host memory and the unit, 0 for a CPU);
- precision: `variants` (the first is the default), `variant_speed` (the
  default's predicted ms over the variant's), `calibrated_variants` (those
  that need calibration frames), and `prepare_submodel(model, variant,
  calibration)`: the stage's sub-model as the board's runtime loads it in that
  variant, or EdgecError naming the node;
- deployment: `session_config(stage)` (the manifest's `session`), and per
  device `bundle_files`, `readme` and `prelaunch` lines for the launcher.

A backend object is bound to one compute unit of one device;
`edgec.backends.registry` resolves a unit's declared backend name to its class.

`device_bundle(device, stages)` puts one device's files together: every
backend's files, one launcher (run_<device>.sh) and one README.md, since a
board such as the Jetson Nano holds stages of two backends. The runtime serves
all of a device's stages in one process, so the launcher starts one process,
pinned to the cores of the units its stages run on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec.backends.registry import backend_class
from edgec.manifest import StageSpec

if TYPE_CHECKING:
    from edgec.cluster import ComputeUnit, Device

BundleFiles = dict[str, "str | bytes"]  # path relative to out/<device>/ -> content


class Backend:
    """One target, bound to one compute unit of one device. Subclasses set the class attributes."""

    name: ClassVar[str]
    unit_kinds: ClassVar[tuple[str, ...]]  # the kinds of compute unit it runs on ("cpu", "gpu")
    variants: ClassVar[tuple[str, ...]] = ("fp32",)  # precisions it runs; the first is the default
    # per variant: how much faster than the default its compute-bound groups run (1: same; 0.5: twice the ms)
    variant_speed: ClassVar[dict[str, float]] = {"fp32": 1.0}
    calibrated_variants: ClassVar[frozenset[str]] = frozenset()  # variants that need calibration frames
    exact_variants: ClassVar[frozenset[str]] = frozenset({"fp32"})  # the original's arithmetic: safe without data
    bindable_dtypes: ClassVar[frozenset[str] | None] = None  # numpy dtype names a stage may exchange; None: any

    def __init__(self, device: Device, unit: ComputeUnit) -> None:
        self.device = device
        self.unit = unit

    @property
    def default_variant(self) -> str:
        return self.variants[0]

    def supports(self, node: gs.Node, opset: int) -> str | None:
        """None if the unit can run the node (at the model's `opset`), else why not."""
        raise NotImplementedError

    def can_bind(self, dtype: Any) -> bool:
        """Whether a tensor of `dtype` may be a stage input or output on this unit."""
        if self.bindable_dtypes is None:
            return True
        return np.dtype(dtype).name in self.bindable_dtypes

    def copy_ms(self, nbytes: int) -> float:
        """ms to move `nbytes` between the serving process's memory and the unit (each way)."""
        return 0.0

    def prepare_submodel(self, model: onnx.ModelProto, variant: str,
                         calibration: Sequence[dict[str, np.ndarray]] | None = None) -> onnx.ModelProto:
        """The stage sub-model as the board's runtime loads it in `variant`; EdgecError naming the node otherwise.

        `calibration`: the sub-model's input values on the calibration frames, for a variant in
        `calibrated_variants`.
        """
        raise NotImplementedError

    def emulate(self, model: onnx.ModelProto, variant: str,
                calibration: Sequence[dict[str, np.ndarray]] | None = None) -> onnx.ModelProto:
        """A model that computes on this machine's CPU (ONNX Runtime) what the unit computes running `model` in
        `variant`; `calibration`: the model's input values on the calibration frames."""
        if variant in self.exact_variants:
            return model
        raise NotImplementedError(f"{self.name}: no emulation of {variant}")

    def safe_without_data(self, variant: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> bool:
        """Whether `variant` of the stage sub-model `model` may be chosen with no calibration data; `feeds`
        is one seeded random frame of its inputs. `exact_variants` always; others need the backend's own rule."""
        return variant in self.exact_variants

    def session_config(self, stage: StageSpec) -> dict[str, Any]:
        """What goes into the manifest's `StageSpec.session` for a stage on this unit."""
        return {}

    @classmethod
    def bundle_files(cls, device: Device, stages: Sequence[StageSpec]) -> dict[str, str | bytes]:
        """Files in out/<device>/ for this backend's stages on `device` (paths relative to that folder)."""
        return {}

    @classmethod
    def readme(cls, device: Device, stages: Sequence[StageSpec]) -> str:
        """The section of out/<device>/README.md about this backend's stages."""
        return ""

    @classmethod
    def prelaunch(cls, device: Device, stages: Sequence[StageSpec]) -> list[str]:
        """Shell lines the launcher runs before serving (e.g. building engines once)."""
        return []


def device_bundle(device: Device, stages: Sequence[StageSpec]) -> BundleFiles:
    """Everything out/<device>/ holds besides the sub-models, for the stages placed on `device`.

    Paths are relative to out/<device>/. `stages` are the device's StageSpecs
    (as codegen builds them, `session` may still be empty), in pipeline order.
    """
    mine = [s for s in stages if s.device == device.name]
    files: BundleFiles = {}
    sections: list[str] = []
    prelaunch: list[str] = []
    for cls, group in _by_backend(device, mine):
        for path, content in cls.bundle_files(device, group).items():
            if path in files:
                raise AssertionError(f"two backends write {device.name}/{path}")
            files[path] = content
        sections.append(cls.readme(device, group))
        prelaunch += cls.prelaunch(device, group)
    files[f"run_{device.name}.sh"] = launcher(device, mine, prelaunch)
    files["README.md"] = _readme(device, mine, sections)
    return files


def _by_backend(device: Device, stages: Sequence[StageSpec]) -> list[tuple[type[Backend], list[StageSpec]]]:
    order: dict[str, list[StageSpec]] = {}
    for s in stages:
        order.setdefault(device.units[s.unit].backend, []).append(s)
    return [(backend_class(name), group) for name, group in sorted(order.items())]


def launcher(device: Device, stages: Sequence[StageSpec], prelaunch: Sequence[str] = ()) -> str:
    """run_<device>.sh: the device's one serving process, pinned to its stages' cores, started from out/."""
    cores = sorted({c for s in stages for c in device.units[s.unit].cores})
    lines = [
        "#!/bin/sh",
        f"# Serve the stages edgec placed on '{device.name}' ({', '.join(s.name for s in stages)}): one process,",
        "# pinned to the cores of the units they run on. Run from anywhere; it changes to the folder of manifest.json.",
        "set -e",
        'cd "$(dirname "$0")/.."',
    ]
    lines += list(prelaunch)
    lines += [f'exec taskset -c {taskset_list(cores)} python3 -m edgec.runtime serve . --device {device.name} "$@"', ""]
    return "\n".join(lines)


def taskset_list(cores: Sequence[int]) -> str:
    """`taskset -c` list: ranges where contiguous, [4, 5, 6, 7] -> "4-7", [0, 2, 3] -> "0,2-3"."""
    cores = sorted(set(cores))
    parts, start = [], None
    for i, c in enumerate(cores):
        if start is None:
            start = c
        if i + 1 == len(cores) or cores[i + 1] != c + 1:
            parts.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(parts)


def _readme(device: Device, stages: Sequence[StageSpec], sections: list[str]) -> str:
    units = ", ".join(sorted({f"{s.name} on {s.unit}" for s in stages})) or "no stages"
    head = [
        f"# {device.name} ({device.type})",
        "",
        f"Stages here: {units}.",
        "",
        "Copy the whole out/ folder to the board (the manifest and every device folder: a stage",
        "checks its sub-model against the sha256 in manifest.json before it loads it), then, in that folder:",
        "",
        "    python3 -m pip install --no-deps <edgec source or wheel>  # serving never imports the compiler side",
        "    python3 -m pip install numpy pyzmq 'dataclasses; python_version < \"3.7\"'  # plus ONNX Runtime, below",
        f"    sh {device.name}/run_{device.name}.sh",
        "",
    ]
    return "\n".join(head + sections) + "\n"
