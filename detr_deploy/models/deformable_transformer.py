# SPDX-License-Identifier: Apache-2.0
"""Deformable DETR's encoder, decoder and two-stage query selection (batch-first).

Parameter names are those of fundamentalvision/Deformable-DETR (``transformer.*``). Note the decoder's norm
naming from the reference: ``norm2`` follows self-attention and ``norm1`` cross-attention.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import MultiheadAttention
from .deformable_attention import MSDeformAttn
from .heads import inverse_sigmoid
from .position_encoding import ProposalSineEmbedding
from .transformer import FeedForwardMixin

Shapes = Sequence[tuple[int, int]]


class DeformableEncoderLayer(FeedForwardMixin):
    """MSDeformAttn(src + pos -> src) -> add & norm1 -> FFN -> add & norm2."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self._init_ffn(d_model, ffn_dim, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout(attn))
        return self.norm2(src + self.dropout(self.ffn(src)))


class DeformableDecoderLayer(FeedForwardMixin):
    """Self-attention -> norm2 -> MSDeformAttn to the memory -> norm1 -> FFN -> norm3."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiheadAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self._init_ffn(d_model, ffn_dim, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes, level_start_index, padding_mask):
        q = tgt + query_pos
        tgt = self.norm2(tgt + self.dropout(self.self_attn(q, q, tgt)))
        attn = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                               padding_mask)
        tgt = self.norm1(tgt + self.dropout(attn))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


def encoder_reference_points(spatial_shapes: Shapes, valid_ratios: torch.Tensor) -> torch.Tensor:
    """Pixel centres of every level, normalised by the valid size: ``[B, S, L, 2]`` (x, y).

    ``valid_ratios [B, L, 2]`` is (valid_W / W, valid_H / H) per level.
    """
    refs = []
    for level, (h, w) in enumerate(spatial_shapes):
        # arange + 0.5 equals the reference's linspace(0.5, n - 0.5, n) bit for bit
        ys = torch.arange(h, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5
        xs = torch.arange(w, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * h)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * w)
        refs.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]


class DeformableEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, src, pos, spatial_shapes, level_start_index, valid_ratios, padding_mask):
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src


class DeformableDecoder(nn.Module):
    """Decoder layers (no final norm). With ``bbox_embed`` (box refinement) each layer updates the references."""

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(DeformableDecoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, tgt, reference_points, memory, spatial_shapes, level_start_index, valid_ratios, query_pos,
                padding_mask, bbox_embed: nn.ModuleList | None = None):
        """Returns (outputs, references): per layer, ``[B,Q,d]`` and the ``[B,Q,2|4]`` reference it used."""
        outputs, references = [], []
        for idx, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_input = reference_points[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            else:
                ref_input = reference_points[:, :, None] * valid_ratios[:, None]
            tgt = layer(tgt, query_pos, ref_input, memory, spatial_shapes, level_start_index, padding_mask)
            outputs.append(tgt)
            references.append(reference_points)
            if bbox_embed is not None:
                delta = bbox_embed[idx](tgt)
                if reference_points.shape[-1] == 4:
                    reference_points = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    xy = delta[..., :2] + inverse_sigmoid(reference_points)
                    reference_points = torch.cat([xy, delta[..., 2:]], -1).sigmoid()
                reference_points = reference_points.detach()
        return outputs, references


class DeformableTransformer(nn.Module):
    """Encoder + query preparation (learned queries or two-stage proposals) + decoder.

    ``forward(srcs, masks, pos_embeds, query_embed, class_embed, bbox_embed) -> dict``:
        srcs / masks / pos_embeds: per level ``[B,d,H_l,W_l]`` / ``[B,H_l,W_l]`` True = padding / ``[B,d,H_l,W_l]``;
        query_embed ``[Q, 2d]`` (query position | content) unless two-stage;
        "outputs", "references": per decoder layer (see DeformableDecoder);
        "enc_outputs": two-stage only, {"logits" [B,S,C], "pred_boxes" [B,S,4]} of the proposal head.
    """

    def __init__(self, d_model: int, num_heads: int, encoder_layers: int, decoder_layers: int, ffn_dim: int,
                 dropout: float, num_feature_levels: int, encoder_points: int, decoder_points: int,
                 two_stage: bool, num_proposals: int):
        super().__init__()
        self.d_model, self.two_stage, self.num_proposals = d_model, two_stage, num_proposals
        common = dict(d_model=d_model, ffn_dim=ffn_dim, dropout=dropout, n_levels=num_feature_levels,
                      n_heads=num_heads)
        self.encoder = DeformableEncoder(encoder_layers, n_points=encoder_points, **common)
        self.decoder = DeformableDecoder(decoder_layers, n_points=decoder_points, **common)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(2 * d_model, 2 * d_model)
            self.pos_trans_norm = nn.LayerNorm(2 * d_model)
            self.proposal_embedding = ProposalSineEmbedding(d_model // 2)
        else:
            self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
        """``[B,H,W]`` True = padding -> ``[B, 2]`` (valid_W / W, valid_H / H)."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
        valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
        return torch.stack([valid_w / w, valid_h / h], -1)

    def encoder_proposals(self, memory: torch.Tensor, padding_mask: torch.Tensor, masks: list[torch.Tensor],
                          spatial_shapes: Shapes) -> tuple[torch.Tensor, torch.Tensor]:
        """One box proposal per encoder position: (normed memory [B,S,d], proposal logits [B,S,4], +inf if invalid)."""
        proposals = []
        for level, ((h, w), mask) in enumerate(zip(spatial_shapes, masks)):
            valid_h = (~mask[:, :, 0]).sum(1)
            valid_w = (~mask[:, 0, :]).sum(1)
            ys = torch.arange(h, dtype=memory.dtype, device=memory.device)
            xs = torch.arange(w, dtype=memory.dtype, device=memory.device)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([grid_x, grid_y], -1)  # [H, W, 2] (x, y)
            scale = torch.stack([valid_w, valid_h], -1).reshape(-1, 1, 1, 2)
            grid = (grid[None] + 0.5) / scale  # [B, H, W, 2]
            wh = torch.full_like(grid, 0.05 * (2.0 ** level))
            proposals.append(torch.cat((grid, wh), -1).reshape(memory.shape[0], -1, 4))
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1)
        logits = torch.log(proposals / (1 - proposals))
        # Or on [B,S] then unsqueeze (not a keepdim [B,S,1] Or): onnxslim's shape inference turns that 1 into 4/d_model
        invalid = (padding_mask | ~valid)[..., None]
        logits = logits.masked_fill(invalid, float("inf"))
        memory = memory.masked_fill(invalid, 0.0)
        return self.enc_output_norm(self.enc_output(memory)), logits

    def forward(self, srcs, masks, pos_embeds, query_embed, class_embed: nn.ModuleList,
                bbox_embed: nn.ModuleList, refine: bool) -> dict:
        spatial_shapes = [(src.shape[2], src.shape[3]) for src in srcs]
        src_flat = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)  # [B, S, d]
        mask_flat = torch.cat([mask.flatten(1) for mask in masks], 1)  # [B, S]
        pos_flat = torch.cat([pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                              for lvl, pos in enumerate(pos_embeds)], 1)
        shapes = torch.tensor(spatial_shapes, dtype=torch.int64, device=src_flat.device)
        level_start_index = torch.cat((shapes.new_zeros((1,)), shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([self.valid_ratios(m) for m in masks], 1)  # [B, L, 2]

        memory = self.encoder(src_flat, pos_flat, spatial_shapes, level_start_index, valid_ratios, mask_flat)

        batch = memory.shape[0]
        result: dict = {}
        if self.two_stage:
            output_memory, proposal_logits = self.encoder_proposals(memory, mask_flat, masks, spatial_shapes)
            enc_logits = class_embed[-1](output_memory)
            enc_coords = bbox_embed[-1](output_memory) + proposal_logits
            result["enc_outputs"] = {"logits": enc_logits, "pred_boxes": enc_coords.sigmoid()}
            # proposals ranked by the first class column only, as in the reference
            topk = torch.topk(enc_logits[..., 0], self.num_proposals, dim=1)[1]
            topk_coords = torch.gather(enc_coords, 1, topk.unsqueeze(-1).expand(-1, -1, 4)).detach()
            reference_points = topk_coords.sigmoid()
            pos_trans = self.pos_trans_norm(self.pos_trans(self.proposal_embedding(topk_coords)))
            query_pos, tgt = torch.split(pos_trans, self.d_model, dim=2)
        else:
            query_pos, tgt = torch.split(query_embed, self.d_model, dim=1)
            query_pos = query_pos.unsqueeze(0).expand(batch, -1, -1)
            tgt = tgt.unsqueeze(0).expand(batch, -1, -1)
            reference_points = self.reference_points(query_pos).sigmoid()

        outputs, references = self.decoder(tgt, reference_points, memory, spatial_shapes, level_start_index,
                                           valid_ratios, query_pos, mask_flat, bbox_embed if refine else None)
        result.update(outputs=outputs, references=references)
        return result
