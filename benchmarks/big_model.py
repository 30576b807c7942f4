"""A model over protobuf's 2 GiB limit, its weights in an external-data file: compile it, verify it.

    python benchmarks/big_model.py [--folder DIR] [--keep] [--cluster samples/clusters/edge-trio.json]

The model is a chain of Gemm + Relu layers with random weights (fan-in scaled), 2.2 GiB in all,
one of them 1.1 GiB: whatever the partition, the stage holding it has more weights than the
1 GiB past which codegen writes a sub-model's weights as external data. Prints the model's size,
the whole-process compile time and peak RSS (the compile in its own process), the sub-models and
how many have an external-data file, and whether `edgec verify` passes. Needs about three times the
model's size free on disk (the model, out/, and the staging folder); everything is removed after
unless --keep.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

from edgec.manifest import read_manifest

from compile_time import TRIO, compile_once, model_bytes  # beside this script

DIMS = (4096, 16384, 18000, 10000, 4096, 1000)  # W2 is 16384 x 18000 float32 = 1.1 GiB; 2.19 GiB in all


def write_big_model(folder: Path, dims: tuple[int, ...] = DIMS, seed: int = 0) -> Path:
    """chain.onnx with its weights in chain.data beside it, written a block of rows at a time."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    offset = 0
    with open(folder / "chain.data", "wb") as data:
        for i, (fan_in, fan_out) in enumerate(zip(dims, dims[1:])):
            for name, shape, scale in ((f"w{i}", (fan_in, fan_out), np.sqrt(2.0 / fan_in)),
                                       (f"b{i}", (fan_out,), 0.01)):
                rows = shape[0] if len(shape) == 2 else 1
                per_block = max(1, (1 << 26) // (4 * int(np.prod(shape[1:] or (shape[0],)))))
                for start in range(0, rows, per_block):
                    block_shape = (min(per_block, rows - start), *shape[1:]) if len(shape) == 2 else shape
                    block = rng.standard_normal(block_shape, dtype=np.float32) * np.float32(scale)
                    data.write(block.tobytes())
                length = int(np.prod(shape)) * 4
                tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape),
                                     data_location=TensorProto.EXTERNAL)
                for key, value in (("location", "chain.data"), ("offset", str(offset)), ("length", str(length))):
                    tensor.external_data.add(key=key, value=value)
                inits.append(tensor)
                offset += length
            x = "x" if i == 0 else f"r{i - 1}"
            last = i == len(dims) - 2
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], ["y" if last else f"g{i}"], name=f"fc{i}"))
            if not last:
                nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dims[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dims[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "chain.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="where to write the model and out/ (default: a temp folder)")
    parser.add_argument("--cluster", type=Path, default=TRIO)
    parser.add_argument("--keep", action="store_true", help="keep the model and out/")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="edgec-big-", dir=args.folder))
    try:
        need = 3 * 4 * sum(a * b for a, b in zip(DIMS, DIMS[1:]))
        free = shutil.disk_usage(folder).free
        if free < need:
            raise SystemExit(f"{folder}: {free / 2**30:.1f} GiB free, this needs {need / 2**30:.1f} GiB")
        start = time.perf_counter()
        model = write_big_model(folder)
        print(f"model written in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        out = folder / "out"
        report = compile_once(model, args.cluster, out)
        manifest = read_manifest(out)
        verify = subprocess.run([sys.executable, "-m", "edgec.cli", "verify", str(out)], capture_output=True, text=True)
        size = model_bytes(model)
        table = Table("model GiB", "compile s", "peak RSS MB", "RSS / model", "sub-models", "with external data",
                      "largest sub-model file MB", "edgec verify",
                      title=f"a {size / 2**30:.2f} GiB model with external data, {args.cluster.stem} (one run)")
        largest = max((out / s.model).stat().st_size for s in manifest.stages)
        table.add_row(f"{size / 2**30:.2f}", f"{report['wall_s']:.1f}", f"{report['maxrss'] / 2**20:.0f}",
                      f"{report['maxrss'] / size:.2f}x", str(len(manifest.stages)),
                      str(sum(s.external_data is not None for s in manifest.stages)), f"{largest / 2**20:.1f}",
                      "PASS" if verify.returncode == 0 and "PASS" in verify.stdout else f"FAIL {verify.stderr[-200:]}")
        Console(width=200).print(table)
        passes = Table(*(p["name"] for p in report["passes"]), title="pass breakdown, ms")
        passes.add_row(*(f"{p['ms']:.0f}" for p in report["passes"]))
        Console(width=200).print(passes)
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
