# SPDX-License-Identifier: Apache-2.0
"""timm backbones against the built-in ResNet-50: parameter counts and onnxruntime latency of full-size exports.

Run (needs timm, so in the timm stage's environment):
    .venv-timm/bin/python benchmarks/timm_backbones.py [--backbones ...] [--families detr deformable] [--runs 1]

Every model is the published architecture (DETR: 6+6 layers, d_model 256, 100 queries; Deformable DETR: 4 levels,
300 queries) with random weights and its backbone swapped (``create_model(variant, weights="random",
backbone=NAME)``: timm ``features_only``, BatchNorm frozen as transformers does). Exports are static, batch 1 at
800x1066, GridSample MSDA (standard ONNX ops; the plugin form runs a check kernel on the CPU); latency is the median
of ``--runs`` onnxruntime runs after one warm-up, with ``--threads`` threads. All rows come from one run.
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

VARIANTS = {"detr": "detr-r50", "deformable": "deformable-detr"}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+",
                        default=["resnet50", "tf_mobilenetv3_small_075", "efficientnet_b0", "resnet18d"],
                        help="resnet50 is the built-in ResNet of the published models; the others are timm names")
    parser.add_argument("--families", nargs="+", default=["detr", "deformable"], choices=sorted(VARIANTS))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="800x1066")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    pixels, mask = synthetic_batch(1, h, w, seed=0)
    feeds = {"pixel_values": pixels, "pixel_mask": mask}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            for name in args.backbones:
                torch.manual_seed(0)
                model = detr_deploy.create_model(VARIANTS[family], weights="random", backbone=name)
                path = Path(tmp) / f"{family}_{name}.onnx"
                result = export_onnx(model, path, ExportConfig(msda="gridsample", dynamic=False, input_size=(h, w)),
                                     log=lambda message: None)
                with OnnxRuntimeBackend(path, BackendOptions(threads=args.threads)) as backend:
                    latency = median_seconds(lambda b=backend: b(feeds), args.runs)
                    out = backend(feeds)
                with torch.no_grad():
                    ref = model(torch.from_numpy(pixels), torch.from_numpy(mask))
                diff = float(np.abs(out["logits"] - ref["logits"].numpy()).max())
                bb = model.config.backbone
                rows.append((VARIANTS[family], name, "timm" if bb.is_timm else "built-in",
                             "/".join(str(s) for s in model.backbone.strides), _count(model), _count(model.backbone),
                             result.num_nodes, result.size_bytes / 1e6, result.seconds, latency, diff))
                path.unlink()
    base = {r[0]: r for r in rows if r[1] == "resnet50"}
    print(f"\nstatic exports, batch 1, 1x3x{h}x{w}, GridSample MSDA, onnxruntime CPU with {args.threads} threads, "
          f"median of {args.runs} run(s) after a warm-up; random weights")
    print(f"{'model':<16} {'backbone':<25} {'source':<9} {'strides':<12} {'params':>11} {'backbone':>11} "
          f"{'nodes':>6} {'MB':>6} {'export s':>9} {'ORT ms':>8} {'vs R50':>7} {'max|dlogit|':>12}")
    for variant, name, source, strides, params, bb_params, nodes, mb, secs, latency, diff in rows:
        ref = base.get(variant)
        speed = f"{ref[9] / latency:>6.2f}x" if ref else f"{'-':>7}"
        print(f"{variant:<16} {name:<25} {source:<9} {strides:<12} {params:>11,} {bb_params:>11,} {nodes:>6} "
              f"{mb:>6.1f} {secs:>9.0f} {1e3 * latency:>8.0f} {speed} {diff:>12.2e}")


if __name__ == "__main__":
    main()
