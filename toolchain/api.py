"""The library API: `compile` and `verify`. The CLI is a thin layer over these."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rich.console import Console

from edgec.cluster import Cluster, load_cluster
from edgec.costmodel.energy import require_power
from edgec.errors import EdgecError
from edgec.ir import Program
from edgec.manifest import OBJECTIVES, Manifest, read_manifest
from edgec.manifest_schema import check_against_schema
from edgec.passes.codegen import Codegen
from edgec.passes.cost import Cost
from edgec.passes.fusion import Fusion
from edgec.passes.load import Load
from edgec.passes.partition.capability import Capability
from edgec.passes.partition.global_partition import STRATEGY_NAMES, GlobalPartition
from edgec.passes.partition.hierarchical import Limits
from edgec.passes.partition.local_partition import LocalPartition
from edgec.passes.partition.spatial import SpatialPartition
from edgec.passes.shape_inference import ShapeInference
from edgec.runtime.deployment import DEPLOYMENT_FILE, default_deployment
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.trust import seal
from edgec.passes.variants import Variants, check_variant_name
from edgec.submodel_files import EXTERNAL_DATA_BYTES
from edgec.report_page import Report, write_report
from edgec.pipeline import (DumpIR, Instrument, Pass, PassManager, PassTiming, PrintIRAfter, ShowProgress, TimePasses,
                             VerifyInvariants)
from edgec.verification import OutputCheck, VerifyResult, verify

# hierarchical (the default): boards and units jointly, units as concurrent workers, replicas where they pay;
# data-parallel: whole-model replicas only; pipeline: one segment per board, its units one after another;
# the rest: the research baselines of the single-level partition, for comparison
STRATEGIES = (*(s for s in STRATEGY_NAMES if s != "optimal"), "spatial")  # "optimal" still names "pipeline"


@dataclass
class CompileResult:
    out_dir: Path
    manifest: Manifest
    timings: list[PassTiming] = field(default_factory=list)
    program: Program | None = None


def analysis_passes(model_path: str, *, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[Pass]:
    """The passes that read and annotate the model, before any placement decision."""
    shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    return [Load(model_path), ShapeInference(input_shapes=shapes), Fusion(), Cost()]


@dataclass(frozen=True)
class AccuracyOptions:
    """What the variants pass chooses with: calibration frames (.npz), an accuracy floor (a fraction), and user
    variants of the whole model (name -> .onnx). With calibration frames and no floor, compile's `min_fps` asks
    for the most accurate plan at that frame rate or more."""

    calibration: str | os.PathLike | None = None
    accuracy_floor: float | None = None
    variants: Mapping[str, str | os.PathLike] = field(default_factory=dict)


def build_passes(model_path: str, out_dir: str, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 objective: str = "throughput", strategy: str = "hierarchical", min_fps: float | None = None,
                 max_latency_ms: float | None = None, external_data_bytes: int = EXTERNAL_DATA_BYTES,
                 accuracy: AccuracyOptions | None = None, previous_out: str | None = None) -> list[Pass]:
    """The default pipeline (the placement passes follow the strategy; `spatial` forces slices into the
    hierarchical plan). With calibration data the variants pass re-plans each precision configuration and
    applies --min-fps / --max-latency-ms to the measured choice, so the partition passes take no limits then."""
    spatial = strategy == "spatial"
    acc = accuracy or AccuracyOptions()
    shapes = tuple((k, tuple(v)) for k, v in (input_shapes or {}).items())
    measured = acc.calibration is not None
    return [
        *analysis_passes(model_path, input_shapes=input_shapes),
        Capability(),
        GlobalPartition(objective=objective, strategy="hierarchical" if spatial else strategy,
                        min_fps=None if measured else min_fps, max_latency_ms=None if measured else max_latency_ms),
        LocalPartition(),
        SpatialPartition(objective=objective, force=spatial, max_latency_ms=max_latency_ms,
                         consider=strategy in ("hierarchical", "spatial")),
        Variants(objective=objective, calibration=None if acc.calibration is None else str(acc.calibration),
                 accuracy_floor=acc.accuracy_floor, min_fps=min_fps if measured else None,
                 max_latency_ms=max_latency_ms if measured else None,
                 user_variants=tuple((k, str(v)) for k, v in acc.variants.items()), cache_from=previous_out,
                 cache_to=out_dir, strategy="hierarchical" if spatial else strategy, input_shapes=shapes),
        Codegen(out_dir, objective=objective, external_data_bytes=external_data_bytes),
    ]


def check_plan_options(objective: str, strategy: str, min_fps: float | None, max_latency_ms: float | None) -> None:
    """Refuse an unknown objective or strategy, or a limit that is not a positive number, before any work."""
    if objective not in OBJECTIVES:
        raise EdgecError(f"unknown objective '{objective}'; expected one of: {', '.join(OBJECTIVES)}")
    if strategy not in STRATEGIES and strategy != "optimal":
        raise EdgecError(f"unknown --strategy '{strategy}'; expected one of: {', '.join(STRATEGIES)}")
    for flag, value in (("--min-fps", min_fps), ("--max-latency-ms", max_latency_ms)):
        if value is not None and not (value > 0 and value != float("inf")):
            raise EdgecError(f"{flag} {value:g}: expected a positive number")


def analyze(model: str | os.PathLike, cluster: str | os.PathLike | Cluster, *,
            input_shapes: Mapping[str, Sequence[int]] | None = None) -> Program:
    """Run the analysis passes only: the program with shapes, fusion groups and costs, nothing placed."""
    program = Program.empty()
    program.cluster = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
    return PassManager(analysis_passes(str(model), input_shapes=input_shapes)).run(program)


def compile(model: str | os.PathLike, cluster: str | os.PathLike | Cluster, out: str | os.PathLike, *,
            objective: str = "throughput", strategy: str = "hierarchical", min_fps: float | None = None,
            max_latency_ms: float | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
            dump_ir: str | os.PathLike | None = None, print_ir_after: Sequence[str] = (),
            print_ir: Callable[[str, str], None] | None = None, check_invariants: bool = True,
            keep_program: bool = False, external_data_bytes: int = EXTERNAL_DATA_BYTES,
            progress: Console | None = None, accuracy: AccuracyOptions | None = None) -> CompileResult:
    """Compile `model` for `cluster` into the folder `out`.

    Everything is written to a temporary folder beside `out` and renamed into
    place at the end: a failed compile leaves no half-written `out`. A sub-model
    with more than `external_data_bytes` of weights keeps them in a `.data` file
    beside it (ONNX external data). With a `progress` console, a pass that runs
    over a second shows there while it runs.
    `accuracy` says how the variants pass chooses each stage's precision
    (edgec.passes.variants); its measurements are cached in out/ and reused by
    the next compile into the same folder.
    """
    check_plan_options(objective, strategy, min_fps, max_latency_ms)
    out = Path(out)
    _check_accuracy_files(accuracy)
    cluster_obj = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
    if objective == "energy":
        require_power(cluster_obj, [f"{d.name}.{u}" for d in cluster_obj.devices.values() for u in d.units])
    staging = _make_staging_dir(out)
    try:
        timer = TimePasses()
        instruments: list[Instrument] = [timer]
        if check_invariants:
            instruments.append(VerifyInvariants())
        if dump_ir is not None:
            instruments.append(DumpIR(Path(dump_ir)))
        if progress is not None:
            instruments.append(ShowProgress(progress))
        if print_ir_after:
            instruments.append(PrintIRAfter(print_ir_after, print_ir or (lambda name, text: print(text))))
        passes = build_passes(str(model), str(staging), input_shapes=input_shapes, objective=objective,
                              strategy=strategy, min_fps=min_fps, max_latency_ms=max_latency_ms,
                              external_data_bytes=external_data_bytes, accuracy=accuracy,
                              previous_out=str(out) if out.is_dir() else None)
        known = {p.name for p in passes} | {"all"}
        for name in print_ir_after:
            if name not in known:
                raise EdgecError(f"--print-ir-after {name}: no such pass; passes are: {', '.join(p.name for p in passes)}")
        program = Program.empty()
        program.cluster = cluster_obj
        program = PassManager(passes, instruments).run(program)
        limits = Limits(min_fps, max_latency_ms)
        if program.prediction is not None and not limits.check(program.prediction):
            raise EdgecError(limits.unmet([program.prediction]) + f" (--strategy {strategy} makes one plan; "
                             f"--strategy hierarchical searches more)")
        manifest = read_manifest(staging)  # codegen wrote it; the pass timings go in now that all have run
        manifest.passes = [{"name": t.name, "ms": round(t.ms, 3)} for t in timer.timings]
        check_against_schema(manifest)
        manifest.write(staging / "manifest.json")
        seal(str(staging))
        default_deployment(read_pipeline(str(staging))).write(str(staging / DEPLOYMENT_FILE))  # editable: unsealed
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CompileResult(out, manifest, timer.timings, program if keep_program else None)


def _check_accuracy_files(accuracy: AccuracyOptions | None) -> None:
    """Missing files are named before anything is written."""
    if accuracy is None:
        return
    if accuracy.calibration is not None and not Path(accuracy.calibration).is_file():
        raise EdgecError("calibration data not found; pass an .npz with --calib", where=str(accuracy.calibration))
    for name, path in accuracy.variants.items():
        check_variant_name(name)
        if not Path(path).is_file():
            raise EdgecError(f"--variant {name}: model not found", where=str(path))


def _make_staging_dir(out: Path) -> Path:
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise EdgecError("the output folder would be the current folder or one that holds it, and a compile "
                         "replaces its output folder whole; choose a sub-folder, e.g. -o out/", where=str(out))
    if out.exists() and not out.is_dir():
        raise EdgecError("output path exists and is not a folder; choose another -o", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise EdgecError("output folder is not empty and holds no edgec manifest; choose another -o or empty it",
                         where=str(out))
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; out/ is copied to boards and read by others
        return staging
    except OSError as exc:
        raise EdgecError(f"cannot write the output folder ({exc.strerror}); choose a writable -o",
                         where=str(out)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(staging: Path, out: Path) -> None:
    old = None
    try:
        if out.exists():
            old = staging.with_name(staging.name + ".old")
            out.rename(old)
        staging.rename(out)
    except OSError as exc:
        if old is not None and not out.exists():
            old.rename(out)  # put the previous output back
        raise EdgecError(f"cannot put the new output in place ({exc.strerror}); choose another -o",
                         where=str(out)) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def report(out: str | os.PathLike, html: str | os.PathLike | None = None, *,
           model: str | os.PathLike | None = None) -> Report:
    """Write the HTML report of the plan in `out` (default: out/report.html); see edgec.report_page."""
    return write_report(out, html, model=model, analyze=analyze)


__all__ = ["AccuracyOptions", "compile", "verify", "analyze", "report", "Report", "CompileResult", "VerifyResult", "OutputCheck",
           "build_passes", "OBJECTIVES", "STRATEGIES"]
