# SPDX-License-Identifier: Apache-2.0
"""Deformable DETR: multi-scale features -> deformable transformer -> per-layer class and box heads."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import ConfigError
from .backbone import Backbone
from .base import DetrFamilyModel
from .config import DeformableDetrConfig
from .deformable_transformer import DeformableTransformer
from .heads import MLP, inverse_sigmoid
from .masks import downsample_mask, padding_mask_from_pixel_mask
from .position_encoding import SinePositionEmbedding


class DeformableDETR(DetrFamilyModel):
    """Deformable DETR (plain, single-scale, box refinement, two-stage) with fundamentalvision semantics.

    Parameter names follow the official checkpoints (backbone prefix ``backbone.body.``; no aliased
    ``transformer.decoder.{class,bbox}_embed`` copies: the heads are passed to the decoder instead).
    Without box refinement ``class_embed``/``bbox_embed`` hold one shared head ``num_pred`` times, as published.

    ``forward(pixel_values [B,3,H,W] normalized, pixel_mask [B,H,W] 1 = real pixel) -> dict``:
        "logits"      [B, Q, num_classes] (sigmoid per class; no no-object column),
        "pred_boxes"  [B, Q, 4] (cx, cy, w, h) in [0, 1] of the unpadded image,
        "aux_outputs" earlier decoder layers (training mode only),
        "enc_outputs" two-stage proposal head (training mode only).
    """

    def __init__(self, config: DeformableDetrConfig):
        super().__init__(config)
        d, num_levels = config.d_model, config.num_feature_levels
        self.backbone = Backbone(config.backbone)
        self.position_embedding = SinePositionEmbedding(d // 2, offset=0.5)
        projections = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d))
                       for c in self.backbone.channels]
        in_channels = self.backbone.channels[-1]
        for _ in range(num_levels - len(projections)):
            # extra levels: stride-2 3x3 conv, the first on the raw last backbone map
            projections.append(nn.Sequential(nn.Conv2d(in_channels, d, 3, stride=2, padding=1), nn.GroupNorm(32, d)))
            in_channels = d
        self.input_proj = nn.ModuleList(projections)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        if not config.two_stage:
            self.query_embed = nn.Embedding(config.num_queries, 2 * d)
        self.transformer = DeformableTransformer(
            d, config.num_heads, config.encoder_layers, config.decoder_layers, config.ffn_dim, config.dropout,
            num_levels, config.encoder_points, config.decoder_points, config.two_stage, config.num_queries)

        class_head = nn.Linear(d, config.num_classes)
        nn.init.constant_(class_head.bias, -math.log((1 - 0.01) / 0.01))
        box_head = MLP(d, d, 4, 3)
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        with torch.no_grad():
            box_head.layers[-1].bias[2:] = -2.0
        if config.with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(config.num_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) for _ in range(config.num_pred))
            for head in self.bbox_embed[1:]:
                nn.init.zeros_(head.layers[-1].bias[2:])
        else:
            self.class_embed = nn.ModuleList([class_head] * config.num_pred)
            self.bbox_embed = nn.ModuleList([box_head] * config.num_pred)
        if config.two_stage:
            for head in self.bbox_embed:
                nn.init.zeros_(head.layers[-1].bias[2:])

    def _features(self, pixel_values: torch.Tensor, padding_mask: torch.Tensor):
        features = self.backbone(pixel_values)
        srcs = [proj(f) for proj, f in zip(self.input_proj, features)]
        for level in range(len(features), self.config.num_feature_levels):
            srcs.append(self.input_proj[level](features[-1] if level == len(features) else srcs[-1]))
        masks = [downsample_mask(padding_mask, src) for src in srcs]
        pos = [self.position_embedding(mask) for mask in masks]
        return srcs, masks, pos

    def _check_size(self, srcs) -> None:
        if not self.config.two_stage or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        positions = sum(int(s.shape[2]) * int(s.shape[3]) for s in srcs)
        if positions < self.config.num_queries:
            raise ConfigError(
                f"input too small for two-stage query selection: {positions} encoder positions for "
                f"{self.config.num_queries} queries; use a larger image or fewer num_queries")

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict:
        padding_mask = padding_mask_from_pixel_mask(pixel_values, pixel_mask)
        srcs, masks, pos = self._features(pixel_values, padding_mask)
        self._check_size(srcs)
        query_embed = None if self.config.two_stage else self.query_embed.weight
        out = self.transformer(srcs, masks, pos, query_embed, self.class_embed, self.bbox_embed,
                               refine=self.config.with_box_refine)
        hs, refs = out["outputs"], out["references"]
        with_aux = self.training
        levels = range(len(hs)) if with_aux else [len(hs) - 1]
        outputs = []
        for level in levels:
            delta = self.bbox_embed[level](hs[level])
            ref = inverse_sigmoid(refs[level])
            if ref.shape[-1] == 4:
                coords = delta + ref
            else:
                coords = torch.cat([delta[..., :2] + ref, delta[..., 2:]], -1)
            outputs.append({"logits": self.class_embed[level](hs[level]), "pred_boxes": coords.sigmoid()})
        result = dict(outputs[-1])
        if with_aux:
            result["aux_outputs"] = outputs[:-1]
            if "enc_outputs" in out:
                result["enc_outputs"] = out["enc_outputs"]
        return result
