# SPDX-License-Identifier: Apache-2.0
"""TensorRT backend: deserialize an engine, load plugin libraries first, run with dynamic shapes per call.

Works with the TensorRT 10.x and 11.x Python APIs (tensors by name, ``execute_async_v3``; the binding-index API
is gone since 10.0). Device memory and streams come from cuda-python (``cuda.bindings.runtime``, or the older
``cuda.cudart``), or from pycuda when that is what the machine has.
"""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._optional import require
from ...errors import ArtifactError, MissingDependencyError
from ..metadata import ArtifactMetadata
from .base import Backend


def sidecar_path(engine: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    return Path(str(engine) + ".json")


class _CudaPython:
    """Device memory and streams through cuda-python."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.rt = cudart
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        err, *values = result
        if int(err) != 0:
            name = self.rt.cudaGetErrorName(err)[1]
            raise ArtifactError(f"CUDA error {int(err)} ({name.decode() if isinstance(name, bytes) else name})")
        return values[0] if len(values) == 1 else (values or None)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr))

    def htod(self, ptr: int, array: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream))

    def dtoh(self, array: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream))

    def handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        self._check(self.rt.cudaStreamDestroy(self.stream))


class _PyCuda:
    """Device memory and streams through pycuda (``pycuda.autoinit`` creates the context)."""

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as driver

        self.driver = driver
        self.stream = driver.Stream()
        self._allocations: dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(max(nbytes, 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def htod(self, ptr: int, array: np.ndarray) -> None:
        self.driver.memcpy_htod_async(ptr, array, self.stream)

    def dtoh(self, array: np.ndarray, ptr: int) -> None:
        self.driver.memcpy_dtoh_async(array, ptr, self.stream)

    def handle(self) -> int:
        return int(self.stream.handle)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        pass


def _cuda() -> _CudaPython | _PyCuda:
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _PyCuda()
    except ImportError:
        raise MissingDependencyError("the TensorRT backend needs cuda-python (or pycuda) for device memory: "
                                     "pip install 'detr-deploy[trt]'") from None


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


class TensorRTBackend(Backend):
    """Run a TensorRT engine written by detr-build.

    Args:
        engine: the ``.engine`` file; its sidecar ``<engine>.json`` holds the metadata (and plugin libraries).
        plugin_libraries: plugin .so files to load before deserializing (default: those recorded at build time).
        device_id: GPU index.
    """

    name = "tensorrt"

    def __init__(self, engine: str | os.PathLike, plugin_libraries: list[str] | None = None, device_id: int = 0):
        trt = require("tensorrt", "running TensorRT engines")
        self.trt = trt
        path = Path(engine)
        if not path.is_file():
            raise ArtifactError(f"{path} does not exist")
        sidecar = sidecar_path(path)
        if not sidecar.is_file():
            raise ArtifactError(f"{path} has no sidecar {sidecar.name} with its metadata; build engines with "
                                "detr-build, which writes both")
        self.metadata = ArtifactMetadata.from_json(sidecar.read_text(), str(sidecar))
        info = self.metadata.tensorrt or {}
        self.cuda = _cuda()
        gpu_name, capability = _gpu_identity(device_id)
        check_engine_compatibility(trt, self.metadata, path, gpu_name, capability)
        self.logger = trt.Logger(trt.Logger.WARNING)
        libraries = plugin_libraries if plugin_libraries is not None else info.get("plugin_libraries", [])
        load_plugin_libraries(trt, list(libraries), self.logger)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {path} (see its log above): usually a TensorRT "
                                "version or GPU mismatch, or a plugin library that was not loaded "
                                f"(loaded: {list(libraries) or 'none'}); rebuild with detr-build")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if nbytes > capacity:
            if ptr:
                self.cuda.free(ptr)
            ptr = self.cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt = self.trt
        host_inputs = []  # the copies read the host arrays asynchronously: keep them alive until synchronize
        for name in self.input_names:
            if name not in feeds:
                raise ArtifactError(f"missing input {name!r}; the engine takes {self.input_names}")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            array = np.ascontiguousarray(feeds[name], dtype=dtype)
            if not self.context.set_input_shape(name, array.shape):
                raise ArtifactError(f"input {name} of shape {array.shape} is outside the engine's optimization "
                                    "profile; rebuild with detr-build --shapes covering it")
            ptr = self._device_buffer(name, array.nbytes)
            self.cuda.htod(ptr, array)
            self.context.set_tensor_address(name, ptr)
            host_inputs.append(array)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            array = np.empty(shape, dtype=np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
            ptr = self._device_buffer(name, array.nbytes)
            self.context.set_tensor_address(name, ptr)
            outputs[name] = (array, ptr)
        if not self.context.execute_async_v3(self.cuda.handle()):
            raise ArtifactError("TensorRT execution failed (see the TensorRT log)")
        for array, ptr in outputs.values():
            self.cuda.dtoh(array, ptr)
        self.cuda.synchronize()
        del host_inputs
        return {name: array for name, (array, _) in outputs.items()}

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers.clear()
        self.context = None
        self.engine = None
        self.cuda.close()


def _gpu_identity(device_id: int) -> tuple[str | None, str | None]:
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
    name, capability = _gpu_identity(device_id)
    return {"gpu_name": name, "compute_capability": capability}


def engine_metadata(metadata: ArtifactMetadata, trt_version: str, gpu: dict, plugin_libraries: list[str],
                    profile: dict) -> ArtifactMetadata:
    """The ONNX metadata plus what an engine adds: TensorRT version, GPU, plugins, optimization profile."""
    data = json.loads(metadata.to_json())
    data["tensorrt"] = {"version": trt_version, **gpu, "plugin_libraries": plugin_libraries, "profile": profile}
    return ArtifactMetadata.from_json(json.dumps(data))
