# SPDX-License-Identifier: Apache-2.0
"""What a TensorRT engine needs around it, shared by the engine builder and the TensorRT backend: its metadata
(the ONNX metadata plus TensorRT version, GPU and profile), plugin libraries, and the GPU it runs on.

Nothing here imports TensorRT at module level; functions take the ``tensorrt`` module as an argument.
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from .metadata import ArtifactMetadata


def engine_metadata(metadata: ArtifactMetadata, trt_version: str, gpu: dict, plugin_libraries: list[str],
                    profile: dict) -> ArtifactMetadata:
    """The ONNX metadata plus what an engine adds: TensorRT version, GPU, plugins, optimization profile."""
    data = json.loads(metadata.to_json())
    data["tensorrt"] = {"version": trt_version, **gpu, "plugin_libraries": plugin_libraries, "profile": profile}
    return ArtifactMetadata.from_json(json.dumps(data))


def load_plugin_libraries(trt: Any, libraries: list[str], logger: Any) -> None:
    """NVIDIA's built-in plugins, then each library (``IPluginRegistry.load_library``, else ctypes RTLD_GLOBAL)."""
    trt.init_libnvinfer_plugins(logger, "")
    for library in libraries:
        path = Path(library)
        if not path.is_file():
            raise ArtifactError(f"plugin library {library} does not exist; build it from plugins/ (see README) or "
                                "pass the right --plugins path")
        try:
            handle = trt.get_plugin_registry().load_library(str(path))
        except Exception:  # a library with static registration only (no getCreators entry point)
            handle = None
        if handle is None:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def gpu_identity(device_id: int) -> tuple[str | None, str | None]:
    """(GPU name, "major.minor") through cuda-python or pycuda; (None, None) if neither can tell."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, props = cudart.cudaGetDeviceProperties(device_id)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.strip("\x00 "), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    try:
        import pycuda.driver as driver

        dev = driver.Device(device_id)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except ImportError:
        return None, None


def describe_gpu(device_id: int = 0) -> dict[str, Any]:
    """Sidecar fields of the GPU: name and compute capability."""
    name, capability = gpu_identity(device_id)
    return {"gpu_name": name, "compute_capability": capability}


def check_engine_compatibility(trt: Any, metadata: ArtifactMetadata, engine_path: Path, gpu_name: str | None,
                               capability: str | None) -> None:
    """Engines are specific to a TensorRT version and a GPU: refuse a mismatch with the fix, before TensorRT does."""
    info = metadata.tensorrt or {}
    built_with = info.get("version")
    if built_with and built_with.split(".")[:3] != trt.__version__.split(".")[:3]:
        raise ArtifactError(f"{engine_path} was built with TensorRT {built_with}, this machine has "
                            f"{trt.__version__}: rebuild it here with detr-build (engines are not portable across "
                            "TensorRT versions)")
    built_on = info.get("compute_capability")
    if built_on and capability and built_on != capability:
        raise ArtifactError(f"{engine_path} was built for a GPU of compute capability {built_on} "
                            f"({info.get('gpu_name')}), this one is {capability} ({gpu_name}): rebuild it here "
                            "with detr-build")
