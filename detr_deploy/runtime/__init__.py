# SPDX-License-Identifier: Apache-2.0
"""Deployment runtime: numpy + pillow only (never torch or timm), so it installs light on edge devices.

``Detector(artifact)`` runs an exported ONNX file (onnxruntime) or TensorRT engine with the reference pre- and
post-processing recorded in the artifact's metadata. Modules: ``images`` (reading), ``preprocess``,
``postprocess``, ``backends`` (onnxruntime, TensorRT; ``BackendOptions``), ``detector``, ``drawing``, ``coco``
(COCO formats), ``msda_cpu`` / ``msda_native`` (MSDA plugin nodes on the CPU).
"""
from ..artifact.metadata import ArtifactMetadata
from .backends import BackendOptions, open_backend
from .detector import Detector
from .drawing import draw_detections
from .images import find_images, load_image
from .postprocess import postprocess_detections
from .preprocess import preprocess_images, shortest_edge_size

__all__ = ["ArtifactMetadata", "BackendOptions", "Detector", "draw_detections", "find_images", "load_image",
           "open_backend", "postprocess_detections", "preprocess_images", "shortest_edge_size"]
