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


def coco_rle(mask) -> dict[str, Any]:
    """A binary mask ``[H, W]`` -> COCO's compressed RLE ``{"size": [H, W], "counts": str}`` (what pycocotools'
    ``mask.encode`` writes and COCO results files carry): run lengths in column-major order starting with a
    zero run, each stored as 5-bit groups (+48, bit 0x20 = "more"), runs after the second as the difference to
    the run two before."""
    import numpy as np

    flat = np.asarray(mask, bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # the first run counts zeros
    out = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        while True:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            out.append(chr(group + (0x20 if more else 0) + 48))
            if not more:
                break
    height, width = np.asarray(mask).shape
    return {"size": [int(height), int(width)], "counts": "".join(out)}


def coco_panoptic_annotation(image_id: int, file_name: str, segmentation, segments_info: list[dict]) -> dict:
    """One image's COCO panoptic prediction: ``{"image_id", "file_name" (the PNG), "segments_info": [{"id",
    "category_id", "iscrowd", "area", "bbox" [x, y, w, h]}]}`` from a panoptic result (segment ids in
    ``segmentation``; labels are the category ids, as for DETR's 250-class COCO layout). Entries that share an id
    (fused stuff) become one segment."""
    import numpy as np

    segmentation = np.asarray(segmentation)
    segments, seen = [], set()
    ids, areas = np.unique(segmentation, return_counts=True)
    area_of = dict(zip(ids.tolist(), areas.tolist()))
    for entry in segments_info:
        if entry["id"] in seen or entry["id"] not in area_of:
            continue
        seen.add(entry["id"])
        ys, xs = np.nonzero(segmentation == entry["id"])
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append({"id": int(entry["id"]), "category_id": int(entry["label_id"]), "iscrowd": 0,
                         "area": int(area_of[entry["id"]]),
                         "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]})
    return {"image_id": int(image_id), "file_name": file_name, "segments_info": segments}
