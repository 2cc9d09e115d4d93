# SPDX-License-Identifier: Apache-2.0
"""MSDA on the CPU: the native kernel (detr_deploy.runtime.msda_native, 1 and 2 threads) vs the numpy kernel
(detr_deploy.runtime.msda_cpu.msda_numpy) vs PyTorch's grid_sample core (ms_deform_attn_core).

Run:  python benchmarks/msda_cpu.py [--runs 5] [--slow-runs 3] [--uniform]
Deformable DETR sizes for an 800x1066 input: 4 levels 100x134, 50x67, 25x34, 13x17 (S = 17821), 8 heads x 32
channels, 4 points; encoder Lq = S, decoder Lq = 300; batch 1; float32. Sampling locations are what the model
produces: a reference point (the query's own pixel centre in the encoder, random points in the decoder) plus
offsets of about 2 pixels (normal, sigma 2 px) at every level; --uniform draws them uniformly over the maps instead
(no locality: a worst case for caches). Attention weights are softmaxed over L*P. Times are medians of wall time
after one warm-up call; "x native-1t" is each time divided by the native single-thread time. The native kernel
must be built (pip install with a C++ compiler, or DETR_DEPLOY_MSDA_LIBRARY; see msda_native.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_seconds  # noqa: E402

from detr_deploy.models.deformable_attention import ms_deform_attn_core  # noqa: E402
from detr_deploy.runtime import msda_native  # noqa: E402
from detr_deploy.runtime.msda_cpu import msda_numpy  # noqa: E402

SHAPES = [(100, 134), (50, 67), (25, 34), (13, 17)]
HEADS, CHANNELS, POINTS = 8, 32, 4


def inputs(lq: int, encoder: bool, uniform: bool, seed: int = 0):
    """value [1,S,M,D], sampling_locations [1,Lq,M,L,P,2], attention_weights [1,Lq,M,L,P] (float32 numpy)."""
    rng = np.random.default_rng(seed)
    s, levels = sum(h * w for h, w in SHAPES), len(SHAPES)
    value = rng.standard_normal((1, s, HEADS, CHANNELS), dtype=np.float32)
    if uniform:
        loc = rng.random((1, lq, HEADS, levels, POINTS, 2), dtype=np.float32)
    else:
        if encoder:  # each query sits at its own pixel centre, in normalised coordinates shared by all levels
            ref = np.concatenate([np.stack(np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h), -1)
                                  .reshape(-1, 2) for h, w in SHAPES])
        else:
            ref = rng.random((lq, 2))
        size = np.array([[w, h] for h, w in SHAPES], np.float32)  # (x, y) extent per level
        offsets = rng.standard_normal((1, lq, HEADS, levels, POINTS, 2)).astype(np.float32) * 2.0 / size[:, None]
        loc = (ref.astype(np.float32)[None, :, None, None, None, :] + offsets).astype(np.float32)
    logits = rng.standard_normal((1, lq, HEADS, levels * POINTS)).astype(np.float32)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = (weights / weights.sum(-1, keepdims=True)).reshape(1, lq, HEADS, levels, POINTS).astype(np.float32)
    return value, loc, weights


def run_stage(stage: str, lq: int, shapes: np.ndarray, starts: np.ndarray, args) -> None:
    value, loc, weights = inputs(lq, stage == "encoder", args.uniform)
    tensors = [torch.from_numpy(a) for a in (value, loc, weights)]
    reference = ms_deform_attn_core(tensors[0], SHAPES, None, tensors[1], tensors[2]).numpy()
    kernels = {
        "native 1 thread": (lambda: msda_native.msda_native(value, shapes, starts, loc, weights, 1), args.runs),
        "native 2 threads": (lambda: msda_native.msda_native(value, shapes, starts, loc, weights, 2), args.runs),
        "numpy": (lambda: msda_numpy(value, shapes, starts, loc, weights).reshape(1, lq, -1), args.slow_runs),
        "torch grid_sample": (lambda: ms_deform_attn_core(tensors[0], SHAPES, None, tensors[1], tensors[2]).numpy(),
                              args.slow_runs),
    }
    base = None
    for name, (fn, runs) in kernels.items():
        seconds = median_seconds(fn, runs)
        base = base or seconds
        diff = float(np.abs(fn() - reference).max())
        print(f"{stage:<8} {lq:>6}  {name:<17} {seconds * 1e3:>10.1f} {seconds / base:>11.2f}x {diff:>20.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of the native kernel")
    parser.add_argument("--slow-runs", type=int, default=3, help="timed runs of the numpy and PyTorch kernels")
    parser.add_argument("--uniform", action="store_true", help="uniform sampling locations (no locality)")
    args = parser.parse_args()
    if msda_native.load_native() is None:
        print(msda_native.load_error(), file=sys.stderr)
        return 2
    shapes = np.array(SHAPES, np.int32)
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in SHAPES])[:-1]]).astype(np.int32)
    s = sum(h * w for h, w in SHAPES)
    print(f"MSDA CPU, S={s}, M={HEADS}, D={CHANNELS}, L={len(SHAPES)}, P={POINTS}, N=1, float32; "
          f"locations {'uniform' if args.uniform else 'reference + ~2 px offsets'}; {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads; native median of {args.runs}, "
          f"numpy / torch median of {args.slow_runs}")
    print(f"{'stage':<8} {'Lq':>6}  {'kernel':<17} {'median ms':>10} {'x native-1t':>12} {'max |diff| vs torch':>20}")
    for stage, lq in (("encoder", s), ("decoder", 300)):
        run_stage(stage, lq, shapes, starts, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
