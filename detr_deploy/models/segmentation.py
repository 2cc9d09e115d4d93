# SPDX-License-Identifier: Apache-2.0
"""DETR panoptic segmentation (facebookresearch/detr ``DETRsegm``; Hugging Face ``DetrForSegmentation``).

DETR plus a box-attention map (each query's attention over the encoder memory) and a small FPN-style convolutional
head that turns it into a mask logit map per query at the stride-4 resolution. Parameter names are the official
checkpoints' (``bbox_attention.{q,k}_linear``, ``mask_head.lay1..5``, ``gn1..5``, ``adapter1..3``, ``out_lay``),
with the detector's own names at the top level (the official files prefix them with ``detr.``).

Written for export: the per-query expansion is an ``expand`` (no query count baked in by ``repeat``), and the FPN
upsampling is PyTorch's nearest resize as index selects, so exported graphs equal PyTorch at any input size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DetrSegmentationConfig
from .detr import DETR
from .masks import nearest_resize


def _group_norm(channels: int) -> nn.GroupNorm:
    # 8 groups as published (Hugging Face: min(8, C), which only differs for the tiny test models)
    return nn.GroupNorm(min(8, channels), channels)


class MHAttentionMap(nn.Module):
    """Attention weights of queries over a feature map (no values): ``forward(query [B,Q,d], memory [B,d,h,w],
    padding_mask [B,h,w] True = padding) -> [B,Q,M,h,w]``, softmaxed jointly over heads x h x w, as published."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scale = float(self.head_dim) ** -0.5
        self.q_linear = nn.Linear(d_model, d_model)
        self.k_linear = nn.Linear(d_model, d_model)
        for linear in (self.q_linear, self.k_linear):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        b, q, _ = query.shape
        h, w = memory.shape[-2:]
        qh = self.q_linear(query).reshape(b, q, self.num_heads, self.head_dim)
        # k_linear applied as a 1x1 convolution over the map, as the reference does
        k = F.conv2d(memory, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        kh = k.reshape(b, self.num_heads, self.head_dim, h * w)
        weights = torch.einsum("bqnc,bnck->bqnk", qh * self.scale, kh)  # [B, Q, M, h*w]
        weights = weights.masked_fill(padding_mask.flatten(1)[:, None, None, :], float("-inf"))
        weights = weights.flatten(2).softmax(-1)
        return weights.reshape(b, q, self.num_heads, h, w)


class MaskHeadSmallConv(nn.Module):
    """The FPN mask head: ``forward(projected [B,d,h,w], attention [B,Q,M,h,w], fpns [C4, C3, C2]) -> [B*Q,1,H4,W4]``.

    Per query, the projected C5 features and that query's attention maps are concatenated (d + M channels), refined
    by 3x3 conv + GroupNorm + ReLU blocks, and upsampled (nearest) onto C4, C3 and C2, each added after a 1x1
    adapter.
    """

    def __init__(self, dim: int, fpn_dims: list[int], context_dim: int):
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = _group_norm(dim)
        self.lay2 = nn.Conv2d(dim, inter[1], 3, padding=1)
        self.gn2 = _group_norm(inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = _group_norm(inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = _group_norm(inter[3])
        self.lay5 = nn.Conv2d(inter[3], inter[4], 3, padding=1)
        self.gn5 = _group_norm(inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _per_query(x: torch.Tensor, queries: int) -> torch.Tensor:
        # [B, C, H, W] -> [B*Q, C, H, W]: one copy per query (expand keeps Q symbolic in exported graphs)
        return x.unsqueeze(1).expand(-1, queries, -1, -1, -1).flatten(0, 1)

    def forward(self, projected: torch.Tensor, attention: torch.Tensor, fpns: list[torch.Tensor],
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        """With ``image_index [N]`` (training: the matched queries only), ``attention`` is ``[N,M,h,w]``, one map
        per selected query of image ``image_index[i]``, and the result ``[N,1,H4,W4]``: the masks of unmatched
        queries take no part in the loss, and the head is most of a training step's time."""
        if image_index is None:
            queries = attention.shape[1]
            attention = attention.flatten(0, 1)

            def spread(x):
                return self._per_query(x, queries)
        else:
            def spread(x):
                return x[image_index]
        x = torch.cat([spread(projected), attention], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, lay, gn, fpn in ((self.adapter1, self.lay3, self.gn3, fpns[0]),
                                      (self.adapter2, self.lay4, self.gn4, fpns[1]),
                                      (self.adapter3, self.lay5, self.gn5, fpns[2])):
            lateral = spread(adapter(fpn))
            x = F.relu(gn(lay(lateral + nearest_resize(x, lateral.shape[-2:]))))
        return self.out_lay(x)


class DETRSegmentation(DETR):
    """DETR panoptic: the detector (same parameters as :class:`DETR`) plus ``bbox_attention`` and ``mask_head``.

    ``forward(pixel_values [B,3,H,W], pixel_mask [B,H,W] 1 = real pixel) -> dict``: DETR's "logits"
    ``[B,Q,C+1]`` and "pred_boxes" ``[B,Q,4]``, and "pred_masks" ``[B,Q,H4,W4]``: mask logits per query at the
    stride-4 backbone resolution (``H4 = ceil(H / 4)``), as Hugging Face returns them.
    """

    output_names = ("logits", "pred_boxes", "pred_masks")

    def __init__(self, config: DetrSegmentationConfig):
        super().__init__(config)
        d, heads = config.d_model, config.num_heads
        self.bbox_attention = MHAttentionMap(d, heads)
        c2, c3, c4, _ = self.backbone.channels
        self.mask_head = MaskHeadSmallConv(d + heads, [c4, c3, c2], d)

    def masks(self, run, image_index: torch.Tensor | None = None, query_index: torch.Tensor | None = None):
        """Mask logits of a forward pass: ``[B,Q,H4,W4]`` for every query, or ``[N,H4,W4]`` for the selected
        (``image_index [N]``, ``query_index [N]``) pairs."""
        b, _, h, w = run.projected.shape
        memory = run.memory.transpose(1, 2).reshape(b, -1, h, w)  # [B, HW, d] -> [B, d, h, w]
        attention = self.bbox_attention(run.hidden, memory, run.mask)
        c2, c3, c4 = run.features[:3]
        if image_index is None:
            masks = self.mask_head(run.projected, attention, [c4, c3, c2])
            return masks.reshape(b, -1, masks.shape[-2], masks.shape[-1])
        return self.mask_head(run.projected, attention[image_index, query_index], [c4, c3, c2], image_index)[:, 0]

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict:
        """See the class docstring. In training mode "pred_masks" is left out and "predict_masks"
        (``(image_index [N], query_index [N]) -> [N,H4,W4]``) computes the masks of the queries the loss matched."""
        run = self.run(pixel_values, pixel_mask)
        if self.training:
            return {**run.outputs, "predict_masks": lambda images, queries: self.masks(run, images, queries)}
        return {**run.outputs, "pred_masks": self.masks(run)}
