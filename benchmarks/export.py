# SPDX-License-Identifier: Apache-2.0
"""Export benchmark: wall time, file size, node count, and onnxruntime CPU latency vs PyTorch eager.

Run:  python benchmarks/export.py [--models detr-r50 deformable-detr] [--runs 5] [--threads 2]
All numbers come from one run on this machine; latency ratios are PyTorch eager / onnxruntime on the same input
(1x3x800x1066, random weights: latency does not depend on the weight values).
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

import detr_deploy
from detr_deploy.export import ExportConfig, export_onnx
from detr_deploy.export.verify import synthetic_batch
from detr_deploy.runtime.backends import BackendOptions
from detr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["detr-r50", "deformable-detr"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="800x1066")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    pixels, mask = synthetic_batch(1, h, w, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = detr_deploy.create_model(name, weights="random")
            forms = ["gridsample", "plugin"] if model.config.family == "deformable" else ["gridsample"]
            with torch.no_grad():
                eager = median_seconds(lambda m=model: m(torch.from_numpy(pixels), torch.from_numpy(mask)), args.runs)
            for form in forms:
                path = Path(tmp) / f"{name}_{form}.onnx"
                result = export_onnx(model, path, ExportConfig(msda=form, dynamic=True), log=lambda m: None)
                backend = OnnxRuntimeBackend(path, BackendOptions(threads=args.threads))
                feeds = {"pixel_values": pixels, "pixel_mask": mask}
                ort_latency = median_seconds(lambda b=backend, f=feeds: b(f), args.runs)
                out = backend(feeds)
                with torch.no_grad():
                    ref = model(torch.from_numpy(pixels), torch.from_numpy(mask))
                diff = float(np.abs(out["logits"] - ref["logits"].numpy()).max())
                rows.append((name, form, result.seconds, result.size_bytes / 1e6, result.num_nodes, eager,
                             ort_latency, diff))
                backend.close()
    print(f"\n{args.threads} threads, input 1x3x{h}x{w}, median of {args.runs} runs; dynamic-shape exports")
    print(f"{'model':<17} {'msda':<11} {'export s':>9} {'MB':>7} {'nodes':>6} {'torch ms':>9} {'ORT ms':>8} "
          f"{'torch/ORT':>10} {'max|dlogit|':>12}")
    for name, form, secs, mb, nodes, eager, ort_lat, diff in rows:
        note = "  (MSDA on the numpy CPU kernel: a check path, not a fast path)" if form == "plugin" else ""
        print(f"{name:<17} {form:<11} {secs:>9.1f} {mb:>7.1f} {nodes:>6} {1e3 * eager:>9.0f} {1e3 * ort_lat:>8.0f} "
              f"{eager / ort_lat:>9.2f}x {diff:>12.2e}{note}")


if __name__ == "__main__":
    main()
