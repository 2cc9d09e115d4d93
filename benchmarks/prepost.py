# SPDX-License-Identifier: Apache-2.0
"""Pre + post-processing time per image: detr-deploy's numpy runtime vs Hugging Face's image processor.

Run:  python benchmarks/prepost.py [--runs 100]
A 640x480 photograph (scikit-image's "chelsea", resized: real content) is resized to 800x1066, normalised and
padded; Deformable DETR-shaped outputs ([1, 300, 91]) go through top-k post-processing. Each pipeline runs alone
in a fresh process (as in a service), warmed up, then timed; the ratio comes from one run of this script.

Why separate processes: glibc adapts its mmap/trim thresholds to the allocations it has seen, so in a shared
process one pipeline's history changes the other's page-fault cost by up to 1.5x (measured here).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
from timing import median_seconds


def _inputs():
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.chelsea()).resize((640, 480))
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 300, 91)).astype(np.float32) - 3
    boxes = rng.uniform(0.05, 0.95, (1, 300, 4)).astype(np.float32)
    return image, logits, boxes


def _ours():
    from detr_deploy.artifact.metadata import Postprocess, Preprocess
    from detr_deploy.runtime import load_image, postprocess_detections, preprocess_images
    from detr_deploy.runtime.preprocess import normalization_table

    image, logits, boxes = _inputs()
    pre, post = Preprocess(), Postprocess("sigmoid-top-k", 100)
    table, buffers = normalization_table(pre), {}  # what Detector keeps between calls

    def pre_only():
        return preprocess_images([load_image(image)], pre, table=table, buffers=buffers)

    def both():
        batch = pre_only()
        return postprocess_detections(logits, boxes, post, batch.original_sizes, 0.5)

    return pre_only, both


def _hf():
    import torch
    from transformers.models.deformable_detr.image_processing_pil_deformable_detr import (
        DeformableDetrImageProcessorPil,
    )
    from transformers.utils import ModelOutput

    torch.set_num_threads(2)
    image, logits, boxes = _inputs()
    processor = DeformableDetrImageProcessorPil()
    outputs = ModelOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes))

    def pre_only():
        return processor(images=image, return_tensors="pt")

    def both():
        pre_only()
        return processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(480, 640)])

    return pre_only, both




def _worker(which: str, runs: int) -> None:
    pre_only, both = _ours() if which == "ours" else _hf()
    pre = median_seconds(pre_only, runs, warmup=20)
    print(json.dumps({"pre": pre, "total": median_seconds(both, runs, warmup=20)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.runs)
        return
    results = {}
    for which in ("ours", "hf"):
        out = subprocess.run([sys.executable, __file__, "--worker", which, "--runs", str(args.runs)],
                             capture_output=True, text=True, check=True)
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, hf = results["ours"], results["hf"]
    print(f"640x480 photo -> 800x1066, Deformable DETR outputs [1,300,91]; median of {args.runs} runs, "
          "each pipeline in its own process")
    print(f"  preprocess:  detr-deploy {1e3 * ours['pre']:7.2f} ms   HF DeformableDetrImageProcessorPil "
          f"{1e3 * hf['pre']:7.2f} ms   ratio {hf['pre'] / ours['pre']:4.1f}x")
    print(f"  pre + post:  detr-deploy {1e3 * ours['total']:7.2f} ms   HF DeformableDetrImageProcessorPil "
          f"{1e3 * hf['total']:7.2f} ms   ratio {hf['total'] / ours['total']:4.1f}x")


if __name__ == "__main__":
    main()
