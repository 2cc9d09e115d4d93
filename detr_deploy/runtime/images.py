# SPDX-License-Identifier: Apache-2.0
"""Reading images into ``HxWx3 uint8 RGB`` arrays, with clear errors for everything that is not a usable image."""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS (about 179 megapixels) as decompression bombs; same default here
DEFAULT_MAX_PIXELS = 2 * 89_478_485
MIN_SIDE = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
_HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> ``HxWx3 uint8``.

    8-bit modes use Pillow's ``convert("RGB")`` (alpha dropped, palette expanded, CMYK converted), which is what the
    reference pipelines do. 16/32-bit and float modes are scaled to 8 bits (``convert`` would clip them).
    """
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode in _HIGH_BIT_DEPTH:
        gray = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(gray.max()), 255.0)
        gray = np.clip(np.round(gray * (255.0 / top)), 0, 255).astype(np.uint8) if top > 255 else gray.astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow asks for this route for palette transparency
    return np.asarray(image.convert("RGB"))


def _check_size(width: int, height: int, where: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{where}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), above the "
                         f"{max_pixels / 1e6:.0f} megapixel limit (decompression-bomb protection); pass a larger "
                         "max_pixels if the image is trusted")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{where}: image is {width}x{height} pixels; at least {MIN_SIDE} pixels per side are needed "
                         "to detect anything")


def _check_file(path: Path) -> None:
    where = str(path)
    if not path.exists():
        raise ImageError(f"{where}: no such file")
    if path.is_dir():
        raise ImageError(f"{where}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{where}: empty file (0 bytes)")


def _open(path: Path, max_pixels: int) -> np.ndarray:
    _check_file(path)
    return _decode(path, str(path), max_pixels)


def read_encoded(path: str | os.PathLike) -> bytes:
    """An image file's bytes, undecoded (for a reader elsewhere, e.g. a server), with ``load_image``'s errors for a
    missing, folder or empty path."""
    path = Path(path)
    _check_file(path)
    return path.read_bytes()


def _decode(source: Path | io.BytesIO, where: str, max_pixels: int) -> np.ndarray:
    """A file or in-memory encoded image (JPEG, PNG...) -> ``HxWx3 uint8``, with one clear error per failure."""
    Image, ImageOps = require("PIL.Image", "reading images"), require("PIL.ImageOps", "reading images")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, on the header size
            with Image.open(source) as image:
                _check_size(image.width, image.height, where, max_pixels)
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{where}: {exc} (decompression-bomb protection); raise PIL.Image.MAX_IMAGE_PIXELS if the "
                         "image is trusted") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{where}: not an image, or a format Pillow cannot read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated/corrupt data surfaces as these in Pillow
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{where}: corrupt or truncated image ({exc})") from exc


def load_image(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "encoded image") -> np.ndarray:
    """Read a path, encoded bytes (a JPEG/PNG/... file's content), a PIL image or a numpy array into an
    ``HxWx3 uint8 RGB`` array (EXIF orientation applied).

    numpy arrays must be ``HxW`` (gray), ``HxWx3`` (RGB) or ``HxWx4`` (RGBA, alpha dropped) uint8. ``name`` stands
    for encoded bytes in error messages (a path names itself).
    """
    if isinstance(source, (str, os.PathLike)):
        return _open(Path(source), max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{name}: empty data (0 bytes)")
        return _decode(io.BytesIO(source), name, max_pixels)
    # a PIL image can only exist once Pillow is imported: numpy callers never load it
    if "PIL.Image" in sys.modules and isinstance(source, sys.modules["PIL.Image"].Image):
        _check_size(source.width, source.height, "PIL image", max_pixels)
        return _to_rgb(require("PIL.ImageOps").exif_transpose(source))
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8:
            raise ImageError(f"numpy images must be uint8 RGB (HxWx3); got dtype {source.dtype}. Convert with "
                             "(array * 255).clip(0, 255).astype(np.uint8) if it holds [0, 1] floats")
        if source.ndim == 2:
            source = np.repeat(source[..., None], 3, axis=2)
        if source.ndim != 3 or source.shape[2] not in (3, 4):
            raise ImageError(f"numpy images must be HxW, HxWx3 or HxWx4; got shape {source.shape}")
        _check_size(source.shape[1], source.shape[0], "numpy image", max_pixels)
        return np.ascontiguousarray(source[:, :, :3])
    raise ImageError(f"cannot read an image from a {type(source).__name__}; pass a path, encoded bytes, a PIL image "
                     "or a numpy array")


def describe(source: Any, index: int) -> str:
    """A name for ``source`` in messages and results: the path, or ``<image N>``."""
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<image {index}>"


def find_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursively, sorted).

    ImageError (bad input, before any work) for a path that does not exist and for a folder without images. Files
    given by name are kept whatever their suffix; whether they are readable is found when they are loaded.
    """
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                raise ImageError(f"{path}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return found
