# SPDX-License-Identifier: Apache-2.0
"""``build_model``: a config -> the randomly initialised reference model (official initialisation)."""
from __future__ import annotations

from .base import DetrFamilyModel
from .config import ModelConfig


def build_model(config: ModelConfig) -> DetrFamilyModel:
    """A randomly initialised model for ``config``, in eval mode."""
    from .deformable_detr import DeformableDETR
    from .detr import DETR
    from .segmentation import DETRSegmentation

    if config.family == "deformable":
        return DeformableDETR(config).eval()
    return (DETRSegmentation(config) if config.task == "segmentation" else DETR(config)).eval()
