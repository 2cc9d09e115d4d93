# SPDX-License-Identifier: Apache-2.0
"""ONNX file or TensorRT engine: decided in one place, by suffix, then by the engine's sidecar."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArtifactError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
KINDS = ("onnx", "engine")


def sidecar_path(engine: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json`` (the engine's metadata, written by detr-build)."""
    return Path(str(engine) + ".json")


def artifact_kind(path: str | os.PathLike) -> str:
    """"onnx" or "engine" for an artifact path (suffixes in any case; an unknown suffix with a sidecar JSON is an
    engine). ArtifactError for a missing file or one that is neither."""
    target = Path(path)
    if not target.exists():
        raise ArtifactError(f"{target}: no such file")
    if target.is_dir():
        raise ArtifactError(f"{target} is a folder; give an .onnx file or a TensorRT engine")
    suffix = target.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES or sidecar_path(target).is_file():
        return "engine"
    raise ArtifactError(f"{target}: not an artifact detr-deploy knows (use .onnx for ONNX files, "
                        f"{'/'.join(ENGINE_SUFFIXES)} for TensorRT engines)")


def backend_for_kind(kind: str) -> str:
    """The runtime backend that runs an artifact of this kind."""
    return "tensorrt" if kind == "engine" else "onnxruntime"
