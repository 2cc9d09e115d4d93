# SPDX-License-Identifier: Apache-2.0
"""Check an exported ONNX file against the PyTorch model with onnxruntime, on a few inputs."""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..parity import TABLE_HEADER, OutputDiff, compare_outputs
from ..runtime.backends.onnxruntime import OnnxRuntimeBackend


def synthetic_batch(batch: int, height: int, width: int, valid: list[tuple[int, int]] | None = None,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images (normalised range), zero-padded bottom-right to (height, width) per ``valid`` size."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((batch, 3, max(height // 16, 2), max(width // 16, 2))).astype(np.float32)
    pixels = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bilinear",
                                             align_corners=False).numpy()
    pixels += 0.3 * rng.standard_normal(pixels.shape).astype(np.float32)
    mask = np.ones((batch, height, width), dtype=np.int32)
    for i, (h, w) in enumerate(valid or []):
        pixels[i, :, h:, :] = 0
        pixels[i, :, :, w:] = 0
        mask[i, h:, :] = 0
        mask[i, :, w:] = 0
    return pixels, mask


def verification_inputs(metadata, dynamic: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Static: the export shape. Dynamic: 1 image at 800x1066-like size, plus a padded batch of 2 of another size."""
    if not dynamic:
        batch, _, h, w = metadata.inputs["pixel_values"]["shape"]
        return [(f"{batch}x3x{h}x{w}", *synthetic_batch(batch, h, w))]
    low = int(metadata.extra.get("min_size", 65))
    first = (max(low, 512), max(low, 640))
    second = (max(low, 384) + 32, max(low, 480) + 48)
    cases = [(f"1x3x{first[0]}x{first[1]}", *synthetic_batch(1, *first, seed=1))]
    pad = [(second[0], second[1]), (second[0] - 64, second[1] - 96)]
    cases.append((f"2x3x{second[0]}x{second[1]} padded", *synthetic_batch(2, *second, valid=pad, seed=2)))
    return cases


def image_inputs(paths: list[str], metadata, dynamic: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Up to two images through the artefact's preprocessing, one per batch; dynamic: also both as a padded batch."""
    from ..runtime.images import load_image
    from ..runtime.preprocess import preprocess_for

    images = [(os.path.basename(p), load_image(p)) for p in paths[:2]]
    groups = [[item] for item in images] + ([images] if dynamic and len(images) == 2 else [])
    cases = []
    for group in groups:
        feeds = preprocess_for([image for _, image in group], metadata).feeds()
        label = " + ".join(name for name, _ in group) + (" padded" if len(group) > 1 else "")
        cases.append((label, feeds["pixel_values"], feeds["pixel_mask"]))
    return cases


def verify_onnx(model: nn.Module, onnx_path: str | os.PathLike, dynamic: bool,
                log: Callable[[str], None] = print, threads: int | None = None,
                images: list[str] | None = None) -> list[OutputDiff]:
    """Run the ONNX file (plugin nodes through the CPU kernel) and the PyTorch model; print and return the diffs.

    ``images``: verify on (the first two of) these files instead of synthetic inputs. INT8 exports pass their
    calibration images: activation ranges fit the user's images, and noise-like synthetic inputs fall outside them.
    """
    backend = OnnxRuntimeBackend(onnx_path, threads=threads)
    family, top_k = backend.metadata.family, backend.metadata.postprocess.top_k
    results = []
    log("verification against PyTorch (onnxruntime, CPU" + (", calibration images):" if images else "):"))
    log(TABLE_HEADER)
    cases = image_inputs(images, backend.metadata, dynamic) if images else verification_inputs(backend.metadata,
                                                                                                 dynamic)
    for label, pixels, mask in cases:
        artefact = backend({"pixel_values": pixels, "pixel_mask": mask})
        with torch.no_grad():
            ref = model(torch.from_numpy(pixels), torch.from_numpy(mask))
        reference = {"logits": ref["logits"].numpy(), "pred_boxes": ref["pred_boxes"].numpy()}
        diff = compare_outputs(label, reference, artefact, family, top_k)
        log(diff.row())
        results.append(diff)
    backend.close()
    return results
