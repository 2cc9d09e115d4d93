# SPDX-License-Identifier: Apache-2.0
"""Rendered detection scenes: coloured shapes on textured photographic backgrounds, with COCO annotations.

    detr-render -o DIR --count N --seed S [--size HxW]      (needs scikit-image: pip install 'detr-deploy[shapes]')

Eight classes (circle, square, triangle, star, each red or blue), object sizes from about 12 px to half the image,
overlaps with partial occlusion (at most half of an earlier object hidden), backgrounds cut from scikit-image's
photographs with noise, gradients and colour shifts, and varied image sizes and aspect ratios. Boxes are the full
extent of each shape (amodal). Deterministic for a seed: image i depends only on (seed, i).
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..._optional import require
from ...errors import ConfigError
from ...files import write_json
from ...labels import SHAPE_COLOURS, SHAPES_CATEGORIES
from ...progress import progress

COLOURS = dict(zip(SHAPE_COLOURS, ((215, 40, 35), (35, 75, 215))))
CATEGORIES = list(SHAPES_CATEGORIES)  # category id = index
BACKGROUND_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
                     "immunohistochemistry", "moon", "page", "text", "brick", "grass", "gravel")


@dataclass(frozen=True)
class RenderConfig:
    """Image size range (or a fixed size), objects per image and their size range (fraction of the short side)."""

    min_side: int = 240
    max_side: int = 640
    fixed_size: tuple[int, int] | None = None
    max_objects: int = 8
    min_object: float = 0.05
    max_object: float = 0.5
    max_hidden: float = 0.5


@lru_cache(maxsize=1)
def _photos() -> list[np.ndarray]:
    """scikit-image's bundled photographs as RGB uint8 (offline; no download)."""
    data = require("skimage.data", "the renderer's background photographs")

    photos = []
    for name in BACKGROUND_PHOTOS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # a photo missing from this scikit-image version
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    if not photos:
        raise ConfigError("no scikit-image photographs available: pip install 'detr-deploy[shapes]'")
    return photos


def _background(rng: np.random.Generator, height: int, width: int):
    photo = _photos()[int(rng.integers(len(_photos())))]
    scale = rng.uniform(0.6, 2.0)
    ph, pw = photo.shape[:2]
    crop_h, crop_w = min(ph, max(16, int(height / scale))), min(pw, max(16, int(width / scale)))
    top, left = int(rng.integers(0, ph - crop_h + 1)), int(rng.integers(0, pw - crop_w + 1))
    image = Image.fromarray(photo[top:top + crop_h, left:left + crop_w]).resize((width, height), Image.BILINEAR)
    array = np.asarray(image).astype(np.float32)
    if rng.random() < 0.5:  # desaturate: colour must come from the objects, not the scene
        array = array * 0.4 + array.mean(axis=2, keepdims=True) * 0.6
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (np.cos(angle) * xs / width + np.sin(angle) * ys / height)[..., None]
    array = array * rng.uniform(0.6, 1.1) + gradient * rng.uniform(-60, 60) + rng.uniform(-25, 25, size=3)
    array += rng.normal(0, rng.uniform(2, 14), size=array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a + rotation), cy + r * math.sin(a + rotation)) for a in corners]
    if shape == "triangle":
        return [(cx + r * math.cos(a + rotation), cy + r * math.sin(a + rotation))
                for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5 + rotation
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    raise ValueError(shape)


def _draw(canvas, mask, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
          r: float, rotation: float, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Draw one shape on the canvas and its silhouette on ``mask``; returns its box (x0, y0, x1, y1)."""
    tint = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in colour)
    outline = tuple(max(0, c - 60) for c in tint)
    width = max(1, int(r / 12))
    draw, mask_draw = ImageDraw.Draw(canvas), ImageDraw.Draw(mask)
    if shape == "circle":
        box = (cx - r, cy - r, cx + r, cy + r)
        draw.ellipse(box, fill=tint, outline=outline, width=width)
        mask_draw.ellipse(box, fill=255)
        return box
    points = _polygon(shape, cx, cy, r, rotation)
    draw.polygon(points, fill=tint, outline=outline, width=width)
    mask_draw.polygon(points, fill=255)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def render_scene(seed: int, index: int, config: RenderConfig = RenderConfig()):
    """One image (PIL) and its objects: ``[{"category_id", "bbox" [x, y, w, h], "area"}]`` (area = box area)."""
    rng = np.random.default_rng([seed, index])
    if config.fixed_size:
        height, width = config.fixed_size
    else:
        short = int(rng.integers(config.min_side, config.max_side + 1))
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
        height, width = (short, min(config.max_side * 2, int(short * aspect))) if aspect >= 1 else \
            (min(config.max_side * 2, int(short / aspect)), short)
    canvas = _background(rng, height, width)
    visible: list[np.ndarray] = []  # per object: boolean mask of its still-visible pixels
    objects: list[dict] = []
    short_side = min(height, width)
    for _ in range(int(rng.integers(1, config.max_objects + 1))):
        # log-uniform sizes: as many small objects as large ones
        r = 0.5 * short_side * math.exp(rng.uniform(math.log(config.min_object), math.log(config.max_object)))
        r = max(r, 6.0)
        cx, cy = rng.uniform(r * 0.6, width - r * 0.6), rng.uniform(r * 0.6, height - r * 0.6)
        category = int(rng.integers(len(CATEGORIES)))
        colour_name, shape = CATEGORIES[category].split(" ")
        mask = Image.new("L", (width, height), 0)
        trial = canvas.copy()
        x0, y0, x1, y1 = _draw(trial, mask, shape, COLOURS[colour_name], cx, cy, r, rng.uniform(0, 2 * math.pi), rng)
        silhouette = np.asarray(mask) > 0
        # refuse a placement that hides too much of an earlier object (the box must stay inferable)
        if any((v & silhouette).sum() > config.max_hidden * max(objects[i]["_pixels"], 1)
               for i, v in enumerate(visible)):
            continue
        canvas = trial
        for v in visible:
            v &= ~silhouette
        visible.append(silhouette)
        x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
        objects.append({"category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                        "_pixels": int(silhouette.sum())})
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.2)))
    for obj in objects:
        obj.pop("_pixels")
    return canvas, objects


def _is_previous_render(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} <= {"images", "annotations.json"}


def render_dataset(out: str | os.PathLike, count: int, seed: int, config: RenderConfig = RenderConfig(),
                   show_progress: bool = True) -> Path:
    """Write ``count`` images to ``out/images/`` and ``out/annotations.json`` (COCO format); returns the JSON path.

    Rendered into a staging folder next to ``out`` and moved into place at the end: an error or Ctrl-C leaves
    nothing half-written. An existing ``out`` is replaced only if it holds a previous render (``images/`` and
    ``annotations.json`` only); anything else is refused.
    """
    if count < 1:
        raise ConfigError(f"--count must be >= 1, got {count}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or not _is_previous_render(out)):
        raise ConfigError(f"{out} exists and is not an earlier render (images/ + annotations.json); choose another "
                          "output folder")
    _photos()  # fail on a missing scikit-image before creating anything
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images").mkdir(parents=True)
    try:
        images, annotations = [], []
        with progress(count if show_progress else 0, "render") as advance:
            for index in range(count):
                image, objects = render_scene(seed, index, config)
                # named by image id, so detr-infer's numeric-name ids line up with annotations.json
                image_id = index + 1
                name = f"{image_id:06d}.jpg"
                image.save(staging / "images" / name, quality=92)
                images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
                for obj in objects:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                        "bbox": [round(v, 2) for v in obj["bbox"]], "area": round(obj["area"], 2),
                                        "category_id": obj["category_id"]})
                advance(1)
        coco = {"info": {"description": f"detr-deploy shapes, seed {seed}", "version": "1"}, "images": images,
                "annotations": annotations,
                "categories": [{"id": i, "name": name, "supercategory": name.split(" ")[1]}
                               for i, name in enumerate(CATEGORIES)]}
        write_json(staging / "annotations.json", coco, indent=None)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / "annotations.json"
