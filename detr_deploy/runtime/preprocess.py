# SPDX-License-Identifier: Apache-2.0
"""Images -> ``pixel_values``/``pixel_mask``, reproducing the reference evaluation transform in numpy + pillow.

Resize (Pillow bilinear on uint8, as Hugging Face's PIL image processor), rescale by 1/255, ImageNet normalisation,
zero-padding bottom-right to the batch maximum (or a static artifact's input size), mask 1 = real pixel.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .._optional import require
from ..artifact.metadata import Preprocess
from ..errors import ConfigError

IMAGE_INPUT = "image"  # the input of artifacts with pre-processing in the graph: uint8 [batch, height, width, 3]


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
    ``original_sizes`` and ``resized_sizes`` as (height, width).

    For an artifact that pre-processes in its graph (``metadata.preprocess.in_graph``), ``image`` holds the decoded
    images instead, ``uint8 [B,H,W,3]``, and the pixel tensors are None (the graph computes them).
    """

    pixel_values: np.ndarray | None
    pixel_mask: np.ndarray | None
    original_sizes: list[tuple[int, int]]
    resized_sizes: list[tuple[int, int]]
    image: np.ndarray | None = None

    def feeds(self) -> dict[str, np.ndarray]:
        if self.image is not None:
            return {IMAGE_INPUT: self.image}
        return {"pixel_values": self.pixel_values, "pixel_mask": self.pixel_mask}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of what the artifact is fed: ``pixel_values``, or ``image`` for in-graph pre-processing."""
        return tuple((self.image if self.image is not None else self.pixel_values).shape)


class _ArrowArray(ctypes.Structure):
    """The Arrow C data interface's ``struct ArrowArray`` (a stable ABI)."""


_ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                        ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                        ("buffers", ctypes.POINTER(ctypes.c_void_p)),
                        ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
                        ("dictionary", ctypes.POINTER(_ArrowArray)), ("release", ctypes.c_void_p),
                        ("private_data", ctypes.c_void_p)]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def pillow_view(image) -> np.ndarray:
    """The pixels of a Pillow ``L`` (``HxW``) or ``RGB`` (``HxWx4``: Pillow stores RGBX) image as a read-only numpy
    view of Pillow's own memory, through the Arrow C data interface (Pillow >= 11.2): ``np.asarray`` copies them
    twice (``tobytes`` then ``frombuffer``), about 1 ms per megapixel. Falls back to ``np.asarray`` when the image
    cannot be exported so (older Pillow, an image stored in several blocks)."""
    try:
        schema, array = image.__arrow_c_array__()
        struct = _ArrowArray.from_address(_capsule_pointer(array, b"arrow_array"))
        data = struct.children[0].contents if struct.n_children else struct
        pointer, count = data.buffers[1], data.length  # uint8 values: pixels (L) or 4 per pixel (RGB)
        channels = count // max(1, image.width * image.height)
        if not pointer or channels not in (1, 4) or data.offset or struct.offset:
            raise ValueError("unexpected Arrow layout")
        memory = (ctypes.c_uint8 * count).from_address(pointer)
        memory._keep = (array, schema, image)  # Pillow frees the pixels when the capsule is released
    except (AttributeError, ValueError, TypeError):
        return np.asarray(image)
    view = np.frombuffer(memory, np.uint8).reshape((image.height, image.width) + ((channels,) if channels > 1 else ()))
    view.flags.writeable = False
    return view


def resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow bilinear resize of one ``HxW uint8`` channel to (height, width), as a view of Pillow's result.

    Pillow resamples every channel of an RGB image independently with the same fixed-point coefficients, so the three
    channels resized apart are bit-identical to one RGB resize (tests/test_runtime.py checks it on many sizes); apart,
    they can run in parallel (Pillow releases the GIL while it resamples) and come out planar, as ``pixel_values``.
    """
    if plane.shape == tuple(size):
        return plane
    Image = require("PIL.Image", "resizing images")
    resized = Image.fromarray(np.ascontiguousarray(plane)).resize((size[1], size[0]), resample=Image.BILINEAR)
    return pillow_view(resized)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow bilinear resize of an ``HxWx3 uint8`` array to (height, width)."""
    if image.shape[:2] == tuple(size):
        return image
    Image = require("PIL.Image", "resizing images")
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample=Image.BILINEAR))


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def default_threads() -> int:
    """Pre-processing threads when not given: one per colour channel, at most the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(3, cpus))


def _run(work, tasks: list, threads: int) -> None:
    """``work(task)`` for every task: in the calling thread, or on a shared pool of ``threads`` threads."""
    if threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            work(task)
        return
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="detr-deploy-preprocess")
    for future in [pool.submit(work, task) for task in tasks]:
        future.result()


def preprocess_images(images: list[np.ndarray], pre: Preprocess, pad_to: tuple[int, int] | None = None,
               table: np.ndarray | None = None, buffers: dict | None = None,
               threads: int | None = None) -> Batch:
    """``HxWx3 uint8 RGB`` images -> one padded, normalised batch, equal to Hugging Face's PIL image processor.

    Per image and colour channel, one task: Pillow's bilinear resize of that channel (the slow part, ~3/4 of the
    time) and one table gather of its levels straight into ``pixel_values``. Only the padding is zeroed, and padding
    and mask are rewritten only when the batch layout changes.

    Args:
        pad_to: pad to this (height, width) instead of the batch maximum (static artifacts: their input size).
        table: a cached :func:`normalization_table` of ``pre``.
        buffers: a dict the caller keeps between calls; output arrays of the same shape are reused from it
            (a fresh 10 MB allocation per image costs page faults). The returned arrays are then overwritten
            by the next call, and the caller must not write into them.
        threads: threads for the per-channel tasks (default :func:`default_threads`; 1 = the calling thread).
    """
    table = normalization_table(pre) if table is None else table
    sizes = [output_size(img.shape[0], img.shape[1], pre) for img in images]
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    if pad_to is not None:
        if height > pad_to[0] or width > pad_to[1]:
            raise ConfigError(f"resized image {height}x{width} exceeds the artifact's input size {pad_to}")
        height, width = pad_to
    shape = (len(images), 3, height, width)
    if buffers is not None and buffers.get("shape") == shape:
        pixel_values, pixel_mask = buffers["pixel_values"], buffers["pixel_mask"]
    else:
        pixel_values = np.empty(shape, dtype=np.float32)
        pixel_mask = np.empty((len(images), height, width), dtype=np.int32)
        if buffers is not None:
            buffers.update(shape=shape, pixel_values=pixel_values, pixel_mask=pixel_mask, layout=None)
    layout = tuple(sizes)
    if buffers is None or buffers.get("layout") != layout:  # padding and mask depend on the sizes only
        for i, (h, w) in enumerate(sizes):
            pixel_values[i, :, h:, :] = 0.0
            pixel_values[i, :, :h, w:] = 0.0
            pixel_mask[i, :h, :w] = 1
            pixel_mask[i, h:, :] = 0
            pixel_mask[i, :h, w:] = 0
        if buffers is not None:
            buffers["layout"] = layout
    first: dict[int, int] = {}  # a static batch filled with copies of one image: compute it once
    copies = []
    for i, img in enumerate(images):
        if first.setdefault(id(img), i) != i:
            copies.append((i, first[id(img)]))

    def channel(task: tuple[int, int]) -> None:
        i, c = task
        h, w = sizes[i]
        plane = resize_plane(images[i][:, :, c], (h, w))
        target = pixel_values[i, c, :h, :w]
        if target.flags.c_contiguous:  # gather straight into the batch (levels are 0..255: clip never clips)
            np.take(table[c], plane, out=target, mode="clip")
        else:  # padded: np.take's out must be contiguous
            target[...] = np.take(table[c], plane, mode="clip")

    tasks = [(i, c) for i in sorted(set(first.values())) for c in range(3)]
    _run(channel, tasks, default_threads() if threads is None else int(threads))
    for i, j in copies:
        pixel_values[i] = pixel_values[j]
    return Batch(pixel_values, pixel_mask, [img.shape[:2] for img in images], sizes)


def image_batch(images: list[np.ndarray], pre: Preprocess) -> Batch:
    """Decoded images as an in-graph artifact takes them: ``image uint8 [B,H,W,3]`` (no copy for one image).

    The images of one call must share a size (they are one tensor); ``resized_sizes`` are the sizes the graph
    resizes them to (``runtime.preprocess_graph.graph_output_size``).
    """
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        raise ConfigError(f"an artifact with pre-processing in its graph takes the images of one call as one tensor: "
                          f"they must share a size, got {sorted(s[:2] for s in shapes)} (Detector groups them)")
    from .preprocess_graph import graph_output_size

    stacked = np.ascontiguousarray(images[0])[None] if len(images) == 1 else np.stack(images)
    sizes = [img.shape[:2] for img in images]
    return Batch(None, None, sizes, [graph_output_size(h, w, pre) for h, w in sizes], image=stacked)


def preprocess_for(images: list[np.ndarray], metadata, table: np.ndarray | None = None,
                   buffers: dict | None = None) -> Batch:
    """:func:`preprocess_images` as an artifact expects it (``metadata``: its :class:`ArtifactMetadata`).

    Padded to a static artifact's input size, and a static batch filled with copies of the first image (the caller
    keeps only the first ``len(images)`` results). An artifact with pre-processing in its graph gets the decoded
    images themselves (:func:`image_batch`).
    """
    filled = list(images)
    if metadata.static_batch is not None:
        if len(images) > metadata.static_batch:
            raise ConfigError(f"{len(images)} images in one call, but the artifact's batch is fixed at "
                              f"{metadata.static_batch}")
        filled += [images[0]] * (metadata.static_batch - len(images))
    if metadata.preprocess.in_graph:
        return image_batch(filled, metadata.preprocess)
    return preprocess_images(filled, metadata.preprocess, metadata.static_input_size, table, buffers)
