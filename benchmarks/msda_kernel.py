# SPDX-License-Identifier: Apache-2.0
"""MSDA kernel benchmark (needs a CUDA GPU and nvcc): plugins/src/msdaKernel.cu vs the PyTorch grid_sample core.

Run:  python benchmarks/msda_kernel.py [--runs 50]
Deformable DETR sizes for an 800x1066 input: 4 levels 100x134, 50x67, 25x34, 13x17 (S = 17821), 8 heads x 32
channels, 4 points; encoder Lq = S, decoder Lq = 300; batch 1. FP32 and FP16 (our kernel: half storage, float32
coordinates and accumulation). Times are CUDA-event medians; ratios from one run.
"""
from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from detr_deploy.models.deformable_attention import ms_deform_attn_core

SRC = Path(__file__).resolve().parents[1] / "plugins" / "src"
SHAPES = [(100, 134), (50, 67), (25, 34), (13, 17)]


def build_library(folder: Path) -> ctypes.CDLL:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    major, minor = torch.cuda.get_device_capability()
    out = folder / "libmsda_cuda.so"
    subprocess.run([nvcc, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC",
                    f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}", str(SRC / "msdaKernel.cu"),
                    "-o", str(out)], check=True)
    return ctypes.CDLL(str(out))


def cuda_time(fn, runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (torch.cuda.is_available() is False here)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_plugin import run_cuda

    with tempfile.TemporaryDirectory() as tmp:
        lib = build_library(Path(tmp))
        s = sum(h * w for h, w in SHAPES)
        print(f"{torch.cuda.get_device_name()}, S={s}, M=8, D=32, L=4, P=4, median of {args.runs} runs")
        print(f"{'stage':<9} {'dtype':<6} {'ours ms':>8} {'grid_sample ms':>15} {'speed-up':>9} {'max |diff|':>11}")
        for stage, lq in (("encoder", s), ("decoder", 300)):
            gen = torch.Generator(device="cuda").manual_seed(0)
            value = torch.randn(1, s, 8, 32, device="cuda", generator=gen)
            loc = torch.rand(1, lq, 8, 4, 4, 2, device="cuda", generator=gen)
            weights = torch.rand(1, lq, 8, 4, 4, device="cuda", generator=gen).softmax(-1)
            for dtype in (torch.float32, torch.float16):
                v, lo, w = value.to(dtype), loc.to(dtype), weights.to(dtype)
                ours = cuda_time(lambda v=v, lo=lo, w=w: run_cuda(lib, v, SHAPES, lo, w), args.runs)
                ref = cuda_time(lambda v=v, lo=lo, w=w: ms_deform_attn_core(v, SHAPES, None, lo, w), args.runs)
                diff = (run_cuda(lib, v, SHAPES, lo, w).float() - ms_deform_attn_core(
                    value, SHAPES, None, loc, weights)).abs().max().item()
                print(f"{stage:<9} {str(dtype)[6:]:<6} {ours:>8.3f} {ref:>15.3f} {ref / ours:>8.2f}x {diff:>11.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
