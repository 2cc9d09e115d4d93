# SPDX-License-Identifier: Apache-2.0
"""Per-model pre/post-processing settings, derived in one place for the exporter, the trainer and the gate.

``config`` below is any object with the model-config fields ``family``, ``num_queries``, ``num_classes`` and
``image_size`` (the models' typed configs are; this module does not import them).
"""
from __future__ import annotations

from typing import Any

from .metadata import IMAGENET_MEAN, IMAGENET_STD, Postprocess, Preprocess

MAX_DETECTIONS = 100  # the reference post-processors keep at most 100 detections per image


def postprocess_settings(config: Any) -> Postprocess:
    """DETR: softmax without the no-object column, one detection per query. Deformable DETR: sigmoid, top-k over
    queries x classes with k = min(100, Q * C), as the reference post-processor."""
    if config.family == "deformable":
        return Postprocess("sigmoid-top-k", min(MAX_DETECTIONS, config.num_queries * config.num_classes))
    return Postprocess("softmax-drop-last", min(MAX_DETECTIONS, config.num_queries))


def preprocess_settings(config: Any, input_size: tuple[int, int] | None = None) -> Preprocess:
    """The model's evaluation resize (shortest edge / longest edge of ``image_size``), Hugging Face rounding and
    ImageNet normalisation; with ``input_size`` (a static artifact) the image is fitted into it and padded."""
    shortest, longest = config.image_size
    if input_size is None:
        return Preprocess(shortest_edge=shortest, longest_edge=longest)
    return Preprocess(resize="fit", input_size=tuple(input_size), shortest_edge=shortest, longest_edge=longest)


def reference_preprocess(config: Any, artifact: Preprocess) -> Preprocess:
    """The reference pipeline the gate compares an artifact with: the model's own image size, ImageNet constants and
    HF rounding, with the artifact's geometry (dynamic shortest-edge, or a static artifact's fit-and-pad size).
    Differences between this and the artifact's recorded preprocessing are what the end-to-end check catches."""
    return Preprocess(resize=artifact.resize, shortest_edge=config.image_size[0], longest_edge=config.image_size[1],
                      rounding="hf", input_size=artifact.input_size, rescale=1 / 255, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD)
