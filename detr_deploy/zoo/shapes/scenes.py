# SPDX-License-Identifier: Apache-2.0
"""Rendered detection scenes: coloured shapes on textured photographic backgrounds, with COCO annotations.

    detr-render -o DIR --count N --seed S [--size HxW] [--panoptic]   (needs scikit-image: detr-deploy[shapes])

Eight classes (circle, square, triangle, star, each red or blue), object sizes from about 12 px to half the image,
overlaps with partial occlusion (at most half of an earlier object hidden), backgrounds cut from scikit-image's
photographs with noise, gradients and colour shifts, and varied image sizes and aspect ratios. Boxes are the full
extent of each shape (amodal). Deterministic for a seed: image i depends only on (seed, i).

Panoptic scenes (``RenderConfig(stuff=True)``) add "stuff" regions under the objects: a sky band at the top, a ground
band at the bottom and a brick wall band at one side (each present with probability 0.7), and write COCO panoptic
annotations: a PNG of segment ids per image (id = R + 256 G + 256^2 B) and ``panoptic.json`` with each segment's
category (things 0-7, stuff 8-10), visible box and area. Pixels of the photograph outside every band are unlabeled.
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
from ...labels import SHAPE_COLOURS, SHAPES_CATEGORIES, SHAPES_PANOPTIC_CATEGORIES, SHAPES_STUFF_IDS
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
    stuff: bool = False


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


def _stuff_regions(rng: np.random.Generator, canvas, height: int, width: int) -> list[dict]:
    """Paint the stuff bands onto ``canvas``; returns ``[{"category_id", "mask" bool [H, W]}]`` (later bands cover
    earlier ones: sky, ground, then the wall)."""
    array = np.asarray(canvas).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    regions = []
    sky, ground, wall = SHAPES_STUFF_IDS
    if rng.random() < 0.7:  # sky: a blue vertical gradient with soft noise over the top
        mask = ys < height * rng.uniform(0.15, 0.4)
        top, bottom = np.array([70, 120, 200]) + rng.uniform(-25, 25, 3), np.array([160, 200, 235])
        shade = (ys / max(height * 0.4, 1))[..., None]
        array[mask] = (top * (1 - shade) + bottom * shade + rng.normal(0, 4, array.shape))[mask]
        regions.append({"category_id": sky, "mask": mask})
    if rng.random() < 0.7:  # ground: brown-green grain over the bottom
        mask = ys > height * (1 - rng.uniform(0.15, 0.4))
        base = np.array([110, 90, 50]) + rng.uniform(-20, 20, 3)
        array[mask] = (base + rng.normal(0, 18, array.shape))[mask]
        regions.append({"category_id": ground, "mask": mask})
    if rng.random() < 0.7:  # wall: grey bricks on the left or right
        band = width * rng.uniform(0.15, 0.35)
        mask = xs < band if rng.random() < 0.5 else xs > width - band
        brick = max(6.0, height / rng.uniform(12, 24))
        rows = np.floor(ys / brick)
        mortar = ((ys % brick) < 2) | (((xs + (rows % 2) * brick) % (2 * brick)) < 2)
        grey = np.array([150, 145, 140]) + rng.uniform(-20, 20, 3)
        array[mask] = np.where(mortar[..., None], grey * 0.55, grey + rng.normal(0, 6, array.shape))[mask]
        regions.append({"category_id": wall, "mask": mask})
    for earlier, region in enumerate(regions):  # later bands cover earlier ones
        for later in regions[earlier + 1:]:
            region["mask"] = region["mask"] & ~later["mask"]
    canvas.paste(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)))
    return [r for r in regions if r["mask"].any()]


def render_scene(seed: int, index: int, config: RenderConfig = RenderConfig()):
    """One image (PIL) and its segments: ``[{"category_id", "bbox" [x, y, w, h], "area", "mask", "isthing"}]``.

    Objects (things) have their full (amodal) box and box area; ``mask`` is the visible silhouette (bool [H, W]).
    With ``config.stuff``, stuff regions follow the objects, with their visible mask, its box and its pixel area.
    """
    rng = np.random.default_rng([seed, index])
    if config.fixed_size:
        height, width = config.fixed_size
    else:
        short = int(rng.integers(config.min_side, config.max_side + 1))
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
        height, width = (short, min(config.max_side * 2, int(short * aspect))) if aspect >= 1 else \
            (min(config.max_side * 2, int(short / aspect)), short)
    canvas = _background(rng, height, width)
    stuff = _stuff_regions(rng, canvas, height, width) if config.stuff else []
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
                        "_pixels": int(silhouette.sum()), "isthing": True})
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.2)))
    for obj, mask in zip(objects, visible):
        obj.pop("_pixels")
        obj["mask"] = mask
    for region in stuff:
        mask = region["mask"]
        for thing in visible:
            mask = mask & ~thing
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask)
        x0, y0 = float(cols.min()), float(rows.min())
        objects.append({"category_id": region["category_id"], "isthing": False, "mask": mask,
                        "bbox": [x0, y0, cols.max() + 1.0 - x0, rows.max() + 1.0 - y0], "area": float(mask.sum())})
    return canvas, objects


def _is_previous_render(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} <= {"images", "annotations.json", "panoptic", "panoptic.json"}


def _panoptic_png(objects: list[dict], height: int, width: int):
    """Segment ids 1..N (0 = unlabeled) as a COCO panoptic PNG, later segments on top, and the segments' info."""
    ids = np.zeros((height, width), np.int64)
    segments = []
    for number, obj in enumerate(objects, start=1):
        ids[obj["mask"]] = number
    for number, obj in enumerate(objects, start=1):
        area = int((ids == number).sum())
        if area:
            segments.append({"id": number, "category_id": obj["category_id"], "iscrowd": 0, "area": area,
                             "bbox": [round(v, 2) for v in obj["bbox"]], "isthing": int(obj["isthing"])})
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
    return Image.fromarray(rgb), segments


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
    if config.stuff:
        (staging / "panoptic").mkdir()
    try:
        images, annotations, panoptic = [], [], []
        with progress(count if show_progress else 0, "render") as advance:
            for index in range(count):
                image, objects = render_scene(seed, index, config)
                # named by image id, so detr-infer's numeric-name ids line up with annotations.json
                image_id = index + 1
                name = f"{image_id:06d}.jpg"
                image.save(staging / "images" / name, quality=92)
                images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
                for obj in objects:
                    if obj["isthing"]:  # the detection annotations: things only, as in COCO
                        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                            "bbox": [round(v, 2) for v in obj["bbox"]],
                                            "area": round(obj["area"], 2), "category_id": obj["category_id"]})
                if config.stuff:
                    png, segments = _panoptic_png(objects, image.height, image.width)
                    png.save(staging / "panoptic" / f"{image_id:06d}.png")
                    panoptic.append({"image_id": image_id, "file_name": f"{image_id:06d}.png",
                                     "segments_info": segments})
                advance(1)
        coco = {"info": {"description": f"detr-deploy shapes, seed {seed}", "version": "1"}, "images": images,
                "annotations": annotations,
                "categories": [{"id": i, "name": name, "supercategory": name.split(" ")[1]}
                               for i, name in enumerate(CATEGORIES)]}
        write_json(staging / "annotations.json", coco, indent=None)
        if config.stuff:
            write_json(staging / "panoptic.json", {
                "info": coco["info"], "images": images, "annotations": panoptic,
                "categories": [{"id": i, "name": name, "isthing": int(i not in SHAPES_STUFF_IDS)}
                               for i, name in enumerate(SHAPES_PANOPTIC_CATEGORIES)]}, indent=None)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / "annotations.json"
