# SPDX-License-Identifier: Apache-2.0
"""TensorRT backend: deserialize an engine, load plugin libraries first, run with dynamic shapes per call.

Works with the TensorRT 10.x and 11.x Python APIs (tensors by name, ``execute_async_v3``; the binding-index API
is gone since 10.0). Device memory and streams come from cuda-python (``cuda.bindings.runtime``, or the older
``cuda.cudart``), or from pycuda when that is what the machine has.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._optional import require
from ...artifact.kinds import sidecar_path
from ...artifact.metadata import ArtifactMetadata
from ...artifact.tensorrt import check_engine_compatibility, gpu_identity, load_plugin_libraries
from ...errors import ArtifactError, MissingDependencyError
from .base import Backend
from .options import BackendOptions


class _CudaPython:
    """Device memory and streams through cuda-python."""

    def __init__(self, device_id: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.rt = cudart
        self._check(cudart.cudaSetDevice(device_id))
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

    def __init__(self, device_id: int) -> None:
        import pycuda.driver as driver

        driver.init()
        self.context = driver.Device(device_id).retain_primary_context()
        self.context.push()
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
        self.context.pop()


def _cuda(device_id: int) -> _CudaPython | _PyCuda:
    try:
        return _CudaPython(device_id)
    except ImportError:
        pass
    try:
        return _PyCuda(device_id)
    except ImportError:
        raise MissingDependencyError("the TensorRT backend needs cuda-python (or pycuda) for device memory: "
                                     "pip install 'detr-deploy[trt]'") from None


class TensorRTBackend(Backend):
    """Run a TensorRT engine written by detr-build.

    Args:
        engine: the ``.engine`` file; its sidecar ``<engine>.json`` holds the metadata (and plugin libraries).
        options: ``device`` (``cuda:N`` picks the GPU) and ``plugin_libraries`` (.so files to load before
            deserializing; default: those recorded at build time). Other options do not apply to engines.
    """

    name = "tensorrt"

    def __init__(self, engine: str | os.PathLike, options: BackendOptions | None = None):
        options = options or BackendOptions(device="cuda")
        plugin_libraries, device_id = options.plugin_libraries, options.device_id
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
        self.cuda = _cuda(device_id)
        gpu_name, capability = gpu_identity(device_id)
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
