# SPDX-License-Identifier: Apache-2.0
"""Detections in COCO's formats (results entries and a ground-truth document), in one place. Pure Python."""
from __future__ import annotations

from typing import Any


def coco_results(image_id: int, detections: dict, decimals: int | None = None) -> list[dict[str, Any]]:
    """A runtime result (``boxes`` xyxy pixels, ``scores``, ``labels``) -> COCO results entries
    ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``; ``decimals`` rounds boxes (scores keep 5)."""
    out = []
    for box, score, label in zip(detections["boxes"], detections["scores"], detections["labels"]):
        x0, y0, x1, y1 = (float(v) for v in box)
        bbox = [x0, y0, x1 - x0, y1 - y0]
        if decimals is not None:
            bbox = [round(v, decimals) for v in bbox]
        out.append({"image_id": int(image_id), "category_id": int(label), "bbox": bbox,
                    "score": round(float(score), 5) if decimals is not None else float(score)})
    return out


def coco_ground_truth(image_ids: list[int], sizes: list[tuple[int, int]], detections: list[dict],
                      id2label: dict[int, str], min_score: float = 0.0) -> dict[str, Any]:
    """Detections above ``min_score`` as a COCO ground-truth document (``images``, ``annotations``,
    ``categories``); ``sizes`` are (height, width) per image."""
    images = [{"id": int(i), "width": int(w), "height": int(h), "file_name": str(i)}
              for i, (h, w) in zip(image_ids, sizes)]
    annotations = []
    for image_id, det in zip(image_ids, detections):
        for entry, score in zip(coco_results(image_id, det), det["scores"]):
            if score > min_score:
                w, h = entry["bbox"][2], entry["bbox"][3]
                annotations.append({"id": len(annotations) + 1, "image_id": entry["image_id"],
                                    "category_id": entry["category_id"], "bbox": entry["bbox"], "area": w * h,
                                    "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": int(k), "name": v} for k, v in id2label.items()]}
