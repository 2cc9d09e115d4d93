# SPDX-License-Identifier: Apache-2.0
"""Model outputs -> detections in original-image pixels (the reference post-processors, in numpy)."""
from __future__ import annotations

import numpy as np

from ..artifact.metadata import Postprocess


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def class_scores(logits: np.ndarray, kind: str) -> np.ndarray:
    """Per-(query, class) scores ``[..., Q, C']`` as the post-processing ranks them: softmax without the no-object
    column ("softmax-drop-last", DETR) or sigmoid ("sigmoid-top-k", Deformable DETR)."""
    if kind == "softmax-drop-last":
        return softmax(logits)[..., :-1]
    if kind == "sigmoid-top-k":
        return sigmoid(logits)
    raise ValueError(f"unknown postprocessing kind {kind!r}")


def postprocess_detections(logits: np.ndarray, pred_boxes: np.ndarray, post: Postprocess,
                           target_sizes: list[tuple[int, int]], threshold: float,
                           id2label: dict[int, str] | None = None) -> list[dict]:
    """Per image: ``{"boxes" [K,4] xyxy float32, "scores" [K], "labels" int64 [K], "names" list[str]}``.

    "softmax-drop-last" (DETR): softmax over classes + no-object, drop the last, best class per query.
    "sigmoid-top-k" (Deformable DETR): sigmoid, top-k over queries x classes (k = ``post.top_k``).
    Boxes are scaled to ``target_sizes`` (height, width) and not clamped (reference behaviour); detections with
    ``score > threshold`` are kept, sorted by score, highest first.
    """
    logits = logits.astype(np.float32)
    boxes = cxcywh_to_xyxy(pred_boxes.astype(np.float32))
    results = []
    for i, (h, w) in enumerate(target_sizes):
        if post.kind == "softmax-drop-last":
            prob = class_scores(logits[i], post.kind)
            labels = prob.argmax(-1)
            scores = prob[np.arange(prob.shape[0]), labels]
            chosen = boxes[i]
        elif post.kind == "sigmoid-top-k":
            num_classes = logits.shape[-1]
            flat = class_scores(logits[i], post.kind).reshape(-1)
            k = min(post.top_k, flat.size)
            top = np.argpartition(-flat, k - 1)[:k]
            top = top[np.argsort(-flat[top], kind="stable")]
            scores, labels = flat[top], top % num_classes
            chosen = boxes[i][top // num_classes]
        else:
            raise ValueError(f"unknown postprocessing kind {post.kind!r}")
        scale = np.array([w, h, w, h], dtype=np.float32)
        keep = scores > threshold
        order = np.argsort(-scores[keep], kind="stable")
        kept_labels = labels[keep][order].astype(np.int64)
        names = [id2label.get(int(label), str(int(label))) for label in kept_labels] if id2label else \
            [str(int(label)) for label in kept_labels]
        results.append({"boxes": (chosen[keep][order] * scale).astype(np.float32),
                        "scores": scores[keep][order].astype(np.float32), "labels": kept_labels, "names": names})
    return results
