# SPDX-License-Identifier: Apache-2.0
"""Multi-scale deformable attention (MSDA).

The sampling core is a single function, :func:`ms_deform_attn_core`, with the contract shared by the whole
stack (DESIGN.md): the exporter swaps it for a TensorRT plugin node, the CUDA plugin implements the same
maths. Sampling is bilinear with zero padding and ``align_corners=False``: pixel = loc * size - 0.5, and
a neighbour outside the map reads 0 (identical to the official CUDA kernel).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = torch.Tensor | Sequence[tuple[int, int]]
MSDACore = Callable[..., torch.Tensor]


def _shape_list(spatial_shapes: SpatialShapes) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, torch.Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(h, w) for h, w in spatial_shapes]


def ms_deform_attn_core(value: torch.Tensor, spatial_shapes: SpatialShapes, level_start_index: torch.Tensor | None,
                        sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Reference MSDA core: ``grid_sample`` per level (equal to the official CUDA kernel).

    Args:
        value: ``[N, S, M, D]``, S = sum of H_l * W_l, levels concatenated row-major.
        spatial_shapes: ``[L, 2]`` (H, W) per level: an int tensor, or a sequence of (H, W) pairs (the models
            pass the pairs, so that export keeps them symbolic).
        level_start_index: ``[L]`` start of each level in S (implied by spatial_shapes; unused here).
        sampling_locations: ``[N, Lq, M, L, P, 2]``, (x, y) in [0, 1] of the padded map.
        attention_weights: ``[N, Lq, M, L, P]``, already softmaxed over L * P.

    Returns:
        ``[N, Lq, M * D]``, head-major channels.
    """
    shapes = _shape_list(spatial_shapes)
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for level, (h, w) in enumerate(shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value_list[level].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1).reshape(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable attention module (parameter names of fundamentalvision/Deformable-DETR).

    ``forward(query [N,Lq,C], reference_points [N,Lq,L,2|4], value_input [N,S,C], spatial_shapes (L pairs),
    level_start_index [L], padding_mask [N,S] True = padding) -> [N, Lq, C]``.

    2-d references are points (x, y); 4-d references are boxes (cx, cy, w, h) and offsets scale with the box.
    ``self.core`` is the sampling function (default :func:`ms_deform_attn_core`); the exporter replaces it.
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.core: MSDACore = ms_deform_attn_core
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: zero offset weights, a star of offsets in the bias, uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value_input: torch.Tensor,
                spatial_shapes: Sequence[tuple[int, int]], level_start_index: torch.Tensor,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, _ = query.shape
        s = value_input.shape[1]
        m, num_levels, num_points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.reshape(n, s, m, self.d_model // m)
        offsets = self.sampling_offsets(query).reshape(n, lq, m, num_levels, num_points, 2)
        weights = self.attention_weights(query).reshape(n, lq, m, num_levels * num_points).softmax(-1)
        weights = weights.reshape(n, lq, m, num_levels, num_points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W, H) to match (x, y)
            normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=torch.int64,
                                      device=query.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / num_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 or 4 values, got {reference_points.shape[-1]}")
        out = self.core(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)
