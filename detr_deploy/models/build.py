# SPDX-License-Identifier: Apache-2.0
"""``build_model``: a config -> the randomly initialised reference model (official initialisation)."""
from __future__ import annotations

from .base import DetrFamilyModel
from .config import ModelConfig


def build_model(config: ModelConfig) -> DetrFamilyModel:
    """A randomly initialised model for ``config``, in eval mode."""
    from .deformable_detr import DeformableDETR
    from .detr import DETR

    model = DeformableDETR(config) if config.family == "deformable" else DETR(config)
    return model.eval()
