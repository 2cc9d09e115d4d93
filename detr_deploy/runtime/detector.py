# SPDX-License-Identifier: Apache-2.0
"""``Detector``: an artifact (ONNX or TensorRT engine) plus the reference pre/post-processing, numpy + pillow."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError, ImageError
from .backends import BackendOptions, open_backend
from .images import DEFAULT_MAX_PIXELS, describe, load_image
from .postprocess import postprocess_detections
from .preprocess import Batch, normalization_table, preprocess_for

SEGMENTATION_TASKS = ("panoptic", "instance", "semantic", "detection")


def check_threshold(threshold: float, what: str = "threshold") -> float:
    """Scores are probabilities: a threshold outside [0, 1] is a mistake (35 for 0.35), not a setting."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"{what} {threshold} is outside [0, 1]; scores are probabilities (e.g. 0.35)")
    return float(threshold)


class Detector:
    """Run an exported model on images.

    Args:
        artifact: ``model.onnx`` or ``model.engine`` written by detr-export/detr-build; pre/post-processing
            settings come from its metadata.
        threshold: default score threshold (``score > threshold`` is kept), in [0, 1].
        batch_size: images per inference call (a static artifact's own batch size wins). A batch is padded to
            its largest image, and padding changes Deformable DETR's output (reference behaviour): 1, or images
            of one size, for accuracy.
        backend: "onnxruntime" or "tensorrt"; None: by artifact kind (ONNX file or engine).
        max_pixels: images above this are refused (decompression-bomb protection).
        options: a :class:`BackendOptions`; or give its fields as keywords (``device="cuda"``, ``threads=2``,
            ``plugin_libraries=[...]``).
        task: segmentation artifacts only: "panoptic" (default), "instance", "semantic" or "detection".
        mask_threshold, overlap_mask_area_threshold: segmentation post-processing (Hugging Face's defaults).

    ``detector(images, threshold=None) -> list[dict]``, one per image, in order. Detection: ``"boxes"`` float32
    [K,4] xyxy in original-image pixels, ``"scores"`` [K], ``"labels"`` int64 [K], ``"names"`` list[str], sorted by
    score. Panoptic / instance: ``"segmentation"`` int32 [H,W] of segment ids (0 = none) at the original size,
    ``"segments_info"`` [{"id", "label_id", "was_fused", "score"}] and ``"names"`` (one per segment), as
    ``detr_deploy.runtime.segmentation`` returns them, with the artifact's stuff labels fused (panoptic) and one
    id per segment; semantic: ``"segmentation"`` int64 [H,W] of labels. The masks are cropped to each image's
    unpadded region first (Hugging Face's functions assume an unpadded input; for one unpadded image both agree).
    An image that cannot be read gives ``{"error": message, "source": name}`` and the others still run.
    """

    def __init__(self, artifact: str | os.PathLike, threshold: float = 0.5, batch_size: int = 1,
                 backend: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 options: BackendOptions | None = None, task: str | None = None, mask_threshold: float = 0.5,
                 overlap_mask_area_threshold: float = 0.8, **option_fields: Any):
        if options is not None and option_fields:
            raise ConfigError("pass backend options either as options=BackendOptions(...) or as keywords, not both")
        options = options or BackendOptions.from_kwargs(**option_fields)
        self.threshold = check_threshold(threshold)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = open_backend(artifact, backend, options)
        self.metadata = self.backend.metadata
        self.max_pixels = max_pixels
        self.static_batch = self.metadata.static_batch
        self.batch_size = self.static_batch or int(batch_size)
        self.pad_to = self.metadata.static_input_size
        self._table = normalization_table(self.metadata.preprocess)
        self._buffers: dict = {}
        self.mask_threshold = check_threshold(mask_threshold, "mask_threshold")
        self.overlap_mask_area_threshold = check_threshold(overlap_mask_area_threshold, "overlap_mask_area_threshold")
        segmentation = self.metadata.task == "segmentation"
        self.task = task or ("panoptic" if segmentation else "detection")
        if self.task not in (SEGMENTATION_TASKS if segmentation else ("detection",)):
            self.close()
            raise ConfigError(f"task {self.task!r} is not available for this {self.metadata.task} artifact; use "
                              + (", ".join(SEGMENTATION_TASKS) if segmentation else "detection"))

    @property
    def id2label(self) -> dict[int, str]:
        return self.metadata.id2label

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        """The segmentation artifact's stuff classes (empty for detection)."""
        return tuple(self.metadata.stuff_ids or ())

    def preprocess(self, images: list[np.ndarray]) -> Batch:
        """``HxWx3 uint8`` arrays -> a batch (filled to a static artifact's batch size with copies)."""
        return preprocess_for(images, self.metadata, self._table, self._buffers)

    def infer(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.backend(batch.feeds())

    def postprocess(self, outputs: dict[str, np.ndarray], batch: Batch, count: int, threshold: float) -> list[dict]:
        if self.task == "detection":
            return postprocess_detections(outputs["logits"][:count], outputs["pred_boxes"][:count],
                                          self.metadata.postprocess, batch.original_sizes[:count], threshold,
                                          self.metadata.id2label)
        return [self._segment(outputs, batch, i, threshold) for i in range(count)]

    def _segment(self, outputs: dict[str, np.ndarray], batch: Batch, index: int, threshold: float) -> dict:
        from .segmentation import segment_image

        return segment_image(outputs, index, batch.resized_sizes[index], batch.original_sizes[index], self.task,
                             threshold, self.mask_threshold, self.overlap_mask_area_threshold,
                             self.metadata.stuff_ids, self.metadata.id2label)

    def __call__(self, images: Any, threshold: float | None = None) -> list[dict]:
        if not isinstance(images, (list, tuple)):
            images = [images]
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        results: list[dict] = [{}] * len(images)
        loaded: list[tuple[int, np.ndarray]] = []
        for index, source in enumerate(images):
            try:
                loaded.append((index, load_image(source, self.max_pixels)))
            except ImageError as exc:
                results[index] = {"error": str(exc), "source": describe(source, index)}
        for chunk in self._chunks(loaded):
            batch = self.preprocess([img for _, img in chunk])
            detections = self.postprocess(self.infer(batch), batch, len(chunk), threshold)
            for (index, _), det in zip(chunk, detections):
                results[index] = det
        return results

    def _chunks(self, loaded: list[tuple[int, np.ndarray]]) -> list[list[tuple[int, np.ndarray]]]:
        """Inference calls of at most ``batch_size`` images; with pre-processing in the graph, consecutive images of
        one size only (the graph takes one image tensor per call)."""
        chunks: list[list[tuple[int, np.ndarray]]] = []
        for item in loaded:
            last = chunks[-1] if chunks else None
            if last is None or len(last) == self.batch_size or (
                    self.metadata.preprocess.in_graph and last[0][1].shape != item[1].shape):
                chunks.append([item])
            else:
                last.append(item)
        return chunks

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
