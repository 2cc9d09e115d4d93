# SPDX-License-Identifier: Apache-2.0
"""Multi-head attention with torch.nn.MultiheadAttention's parameters, written as plain matmuls.

The parameters (``in_proj_weight [3d, d]`` packing Wq, Wk, Wv by rows, ``in_proj_bias [3d]``, ``out_proj``)
are those stored by both official repositories, so checkpoints load unchanged. The maths is spelled out
(batch-first, no fused kernel) so the ONNX graph is a plain MatMul/Softmax pattern that every runtime fuses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    """``forward(query [B,Lq,d], key [B,Lk,d], value [B,Lk,d], key_padding_mask [B,Lk] bool) -> [B,Lq,d]``.

    ``key_padding_mask`` True marks keys to ignore. Queries are scaled by ``head_dim ** -0.5`` after the
    projection (bias included), as in torch.nn.MultiheadAttention and Hugging Face's DetrAttention.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim = d_model // num_heads
        self.scale = self.head_dim ** -0.5
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # [B, L, d] -> [B, M, L, head_dim]
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        d = self.d_model
        w, b = self.in_proj_weight, self.in_proj_bias
        q = self._heads(F.linear(query, w[:d], b[:d])) * self.scale
        k = self._heads(F.linear(key, w[d:2 * d], b[d:2 * d]))
        v = self._heads(F.linear(value, w[2 * d:], b[2 * d:]))
        scores = q @ k.transpose(-2, -1)  # [B, M, Lq, Lk]
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = self.dropout(scores.softmax(-1))
        out = (attn @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], d)
        return self.out_proj(out)
