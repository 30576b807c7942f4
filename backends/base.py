"""The Backend protocol, the backend of a compute unit, and a device's bundle.

A backend is what runs a stage on one kind of compute unit: `neon` (ONNX
Runtime's CPU provider on ARM cores) or `tensorrt` (the Jetson Nano's GPU).
It answers three questions, kept apart as in torch.fx's
`operator_support.py` (support predicate / proposer / materializer):

- `supports(node, opset)`: can this unit run this node? None = yes, else the
  reason. The partitioner asks it per node per unit and gives an unsupported
  (node, unit) pair an infinite cost.
- `prepare_submodel(model, variant)`: the stage's sub-model in a form the
  board's runtime loads (opset/IR conversion, checks), raising EdgecError
  naming the node when it cannot.
- `session_config(stage)`, and the module's `bundle_files(device, stages)` and
  `readme(device, stages)`: what codegen writes into the manifest and
  out/<device>/.

`device_bundle(device, stages)` puts one device's files together: every
backend's files, one launcher (run_<device>.sh) and one README.md, since a
board such as the Jetson Nano holds stages of both backends. The runtime
serves all of a device's stages in one process (one after another per frame,
arrays passed in memory), so the launcher starts one process, pinned to the
cores of the units its stages run on; each CPU stage's session pins its own
threads inside that set.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import onnx
import onnx_graphsurgeon as gs

from edgec.cluster import ComputeUnit, Device
from edgec.errors import EdgecError
from edgec.manifest import StageSpec

BundleFiles = dict[str, "str | bytes"]  # path relative to out/<device>/ -> content


@runtime_checkable
class Backend(Protocol):
    """One backend bound to one compute unit of one device."""

    name: str
    device: Device
    unit: ComputeUnit

    def supports(self, node: gs.Node, opset: int) -> str | None:
        """None if the unit can run the node (at the model's `opset`), else why not."""
        ...

    def prepare_submodel(self, model: onnx.ModelProto, variant: str = "fp32") -> onnx.ModelProto:
        """The stage sub-model as the board's runtime loads it; EdgecError naming the node otherwise."""
        ...

    def session_config(self, stage: StageSpec) -> dict[str, Any]:
        """What goes into the manifest's `StageSpec.session` for a stage on this unit."""
        ...


def backend_for(device: Device, unit: ComputeUnit | str) -> Backend:
    """The backend object of one compute unit (`unit.backend` picks it)."""
    from edgec.backends import neon, tensorrt

    if isinstance(unit, str):
        unit = device.units[unit]
    if unit.backend == "neon":
        return neon.NeonBackend(device, unit)
    if unit.backend == "tensorrt":
        return tensorrt.TensorRTBackend(device, unit)
    raise EdgecError(f"device '{device.name}' unit '{unit.name}': unknown backend '{unit.backend}'; "
                     f"expected neon or tensorrt")


def device_bundle(device: Device, stages: Sequence[StageSpec]) -> BundleFiles:
    """Everything out/<device>/ holds besides the sub-models, for the stages placed on `device`.

    Paths are relative to out/<device>/. `stages` are the device's StageSpecs
    (as codegen builds them, `session` may still be empty), in pipeline order.
    """
    from edgec.backends import neon, tensorrt

    modules = {"neon": neon, "tensorrt": tensorrt}
    mine = [s for s in stages if s.device == device.name]
    files: BundleFiles = {}
    sections: list[str] = []
    for name, module in modules.items():
        group = [s for s in mine if device.units[s.unit].backend == name]
        if not group:
            continue
        for path, content in module.bundle_files(device, group).items():
            if path in files:
                raise AssertionError(f"two backends write {device.name}/{path}")
            files[path] = content
        sections.append(module.readme(device, group))
    files[f"run_{device.name}.sh"] = launcher(device, mine)
    files["README.md"] = _readme(device, mine, sections)
    return files


def launcher(device: Device, stages: Sequence[StageSpec]) -> str:
    """run_<device>.sh: the device's one serving process, pinned to its stages' cores, started from out/."""
    from edgec.backends import tensorrt
    from edgec.backends.neon import taskset_list

    cores = sorted({c for s in stages for c in device.units[s.unit].cores})
    lines = [
        "#!/bin/sh",
        f"# Serve the stages edgec placed on '{device.name}' ({', '.join(s.name for s in stages)}): one process,",
        "# pinned to the cores of the units they run on. Run from anywhere; it changes to the folder of manifest.json.",
        "set -e",
        'cd "$(dirname "$0")/.."',
    ]
    lines += tensorrt.prelaunch(device, [s for s in stages if device.units[s.unit].backend == tensorrt.NAME])
    lines += [f'exec taskset -c {taskset_list(cores)} python3 -m edgec.runtime serve . --device {device.name} "$@"', ""]
    return "\n".join(lines)


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
