# SPDX-License-Identifier: Apache-2.0
"""Rendered detection scenes: coloured shapes on textured photographic backgrounds, with COCO annotations.

    python -m detr_deploy.zoo.shapes render --out DIR --count N --seed S [--size HxW]

Eight classes (circle, square, triangle, star, each red or blue), object sizes from about 12 px to half the image,
overlaps with partial occlusion (at most half of an earlier object hidden), backgrounds cut from scikit-image's
photographs with noise, gradients and colour shifts, and varied image sizes and aspect ratios. Boxes are the full
extent of each shape (amodal). Deterministic for a seed: image i depends only on (seed, i).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (215, 40, 35), "blue": (35, 75, 215)}
CATEGORIES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]  # category id = index
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
    from skimage import data

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
        raise RuntimeError("no scikit-image photographs available (pip install scikit-image)")
    return photos


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
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


def _draw(canvas: Image.Image, mask: Image.Image, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
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


def render_scene(seed: int, index: int, config: RenderConfig = RenderConfig()) -> tuple[Image.Image, list[dict]]:
    """One image and its objects: ``[{"category_id", "bbox" [x, y, w, h], "area"}]`` (area = box area)."""
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


def render_dataset(out: str | os.PathLike, count: int, seed: int, config: RenderConfig = RenderConfig(),
                   progress: bool = True) -> Path:
    """Write ``count`` images to ``out/images/`` and ``out/annotations.json`` (COCO format); returns the JSON path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=count, desc="render", unit="img", file=sys.stderr)
        except ImportError:
            pass
    for index in range(count):
        image, objects = render_scene(seed, index, config)
        # named by image id, so detr-infer's numeric-name ids line up with annotations.json
        image_id = index + 1
        name = f"{image_id:06d}.jpg"
        image.save(out / "images" / name, quality=92)
        images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "bbox": [round(v, 2) for v in obj["bbox"]], "area": round(obj["area"], 2),
                                "category_id": obj["category_id"]})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    coco = {"info": {"description": f"detr-deploy shapes, seed {seed}", "version": "1"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": name, "supercategory": name.split(" ")[1]}
                           for i, name in enumerate(CATEGORIES)]}
    path = out / "annotations.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detr_deploy.zoo.shapes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render a data set")
    render.add_argument("--out", required=True, help="output folder (images/ and annotations.json)")
    render.add_argument("--count", type=int, required=True, help="number of images")
    render.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    render.add_argument("--size", default=None, metavar="HxW", help="fixed image size (default: varied)")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    path = render_dataset(args.out, args.count, args.seed, RenderConfig(fixed_size=size))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
