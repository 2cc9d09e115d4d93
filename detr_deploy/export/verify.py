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


def verify_onnx(model: nn.Module, onnx_path: str | os.PathLike, dynamic: bool,
                log: Callable[[str], None] = print, threads: int | None = None) -> list[OutputDiff]:
    """Run the ONNX file (plugin nodes through the CPU kernel) and the PyTorch model; print and return the diffs."""
    backend = OnnxRuntimeBackend(onnx_path, threads=threads)
    family, top_k = backend.metadata.family, backend.metadata.postprocess.top_k
    results = []
    log("verification against PyTorch (onnxruntime, CPU):")
    log(TABLE_HEADER)
    for label, pixels, mask in verification_inputs(backend.metadata, dynamic):
        artefact = backend({"pixel_values": pixels, "pixel_mask": mask})
        with torch.no_grad():
            ref = model(torch.from_numpy(pixels), torch.from_numpy(mask))
        reference = {"logits": ref["logits"].numpy(), "pred_boxes": ref["pred_boxes"].numpy()}
        diff = compare_outputs(label, reference, artefact, family, top_k)
        log(diff.row())
        results.append(diff)
    backend.close()
    return results
