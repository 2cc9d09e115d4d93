# SPDX-License-Identifier: Apache-2.0
"""COCO detection metrics through pycocotools (``pip install 'detr-deploy[eval]'``)."""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

from ._optional import require

STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")


def to_coco_results(image_id: int, detections: dict) -> list[dict[str, Any]]:
    """A runtime result (xyxy boxes in pixels) -> COCO results entries ([x, y, w, h])."""
    out = []
    for box, score, label in zip(detections["boxes"], detections["scores"], detections["labels"]):
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append({"image_id": int(image_id), "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score)})
    return out


def coco_map(ground_truth: dict, results: list[dict], image_ids: list[int] | None = None) -> dict[str, float]:
    """COCO box AP of ``results`` against a COCO-format ``ground_truth`` dict (quietly; returns STAT_NAMES)."""
    coco_module = require("pycocotools.coco", "COCO mAP")
    eval_module = require("pycocotools.cocoeval", "COCO mAP")
    gt = coco_module.COCO()
    gt.dataset = copy.deepcopy(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0)
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = eval_module.COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.maximum(evaluator.stats[:6], 0.0)  # -1 means "no such objects"
    return {name: float(value) for name, value in zip(STAT_NAMES, stats)}
