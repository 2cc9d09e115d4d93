# SPDX-License-Identifier: Apache-2.0
"""Precision benchmark: how far FP16 and INT8 graphs are from the FP32 graph, on images, in onnxruntime (CPU).

Run:  python benchmarks/precision.py [--models deformable-detr-shapes deformable-detr detr-r50] [--images 20]

Per model, static exports (GridSample form, so onnxruntime runs every node natively): FP32; FP16 (mixed, the
default rules); FP16 with half-storage MSDA (``msda_fp16``); INT8 (percentile calibration, default exclusions); INT8
with nothing excluded. Each artifact runs through the runtime's Detector (top-100, threshold 0) and is compared
with the FP32 artifact: fraction of its top-100 detections found again at IoU >= 0.9 with the same label, box L1
(pixels) and score difference of those matches.

Images: the trained deformable-detr-shapes model gets freshly rendered scenes (seed 3; calibration seed 4). The
COCO models (random weights: no published weights can be downloaded here) get scikit-image's photographs at
800x1066; their numbers show numeric drift only, not accuracy.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import detr_deploy
from detr_deploy.compare import match_detections
from detr_deploy.export import ExportConfig, export_onnx
from detr_deploy.export.quantize import CalibrationConfig
from detr_deploy.runtime import Detector

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "coins", "hubble_deep_field",
          "motorcycle_left", "motorcycle_right", "retina", "cat", "page", "moon"]


def photo_files(folder: Path, names: list[str]) -> list[str]:
    from PIL import Image
    from skimage import data

    files = []
    for name in names:
        try:
            array = getattr(data, name)()
        except Exception:
            continue
        path = folder / f"{name}.jpg"
        Image.fromarray(array).convert("RGB").save(path)
        files.append(str(path))
    return files


def rendered_files(folder: Path, count: int, seed: int) -> list[str]:
    from detr_deploy.zoo.shapes import render_dataset

    render_dataset(folder, count, seed, show_progress=False)
    return sorted(str(p) for p in (folder / "images").glob("*.jpg"))


def compare(reference: list[dict], candidate: list[dict]) -> dict[str, float]:
    matches = [match_detections(r, c) for r, c in zip(reference, candidate)]
    deltas = [d for m in matches for d in m.score_deltas]
    l1 = [v for m in matches for v in m.box_l1]
    return {"matched": float(np.mean([m.fraction for m in matches])),
            "box_l1_mean": float(np.mean(l1)) if l1 else float("nan"),
            "box_l1_max": float(np.max(l1)) if l1 else float("nan"),
            "score_mean": float(np.mean(deltas)) if deltas else float("nan"),
            "score_max": float(np.max(deltas)) if deltas else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["deformable-detr-shapes", "deformable-detr", "detr-r50"])
    parser.add_argument("--images", type=int, default=20, help="evaluation images per model (photos: up to 8)")
    parser.add_argument("--calib", type=int, default=16, help="calibration images per model (photos: up to 6)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models:
            torch.manual_seed(0)
            shapes = name == "deformable-detr-shapes"
            model = detr_deploy.create_model(name, weights=None if shapes else "random")
            if shapes:
                images = rendered_files(tmp / f"{name}_eval", args.images, seed=3)
                calib = rendered_files(tmp / f"{name}_calib", args.calib, seed=4)
                size = (256, 416)
            else:
                folder = tmp / "photos"
                folder.mkdir(exist_ok=True)
                photos = photo_files(folder, PHOTOS)
                images, calib, size = photos[:min(8, args.images)], photos[8:8 + min(6, args.calib)], (800, 1066)
            calibration = CalibrationConfig(calib)
            variants = {
                "fp32": ExportConfig(msda="gridsample", dynamic=False, input_size=size),
                "fp16": ExportConfig(msda="gridsample", dynamic=False, input_size=size, precision="fp16"),
                "fp16, MSDA half": ExportConfig(msda="gridsample", dynamic=False, input_size=size, precision="fp16",
                                                msda_fp16=True),
                "int8": ExportConfig(msda="gridsample", dynamic=False, input_size=size, precision="int8",
                                     calibration=calibration),
                "int8, nothing excluded": ExportConfig(
                    msda="gridsample", dynamic=False, input_size=size, precision="int8",
                    calibration=CalibrationConfig(calib, excluded_scopes=())),
            }
            if model.config.family == "detr":
                variants.pop("fp16, MSDA half")
            results = {}
            for label, config in variants.items():
                path = tmp / f"{name}_{label.replace(', ', '_').replace(' ', '_')}.onnx"
                start = time.time()
                export_onnx(model, path, config, log=lambda m: None)
                with Detector(path, threshold=0.0, threads=args.threads) as detector:
                    results[label] = detector(images)
                line = f"  {name} {label}: exported and ran in {time.time() - start:.0f}s"
                if label != "fp32":  # a row as soon as it is known: full-size runs take minutes per graph
                    rows.append((name, label, len(images), compare(results["fp32"], results[label])))
                    m = rows[-1][3]
                    line += (f"; matched {m['matched']:.1%}, box L1 {m['box_l1_mean']:.2f}/{m['box_l1_max']:.2f} px, "
                             f"score delta {m['score_mean']:.4f}/{m['score_max']:.4f}")
                print(line, flush=True)
    print("\nagreement with the FP32 graph, top-100 detections per image, IoU >= 0.9 and same label")
    print(f"{'model':<24} {'graph':<24} {'imgs':>4} {'matched':>8} {'box L1 mean/max px':>20} "
          f"{'score delta mean/max':>21}")
    for name, label, n, m in rows:
        print(f"{name:<24} {label:<24} {n:>4} {m['matched']:>7.1%} {m['box_l1_mean']:>9.2f} / {m['box_l1_max']:<8.2f} "
              f"{m['score_mean']:>9.4f} / {m['score_max']:<9.4f}")


if __name__ == "__main__":
    main()
