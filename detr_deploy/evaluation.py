# SPDX-License-Identifier: Apache-2.0
"""True metrics through well-kept libraries (``pip install 'detr-deploy[eval]'``): COCO detection mAP through
pycocotools (``--coco`` annotations; results from ``detr_deploy.runtime.coco.coco_results``), panoptic quality
through torchmetrics' ``PanopticQuality`` (Kirillov et al.'s definition), and COCO panoptic ground truth read from
its JSON + PNG folder. The gate's mAP against the reference's detections needs no pycocotools
(``detr_deploy.compare.detection_map``)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np

from ._optional import require
from .errors import ConfigError
from .runtime.segmentation import label_map

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


def panoptic_pairs(result: dict) -> np.ndarray:
    """A panoptic result -> ``[H, W, 2]`` int64 (category, instance) per pixel, ``void`` (-1) where no segment:
    the input format of torchmetrics' PanopticQuality (unknown categories are void)."""
    pairs = np.stack([label_map(result), np.asarray(result["segmentation"], np.int64)], -1)
    pairs[pairs[..., 0] < 0] = (-1, 0)
    return pairs


def panoptic_quality(targets: list[dict], predictions: list[dict], things, stuffs) -> dict[str, float] | None:
    """PQ, SQ and RQ (averaged over the categories present) of ``predictions`` against ``targets`` (panoptic
    results, one per image, same sizes). ``things`` and ``stuffs`` are the label sets; other labels count as void.
    None when the targets hold no segment at all (PQ is undefined)."""
    if not any(t["segments_info"] for t in targets):
        return None
    torch = require("torch", "panoptic quality")
    metrics = require("torchmetrics.detection", "panoptic quality (pip install 'detr-deploy[eval]')")
    stuffs = set(int(s) for s in stuffs)
    things = set(int(t) for t in things) - stuffs
    metric = metrics.PanopticQuality(things=things, stuffs=stuffs, allow_unknown_preds_category=True,
                                     return_sq_and_rq=True)
    for target, prediction in zip(targets, predictions):
        # void must be a category outside both sets: shift the -1 markers to one past the largest label
        void = max(things | stuffs | {0}) + 1
        t, p = panoptic_pairs(target), panoptic_pairs(prediction)
        for pairs in (t, p):
            pairs[pairs[..., 0] < 0, 0] = void
        metric.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    values = [float(v) for v in metric.compute()]
    # torchmetrics gives NaN when no segment was matched at all: nothing recognised is a quality of 0
    pq, sq, rq = (0.0 if np.isnan(v) else v for v in values)
    return {"pq": pq, "sq": sq, "rq": rq}


def read_coco_panoptic(annotations: Path, png_root: Path | None, image_names: list[str]) -> tuple[list[dict], set]:
    """COCO panoptic ground truth for ``image_names`` (the images' file names): per image a result-like dict
    (``segmentation`` ids from the PNG, ``segments_info`` with ``label_id``), and the stuff category ids.

    ``png_root`` defaults to the COCO layout: the annotations file's path without ``.json``
    (``panoptic_val2017.json`` next to ``panoptic_val2017/``).
    """
    Image = require("PIL.Image", "reading COCO panoptic PNGs")
    data = json.loads(annotations.read_text())
    root = png_root or annotations.with_suffix("")
    by_image = {}
    names = {im["id"]: im["file_name"] for im in data["images"]}
    for ann in data["annotations"]:
        by_image[names[ann["image_id"]]] = ann
    stuff = {c["id"] for c in data.get("categories", []) if not c.get("isthing", 1)}
    results = []
    for name in image_names:
        if name not in by_image:
            raise ConfigError(f"{annotations} has no panoptic annotation for {name}")
        ann = by_image[name]
        png = root / ann["file_name"]
        if not png.is_file():
            raise ConfigError(f"{png}: no such file (the panoptic PNGs of {annotations.name} are looked for in "
                              f"{root}; pass --panoptic-root)")
        rgb = np.asarray(Image.open(png).convert("RGB"), np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        results.append({"segmentation": ids, "segments_info": [
            {"id": s["id"], "label_id": s["category_id"]} for s in ann["segments_info"] if not s.get("iscrowd")]})
    return results, stuff
