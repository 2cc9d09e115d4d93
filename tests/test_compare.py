# SPDX-License-Identifier: Apache-2.0
"""The comparison metrics the gate and export verification share: the gate's mAP equals pycocotools' on the data
the gate gives it, and the panoptic agreement measures what it says."""
from __future__ import annotations

import numpy as np
import pytest

from detr_deploy.compare import detection_map, panoptic_agreement
from detr_deploy.runtime.coco import coco_ground_truth, coco_results


def _scene(rng, count, classes=4, size=200.0):
    xy = rng.uniform(0, size * 0.8, (count, 2))
    wh = rng.uniform(5, size * 0.3, (count, 2))
    return {"boxes": np.concatenate([xy, xy + wh], 1), "labels": rng.integers(0, classes, count),
            "scores": rng.uniform(0, 1, count)}


def _jitter(rng, gt, noise, extra):
    boxes = gt["boxes"] + rng.normal(0, noise, gt["boxes"].shape)
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:]) + 1], 1)
    labels = gt["labels"].copy()
    flip = rng.random(len(labels)) < 0.1
    labels[flip] = (labels[flip] + 1) % 4
    fake = _scene(rng, extra)
    return {"boxes": np.concatenate([boxes, fake["boxes"]]), "labels": np.concatenate([labels, fake["labels"]]),
            "scores": np.concatenate([rng.uniform(0.3, 1, len(labels)), fake["scores"] * 0.5])}


@pytest.mark.parametrize("seed", range(6))
def test_detection_map_equals_pycocotools(seed):
    pytest.importorskip("pycocotools", reason="pycocotools is the oracle here")
    from detr_deploy.evaluation import coco_map

    rng = np.random.default_rng(seed)
    truths = [_scene(rng, int(rng.integers(0, 12))) for _ in range(7)]
    detections = [_jitter(rng, gt, noise=float(rng.uniform(0.5, 8)), extra=int(rng.integers(0, 20))) for gt in truths]
    ids = list(range(1, len(truths) + 1))
    gt_doc = coco_ground_truth(ids, [(300, 300)] * len(ids), [{**t, "scores": np.ones(len(t["labels"]))}
                                                            for t in truths], {i: str(i) for i in range(4)}, -1.0)
    results = [r for i, d in zip(ids, detections) for r in coco_results(i, d)]
    theirs = coco_map(gt_doc, results, ids)["mAP"]
    ours = detection_map(truths, detections)
    print(f"\nseed {seed}: ours {ours:.6f} pycocotools {theirs:.6f}")
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_detection_map_edge_cases():
    gt = {"boxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([1])}
    perfect = {**gt, "scores": np.array([0.9])}
    assert detection_map([gt], [perfect]) == pytest.approx(1.0)
    wrong_label = {**perfect, "labels": np.array([2])}
    assert detection_map([gt], [wrong_label]) == 0.0
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    assert detection_map([empty], [perfect]) is None  # no ground truth: undefined, not 0


def test_panoptic_agreement():
    ids = np.zeros((4, 6), np.int32)
    ids[:, :3] = 1
    ids[:2, 3:] = 2
    reference = {"segmentation": ids, "segments_info": [{"id": 1, "label_id": 5}, {"id": 2, "label_id": 7}]}
    same = panoptic_agreement(reference, reference)
    assert same["pixel_agreement"] == 1.0 and same["matched_iou"] == 1.0
    shifted = ids.copy()
    shifted[:, 2] = 0  # one column of segment 1 lost: 4 of 24 pixels, IoU 8/12
    other = panoptic_agreement(reference, {"segmentation": shifted, "segments_info": reference["segments_info"]})
    assert other["pixel_agreement"] == pytest.approx(20 / 24)
    assert other["matched_iou"] == pytest.approx((8 / 12 + 1) / 2)
    relabelled = {"segmentation": ids, "segments_info": [{"id": 1, "label_id": 6}, {"id": 2, "label_id": 7}]}
    assert panoptic_agreement(reference, relabelled)["matched_iou"] == pytest.approx(0.5)
