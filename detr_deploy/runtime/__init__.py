# SPDX-License-Identifier: Apache-2.0
"""Deployment runtime: numpy + pillow only (never torch or timm), so it installs light on edge devices.

``Detector(artifact)`` runs an exported ONNX file (onnxruntime) or TensorRT engine with the reference pre- and
post-processing recorded in the artefact's metadata.
"""
from .detector import Detector, open_backend
from .drawing import draw_detections
from .images import find_images, load_image
from .metadata import ArtifactMetadata
from .postprocess import postprocess
from .preprocess import preprocess, shortest_edge_size

__all__ = ["ArtifactMetadata", "Detector", "draw_detections", "find_images", "load_image", "open_backend",
           "postprocess", "preprocess", "shortest_edge_size"]
