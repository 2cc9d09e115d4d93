# SPDX-License-Identifier: Apache-2.0
"""True COCO detection metrics through pycocotools (``pip install 'detr-deploy[eval]'``), for ``--coco``
annotations; results come from ``detr_deploy.runtime.coco.coco_results``. The gate's mAP of an artifact against
the reference's detections needs no pycocotools (``detr_deploy.compare.detection_map``)."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from ._optional import require

STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")


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
