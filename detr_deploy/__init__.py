# SPDX-License-Identifier: Apache-2.0
"""detr-deploy: DETR and Deformable DETR from PyTorch checkpoints to verified ONNX and TensorRT artifacts.

``import detr_deploy`` stays light (no torch): ``create_model`` imports torch when called, and
``detr_deploy.runtime`` needs only numpy and pillow. Layers and where each concept lives: README, "Architecture".
"""
from __future__ import annotations

__version__ = "0.2.0"

from .models.registry import list_models


def create_model(name_or_path: str, weights: str | None = None, **overrides):
    """Build a model by variant name or from a checkpoint; see :func:`detr_deploy.factory.create_model`."""
    from .factory import create_model as _create_model

    return _create_model(name_or_path, weights=weights, **overrides)


__all__ = ["__version__", "create_model", "list_models"]
