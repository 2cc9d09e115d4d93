# SPDX-License-Identifier: Apache-2.0
"""Deformable DETR on the CPU in onnxruntime, full size, batch 1: plugin form (MSDA plugin nodes through the native
kernel) vs GridSample form vs the Hugging Face + torch.onnx peer, in one run.

Run:  python benchmarks/cpu_cost.py [--runs 3] [--threads 2]

(a) detr-deploy's plugin-form ONNX (NVIDIA's MultiscaleDeformableAttnPlugin_TRT nodes; on the CPU they run through
    onnxruntime-extensions and detr_deploy.runtime.msda_native, the kernel built from plugins/src/msdaMath.h)
(b) detr-deploy's GridSample-form ONNX (standard ops only)
(c) transformers' DeformableDetrForObjectDetection exported with torch.onnx.export (see peers.py), onnxruntime
All three: Deformable DETR R50 with the same random weights, static 1x3x800x1066, onnxruntime CPU with --threads
intra-op threads. The runs are interleaved (a, b, c, a, b, c, ...) so that a change in the machine's load hits all
three alike; latencies are medians. Accuracy: max |d| of logits and boxes against the PyTorch model on the same input
(ours against detr-deploy's model, the peer against transformers' own).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from peers import export_hf, hf_model

from detr_deploy import create_model
from detr_deploy.export import ExportConfig, export_onnx
from detr_deploy.export.verify import synthetic_batch
from detr_deploy.runtime import msda_native
from detr_deploy.runtime.backends import BackendOptions
from detr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if msda_native.load_native() is None:
        print(f"the native MSDA kernel is not built: {msda_native.load_error()}", file=sys.stderr)
        return 2
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    pixels, mask = synthetic_batch(1, 800, 1066, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        hf = hf_model("deformable", folder / "hf")
        ours = create_model(str(folder / "hf"))  # the same weights, through our loader
        runners, references = {}, {}
        with torch.no_grad():
            reference = ours.predict_numpy(pixels, mask)
            out = hf(pixel_values=torch.from_numpy(pixels), pixel_mask=torch.from_numpy(mask).long())
            hf_reference = {"logits": out.logits.numpy(), "pred_boxes": out.pred_boxes.numpy()}
        feeds = {"pixel_values": pixels, "pixel_mask": mask}
        for key, form in (("(a) detr-deploy plugin form, native MSDA kernel", "plugin"),
                          ("(b) detr-deploy GridSample form", "gridsample")):
            path = folder / f"ours_{form}.onnx"
            export_onnx(ours, path, ExportConfig(msda=form, dynamic=False, input_size=(800, 1066)), log=lambda m: None)
            backend = OnnxRuntimeBackend(path, BackendOptions(threads=args.threads))
            runners[key] = lambda backend=backend: backend(feeds)
            references[key] = reference
        exporter = export_hf(hf, pixels, mask, folder / "hf.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(folder / "hf.onnx"), options, providers=["CPUExecutionProvider"])
        hf_feeds = {"pixel_values": pixels, "pixel_mask": mask.astype(np.int64)}
        peer = f"(c) transformers -> torch.onnx.export ({exporter})"
        runners[peer] = lambda: dict(zip(("logits", "pred_boxes"), session.run(None, hf_feeds)))
        references[peer] = hf_reference

        diffs = {}
        for key, run in runners.items():  # warm-up and accuracy
            out = run()
            diffs[key] = (float(np.abs(out["logits"] - references[key]["logits"]).max()),
                          float(np.abs(out["pred_boxes"] - references[key]["pred_boxes"]).max()))
        times = {key: [] for key in runners}
        for _ in range(args.runs):
            for key, run in runners.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    medians = {key: statistics.median(v) for key, v in times.items()}
    base = medians["(b) detr-deploy GridSample form"]
    print(f"\nDeformable DETR R50, 1x3x800x1066, onnxruntime {ort.__version__} CPU, {args.threads} threads "
          f"({os.cpu_count()} CPUs), median of {args.runs} interleaved runs, random weights (same in all three); "
          f"native MSDA kernel: {msda_native.load_native() is not None}")
    print(f"  {'':<58} {'median':>9} {'x GridSample':>13} {'max|dlogit|':>12} {'max|dbox|':>10}  (vs PyTorch)")
    for key in runners:
        print(f"  {key:<58} {medians[key]:>8.2f}s {medians[key] / base:>12.2f}x {diffs[key][0]:>12.2e} "
              f"{diffs[key][1]:>10.2e}")
        print(f"  {'':<58} runs: {', '.join(f'{t:.2f}s' for t in times[key])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
