# SPDX-License-Identifier: Apache-2.0
"""Check an exported ONNX file against the PyTorch model with onnxruntime, and publish it only when it passes."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..compare import DEFAULT_TOLERANCES, OutputDiff, Tolerance, compare_outputs, table_header
from ..files import check_output_file
from ..runtime.backends import BackendOptions
from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
from .config import ExportConfig
from .onnx_export import ExportResult, export_onnx


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


def verification_inputs(metadata) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Static: the export shape. Dynamic: 1 image at a 512x640-like size, plus a padded batch of 2 of another
    size (labels, pixel_values, pixel_mask)."""
    if metadata.static_batch is not None:
        batch, _, h, w = metadata.inputs["pixel_values"]["shape"]
        return [(f"{batch}x3x{h}x{w}", *synthetic_batch(batch, h, w))]
    low = int(metadata.extra.get("min_size", 65))
    first = (max(low, 512), max(low, 640))
    second = (max(low, 384) + 32, max(low, 480) + 48)
    cases = [(f"1x3x{first[0]}x{first[1]}", *synthetic_batch(1, *first, seed=1))]
    pad = [(second[0], second[1]), (second[0] - 64, second[1] - 96)]
    cases.append((f"2x3x{second[0]}x{second[1]} padded", *synthetic_batch(2, *second, valid=pad, seed=2)))
    return cases


def image_inputs(paths: list[str], metadata) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Up to two images through the artifact's preprocessing, one per batch; dynamic: also both as a padded batch."""
    from ..runtime.images import load_image
    from ..runtime.preprocess import preprocess_for

    images = [(os.path.basename(p), load_image(p)) for p in paths[:2]]
    dynamic = metadata.static_batch is None
    groups = [[item] for item in images] + ([images] if dynamic and len(images) == 2 else [])
    cases = []
    for group in groups:
        feeds = preprocess_for([image for _, image in group], metadata).feeds()
        label = " + ".join(name for name, _ in group) + (" padded" if len(group) > 1 else "")
        cases.append((label, feeds["pixel_values"], feeds["pixel_mask"]))
    return cases


def compare_with_model(model, backend, cases, log: Callable[[str], None] = print) -> list[OutputDiff]:
    """Run every (label, pixel_values, pixel_mask) case through ``backend`` and the PyTorch model; print a table row
    per case and return the differences."""
    segmentation = "pred_masks" in backend.output_names
    log(table_header(with_masks=segmentation))
    results = []
    for label, pixels, mask in cases:
        diff = compare_outputs(label, model.predict_numpy(pixels, mask),
                               backend({"pixel_values": pixels, "pixel_mask": mask}), backend.metadata.postprocess)
        log(diff.row())
        results.append(diff)
    return results


def verify_onnx(model, onnx_path: str | os.PathLike, log: Callable[[str], None] = print, threads: int | None = None,
                images: list[str] | None = None) -> list[OutputDiff]:
    """Run the ONNX file (plugin nodes through the CPU kernel) and the PyTorch model; print and return the diffs.

    ``images``: verify on (the first two of) these files instead of synthetic inputs. INT8 exports pass their
    calibration images: activation ranges fit the user's images, and noise-like synthetic inputs fall outside them.
    """
    with OnnxRuntimeBackend(onnx_path, BackendOptions(threads=threads)) as backend:
        log("verification against PyTorch (onnxruntime, CPU" + (", calibration images):" if images else "):"))
        cases = image_inputs(images, backend.metadata) if images else verification_inputs(backend.metadata)
        return compare_with_model(model, backend, cases, log)


@dataclass
class VerifiedExport:
    """What :func:`export_verified` did: the export, the verification (None when skipped), where the file is."""

    result: ExportResult
    diffs: list[OutputDiff] | None
    problems: list[str]
    path: Path

    @property
    def passed(self) -> bool:
        return not self.problems


def failed_path(output: Path) -> Path:
    """Where a file that failed verification is kept: ``model.onnx`` -> ``model.failed-verification.onnx``."""
    return output.with_name(f"{output.stem}.failed-verification{output.suffix}")


def export_verified(model, output: str | os.PathLike, config: ExportConfig, verify: bool = True,
                    tolerance: Tolerance | None = None, images: list[str] | None = None,
                    log: Callable[[str], None] = print) -> VerifiedExport:
    """Export, verify against PyTorch, and only then publish under ``output``.

    The graph is written to a hidden staging file next to ``output``; a verification within ``tolerance`` (default:
    the precision's) renames it to ``output``; a failed one keeps it as :func:`failed_path` (``output`` is not
    written) so the numbers can be inspected; an error or Ctrl-C removes it.
    """
    output = check_output_file(output, "output file")
    staging = output.with_name(f".{output.name}.unverified")
    try:
        result = export_onnx(model, staging, config, log=log)
        if not verify:
            os.replace(staging, output)
            result.path = output
            return VerifiedExport(result, None, [], output)
        tolerance = tolerance or DEFAULT_TOLERANCES[config.precision]
        diffs = verify_onnx(model, staging, log=log, images=images)
        problems = [f"{d.label}: {p}" for d in diffs for p in d.violations(tolerance)]
        target = failed_path(output) if problems else output
        os.replace(staging, target)
        result.path = target
        return VerifiedExport(result, diffs, problems, target)
    finally:
        if staging.exists():
            staging.unlink()
