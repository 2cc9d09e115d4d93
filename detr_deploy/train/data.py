# SPDX-License-Identifier: Apache-2.0
"""COCO-format data sets (detection; panoptic) and training batches (the runtime's own preprocessing + flip and
scale jitter)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..artifact.metadata import Preprocess
from ..runtime.images import load_image
from ..runtime.preprocess import preprocess_images


class CocoDetection:
    """``root/annotations.json`` + ``root/images/``; ``item(i) -> (HxWx3 uint8, boxes xyxy px [T,4], labels [T])``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.coco = json.loads((self.root / "annotations.json").read_text())
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.by_image: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in self.coco["annotations"]:
            self.by_image[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def path(self, index: int) -> Path:
        return self.root / "images" / self.images[index]["file_name"]

    def item(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = load_image(self.path(index))
        anns = self.by_image[self.images[index]["id"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        return image, boxes, labels


class CocoPanoptic(CocoDetection):
    """``root/panoptic.json`` + ``root/panoptic/*.png`` + ``root/images/`` (what ``detr-render --panoptic`` writes):
    every segment (things and stuff) is a target; ``item(i) -> (image, boxes xyxy [T,4], labels [T],
    masks bool [T,H,W])``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.coco = json.loads((self.root / "panoptic.json").read_text())
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.by_image = {ann["image_id"]: ann for ann in self.coco["annotations"]}

    def item(self, index: int):
        from PIL import Image

        image = load_image(self.path(index))
        ann = self.by_image[self.images[index]["id"]]
        rgb = np.asarray(Image.open(self.root / "panoptic" / ann["file_name"]).convert("RGB"), np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        segments = ann["segments_info"]
        boxes = np.array([[s["bbox"][0], s["bbox"][1], s["bbox"][0] + s["bbox"][2], s["bbox"][1] + s["bbox"][3]]
                          for s in segments], np.float32).reshape(-1, 4)
        labels = np.array([s["category_id"] for s in segments], np.int64)
        masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
        return image, boxes, labels, masks


def open_dataset(root: str | Path, segmentation: bool) -> CocoDetection:
    """The data set a model trains on: panoptic segments for segmentation models, boxes otherwise."""
    return CocoPanoptic(root) if segmentation else CocoDetection(root)


def _target_masks(masks: np.ndarray, flip: bool, resized: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """Segment masks ``[T,H,W]`` -> float ``[T, H_pad, W_pad]`` at the batch's input resolution (nearest resize to
    the resized image, zero padding), as the loss compares them with the upsampled predicted masks."""
    t = torch.from_numpy(np.ascontiguousarray(masks[:, :, ::-1] if flip else masks)).float()[None]
    t = torch.nn.functional.interpolate(t, size=resized, mode="nearest")[0]
    out = torch.zeros((t.shape[0], *padded))
    out[:, :resized[0], :resized[1]] = t
    return out


def training_batch(dataset: CocoDetection, indices: list[int], rng: np.random.Generator, scales: tuple[int, ...],
                   max_size: int) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Random flip, random shortest edge from ``scales``, brightness jitter; targets cxcywh normalised to the image
    (and, for panoptic data, "masks" ``[T, H_pad, W_pad]`` at the batch's input resolution)."""
    images, targets, all_masks = [], [], []
    for index in indices:
        image, boxes, labels, *masks = dataset.item(index)
        h, w = image.shape[:2]
        flip = rng.random() < 0.5
        all_masks.append((masks[0], flip) if masks else None)
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
            boxes = boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + np.array([w, 0, w, 0], np.float32)
        image = np.clip(image.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        images.append(image)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h
        bw, bh = (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h
        targets.append({"labels": torch.from_numpy(labels),
                        "boxes": torch.from_numpy(np.stack([cx, cy, bw, bh], -1).astype(np.float32))})
    pre = Preprocess(shortest_edge=int(rng.choice(scales)), longest_edge=max_size)
    batch = preprocess_images(images, pre)
    padded = tuple(batch.pixel_values.shape[-2:])
    for target, masks, resized in zip(targets, all_masks, batch.resized_sizes):
        if masks is not None:
            target["masks"] = _target_masks(masks[0], masks[1], tuple(resized), padded)
    return torch.from_numpy(batch.pixel_values), torch.from_numpy(batch.pixel_mask), targets
