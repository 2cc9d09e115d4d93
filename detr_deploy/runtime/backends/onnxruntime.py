# SPDX-License-Identifier: Apache-2.0
"""onnxruntime backend: CPU, CUDA or TensorRT execution providers.

A plugin-form model (MSDA as TensorRT plugin nodes) runs on the CPU provider through detr-deploy's CPU kernel
(``msda_cpu``); with the TensorRT provider the nodes go to TensorRT's plugin, optionally from
``BackendOptions.plugin_libraries``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._optional import require
from ...artifact.metadata import ArtifactMetadata, read_onnx_metadata
from ...errors import ArtifactError
from ..msda_cpu import has_plugin_nodes, plugin_session
from .base import Backend
from .options import BackendOptions

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
QUIET = 3  # onnxruntime log severity: errors only (its optimizer warns about every constant it cannot fold)


def session_options(threads: int | None = None):
    """onnxruntime SessionOptions with ``threads`` intra-op threads and only errors logged."""
    ort = require("onnxruntime", "running ONNX artifacts")
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def load_onnx(path: str | os.PathLike):
    """An ``onnx.ModelProto`` from a file, with ArtifactError for a missing or unreadable one."""
    onnx = require("onnx", "reading ONNX artifacts")
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others on arbitrary bytes
        raise ArtifactError(f"{path} is not a readable ONNX file ({exc})") from exc


class OnnxRuntimeBackend(Backend):
    """Run an exported ONNX file with onnxruntime.

    Args:
        model: path to the .onnx file, or an ``onnx.ModelProto``.
        options: device, execution provider, threads, TensorRT provider plugins and engine cache. A missing
            provider is an error naming what to install (no silent fallback to the CPU).
    """

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike | Any, options: BackendOptions | None = None):
        ort = require("onnxruntime", "running ONNX artifacts")
        options = options or BackendOptions()
        options.validate()
        if isinstance(model, (str, os.PathLike)):
            proto, where = load_onnx(model), str(model)
        else:
            proto, where = model, "ONNX model"
        self.metadata: ArtifactMetadata = read_onnx_metadata(proto, where)
        provider_kind = options.onnxruntime_provider()
        provider = PROVIDERS[provider_kind]
        if provider not in ort.get_available_providers():
            extra = "onnxruntime-gpu" if provider_kind == "cuda" else "onnxruntime-gpu built with TensorRT"
            raise ArtifactError(f"onnxruntime has no {provider} here (available: {ort.get_available_providers()}); "
                                f"install {extra} and the matching CUDA/TensorRT libraries, or use --device cpu")
        session_opts = session_options(options.threads)
        provider_opts: dict[str, Any] = {}
        if provider_kind in ("cuda", "tensorrt"):
            provider_opts["device_id"] = options.device_id
        if provider_kind == "tensorrt":
            if options.plugin_libraries:
                provider_opts["trt_extra_plugin_lib_paths"] = ";".join(options.plugin_libraries)
            if options.engine_cache:
                provider_opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=options.engine_cache)
        provider_opts.update(options.provider_options)
        if provider_kind == "cpu" and has_plugin_nodes(proto):
            proto, session_opts = plugin_session(proto, session_opts, options.threads)
        providers = [(provider, provider_opts)] if provider_opts else [provider]
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), session_opts, providers=providers)
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load {where}: {exc}") from exc
        self.options = options
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
