# SPDX-License-Identifier: Apache-2.0
"""Images -> ``pixel_values``/``pixel_mask``, reproducing the reference evaluation transform in numpy + pillow.

Resize (Pillow bilinear on uint8, as Hugging Face's PIL image processor), rescale by 1/255, ImageNet normalisation,
zero-padding bottom-right to the batch maximum (or a static artifact's input size), mask 1 = real pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._optional import require
from ..artifact.metadata import Preprocess
from ..errors import ConfigError


def shortest_edge_size(height: int, width: int, shortest_edge: int = 800, longest_edge: int = 1333,
                       rounding: str = "hf") -> tuple[int, int]:
    """Output (height, width) of the shortest-edge resize with a cap on the long side.

    "hf": Hugging Face's image processors (long side from the unrounded capped size, always <= longest_edge).
    "official": facebookresearch/detr and fundamentalvision transforms (long side from the rounded short side;
    can be one pixel shorter, e.g. 500x1000 -> 666x1333 "hf" vs 666x1332 "official").
    """
    size, raw = shortest_edge, None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > longest_edge:
        raw = longest_edge * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    use_raw = rounding == "hf" and raw is not None
    if width < height:
        return int((raw if use_raw else size) * height / width), size
    return size, int((raw if use_raw else size) * width / height)


def fit_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """Largest (height, width) with the image's aspect ratio inside ``target`` (static artifacts)."""
    scale = min(target[0] / height, target[1] / width)
    return min(target[0], max(1, int(round(height * scale)))), min(target[1], max(1, int(round(width * scale))))


def output_size(height: int, width: int, pre: Preprocess) -> tuple[int, int]:
    if pre.resize == "shortest_edge":
        return shortest_edge_size(height, width, pre.shortest_edge, pre.longest_edge, pre.rounding)
    if pre.resize == "fit":
        if pre.input_size is None:
            raise ConfigError("resize 'fit' needs input_size")
        return fit_size(height, width, pre.input_size)
    raise ConfigError(f"unknown resize rule {pre.resize!r}")


def normalization_table(pre: Preprocess) -> np.ndarray:
    """``[3, 256]`` float32: the normalised value of every uint8 level per channel (one gather per pixel)."""
    levels = np.arange(256, dtype=np.float64) * pre.rescale
    table = (levels[None, :] - np.asarray(pre.mean)[:, None]) / np.asarray(pre.std)[:, None]
    return table.astype(np.float32)


@dataclass
class Batch:
    """``pixel_values [B,3,H,W] float32``, ``pixel_mask [B,H,W] int32`` (1 = real pixel), and per image its
    ``original_sizes`` and ``resized_sizes`` as (height, width)."""

    pixel_values: np.ndarray
    pixel_mask: np.ndarray
    original_sizes: list[tuple[int, int]]
    resized_sizes: list[tuple[int, int]]

    def feeds(self) -> dict[str, np.ndarray]:
        return {"pixel_values": self.pixel_values, "pixel_mask": self.pixel_mask}


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow bilinear resize of an ``HxWx3 uint8`` array to (height, width)."""
    if image.shape[:2] == tuple(size):
        return image
    Image = require("PIL.Image", "resizing images")
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample=Image.BILINEAR))


def preprocess_images(images: list[np.ndarray], pre: Preprocess, pad_to: tuple[int, int] | None = None,
               table: np.ndarray | None = None, buffers: dict | None = None) -> Batch:
    """``HxWx3 uint8 RGB`` images -> one padded, normalised batch.

    Args:
        pad_to: pad to this (height, width) instead of the batch maximum (static artifacts: their input size).
        table: a cached :func:`normalization_table` of ``pre``.
        buffers: a dict the caller keeps between calls; output arrays of the same shape are reused from it
            (a fresh 10 MB allocation per image costs page faults). The returned arrays are then overwritten
            by the next call.
    """
    table = normalization_table(pre) if table is None else table
    resized = [resize_rgb(img, output_size(img.shape[0], img.shape[1], pre)) for img in images]
    height = max(r.shape[0] for r in resized)
    width = max(r.shape[1] for r in resized)
    if pad_to is not None:
        if height > pad_to[0] or width > pad_to[1]:
            raise ConfigError(f"resized image {height}x{width} exceeds the artifact's input size {pad_to}")
        height, width = pad_to
    shape = (len(images), 3, height, width)
    if buffers is not None and buffers.get("shape") == shape:
        pixel_values, pixel_mask = buffers["pixel_values"], buffers["pixel_mask"]
        pixel_values.fill(0.0)
        pixel_mask.fill(0)
    else:
        pixel_values = np.zeros(shape, dtype=np.float32)
        pixel_mask = np.zeros((len(images), height, width), dtype=np.int32)
        if buffers is not None:
            buffers.update(shape=shape, pixel_values=pixel_values, pixel_mask=pixel_mask)
    for i, r in enumerate(resized):
        h, w = r.shape[:2]
        for c in range(3):
            target = pixel_values[i, c, :h, :w]
            if target.flags.c_contiguous:  # gather straight into the batch: no temporary (page faults cost more)
                np.take(table[c], r[:, :, c], out=target, mode="clip")  # levels are 0..255: clip never clips
            else:
                target[...] = np.take(table[c], r[:, :, c], mode="clip")
        pixel_mask[i, :h, :w] = 1
    return Batch(pixel_values, pixel_mask, [img.shape[:2] for img in images], [r.shape[:2] for r in resized])


def preprocess_for(images: list[np.ndarray], metadata, table: np.ndarray | None = None,
                   buffers: dict | None = None) -> Batch:
    """:func:`preprocess_images` as an artifact expects it (``metadata``: its :class:`ArtifactMetadata`).

    Padded to a static artifact's input size, and a static batch filled with copies of the first image (the caller
    keeps only the first ``len(images)`` results).
    """
    filled = list(images)
    if metadata.static_batch is not None:
        if len(images) > metadata.static_batch:
            raise ConfigError(f"{len(images)} images in one call, but the artifact's batch is fixed at "
                              f"{metadata.static_batch}")
        filled += [images[0]] * (metadata.static_batch - len(images))
    return preprocess_images(filled, metadata.preprocess, metadata.static_input_size, table, buffers)
