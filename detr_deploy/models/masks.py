# SPDX-License-Identifier: Apache-2.0
"""Padding masks (inputs follow Hugging Face: ``pixel_mask`` 1 = real pixel; internally True = padding), and the
nearest-neighbour resize with PyTorch's own index arithmetic that every exported graph reproduces exactly."""
from __future__ import annotations

import torch


def padding_mask_from_pixel_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
    """``pixel_mask [B,H,W]`` (1 = real, 0 = padding; None = no padding) -> bool ``[B,H,W]``, True = padding."""
    if pixel_mask is None:
        return torch.zeros_like(pixel_values[:, 0], dtype=torch.bool)
    return pixel_mask == 0


def nearest_source_index(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """Source rows of a nearest resize, computed exactly as PyTorch's kernel does.

    ``F.interpolate(mode="nearest")`` takes ``min(floor(dst * (float32)(in / out)), in - 1)``. ONNX Resize computes
    ``dst / (out / in)`` instead, which rounds one row lower at some padding boundaries (e.g. in=240, out=8,
    row 180), so the reference and an exported graph would disagree on the mask. Spelling the float32 arithmetic
    out makes both the same, bit for bit.
    """
    scale = torch.scalar_tensor(size_in, dtype=torch.float32, device=device) / torch.scalar_tensor(
        size_out, dtype=torch.float32, device=device)
    index = (torch.arange(size_out, dtype=torch.float32, device=device) * scale).floor().to(torch.int64)
    return index.clamp(max=size_in - 1)


def nearest_resize(x: torch.Tensor, size) -> torch.Tensor:
    """``F.interpolate(x, size, mode="nearest")`` on the last two axes of ``x [..., H, W]``, bit for bit, as index
    selects (an exported Resize would round some source rows differently, see :func:`nearest_source_index`)."""
    h_in, w_in = x.shape[-2:]
    h_out, w_out = size
    rows = nearest_source_index(h_in, h_out, x.device)
    cols = nearest_source_index(w_in, w_out, x.device)
    return x.index_select(x.dim() - 2, rows).index_select(x.dim() - 1, cols)


def downsample_mask(padding_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resize of ``padding_mask [B,H,W]`` to the spatial size of ``like [B,C,h,w]``."""
    return nearest_resize(padding_mask, like.shape[-2:])
