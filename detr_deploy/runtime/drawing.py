# SPDX-License-Identifier: Apache-2.0
"""Drawing detections on images (Pillow only)."""
from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import numpy as np

from .._optional import require

if TYPE_CHECKING:
    from PIL import Image


def label_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct colour per label (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_detections(image: np.ndarray | Image.Image, detections: dict, line_width: int | None = None) -> Image.Image:
    """``image`` with one box per detection and a "name score" tag above it.

    Args:
        image: ``HxWx3 uint8`` RGB or a PIL image (the original image the boxes refer to).
        detections: a Detector result (``boxes`` xyxy, ``scores``, ``labels``, ``names``).
    """
    Image, ImageDraw, ImageFont = (require(f"PIL.{name}", "drawing detections")
                                   for name in ("Image", "ImageDraw", "ImageFont"))
    canvas = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    canvas = canvas.copy()
    draw = ImageDraw.Draw(canvas)
    width = line_width or max(2, round(min(canvas.size) / 250))
    font = ImageFont.load_default(size=max(12, round(min(canvas.size) / 45)))
    # draw low scores first so the best detections end on top
    for box, score, label, name in sorted(zip(detections["boxes"], detections["scores"], detections["labels"],
                                              detections["names"]), key=lambda d: d[1]):
        color = label_color(int(label))
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        lift = bottom - top + 2 * width
        ty = y0 - lift if y0 - lift >= 0 else y0
        draw.rectangle([x0, ty, x0 + (right - left) + 2 * width, ty + lift], fill=color)
        draw.text((x0 + width, ty + width - (top - y0)), text, fill=(0, 0, 0), font=font)
    return canvas


def draw_segments(image: np.ndarray | Image.Image, result: dict, alpha: float = 0.55) -> Image.Image:
    """``image`` with each segment of a panoptic/instance result tinted in its label's colour and named.

    Args:
        image: ``HxWx3 uint8`` RGB or a PIL image (the original image the segmentation map refers to).
        result: a Detector segmentation result: ``segmentation`` [H,W] segment ids (0 = none), ``segments_info``
            and ``names``.
    """
    Image, ImageDraw, ImageFont = (require(f"PIL.{name}", "drawing segments")
                                   for name in ("Image", "ImageDraw", "ImageFont"))
    base = np.asarray(image.convert("RGB") if not isinstance(image, np.ndarray) else image).astype(np.float32)
    ids = np.asarray(result["segmentation"])
    tint = base.copy()
    labels = []
    for entry, name in zip(result["segments_info"], result["names"]):
        inside = ids == entry["id"]
        if not inside.any():
            continue
        # instances of one label: the label's hue, brightness varied by segment id
        color = np.asarray(label_color(int(entry["label_id"])), np.float32) * (0.75 + 0.25 * ((entry["id"] % 3) / 2))
        tint[inside] = color
        ys, xs = np.nonzero(inside)
        labels.append((int(xs.mean()), int(ys.mean()), f"{name} {entry['score']:.2f}", tuple(int(c) for c in color)))
    blended = np.where((ids > 0)[..., None], base * (1 - alpha) + tint * alpha, base)
    canvas = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, round(min(canvas.size) / 45)))
    for x, y, text, color in labels:
        left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="mm")
        draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=color)
        draw.text((x, y), text, fill=(0, 0, 0), font=font, anchor="mm")
    return canvas
