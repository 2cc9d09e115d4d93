# SPDX-License-Identifier: Apache-2.0
"""What every reference model declares: its config, its output names, and where it came from."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


class DetrFamilyModel(nn.Module):
    """Base of DETR and Deformable DETR.

    Attributes:
        config: the typed config the model was built from.
        variant: registered variant name, or "custom" (set by ``create_model``).
        weights_info: provenance of the weights: ``source`` (path, Hub id, shipped file or "random"), ``format``
            ("official", "hf", "ours"), ``sha256``, ``notes`` (what loading converted); recorded in artifacts.
        output_names: the outputs ``forward`` returns in eval mode, in export order.

    In training mode ``forward`` also returns ``aux_outputs`` (earlier decoder layers) and, for two-stage models,
    ``enc_outputs``; in eval mode only ``output_names``.
    """

    output_names: ClassVar[tuple[str, ...]] = ("logits", "pred_boxes")

    def __init__(self, config: Any):
        super().__init__()
        config.validate()
        self.config = config
        self.variant = "custom"
        self.weights_info: dict[str, Any] = {"source": "random"}

    @torch.no_grad()
    def predict_numpy(self, pixel_values: np.ndarray, pixel_mask: np.ndarray) -> dict[str, np.ndarray]:
        """The eval-mode outputs of a numpy batch (``[B,3,H,W]`` float32, ``[B,H,W]`` 1 = real pixel) as numpy:
        what an artifact returns for the same feeds, so the two compare directly."""
        out = self(torch.from_numpy(np.ascontiguousarray(pixel_values)),
                   torch.from_numpy(np.ascontiguousarray(pixel_mask)))
        return {name: out[name].detach().float().numpy() for name in self.output_names}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
