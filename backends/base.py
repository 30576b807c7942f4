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
  default's predicted ms over the variant's, on the nodes `sped_up` says),
  `worth(variant, sped_up_macs, compute_macs)` (whether a stage with that much
  such work gains from the variant, else it runs the default), `calibrated_variants`
  (those that need calibration frames), and `prepare_submodel(model, variant,
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

from edgec.backends import containers
from edgec.backends.registry import backend_class
from edgec.manifest import StageSpec
from edgec.runtime.deployment import DEPLOYMENT_FILE
from edgec.runtime_wheel import WHEEL_NAME

if TYPE_CHECKING:
    from edgec.cluster import ComputeUnit, Device

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul"})
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

    def sped_up(self, variant: str, node: gs.Node) -> bool:
        """Whether `node` runs at `variant_speed[variant]` in `variant` (the rest run as in the default):
        convolutions and matrix products, unless a backend says otherwise."""
        return node.op in COMPUTE_OPS

    def worth(self, variant: str, sped_up_macs: float, compute_macs: float) -> bool:
        """Whether a stage whose `sped_up` nodes come to `sped_up_macs` multiply-adds, of `compute_macs` in all its
        convolutions and matrix products, gains from `variant`; where not, the stage runs the default variant."""
        return True

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
    files["Dockerfile"] = containers.dockerfile(device, mine, WHEEL_NAME)
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
    lines += [f'exec taskset -c {taskset_list(cores)} python3 -m edgec.runtime serve . --device {device.name} '
              f'--deployment {DEPLOYMENT_FILE} "$@"', ""]
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
        "Copy the whole out/ folder to the board (manifest.json and manifest.sha256, the runtime wheel and every",
        "device folder: the device checks the manifest against its digest, and every file of its folder and its",
        "sub-models against the sha256s in the manifest, before it serves). Every command below runs in that folder.",
        "",
    ]
    head += containers.readme(device, stages, WHEEL_NAME)
    head += [
        "## Serve",
        "",
        f"    sh {device.name}/run_{device.name}.sh                  # add --keys keys for CURVE (see below)",
        "",
    ]
    return "\n".join(head + sections + _network(device)) + "\n"


def _network(device: Device) -> list[str]:
    return [
        "## Network",
        "",
        f"Where every device listens is in `{DEPLOYMENT_FILE}` (written by `edgec compile` from the `host`, `port` and",
        "`bind` of each device in the cluster file; defaults 127.0.0.1 and 5550 + 10 x the device's position). Each",
        "device binds its status port (port), one input port per segment (port + 1, ...) and, on the last device,",
        "the results port after them, and connects to the next device's input. To move a device, edit its",
        f"entry in `{DEPLOYMENT_FILE}`, the same file on every board and on the machine that runs `run`",
        "(it is not covered by the manifest's digest), or set host/port in the cluster file and recompile.",
        "Use `\"bind\": \"0.0.0.0\"` where the device's address is not its own (NAT, containers). Open those",
        "ports in the board's firewall. Then, on any machine with the bundle and the runtime:",
        "",
        f"    python3 -m edgec.runtime run . --deployment {DEPLOYMENT_FILE} --frames 100 --timeout 10",
        "",
        "Without keys anyone who reaches these ports can feed the devices frames and read results, and `serve`",
        "says so. With keys: `python3 -m edgec.runtime keys .` once, copy keys/public/ to every board and",
        f"keys/private/{device.name}.key_secret to this one only, and pass `--keys keys` to every serve and run.",
        "",
    ]
