# SPDX-License-Identifier: Apache-2.0
"""Latency against the tools users have today, in one run on this CPU (2 threads, 1x3x800x1066, batch 1).

Run:  python benchmarks/peers.py [--runs 5]

(a) detr-deploy's exported ONNX in onnxruntime (GridSample form: every node native to onnxruntime)
(b) detr-deploy's PyTorch model, eager
(c) Hugging Face transformers' model (DetrForObjectDetection / DeformableDetrForObjectDetection), eager
(d) that transformers model exported with torch.onnx.export (torch.export-based exporter, then the legacy
    TorchScript one if that fails) and run in onnxruntime
All four are the same architecture with the same random weights (transformers with its native ResNet-50: its timm
backbone needs torchvision, which does not import here). Latencies are medians; ratios are to (a). Static
800x1066 exports for (a) and (d) alike. A step that fails is reported with its error, not skipped silently.
"""
from __future__ import annotations

import argparse
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from detr_deploy import create_model
from detr_deploy.export import ExportConfig, export_onnx
from detr_deploy.export.verify import synthetic_batch


def hf_model(family: str, folder: Path):
    """A transformers model with the published R50 sizes and random weights, plus its saved folder."""
    from transformers import (
        DeformableDetrConfig,
        DeformableDetrForObjectDetection,
        DetrConfig,
        DetrForObjectDetection,
        ResNetConfig,
    )

    stages = ["stage4"] if family == "detr" else ["stage2", "stage3", "stage4"]
    backbone = ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                            layer_type="bottleneck", out_features=stages)
    common = dict(backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, num_labels=91)
    model = (DetrForObjectDetection(DetrConfig(**common)) if family == "detr"
             else DeformableDetrForObjectDetection(DeformableDetrConfig(**common)))
    model.eval()
    model.save_pretrained(folder)
    return model


class HFOutputs(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, pixel_mask):
        out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        return out.logits, out.pred_boxes


def export_hf(model, pixels, mask, path: Path) -> str:
    """torch.onnx.export of the transformers model: the torch.export-based exporter, else the TorchScript one."""
    wrapper = HFOutputs(model).eval()
    args = (torch.from_numpy(pixels), torch.from_numpy(mask.astype(np.int64)))
    errors = []
    for dynamo in (True, False):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, args, str(path), dynamo=dynamo, opset_version=18,
                                  input_names=["pixel_values", "pixel_mask"], output_names=["logits", "pred_boxes"])
            return "torch.export" if dynamo else "TorchScript"
        except Exception as exc:  # report why, try the other exporter
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}")
    raise RuntimeError(" | ".join(errors))


def measure(family: str, folder: Path, pixels: np.ndarray, mask: np.ndarray, runs: int, threads: int):
    """Timings (seconds) of (a)-(d) for one architecture, and notes on anything that failed."""
    import onnxruntime as ort

    from detr_deploy.runtime.backends import BackendOptions
    from detr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    torch.manual_seed(0)
    hf = hf_model(family, folder / f"hf_{family}")
    ours = create_model(str(folder / f"hf_{family}"))  # the same weights, through our loader
    timings, notes = {}, {}
    path = folder / f"ours_{family}.onnx"
    export_onnx(ours, path, ExportConfig(msda="gridsample", dynamic=False, input_size=(800, 1066)),
                log=lambda m: None)
    backend = OnnxRuntimeBackend(path, BackendOptions(threads=threads))
    feeds = {"pixel_values": pixels, "pixel_mask": mask}
    timings["(a) detr-deploy ONNX, onnxruntime"] = median_seconds(lambda: backend(feeds), runs)
    with torch.no_grad():
        x, m = torch.from_numpy(pixels), torch.from_numpy(mask)
        timings["(b) detr-deploy PyTorch eager"] = median_seconds(lambda: ours(x, m), runs)
        timings["(c) transformers eager"] = median_seconds(lambda: hf(pixel_values=x, pixel_mask=m.long()), runs)
    hf_path = folder / f"hf_{family}.onnx"
    try:
        exporter = export_hf(hf, pixels, mask, hf_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(hf_path), options, providers=["CPUExecutionProvider"])
        hf_feeds = {"pixel_values": pixels, "pixel_mask": mask.astype(np.int64)}
        key = f"(d) transformers -> torch.onnx.export ({exporter}), onnxruntime"
        timings[key] = median_seconds(lambda: session.run(None, hf_feeds), runs)
    except Exception as exc:
        notes["(d) transformers -> torch.onnx.export, onnxruntime"] = f"failed: {exc}"
        traceback.print_exc(limit=1)
    return timings, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["detr", "deformable"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    pixels, mask = synthetic_batch(1, 800, 1066, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(family, *measure(family, Path(tmp), pixels, mask, args.runs, args.threads))
                for family in args.models]
    print(f"\n{args.threads} threads, 1x3x800x1066, median of {args.runs} runs, random weights (same in all four)")
    for family, timings, notes in rows:
        base = timings["(a) detr-deploy ONNX, onnxruntime"]
        print(f"\n{'DETR R50' if family == 'detr' else 'Deformable DETR R50'}")
        for name, seconds in timings.items():
            print(f"  {name:<66} {1e3 * seconds:>8.0f} ms  {seconds / base:>5.2f}x of (a)")
        for name, note in notes.items():
            print(f"  {name:<66} {note}")


if __name__ == "__main__":
    main()
