# SPDX-License-Identifier: Apache-2.0
"""DETR's post-norm encoder-decoder transformer (batch-first; parameter names of facebookresearch/detr)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention


class FeedForwardMixin(nn.Module):
    """Adds ``linear1``/``linear2`` (the reference parameter names) and ``ffn(x) = linear2(drop(relu(linear1 x)))``."""

    def _init_ffn(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.ffn_dropout = nn.Dropout(dropout)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.ffn_dropout(F.relu(self.linear1(x))))


class EncoderLayer(FeedForwardMixin):
    """Self-attention (q = k = src + pos, v = src) -> add & norm1 -> FFN -> add & norm2."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self._init_ffn(d_model, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        q = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, q, src, padding_mask)))
        return self.norm2(src + self.dropout(self.ffn(src)))


class DecoderLayer(FeedForwardMixin):
    """Self-attention -> norm1 -> cross-attention to the memory -> norm2 -> FFN -> norm3."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.multihead_attn = MultiheadAttention(d_model, num_heads, dropout)
        self._init_ffn(d_model, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                padding_mask: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt)))
        attn = self.multihead_attn(tgt + query_pos, memory + pos, memory, padding_mask)
        tgt = self.norm2(tgt + self.dropout(attn))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


class TransformerEncoder(nn.Module):
    def __init__(self, num_layers: int, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return src


class TransformerDecoder(nn.Module):
    """Decoder layers plus the final LayerNorm, which also normalises every intermediate output."""

    def __init__(self, num_layers: int, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos, padding_mask, return_intermediate: bool) -> list[torch.Tensor]:
        """Returns the normed outputs of every layer (``return_intermediate``) or of the last one only."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos, padding_mask)
            if return_intermediate:
                outputs.append(self.norm(tgt))
        return outputs if return_intermediate else [self.norm(tgt)]


class Transformer(nn.Module):
    """``forward(src [B,S,d], padding_mask [B,S], query_embed [Q,d], pos [B,S,d]) -> (decoder outputs, memory)``:
    a list of ``[B,Q,d]`` (every layer's with ``return_intermediate``, else the last) and the encoder output
    ``[B,S,d]`` (the segmentation head attends to it)."""

    def __init__(self, d_model: int, num_heads: int, encoder_layers: int, decoder_layers: int, ffn_dim: int,
                 dropout: float):
        super().__init__()
        self.encoder = TransformerEncoder(encoder_layers, d_model, num_heads, ffn_dim, dropout)
        self.decoder = TransformerDecoder(decoder_layers, d_model, num_heads, ffn_dim, dropout)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, padding_mask, query_embed, pos, return_intermediate: bool = False):
        memory = self.encoder(src, pos, padding_mask)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        return self.decoder(tgt, memory, pos, query_pos, padding_mask, return_intermediate), memory
