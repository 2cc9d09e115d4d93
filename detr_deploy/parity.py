# SPDX-License-Identifier: Apache-2.0
"""Comparing a reference and an artefact on the same inputs: numbers, not just pass/fail. numpy only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def detection_scores(logits: np.ndarray, family: str) -> np.ndarray:
    """Per-(query, class) scores ``[B, Q, C']``: softmax without no-object (DETR) or sigmoid (Deformable)."""
    logits = logits.astype(np.float64)
    if family == "detr":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True))[..., :-1]
    return _sigmoid(logits)


def top_k_pairs(logits: np.ndarray, family: str, k: int) -> list[set[tuple[int, int]]]:
    """Per image, the k highest-scoring (query, label) pairs as the post-processing would rank them."""
    scores = detection_scores(logits, family)
    result = []
    for img in scores:
        if family == "detr":  # one detection per query: its best label
            labels = img.argmax(-1)
            best = img.max(-1)
            order = np.argsort(-best, kind="stable")[:k]
            result.append({(int(q), int(labels[q])) for q in order})
        else:
            flat = img.reshape(-1)
            order = np.argsort(-flat, kind="stable")[:k]
            result.append({(int(i) // img.shape[1], int(i) % img.shape[1]) for i in order})
    return result


@dataclass
class OutputDiff:
    """Raw-output agreement of one input batch."""

    label: str
    max_abs_logits: float
    max_abs_boxes: float
    mean_abs_logits: float
    mean_abs_boxes: float
    top_k: int
    top_k_agreement: float  # fraction of the reference's top-k (query, label) pairs the artefact also has

    def row(self) -> str:
        return (f"  {self.label:<26} {self.max_abs_logits:>12.2e} {self.max_abs_boxes:>12.2e} "
                f"{self.mean_abs_logits:>12.2e} {100 * self.top_k_agreement:>9.1f}%")


TABLE_HEADER = f"  {'input':<26} {'max|dlogit|':>12} {'max|dbox|':>12} {'mean|dlogit|':>12} {'top-k agr':>10}"


def compare_outputs(label: str, reference: dict[str, np.ndarray], artefact: dict[str, np.ndarray], family: str,
                    top_k: int = 100) -> OutputDiff:
    """Compare ``{"logits", "pred_boxes"}`` of a reference and an artefact (``[B,Q,C]``, ``[B,Q,4]``)."""
    ref_l, art_l = reference["logits"].astype(np.float64), artefact["logits"].astype(np.float64)
    ref_b, art_b = reference["pred_boxes"].astype(np.float64), artefact["pred_boxes"].astype(np.float64)
    if ref_l.shape != art_l.shape or ref_b.shape != art_b.shape:
        raise ValueError(f"output shapes differ: reference {ref_l.shape}/{ref_b.shape}, "
                         f"artefact {art_l.shape}/{art_b.shape}")
    k = min(top_k, ref_l.shape[1] * (ref_l.shape[2] if family != "detr" else 1))
    ref_pairs, art_pairs = top_k_pairs(ref_l, family, k), top_k_pairs(art_l, family, k)
    agreement = float(np.mean([len(a & b) / k for a, b in zip(ref_pairs, art_pairs)]))
    return OutputDiff(label, float(np.abs(ref_l - art_l).max()), float(np.abs(ref_b - art_b).max()),
                      float(np.abs(ref_l - art_l).mean()), float(np.abs(ref_b - art_b).mean()), k, agreement)
