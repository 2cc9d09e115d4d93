# SPDX-License-Identifier: Apache-2.0
"""Inference backends behind one interface (name-based numpy feeds in, ``{output name: array}`` out), and the one
place that decides which backend runs an artifact."""
from __future__ import annotations

import os
from pathlib import Path

from ...artifact.kinds import artifact_kind, backend_for_kind
from ...errors import ArtifactError
from .base import Backend
from .options import BackendOptions

BACKENDS = ("onnxruntime", "tensorrt")


def open_backend(artifact: str | os.PathLike, backend: str | None = None,
                 options: BackendOptions | None = None) -> Backend:
    """The backend for ``artifact``: ONNX files run in onnxruntime, engines in TensorRT (see ``artifact_kind``).

    ``backend`` forces one; an ONNX file cannot run in the TensorRT backend (build an engine with detr-build) and
    an engine cannot run in onnxruntime.
    """
    options = options or BackendOptions()
    options.validate()
    kind = artifact_kind(artifact)
    chosen = backend or backend_for_kind(kind)
    if chosen not in BACKENDS:
        raise ArtifactError(f"unknown backend {chosen!r}; use one of {', '.join(BACKENDS)}")
    if chosen != backend_for_kind(kind):
        fix = "build an engine with detr-build" if kind == "onnx" else "run its ONNX file instead"
        raise ArtifactError(f"{artifact} is a{'n ONNX file' if kind == 'onnx' else ' TensorRT engine'}; the "
                            f"{chosen} backend cannot run it ({fix})")
    if chosen == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(Path(artifact), options)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(Path(artifact), options)


__all__ = ["BACKENDS", "Backend", "BackendOptions", "open_backend"]
