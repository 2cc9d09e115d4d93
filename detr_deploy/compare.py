# SPDX-License-Identifier: Apache-2.0
"""Comparison metrics of a reference and an artifact on the same inputs: numbers, not just pass/fail. numpy only.

Used by export verification (``detr-export``) and by the accuracy gate (``detr-parity``): raw-output differences and
top-k agreement, detection matching, a COCO-style mAP of one set of detections against another, and the
tolerances both apply.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact.metadata import Postprocess
from .runtime.postprocess import class_scores
from .runtime.segmentation import label_map


@dataclass(frozen=True)
class Tolerance:
    """Limits an artifact must meet against the PyTorch reference.

    Attributes: max_abs_logits, max_abs_boxes (raw outputs), min_top_k_agreement (fraction of the reference's
    top-k (query, label) pairs), min_matched (detections matched at IoU >= 0.9 with the same label),
    max_score_delta (matched detections), max_map_drop (COCO mAP of the artifact against the reference's detections,
    below the reference's own), max_coco_map_drop (true COCO mAP with --coco, below the reference's),
    max_abs_masks (segmentation mask logits), min_pixel_agreement (panoptic maps: pixels with the reference's
    label), min_pq_vs_reference (PQ of the artifact with the reference's panoptic maps as ground truth),
    max_pq_drop (true PQ with COCO panoptic annotations, below the reference's).
    """

    max_abs_logits: float
    max_abs_boxes: float
    min_top_k_agreement: float
    min_matched: float = 0.0
    max_score_delta: float = 1.0
    max_map_drop: float = 1.0
    max_coco_map_drop: float = 1.0
    max_abs_masks: float = 1e9
    min_pixel_agreement: float = 0.0
    min_pq_vs_reference: float = 0.0
    max_pq_drop: float = 1.0


# Defaults per precision. FP32 differs from PyTorch by float rounding only; FP16 and INT8 limits come from the
# measurements in benchmarks/precision.py (worst case over the test models, with margin).
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(1e-3, 1e-3, 0.99, min_matched=0.99, max_score_delta=1e-3, max_map_drop=0.01,
                      max_coco_map_drop=0.005, max_abs_masks=1e-3, min_pixel_agreement=0.99,
                      min_pq_vs_reference=0.95, max_pq_drop=0.005),
    "fp16": Tolerance(0.5, 0.05, 0.85, min_matched=0.9, max_score_delta=0.05, max_map_drop=0.05,
                      max_coco_map_drop=0.02, max_abs_masks=1.0, min_pixel_agreement=0.95,
                      min_pq_vs_reference=0.85, max_pq_drop=0.02),
    # INT8 max limits sit above the worst outlier of a good graph (the shapes model, percentile calibration: max
    # |dbox| 0.21, max score delta 0.44 over 1314 detections, COCO mAP -0.002); matched and mAP drop catch bad ones
    "int8": Tolerance(3.0, 0.3, 0.5, min_matched=0.6, max_score_delta=0.5, max_map_drop=0.25,
                      max_coco_map_drop=0.1, max_abs_masks=5.0, min_pixel_agreement=0.8, min_pq_vs_reference=0.6,
                      max_pq_drop=0.1),
}
TOLERANCE_FIELDS = set(Tolerance.__dataclass_fields__)


# --- raw outputs ----------------------------------------------------------------------------------------------
def top_k_pairs(logits: np.ndarray, post: Postprocess, k: int) -> list[set[tuple[int, int]]]:
    """Per image, the k highest-scoring (query, label) pairs as the post-processing ranks them."""
    scores = class_scores(logits.astype(np.float64), post.kind)
    result = []
    for img in scores:
        if post.kind == "softmax-drop-last":  # one detection per query: its best label
            labels = img.argmax(-1)
            order = np.argsort(-img.max(-1), kind="stable")[:k]
            result.append({(int(q), int(labels[q])) for q in order})
        else:
            order = np.argsort(-img.reshape(-1), kind="stable")[:k]
            result.append({(int(i) // img.shape[1], int(i) % img.shape[1]) for i in order})
    return result


@dataclass
class OutputDiff:
    """Raw-output agreement of one input batch (``max_abs_masks`` only for segmentation outputs)."""

    label: str
    max_abs_logits: float
    max_abs_boxes: float
    mean_abs_logits: float
    mean_abs_boxes: float
    top_k: int
    top_k_agreement: float  # fraction of the reference's top-k (query, label) pairs the artifact also has
    max_abs_masks: float | None = None

    def violations(self, tolerance: Tolerance) -> list[str]:
        """Which raw-output limits this batch exceeds."""
        problems = []
        if self.max_abs_logits > tolerance.max_abs_logits:
            problems.append(f"max |dlogit| {self.max_abs_logits:.2e} > {tolerance.max_abs_logits:.0e}")
        if self.max_abs_boxes > tolerance.max_abs_boxes:
            problems.append(f"max |dbox| {self.max_abs_boxes:.2e} > {tolerance.max_abs_boxes:.0e}")
        if self.top_k_agreement < tolerance.min_top_k_agreement:
            problems.append(f"top-k agreement {self.top_k_agreement:.1%} < {tolerance.min_top_k_agreement:.0%}")
        if self.max_abs_masks is not None and self.max_abs_masks > tolerance.max_abs_masks:
            problems.append(f"max |dmask| {self.max_abs_masks:.2e} > {tolerance.max_abs_masks:.0e}")
        return problems

    def row(self) -> str:
        masks = "" if self.max_abs_masks is None else f" {self.max_abs_masks:>12.2e}"
        return (f"  {self.label:<26} {self.max_abs_logits:>12.2e} {self.max_abs_boxes:>12.2e} "
                f"{self.mean_abs_logits:>12.2e} {100 * self.top_k_agreement:>9.1f}%{masks}")


def table_header(with_masks: bool = False) -> str:
    """The header of :meth:`OutputDiff.row` lines."""
    return (f"  {'input':<26} {'max|dlogit|':>12} {'max|dbox|':>12} {'mean|dlogit|':>12} {'top-k agr':>10}"
            + (f" {'max|dmask|':>12}" if with_masks else ""))


def compare_outputs(label: str, reference: dict[str, np.ndarray], artifact: dict[str, np.ndarray],
                    post: Postprocess) -> OutputDiff:
    """Compare ``logits [B,Q,C]``, ``pred_boxes [B,Q,4]`` (and ``pred_masks`` when both have it) of a reference
    and an artifact; ``post`` is the artifact's post-processing (how scores are ranked, and k)."""
    ref_l, art_l = reference["logits"].astype(np.float64), artifact["logits"].astype(np.float64)
    ref_b, art_b = reference["pred_boxes"].astype(np.float64), artifact["pred_boxes"].astype(np.float64)
    if ref_l.shape != art_l.shape or ref_b.shape != art_b.shape:
        raise ValueError(f"output shapes differ: reference {ref_l.shape}/{ref_b.shape}, "
                         f"artifact {art_l.shape}/{art_b.shape}")
    per_query = post.kind == "softmax-drop-last"
    k = min(post.top_k, ref_l.shape[1] * (1 if per_query else ref_l.shape[2]))
    ref_pairs, art_pairs = top_k_pairs(ref_l, post, k), top_k_pairs(art_l, post, k)
    agreement = float(np.mean([len(a & b) / k for a, b in zip(ref_pairs, art_pairs)]))
    masks = None
    if "pred_masks" in reference and "pred_masks" in artifact:
        masks = float(np.abs(reference["pred_masks"].astype(np.float64) - artifact["pred_masks"]).max())
    return OutputDiff(label, float(np.abs(ref_l - art_l).max()), float(np.abs(ref_b - art_b).max()),
                      float(np.abs(ref_l - art_l).mean()), float(np.abs(ref_b - art_b).mean()), k, agreement, masks)


# --- detections -----------------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N,4]`` x ``[M,4]`` xyxy -> ``[N,M]`` IoU."""
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class DetectionMatch:
    """Reference detections found again in the artifact's (same label, IoU >= threshold), greedy by score."""

    reference: int
    matched: int
    score_deltas: list[float]
    box_l1: list[float]  # mean abs corner difference of matched boxes, in pixels

    @property
    def fraction(self) -> float:
        return self.matched / self.reference if self.reference else 1.0


def match_detections(reference: dict, artifact: dict, iou_threshold: float = 0.9) -> DetectionMatch:
    """Match runtime results (``boxes`` xyxy, ``scores``, ``labels``) of one image."""
    ref_boxes, art_boxes = np.asarray(reference["boxes"], np.float64), np.asarray(artifact["boxes"], np.float64)
    if len(ref_boxes) == 0:
        return DetectionMatch(0, 0, [], [])
    if len(art_boxes) == 0:
        return DetectionMatch(len(ref_boxes), 0, [], [])
    iou = box_iou(ref_boxes, art_boxes)
    same = np.asarray(reference["labels"])[:, None] == np.asarray(artifact["labels"])[None, :]
    iou = np.where(same, iou, 0.0)
    used = np.zeros(len(art_boxes), bool)
    deltas, l1 = [], []
    for i in np.argsort(-np.asarray(reference["scores"]), kind="stable"):
        candidates = np.where(~used & (iou[i] >= iou_threshold))[0]
        if len(candidates) == 0:
            continue
        j = candidates[np.argmax(iou[i, candidates])]
        used[j] = True
        deltas.append(abs(float(reference["scores"][i]) - float(artifact["scores"][j])))
        l1.append(float(np.abs(ref_boxes[i] - art_boxes[j]).mean()))
    return DetectionMatch(len(ref_boxes), len(deltas), deltas, l1)


IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def detection_map(ground_truth: list[dict], detections: list[dict], max_detections: int = 100) -> float | None:
    """COCO box mAP@[.5:.95] of ``detections`` against ``ground_truth`` (both: per image, in the same order, runtime
    results with ``boxes`` xyxy, ``labels`` and, for detections, ``scores``). None when there is no ground truth.

    The COCO evaluation's rules for the case the gate needs (no crowd regions, all areas, 100 detections per image
    and class): greedy matching by score to the unmatched ground truth of highest IoU >= t, precision made
    monotone, 101-point recall sampling, mean over classes with ground truth and over the ten IoU thresholds. Equal
    to pycocotools on such data (tests/test_compare.py), so the gate needs no pycocotools.
    """
    labels = sorted({int(v) for g in ground_truth for v in g["labels"]})
    if not labels:
        return None
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS), len(labels)))
    for c, label in enumerate(labels):
        scores, hits, total_gt = [], [], 0  # hits: [detections, thresholds] True = true positive
        for gt, det in zip(ground_truth, detections):
            gt_boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)[np.asarray(gt["labels"]) == label]
            keep = np.asarray(det["labels"]) == label
            det_scores = np.asarray(det["scores"], np.float64)[keep]
            det_boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)[keep]
            order = np.argsort(-det_scores, kind="mergesort")[:max_detections]
            det_scores, det_boxes = det_scores[order], det_boxes[order]
            total_gt += len(gt_boxes)
            matched = np.zeros((len(det_boxes), len(IOU_THRESHOLDS)), bool)
            if len(gt_boxes) and len(det_boxes):
                iou = box_iou(det_boxes, gt_boxes)
                for t, threshold in enumerate(IOU_THRESHOLDS):
                    taken = np.zeros(len(gt_boxes), bool)
                    for d in range(len(det_boxes)):
                        candidates = np.where(~taken & (iou[d] >= min(threshold, 1 - 1e-10)))[0]
                        if len(candidates):
                            g = candidates[np.argmax(iou[d, candidates])]
                            taken[g] = matched[d, t] = True
            scores.append(det_scores)
            hits.append(matched)
        if total_gt == 0:
            continue
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="mergesort")
        tp = np.concatenate(hits)[order]
        tp_sum = np.cumsum(tp, axis=0, dtype=np.float64)
        fp_sum = np.cumsum(~tp, axis=0, dtype=np.float64)
        for t in range(len(IOU_THRESHOLDS)):
            recall = tp_sum[:, t] / total_gt
            prec = tp_sum[:, t] / (tp_sum[:, t] + fp_sum[:, t] + np.spacing(1))
            prec = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
            index = np.searchsorted(recall, RECALL_POINTS, side="left")
            sampled = np.zeros(len(RECALL_POINTS))
            valid = index < len(prec)
            sampled[valid] = prec[index[valid]]
            precision[t, :, c] = sampled
    return float(precision.mean())


# --- segmentation ---------------------------------------------------------------------------------------------------
def panoptic_agreement(reference: dict, artifact: dict) -> dict[str, float]:
    """Two panoptic results of one image: ``pixel_agreement`` (fraction of pixels with the same label, "no segment"
    included) and ``matched_iou`` (per reference segment, the best IoU with an artifact segment of its label, 0
    when there is none; the mean; 1.0 without reference segments), plus the segment counts."""
    ref_ids, art_ids = np.asarray(reference["segmentation"]), np.asarray(artifact["segmentation"])
    agreement = float(np.mean(label_map(reference) == label_map(artifact)))
    ious = []
    for ref in {s["id"]: s for s in reference["segments_info"]}.values():
        inside = ref_ids == ref["id"]
        best = 0.0
        for art in {s["id"]: s for s in artifact["segments_info"]}.values():
            if art["label_id"] != ref["label_id"]:
                continue
            other = art_ids == art["id"]
            union = np.count_nonzero(inside | other)
            best = max(best, np.count_nonzero(inside & other) / union if union else 0.0)
        ious.append(best)
    return {"pixel_agreement": agreement, "matched_iou": float(np.mean(ious)) if ious else 1.0,
            "reference_segments": len(ious), "artifact_segments": len({s["id"] for s in artifact["segments_info"]})}
