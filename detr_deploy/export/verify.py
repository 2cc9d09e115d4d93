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
from ..runtime.preprocess import IMAGE_INPUT
from .config import ExportConfig
from .onnx_export import ExportResult, build_metadata_for_tensors, export_onnx


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


def synthetic_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``uint8 [count, height, width, 3]`` photo-like images: smooth structure plus texture (for in-graph
    pre-processing, which resizes them as it would a photograph)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 3, max(height // 24, 2), max(width // 24, 2))).astype(np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bicubic",
                                             align_corners=False).numpy().transpose(0, 2, 3, 1)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def image_cases(images: list[tuple[str, np.ndarray]], metadata) -> list[tuple[str, dict, np.ndarray, np.ndarray]]:
    """(label, feeds, pixel_values, pixel_mask) of an in-graph artifact: ``image`` feeds, and the tensors its graph
    computes from them (its own pre-processing, run alone in onnxruntime) for the PyTorch model."""
    from ..runtime.preprocess_graph import GraphPreprocess

    front = GraphPreprocess(metadata.preprocess)
    cases = []
    for label, image in images:
        pixels, mask = front(image)
        cases.append((label, {IMAGE_INPUT: image}, pixels, mask))
    return cases


def verification_inputs(metadata) -> list[tuple]:
    """Static: the export shape. Dynamic: 1 image at a 512x640-like size, plus a padded batch of 2 of another
    size (labels, pixel_values, pixel_mask). In-graph pre-processing: uint8 images, one to be enlarged and a batch
    of two to be reduced (labels, feeds, pixel_values, pixel_mask; see :func:`image_cases`)."""
    if metadata.preprocess.in_graph:
        batch = metadata.static_batch
        images = [(f"{batch or 1}x480x640x3 image", synthetic_images(batch or 1, 480, 640, seed=1)),
                  (f"{batch or 2}x1200x900x3 images", synthetic_images(batch or 2, 1200, 900, seed=2))]
        return image_cases(images, metadata)
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
    if metadata.preprocess.in_graph:  # one call per image (one tensor holds images of one size)
        return image_cases([(name, preprocess_for([image], metadata).image) for name, image in images], metadata)
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
    per case and return the differences. A case (label, feeds, pixel_values, pixel_mask) feeds ``feeds`` to the
    backend and the pixel tensors to the model (an in-graph artifact: its images, and what its graph made of them)."""
    segmentation = "pred_masks" in backend.output_names
    log(table_header(with_masks=segmentation))
    results = []
    for case in cases:
        label, feeds, pixels, mask = case if len(case) == 4 else (case[0], None, *case[1:])
        feeds = feeds if feeds is not None else {"pixel_values": pixels, "pixel_mask": mask}
        diff = compare_outputs(label, model.predict_numpy(pixels, mask), backend(feeds), backend.metadata.postprocess)
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
        if backend.metadata.preprocess.in_graph:
            log_host_agreement(cases, backend.metadata, log)
        return compare_with_model(model, backend, cases, log)


def log_host_agreement(cases, metadata, log: Callable[[str], None] = print) -> None:
    """How the graph's own pre-processing of the verification images compares with the host's."""
    from ..runtime.preprocess import preprocess_for

    for label, feeds, pixels, _ in cases:
        host = preprocess_for(list(feeds[IMAGE_INPUT]), build_metadata_for_tensors(metadata)).pixel_values
        if host.shape != pixels.shape:
            log(f"  in-graph pre-processing of {label}: size {pixels.shape[2:]} vs host {host.shape[2:]} (the resize "
                "rule's documented difference)")
        else:
            differing = float(np.mean(host != pixels))
            log(f"  in-graph pre-processing of {label}: max |d pixel_values| vs host "
                f"{float(np.abs(host - pixels).max()):.1e}, {differing:.2%} of values differ")


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
