# SPDX-License-Identifier: Apache-2.0
"""Hungarian matching of predictions to ground truth (one prediction per target, minimum total cost)."""
from __future__ import annotations

import torch

from .._optional import require
from .box_ops import cxcywh_to_xyxy, pairwise_generalized_iou


class HungarianMatcher:
    """Cost = class * focal-style classification cost (sigmoid) or -probability (softmax) + box * L1 + giou * -GIoU.

    ``match(logits [B,Q,C], boxes [B,Q,4], targets) -> list of (query indices, target indices)`` per image;
    targets are dicts with "labels" [T] and "boxes" [T,4] (cxcywh, normalised).
    """

    def __init__(self, class_weight: float = 2.0, box_weight: float = 5.0, giou_weight: float = 2.0,
                 sigmoid: bool = True, alpha: float = 0.25, gamma: float = 2.0):
        self.class_weight, self.box_weight, self.giou_weight = class_weight, box_weight, giou_weight
        self.sigmoid, self.alpha, self.gamma = sigmoid, alpha, gamma
        self._scipy = require("scipy.optimize", "Hungarian matching (pip install 'detr-deploy[train]')")

    @torch.no_grad()
    def match(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict]) -> list[tuple[torch.Tensor, ...]]:
        results = []
        for b, target in enumerate(targets):
            labels, gt = target["labels"], target["boxes"]
            if len(labels) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                results.append((empty, empty))
                continue
            if self.sigmoid:
                prob = logits[b].sigmoid()
                neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
                pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
                cost_class = pos[:, labels] - neg[:, labels]
            else:
                cost_class = -logits[b].softmax(-1)[:, labels]
            cost_box = torch.cdist(boxes[b], gt, p=1)
            cost_giou = -pairwise_generalized_iou(cxcywh_to_xyxy(boxes[b]), cxcywh_to_xyxy(gt))
            cost = self.box_weight * cost_box + self.class_weight * cost_class + self.giou_weight * cost_giou
            rows, cols = self._scipy.linear_sum_assignment(cost.cpu().numpy())
            results.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return results
