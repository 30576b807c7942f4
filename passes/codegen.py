"""The `codegen` pass: one ONNX sub-model per stage, the device bundles, and the manifest.

Each stage's sub-model holds exactly the stage's nodes, the initializers they
read (shared ones are copied into every stage that reads them), and keeps the
original tensor names on its inputs and outputs. Large weights travel as
placeholders through extraction and the backend's preparation and are
streamed into the file at the end (edgec.submodel_files); a sub-model with
more than `external_data_bytes` of them gets its weights in a ``.data`` file
beside it, named in the manifest with its sha256. A sub-model's outputs are
what later stages or the sink read of what it makes; what crosses a boundary
(``receives``/``sends`` in the manifest) also includes tensors relayed from
earlier stages.

The stage's backend then has the last word on its sub-model
(`prepare_submodel`: the opset and IR version the board's runtime loads,
TensorRT's limits) and its session settings; `device_bundle` adds each
device's configs, launcher and README. out/<device>/ holds that device's files
and nothing else, and out/manifest.json lists every file with its sha256 and each
stage's compute-unit cores (the runtime pins to them without the cluster catalog). The
manifest is an output, written here, not IR: the pass leaves the program as it
found it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec import __version__
from edgec.accuracy import MAX_QUANT_FRAMES
from edgec.backends.base import device_bundle
from edgec.backends.registry import backend_for
from edgec.errors import EdgecError
from edgec.ir import Program, node_reads
from edgec.liveness import hand_offs, stage_boundaries
from edgec.steps import step_boundaries, step_transfers
from edgec.manifest import Manifest, StageSpec, TensorSpec, TransferSpec
from edgec.costmodel.transfer import transfer_ms
from edgec.pipeline import PassResult
from edgec import runtime_wheel
from edgec.runtime.trust import seal
from edgec.submodel_files import EXTERNAL_DATA_BYTES, write_submodel


@dataclass(frozen=True)
class Codegen:
    out_dir: str
    objective: str = "throughput"
    external_data_bytes: int = EXTERNAL_DATA_BYTES  # sub-models with more weights than this get a .data file
    name: ClassVar[str] = "codegen"
    requires: ClassVar[frozenset[str]] = frozenset({"stages", "prediction"})
    provides: ClassVar[frozenset[str]] = frozenset()

    def run(self, program: Program) -> PassResult:
        assert program.cluster is not None and program.stages and program.prediction is not None
        out = Path(self.out_dir)
        model = program.to_onnx(inline=False)  # large weights are placeholders until write_submodel
        values = _value_infos(model)
        lives = stage_boundaries(program)
        receives, sends = step_boundaries(program, lives)
        node_stage = _node_stage_index(program)
        reads = {n.name: node_reads(n) for n in program.graph.nodes}
        stage_specs: list[StageSpec] = []
        files: list[dict[str, str]] = []
        stepped = any(stage.replicas for stage in program.stages)
        inline_model = None
        for k, stage in enumerate(program.stages):
            copies = [(stage.name, stage.device, stage.unit, stage.backend, stage.variant, stage.predicted_ms,
                       stage.memory_bytes, stage.weight)]
            copies += [(f"{stage.name}r{j + 1}", r.device, r.unit, r.backend, r.variant, r.predicted_ms,
                        r.memory_bytes, r.weight) for j, r in enumerate(stage.replicas)]
            extracted: dict[bool, onnx.ModelProto] = {}  # by whether the weights are inlined (to quantize them)
            for name, device, unit, backend_name, variant, ms, memory, weight in copies:
                backend = backend_for(program.cluster.devices[device], unit)
                calibrated = variant in backend.calibrated_variants  # quantized from the real weights, on real values
                if calibrated and program.measurer is None:
                    raise EdgecError(f"stage {name} ({device}.{unit}): {variant} needs calibration frames; "
                                     f"pass --calib data.npz")
                if calibrated not in extracted:
                    if calibrated:
                        inline_model = inline_model or program.to_onnx(inline=True)
                    source = inline_model if calibrated else model
                    nodes = [n for n in source.graph.node if node_stage[n.name] == k]
                    extracted[calibrated] = extract_submodel(source, nodes, reads, later_needs=set(lives[k + 1]),
                                                             values=values,
                                                             name=f"{model.graph.name or 'model'}_{stage.name}")
                own = extracted[calibrated]
                if len(copies) > 1:  # each copy prepared apart (large weights are placeholders: cheap)
                    own = onnx.ModelProto()
                    own.CopyFrom(extracted[calibrated])
                try:
                    if calibrated:
                        names = [i.name for i in own.graph.input]
                        acts = program.measurer.activations(names)
                        count = min(len(acts[names[0]]), MAX_QUANT_FRAMES)
                        calibration = [{n: acts[n][i] for n in names} for i in range(count)]
                        sub = backend.prepare_submodel(own, variant, calibration)
                    else:
                        sub = backend.prepare_submodel(own, variant)
                except EdgecError as exc:
                    raise EdgecError(f"stage {name} ({device}.{unit}): {exc.message}", where=exc.where) from None
                rel = f"{device}/{name}.onnx"
                written = write_submodel(out, rel, sub, program.graph, self.external_data_bytes)
                files.extend(written)
                spec = StageSpec(
                    name=name, device=device, unit=unit, backend=backend_name,
                    variant=variant, model=rel, sha256=written[0]["sha256"],
                    external_data=written[1] if len(written) > 1 else None,
                    inputs=[_tensor_spec(i) for i in sub.graph.input],
                    outputs=[_tensor_spec(o) for o in sub.graph.output],
                    receives=receives[k], sends=sends[k], predicted_ms=round(ms, 4),
                    memory_bytes=int(memory), accuracy=stage.accuracy,
                    cores=list(program.cluster.devices[device].units[unit].cores),
                    step=stage.step if stage.step is not None else (k if stepped else None),
                    parallel=stage.parallel or ("replica" if stage.replicas else None),
                    weight=float(weight) if stage.replicas and weight is not None else None, slice=stage.slice)
                spec.session = backend.session_config(spec)
                stage_specs.append(spec)
        for device in program.cluster.devices.values():
            mine = [s for s in stage_specs if s.device == device.name]
            if mine:
                for path, content in sorted(device_bundle(device, mine).items()):
                    files.append(_write(out, f"{device.name}/{path}", content))
        files.append(_write(out, runtime_wheel.WHEEL_NAME, runtime_wheel.build()))  # the boards' runtime
        manifest = Manifest(
            source_model={"path": program.source_path, "sha256": program.source_sha256, "opset": program.opset},
            cluster=program.cluster.spec,
            objective=self.objective,
            inputs=[_tensor_spec(values[i.name]) for i in model.graph.input],
            outputs=[_tensor_spec(values[o.name]) for o in model.graph.output],
            stages=stage_specs,
            transfers=(step_transfers(program, stage_specs) if any(s.parallel == "slice" for s in program.stages)
                       else _transfers(program, lives)),
            predicted={"latency_ms": program.prediction.latency_ms, "bottleneck_ms": program.prediction.bottleneck_ms,
                       "throughput_fps": program.prediction.throughput_fps,
                       "accuracy": program.prediction.accuracy,
                       "energy_mj": (None if program.prediction.energy_mj is None
                                     else round(program.prediction.energy_mj, 4))},
            files=files,
            edgec_version=__version__,
            accuracy=program.variant_choice,
        )
        manifest.write(out / "manifest.json")
        seal(str(out))  # manifest.sha256: the runtime refuses a manifest without it (edgec.runtime.trust)
        return PassResult(program, changed=False)


def _write(out: Path, rel: str, content: str | bytes) -> dict[str, str]:
    """Write one bundle file (shell scripts executable); its manifest entry."""
    data = content.encode() if isinstance(content, str) else content
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if rel.endswith(".sh"):
        path.chmod(0o755)
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest()}


def extract_submodel(model: onnx.ModelProto, nodes: list[onnx.NodeProto], reads: dict[str, list[gs.Tensor]],
                     later_needs: set[str], values: dict[str, onnx.ValueInfoProto], name: str) -> onnx.ModelProto:
    """A model of `nodes` (in order) whose outputs are what it produces of `later_needs`.

    `reads` gives what each node reads (:func:`edgec.ir.node_reads`, by node name). Inputs are the
    variable tensors the nodes read but do not produce, in first-use order; the initializers they
    read are copied in.
    """
    inits = {t.name: t for t in model.graph.initializer}
    produced: list[str] = []
    produced_set: set[str] = set()
    inputs: list[str] = []
    used_inits: list[str] = []
    for node in nodes:
        for tensor in reads[node.name]:
            t = tensor.name
            if t in produced_set or t in inputs or t in used_inits:
                continue
            if isinstance(tensor, gs.Constant):
                if t in inits:  # else a constant a subgraph holds itself
                    used_inits.append(t)
            else:
                inputs.append(t)
        for t in node.output:
            if t:
                produced.append(t)
                produced_set.add(t)
    outputs = [t for t in produced if t in later_needs]
    internal = [values[t] for t in produced if t in values and t not in later_needs]
    graph = onnx.helper.make_graph(
        nodes, name,
        inputs=[values[t] for t in inputs],
        outputs=[values[t] for t in outputs],
        initializer=[inits[t] for t in used_inits],
        value_info=internal,
    )
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="edgec",
                                 producer_version=__version__)
    sub.ir_version = model.ir_version
    return sub


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    out = {v.name: v for v in model.graph.value_info}
    out.update({v.name: v for v in model.graph.input})
    out.update({v.name: v for v in model.graph.output})
    return out


def _node_stage_index(program: Program) -> dict[str, int]:
    index = {g: k for k, s in enumerate(program.stages) for g in s.groups}
    return {node: index[group] for node, group in program.group_of().items()}


def _tensor_spec(v: onnx.ValueInfoProto) -> TensorSpec:
    tt = v.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
    return TensorSpec(v.name, dtype, [int(d.dim_value) for d in tt.shape.dim])


def _transfers(program: Program, lives: list[list[str]]) -> list[TransferSpec]:
    cluster = program.cluster
    assert cluster is not None
    names = ["source"] + [s.name for s in program.stages] + ["sink"]
    devices = [cluster.source] + [s.device for s in program.stages] + [cluster.sink]
    return [TransferSpec(names[k], names[k + 1], devices[k], devices[k + 1], live, nbytes,
                         round(transfer_ms(cluster, nbytes, devices[k], devices[k + 1]), 4))
            for k, live, nbytes in hand_offs(program, lives)]
