# SPDX-License-Identifier: Apache-2.0
"""Sine position encoding of DETR and Deformable DETR, and the sine embedding of two-stage proposals."""
from __future__ import annotations

import math

import torch
from torch import nn


def _dim_t(num_pos_feats: int, temperature: float) -> torch.Tensor:
    # temperature ** (2 * floor(i / 2) / num_pos_feats), computed exactly as the reference code does
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """[..., F] -> [..., F]: pairs (2k, 2k+1) become (sin x_2k, cos x_2k+1)."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class SinePositionEmbedding(nn.Module):
    """2-D sine encoding of pixel positions, ignoring padding.

    Args:
        num_pos_feats: channels per axis (d_model / 2); output has ``2 * num_pos_feats`` channels, y first.
        offset: subtracted from the cumulative position before normalisation: 0 for DETR, 0.5 for
            Deformable DETR (the only difference between the two).

    ``forward(padding_mask [B,H,W] bool, True = padding) -> [B, 2*num_pos_feats, H, W]`` float32.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, offset: float = 0.0,
                 scale: float = 2 * math.pi, eps: float = 1e-6):
        super().__init__()
        self.offset, self.scale, self.eps = offset, scale, eps
        self.register_buffer("dim_t", _dim_t(num_pos_feats, temperature), persistent=False)

    def forward(self, padding_mask: torch.Tensor) -> torch.Tensor:
        not_mask = (~padding_mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        y_embed = (y_embed - self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
        x_embed = (x_embed - self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        pos_y = _interleave_sin_cos(y_embed[..., None] / self.dim_t)
        pos_x = _interleave_sin_cos(x_embed[..., None] / self.dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class ProposalSineEmbedding(nn.Module):
    """Two-stage query embedding: ``[B, Q, 4]`` unactivated box logits -> ``[B, Q, 4 * num_pos_feats]``.

    Each coordinate ``sigmoid(x) * 2pi`` is divided by ``dim_t`` and sin/cos interleaved; coordinates are
    concatenated in (cx, cy, w, h) order.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.scale = scale
        self.register_buffer("dim_t", _dim_t(num_pos_feats, temperature), persistent=False)

    def forward(self, proposals: torch.Tensor) -> torch.Tensor:
        pos = (proposals.sigmoid() * self.scale)[..., None] / self.dim_t
        return _interleave_sin_cos(pos).flatten(2)
