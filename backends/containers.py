"""A Dockerfile per board in the bundle (out/<device>/Dockerfile), from the vendor's base image where one exists.

Each image holds the runtime wheel of the bundle (edgec-runtime, nothing of the
compiler) and the ONNX Runtime the board's stages need, and serves the device
with its launcher, host networking, the bundle mounted at /bundle (so
deployment.json and keys/ stay on the board, editable):

- a device with a GPU stage (Jetson Nano, JetPack 4.6.1+): NVIDIA's L4T base
  image r32.7.1, Python 3.6, and NVIDIA's onnxruntime-gpu wheel for JetPack
  4.6 (cp36, built with the TensorRT execution provider; from the Jetson Zoo,
  put beside the Dockerfile); CUDA and TensorRT 8.2 come from the host through
  the NVIDIA container runtime (`--runtime nvidia`).
- armv7 (Odroid XU4): PyPI has no onnxruntime wheel for it; the first stage of
  the Dockerfile builds one from ONNX Runtime's sources (its documented Linux
  build, `build.sh --build_wheel`; two jobs, as the XU4's 2 GB allow) on Debian bookworm armhf, the second installs
  it into Python 3.11 armhf. Build it on the board or any armv7-capable builder
  (`docker buildx build --platform linux/arm/v7`, QEMU: hours); the wheel can be
  copied out of the image for a board without Docker.
- aarch64 otherwise (Raspberry Pi 4, 64-bit Raspberry Pi OS = Debian bookworm):
  Python 3.11 on Debian bookworm arm64, onnxruntime from PyPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from edgec.manifest import StageSpec

if TYPE_CHECKING:
    from edgec.cluster import Device

L4T_IMAGE = "nvcr.io/nvidia/l4t-base:r32.7.1"  # JetPack 4.6.1: CUDA 10.2, TensorRT 8.2.1 from the host
JETSON_ORT_WHEEL = "onnxruntime_gpu-1.11.0-cp36-cp36m-linux_aarch64.whl"  # Jetson Zoo, JetPack 4.6
JETSON_ZOO = "https://elinux.org/Jetson_Zoo#ONNX_Runtime"
ARM64_IMAGE = "arm64v8/python:3.11-slim-bookworm"
ARMV7_BUILD_IMAGE = "arm32v7/debian:bookworm"
ARMV7_IMAGE = "arm32v7/python:3.11-slim-bookworm"
ORT_SOURCE_TAG = "v1.16.3"  # the newest release whose build needs no more than bookworm's CMake 3.25 and GCC 12


def kind(device: Device, stages: Sequence[StageSpec]) -> str:
    """'jetson' (a GPU stage), 'armv7' or 'aarch64': which recipe the device gets."""
    if any(device.units[s.unit].kind == "gpu" for s in stages):
        return "jetson"
    return "armv7" if device.arch.startswith("armv7") else "aarch64"


def dockerfile(device: Device, stages: Sequence[StageSpec], wheel: str) -> str:
    """out/<device>/Dockerfile; built with the bundle (out/) as its context: `docker build -f <device>/Dockerfile .`"""
    recipe = kind(device, stages)
    serve = [
        "WORKDIR /bundle",
        "# the bundle is mounted at /bundle when the container runs (deployment.json, keys/ stay on the board)",
        f'CMD ["sh", "{device.name}/run_{device.name}.sh"]',
        "",
    ]
    head = [f"# {device.name} ({device.type}): the edgec runtime and the ONNX Runtime its stages need.",
            f"# Build in out/:  docker build -t edgec-{device.name} -f {device.name}/Dockerfile .",
            f"# Run:            docker run --rm --network host {'--runtime nvidia ' if recipe == 'jetson' else ''}"
            f"-v \"$PWD\":/bundle edgec-{device.name}"]
    if recipe == "jetson":
        body = [
            f"FROM {L4T_IMAGE}",
            "RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-numpy "
            "util-linux && rm -rf /var/lib/apt/lists/*",
            f"# NVIDIA's onnxruntime-gpu for JetPack 4.6 (TensorRT execution provider): download {JETSON_ORT_WHEEL}",
            f"# from {JETSON_ZOO} into {device.name}/ first",
            f"COPY {device.name}/{JETSON_ORT_WHEEL} {wheel} /tmp/",
            "RUN python3 -m pip install --upgrade 'pip<22' && "
            f"python3 -m pip install /tmp/{JETSON_ORT_WHEEL} /tmp/{wheel} && rm /tmp/*.whl",
        ]
    elif recipe == "armv7":
        body = [
            f"FROM {ARMV7_BUILD_IMAGE} AS onnxruntime",
            "RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git "
            "ca-certificates python3-dev python3-numpy python3-pip python3-setuptools python3-wheel "
            "python3-packaging && rm -rf /var/lib/apt/lists/*",
            f"RUN git clone --depth 1 --branch {ORT_SOURCE_TAG} --recursive --shallow-submodules "
            "https://github.com/microsoft/onnxruntime /src",
            "WORKDIR /src",
            "RUN ./build.sh --config MinSizeRel --update --build --build_wheel --parallel 2 --skip_tests "
            "--allow_running_as_root --skip_submodule_sync && cp build/Linux/MinSizeRel/dist/*.whl /",
            "",
            f"FROM {ARMV7_IMAGE}",
            "RUN apt-get update && apt-get install -y --no-install-recommends util-linux "
            "&& rm -rf /var/lib/apt/lists/*",
            "COPY --from=onnxruntime /onnxruntime-*.whl /tmp/",
            f"COPY {wheel} /tmp/",
            f"RUN python3 -m pip install /tmp/onnxruntime-*.whl /tmp/{wheel} && rm /tmp/*.whl",
        ]
    else:
        body = [
            f"FROM {ARM64_IMAGE}",
            "RUN apt-get update && apt-get install -y --no-install-recommends util-linux "
            "&& rm -rf /var/lib/apt/lists/*",
            f"COPY {wheel} /tmp/",
            f"RUN python3 -m pip install '/tmp/{wheel}[cpu]' && rm /tmp/*.whl",
        ]
    return "\n".join(head + body + serve)


def readme(device: Device, stages: Sequence[StageSpec], wheel: str) -> list[str]:
    """README lines: installing on the board's own software, or in the container."""
    recipe = kind(device, stages)
    lines = ["## Install", ""]
    if recipe == "jetson":
        lines += [
            "On JetPack 4.6.1 or later (Python 3.6, TensorRT 8.2): NVIDIA's onnxruntime-gpu wheel for JetPack 4.6,",
            f"built with the TensorRT execution provider ({JETSON_ORT_WHEEL}, from {JETSON_ZOO}), then the",
            "runtime (numpy and pyzmq come with it):",
            "",
            "    sudo apt-get install -y python3-pip",
            "    python3 -m pip install --user --upgrade 'pip<22'",
            f"    python3 -m pip install --user {JETSON_ORT_WHEEL} {wheel}",
        ]
    elif recipe == "armv7":
        lines += [
            "PyPI has no onnxruntime wheel for armv7: build one from ONNX Runtime's sources in the container",
            "recipe below (on the board, or on a builder with `docker buildx build --platform linux/arm/v7`),",
            "then either serve in the container or copy the wheel out and install it on the board's Python 3:",
            "",
            f"    docker build --target onnxruntime -t ort-armv7 -f {device.name}/Dockerfile .",
            "    docker run --rm -v \"$PWD\":/out ort-armv7 sh -c 'cp /onnxruntime-*.whl /out'",
            "    sudo apt-get install -y python3-pip python3-numpy python3-zmq",
            f"    python3 -m pip install onnxruntime-*.whl {wheel}",
        ]
    else:
        lines += [
            "On Raspberry Pi OS 64-bit (Debian bookworm, Python 3.11): the runtime and onnxruntime from PyPI, in",
            "a virtual environment (bookworm's pip refuses installs into the system Python):",
            "",
            "    sudo apt-get install -y python3-venv",
            "    python3 -m venv ~/edgec && . ~/edgec/bin/activate",
            f"    python3 -m pip install '{wheel}[cpu]'",
        ]
    lines += [
        "",
        "Or in a container (docker with the bundle as build context; it serves with host networking):",
        "",
        f"    docker build -t edgec-{device.name} -f {device.name}/Dockerfile .",
        f"    docker run --rm --network host {'--runtime nvidia ' if recipe == 'jetson' else ''}"
        f"-v \"$PWD\":/bundle edgec-{device.name}",
        "",
    ]
    return lines
