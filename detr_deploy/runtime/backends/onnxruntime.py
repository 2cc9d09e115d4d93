# SPDX-License-Identifier: Apache-2.0
"""onnxruntime backend: CPU, CUDA or TensorRT execution providers.

A plugin-form model (MSDA as TensorRT plugin nodes) runs on the CPU provider through detr-deploy's CPU kernel
(``msda_cpu``, needs onnxruntime-extensions); with the TensorRT provider the nodes go to TensorRT's plugin,
optionally from ``trt_plugin_libraries``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._optional import require
from ...errors import ArtifactError
from ..metadata import ArtifactMetadata, read_onnx_metadata
from ..msda_cpu import has_plugin_nodes, redomain_plugin_nodes, session_options_with_plugins
from .base import Backend

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OnnxRuntimeBackend(Backend):
    """Run an exported ONNX file with onnxruntime.

    Args:
        model: path to the .onnx file, or an ``onnx.ModelProto``.
        device: "cpu", "cuda" or "tensorrt" (the execution provider; falls back to nothing: a missing provider is
            an error naming what to install).
        device_id: GPU index for cuda/tensorrt.
        threads: intra-op threads (None: onnxruntime's default).
        trt_plugin_libraries: plugin .so files for the TensorRT provider.
        trt_engine_cache: folder for the TensorRT provider's engine cache.
        provider_options: extra options merged into the provider's options.
    """

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike | Any, device: str = "cpu", device_id: int = 0,
                 threads: int | None = None, trt_plugin_libraries: list[str] | None = None,
                 trt_engine_cache: str | None = None, provider_options: dict[str, Any] | None = None):
        ort = require("onnxruntime", "running ONNX artefacts")
        onnx = require("onnx", "reading ONNX artefacts")
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ArtifactError(f"{path} does not exist")
            try:
                proto = onnx.load(str(path))
            except Exception as exc:
                raise ArtifactError(f"{path} is not a readable ONNX file ({exc})") from exc
            where = str(path)
        else:
            proto, where = model, "ONNX model"
        self.metadata: ArtifactMetadata = read_onnx_metadata(proto, where)
        if device not in PROVIDERS:
            raise ArtifactError(f"unknown device {device!r}; use one of {sorted(PROVIDERS)}")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            extra = "onnxruntime-gpu" if device == "cuda" else "onnxruntime-gpu built with TensorRT"
            raise ArtifactError(f"onnxruntime has no {provider} here (available: {ort.get_available_providers()}); "
                                f"install {extra} and the matching CUDA/TensorRT libraries, or use device='cpu'")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        opts: dict[str, Any] = {}
        if device in ("cuda", "tensorrt"):
            opts["device_id"] = device_id
        if device == "tensorrt":
            if trt_plugin_libraries:
                opts["trt_extra_plugin_lib_paths"] = ";".join(trt_plugin_libraries)
            if trt_engine_cache:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=trt_engine_cache)
        opts.update(provider_options or {})
        if device == "cpu" and has_plugin_nodes(proto):
            options = session_options_with_plugins(options)
            proto = redomain_plugin_nodes(proto)
        providers = [(provider, opts)] if opts else [provider]
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load {where}: {exc}") from exc
        self.device = device
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ArtifactError(f"missing inputs {missing}; the model takes {self.input_names}")
        outputs = self.session.run(self.output_names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self.session = None
