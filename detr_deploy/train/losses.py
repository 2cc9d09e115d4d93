# SPDX-License-Identifier: Apache-2.0
"""DETR-family set losses: classification (sigmoid focal, or cross-entropy with a no-object weight), L1, GIoU,
on the final and every auxiliary decoder output (and the two-stage encoder proposals); for segmentation models
the matched masks' sigmoid focal and dice losses on the final output, as the DETR paper trains its mask head."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .box_ops import cxcywh_to_xyxy, pairwise_generalized_iou
from .matcher import HungarianMatcher


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Summed focal loss (Lin et al. 2017) of ``logits`` against 0/1 ``targets`` of the same shape."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed dice loss of ``logits [N, P]`` (flattened masks) against 0/1 ``targets [N, P]``."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    return (1 - (numerator + 1) / (prob.sum(-1) + targets.sum(-1) + 1)).sum()


class SetCriterion:
    """``criterion(outputs, targets) -> (total loss, {name: value})``.

    Args:
        num_classes: classes without no-object.
        sigmoid: Deformable DETR (focal) vs DETR (softmax with the last class = no object, weight ``eos_coef``).
    """

    def __init__(self, num_classes: int, sigmoid: bool = True, class_weight: float = 2.0, box_weight: float = 5.0,
                 giou_weight: float = 2.0, eos_coef: float = 0.1, mask_weight: float = 1.0, dice_weight: float = 1.0):
        self.num_classes, self.sigmoid = num_classes, sigmoid
        self.weights = {"class": class_weight, "l1": box_weight, "giou": giou_weight, "mask": mask_weight,
                        "dice": dice_weight}
        self.matcher = HungarianMatcher(class_weight, box_weight, giou_weight, sigmoid=sigmoid)
        self.eos_coef = eos_coef

    def _masks(self, predict_masks, targets: list[dict], indices, num_boxes: float):
        """The matched queries' masks (``predict_masks(image_index, query_index) -> [N,h,w]``, upsampled to the
        targets' input resolution) against the targets."""
        images = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
        pred = predict_masks(images, torch.cat([q for q, _ in indices]))
        gt = torch.cat([t["masks"][c] for t, (_, c) in zip(targets, indices)])
        if len(gt) == 0:
            zero = pred.sum() * 0
            return {"mask": zero, "dice": zero}
        pred = F.interpolate(pred[:, None], size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        pred, gt = pred.flatten(1), gt.flatten(1)
        focal = sigmoid_focal_loss(pred, gt) / pred.shape[1]  # the focal loss of each mask, averaged over pixels
        return {"mask": focal / num_boxes, "dice": dice_loss(pred, gt) / num_boxes}

    def _single(self, logits, boxes, targets, num_boxes: float, pred_masks=None) -> dict[str, torch.Tensor]:
        indices = self.matcher.match(logits, boxes, targets)
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
        query_idx = torch.cat([q for q, _ in indices])
        labels = torch.cat([t["labels"][c] for t, (_, c) in zip(targets, indices)])
        if self.sigmoid:
            onehot = torch.zeros_like(logits)
            onehot[batch_idx, query_idx, labels] = 1.0
            loss_class = sigmoid_focal_loss(logits, onehot) / num_boxes
        else:
            classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
            classes[batch_idx, query_idx] = labels
            weight = torch.ones(self.num_classes + 1, device=logits.device)
            weight[-1] = self.eos_coef
            loss_class = F.cross_entropy(logits.transpose(1, 2), classes, weight)
        matched = boxes[batch_idx, query_idx]
        gt = torch.cat([t["boxes"][c] for t, (_, c) in zip(targets, indices)])
        loss_l1 = F.l1_loss(matched, gt, reduction="sum") / num_boxes
        giou = pairwise_generalized_iou(cxcywh_to_xyxy(matched), cxcywh_to_xyxy(gt)).diagonal()
        loss_giou = (1 - giou).sum() / num_boxes
        losses = {"class": loss_class, "l1": loss_l1, "giou": loss_giou}
        if pred_masks is not None:
            losses.update(self._masks(pred_masks, targets, indices, num_boxes))
        return losses

    def __call__(self, outputs: dict, targets: list[dict]) -> tuple[torch.Tensor, dict[str, float]]:
        num_boxes = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        stages = [("", outputs)] + [(f"aux{i}_", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        if "enc_outputs" in outputs:
            enc_targets = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]  # class-agnostic
            stages.append(("enc_", outputs["enc_outputs"], enc_targets))
        total, logged = 0.0, {}
        for stage in stages:
            prefix, out = stage[0], stage[1]
            losses = self._single(out["logits"], out["pred_boxes"], stage[2] if len(stage) > 2 else targets,
                                  num_boxes, out.get("predict_masks"))
            for name, value in losses.items():
                total = total + self.weights[name] * value
                logged[prefix + name] = float(value.detach())
        logged["total"] = float(total.detach())
        return total, logged
