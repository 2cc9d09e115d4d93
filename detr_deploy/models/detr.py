# SPDX-License-Identifier: Apache-2.0
"""DETR: ResNet C5 -> 1x1 projection -> transformer -> class and box heads."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbone import Backbone
from .base import DetrFamilyModel
from .config import DetrConfig
from .heads import MLP
from .masks import downsample_mask, padding_mask_from_pixel_mask
from .position_encoding import SinePositionEmbedding
from .transformer import Transformer


@dataclass
class DetrPass:
    """One forward pass of DETR: the ``outputs`` dict and the intermediate tensors the segmentation head reads:
    ``features`` (every backbone stage, ``[B,C_s,H_s,W_s]``), ``projected`` ``[B,d,h,w]`` (the projected last
    stage), ``memory`` ``[B,h*w,d]`` (encoder output), ``mask`` ``[B,h,w]`` (True = padding), ``hidden``
    ``[B,Q,d]`` (last decoder layer)."""

    outputs: dict
    features: list[torch.Tensor]
    projected: torch.Tensor
    memory: torch.Tensor
    mask: torch.Tensor
    hidden: torch.Tensor


class DETR(DetrFamilyModel):
    """DETR object detector (facebookresearch/detr semantics; parameter names of its checkpoints,
    except the backbone prefix ``backbone.body.`` for ``backbone.0.body.``).

    ``forward(pixel_values [B,3,H,W] normalized, pixel_mask [B,H,W] 1 = real pixel) -> dict``:
        "logits"      [B, Q, num_classes + 1] (last = no object; softmax),
        "pred_boxes"  [B, Q, 4] (cx, cy, w, h) in [0, 1] of the unpadded image,
        "aux_outputs" list of the same two keys per earlier decoder layer (training mode only).
    """

    def __init__(self, config: DetrConfig):
        super().__init__(config)
        d = config.d_model
        self.backbone = Backbone(config.backbone)
        self.position_embedding = SinePositionEmbedding(d // 2, offset=0.0)
        self.input_proj = nn.Conv2d(self.backbone.channels[-1], d, kernel_size=1)
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.transformer = Transformer(d, config.num_heads, config.encoder_layers, config.decoder_layers,
                                       config.ffn_dim, config.dropout)
        self.class_embed = nn.Linear(d, config.num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)

    def run(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> DetrPass:
        """The forward pass, keeping what the segmentation head reads besides the outputs."""
        padding_mask = padding_mask_from_pixel_mask(pixel_values, pixel_mask)
        features = self.backbone(pixel_values)
        mask = downsample_mask(padding_mask, features[-1])
        pos = self.position_embedding(mask).flatten(2).transpose(1, 2)  # [B, HW, d]
        projected = self.input_proj(features[-1])
        src = projected.flatten(2).transpose(1, 2)  # [B, HW, d]
        hs, memory = self.transformer(src, mask.flatten(1), self.query_embed.weight, pos,
                                      return_intermediate=self.training)
        outputs = [{"logits": self.class_embed(h), "pred_boxes": self.bbox_embed(h).sigmoid()} for h in hs]
        result = dict(outputs[-1])
        if self.training:
            result["aux_outputs"] = outputs[:-1]
        return DetrPass(result, features, projected, memory, mask, hs[-1])

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict:
        return self.run(pixel_values, pixel_mask).outputs
