# SPDX-License-Identifier: Apache-2.0
"""Pre + post-processing time per image: detr-deploy's numpy runtime vs Hugging Face's image processors.

Run:  python benchmarks/prepost.py [--runs 100] [--hf-python /path/to/python]
A 640x480 photograph (scikit-image's "chelsea", resized: real content) is resized to 800x1066, normalised and
padded; Deformable DETR-shaped outputs ([1, 300, 91]) go through top-k post-processing. Pipelines:

- detr-deploy host pre-processing (exact: Pillow's bilinear resize per colour channel on --threads threads, one table
  gather per channel), as ``Detector`` runs it;
- detr-deploy with pre-processing in the graph (``detr-export --preprocess-in-graph``): what the host still does
  per image (stack the decoded image into the ``image`` tensor), the rest runs in the artifact;
- Hugging Face DeformableDetrImageProcessorPil (the PIL path detr-deploy matches);
- Hugging Face's default DeformableDetrImageProcessor (torchvision-backed) when torchvision imports in --hf-python
  (torchvision does not import beside the dev virtualenv's torch; give a Python that has it), else reported as such.

Each pipeline runs alone in a fresh process (as in a service), warmed up, then timed (median); ratios come from one
run of this script. Each process writes its pixel values, compared here with detr-deploy's (max |d|).

Why separate processes: glibc adapts its mmap/trim thresholds to the allocations it has seen, so in a shared
process one pipeline's history changes the other's page-fault cost by up to 1.5x (measured here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from timing import median_seconds

WORKERS = {"ours": "detr-deploy host", "graph": "detr-deploy in-graph (host part)",
           "hf": "HF DeformableDetrImageProcessorPil", "hf-default": "HF DeformableDetrImageProcessor (default)"}


def _inputs():
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.chelsea()).resize((640, 480))
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 300, 91)).astype(np.float32) - 3
    boxes = rng.uniform(0.05, 0.95, (1, 300, 4)).astype(np.float32)
    return image, logits, boxes


def _ours(in_graph: bool, threads: int | None):
    from detr_deploy.artifact.metadata import Postprocess, Preprocess
    from detr_deploy.runtime import load_image, postprocess_detections, preprocess_images
    from detr_deploy.runtime.preprocess import image_batch, normalization_table

    image, logits, boxes = _inputs()
    pre, post = Preprocess(in_graph=in_graph), Postprocess("sigmoid-top-k", 100)
    table, buffers = normalization_table(pre), {}  # what Detector keeps between calls

    def pre_only():
        if in_graph:
            return image_batch([load_image(image)], pre)
        return preprocess_images([load_image(image)], pre, table=table, buffers=buffers, threads=threads)

    def both():
        batch = pre_only()
        return postprocess_detections(logits, boxes, post, batch.original_sizes, 0.5)

    def pixels():
        return None if in_graph else pre_only().pixel_values

    return pre_only, both, pixels


def _hf(default: bool, threads: int):
    import torch
    from transformers.utils import ModelOutput

    if default:
        import torchvision  # noqa: F401  - the default processor's backend; fail loudly here when it is missing
        from transformers import DeformableDetrImageProcessor as Processor
    else:
        from transformers.models.deformable_detr.image_processing_pil_deformable_detr import (
            DeformableDetrImageProcessorPil as Processor,
        )
    torch.set_num_threads(threads)
    image, logits, boxes = _inputs()
    processor = Processor()
    if default and "Pil" in type(processor).__name__:
        raise RuntimeError("transformers fell back to the PIL processor")
    outputs = ModelOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes))

    def pre_only():
        return processor(images=image, return_tensors="pt")

    def both():
        pre_only()
        return processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(480, 640)])

    def pixels():
        return pre_only()["pixel_values"].numpy()

    return pre_only, both, pixels


def _worker(which: str, runs: int, threads: int, out: str) -> None:
    if which in ("ours", "graph"):
        pre_only, both, pixels = _ours(which == "graph", threads)
    else:
        pre_only, both, pixels = _hf(which == "hf-default", threads)
    pre = median_seconds(pre_only, runs, warmup=20)
    total = median_seconds(both, runs, warmup=20)
    values = pixels()
    if values is not None:
        np.save(out, values)
    print(json.dumps({"pre": pre, "total": total, "pixels": values is not None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="pre-processing threads (ours), torch threads (HF)")
    parser.add_argument("--hf-python", default=sys.executable,
                        help="the Python that runs Hugging Face's processors (one with torchvision for the default)")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.runs, args.threads, args.out)
        return
    results, failed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in WORKERS:
            python = sys.executable if which in ("ours", "graph") else args.hf_python
            out = os.path.join(tmp, f"{which}.npy")
            done = subprocess.run([python, __file__, "--worker", which, "--runs", str(args.runs), "--threads",
                                   str(args.threads), "--out", out], capture_output=True, text=True)
            if done.returncode:
                failed[which] = (done.stderr.strip().splitlines() or ["failed"])[-1][:150]
                continue
            results[which] = json.loads(done.stdout.strip().splitlines()[-1])
            if results[which]["pixels"]:
                results[which]["values"] = np.load(out)
    ours = results["ours"]
    print(f"640x480 photo -> 800x1066, Deformable DETR outputs [1,300,91]; median of {args.runs} runs, each pipeline "
          f"in its own process; {args.threads} threads; {os.cpu_count()} CPUs")
    print(f"  {'':<44} {'preprocess':>11} {'pre + post':>11} {'pre: x ours':>12} {'max|d pixel_values| vs ours':>28}")
    for which, name in WORKERS.items():
        if which in failed:
            print(f"  {name:<44} not run: {failed[which]}")
            continue
        r = results[which]
        diff = f"{float(np.abs(r['values'] - ours['values']).max()):.2e}" if "values" in r else "-"
        print(f"  {name:<44} {1e3 * r['pre']:>8.2f} ms {1e3 * r['total']:>8.2f} ms {r['pre'] / ours['pre']:>11.2f}x "
              f"{diff:>28}")


if __name__ == "__main__":
    main()
