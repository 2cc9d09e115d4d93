# SPDX-License-Identifier: Apache-2.0
"""Padding masks. Inputs follow Hugging Face (``pixel_mask`` 1 = real pixel); internally True = padding."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def padding_mask_from_pixel_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
    """``pixel_mask [B,H,W]`` (1 = real, 0 = padding; None = no padding) -> bool ``[B,H,W]``, True = padding."""
    if pixel_mask is None:
        return torch.zeros_like(pixel_values[:, 0], dtype=torch.bool)
    return pixel_mask == 0


def downsample_mask(padding_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resize of ``padding_mask [B,H,W]`` to the spatial size of ``like [B,C,h,w]``."""
    return F.interpolate(padding_mask[None].float(), size=like.shape[-2:])[0].to(torch.bool)
