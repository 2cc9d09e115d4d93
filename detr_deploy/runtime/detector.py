# SPDX-License-Identifier: Apache-2.0
"""``Detector``: an artefact (ONNX or TensorRT engine) plus the reference pre/post-processing, numpy + pillow."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ImageError
from .backends.base import Backend
from .images import DEFAULT_MAX_PIXELS, describe, load_image
from .postprocess import postprocess
from .preprocess import Batch, normalization_table, preprocess_for

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def open_backend(artifact: str | os.PathLike, backend: str | None = None, **options: Any) -> Backend:
    """The backend for ``artifact``: ``.onnx`` -> onnxruntime, ``.engine``/``.plan``/``.trt`` -> TensorRT."""
    path = Path(artifact)
    kind = backend or ("tensorrt" if path.suffix.lower() in ENGINE_SUFFIXES else "onnxruntime")
    if kind == "onnxruntime":
        from .backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, **options)
    if kind == "tensorrt":
        from .backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, **options)
    raise ArtifactError(f"unknown backend {kind!r}; use 'onnxruntime' or 'tensorrt'")


class Detector:
    """Run an exported model on images.

    Args:
        artifact: ``model.onnx`` or ``model.engine`` written by detr-export/detr-build; pre/post-processing
            settings come from its metadata.
        threshold: default score threshold (``score > threshold`` is kept).
        batch_size: images per inference call (a static artefact's own batch size wins). A batch is padded to
            its largest image, and padding changes Deformable DETR's output (reference behaviour): 1, or images
            of one size, for accuracy.
        backend: "onnxruntime" or "tensorrt"; None picks by file suffix.
        max_pixels: images above this are refused (decompression-bomb protection).
        **backend_options: passed to the backend (e.g. ``device="cuda"``, ``threads=2``, ``plugin_libraries``).

    ``detector(images, threshold=None) -> list[dict]``, one per image, in order: ``"boxes"`` float32 [K,4] xyxy in
    original-image pixels, ``"scores"`` [K], ``"labels"`` int64 [K], ``"names"`` list[str], sorted by score.
    An image that cannot be read gives ``{"error": message}`` and the others still run.
    """

    def __init__(self, artifact: str | os.PathLike, threshold: float = 0.5, batch_size: int = 1,
                 backend: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, **backend_options: Any):
        self.backend = open_backend(artifact, backend, **backend_options)
        self.metadata = self.backend.metadata
        self.threshold = threshold
        self.max_pixels = max_pixels
        batch = self.metadata.inputs["pixel_values"]["shape"][0]
        self.static_batch = batch if isinstance(batch, int) else None
        self.batch_size = self.static_batch or max(1, int(batch_size))
        self.pad_to = tuple(self.metadata.preprocess.input_size) if self.metadata.preprocess.input_size else None
        self._table = normalization_table(self.metadata.preprocess)
        self._buffers: dict = {}

    def preprocess(self, images: list[np.ndarray]) -> Batch:
        """``HxWx3 uint8`` arrays -> a batch (filled to a static artefact's batch size with copies)."""
        return preprocess_for(images, self.metadata, self._table, self._buffers)

    def infer(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.backend(batch.feeds())

    def postprocess(self, outputs: dict[str, np.ndarray], batch: Batch, count: int, threshold: float) -> list[dict]:
        return postprocess(outputs["logits"][:count], outputs["pred_boxes"][:count], self.metadata.postprocess,
                           batch.original_sizes[:count], threshold, self.metadata.id2label)

    def __call__(self, images: Any, threshold: float | None = None) -> list[dict]:
        if not isinstance(images, (list, tuple)):
            images = [images]
        threshold = self.threshold if threshold is None else threshold
        results: list[dict] = [{}] * len(images)
        loaded: list[tuple[int, np.ndarray]] = []
        for index, source in enumerate(images):
            try:
                loaded.append((index, load_image(source, self.max_pixels)))
            except ImageError as exc:
                results[index] = {"error": str(exc), "source": describe(source, index)}
        for start in range(0, len(loaded), self.batch_size):
            chunk = loaded[start:start + self.batch_size]
            batch = self.preprocess([img for _, img in chunk])
            detections = self.postprocess(self.infer(batch), batch, len(chunk), threshold)
            for (index, _), det in zip(chunk, detections):
                results[index] = det
        return results

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
