# SPDX-License-Identifier: Apache-2.0
"""Our MSDA plugin (plugins/): the shared maths on the CPU against PyTorch, CUDA compile checks, GPU runs."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from detr_deploy.artifact import msda as msda_contract
from detr_deploy.models.deformable_attention import ms_deform_attn_core
from detr_deploy.runtime import msda_cpu

from conftest import msda_case

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
SRC = PLUGINS / "src"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


@pytest.fixture(scope="module")
def cpu_lib(tmp_path_factory):
    """The CPU build of plugins/src/msdaMath.h (g++ only, no CUDA)."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    out = tmp_path_factory.mktemp("msda") / "libmsda_cpu.so"
    subprocess.run([compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-pthread", "-Wall", "-Wextra", "-Werror",
                    f"-I{SRC}", str(SRC / "msdaCpu.cpp"), "-o", str(out)], check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def _run_cpu(lib, value, shapes, locations, weights, dtype, num_threads=2):
    n, s, m, d = value.shape
    lq, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]]).astype(np.int32)
    arrays = [np.ascontiguousarray(a) for a in (value.astype(dtype), np.asarray(shapes, np.int32), starts,
                                                  locations.astype(dtype), weights.astype(dtype))]
    out = np.zeros((n, lq, m * d), dtype)
    fn = lib.detr_msda_cpu_f32 if dtype == np.float32 else lib.detr_msda_cpu_f16
    status = fn(*[a.ctypes.data_as(ctypes.c_void_p) for a in arrays], out.ctypes.data_as(ctypes.c_void_p),
                *[ctypes.c_int64(v) for v in (n, s, m, d, lq, levels, points)], ctypes.c_int32(num_threads))
    assert status == 0
    return out


CASES = [  # (seed, level shapes, N, M, D, Lq, P)
    (0, [(13, 17), (7, 9), (4, 5), (2, 3)], 2, 8, 32, 40, 4),   # Deformable DETR layout, small maps
    (1, [(25, 38)], 1, 8, 32, 100, 4),                          # single scale
    (2, [(6, 7), (3, 4), (2, 2), (1, 1), (5, 1), (1, 9)], 1, 3, 5, 17, 7),  # 6 levels incl. 1-pixel maps
    (3, [(9, 11), (5, 6)], 3, 1, 300, 11, 2),                   # D = 300: no limit on channels
    (4, [(4, 4)], 1, 2, 1, 5, 1),                               # D = 1, P = 1
]


@pytest.mark.parametrize("seed,shapes,n,m,d,lq,points", CASES)
def test_cpu_build_fp32_equals_pytorch_reference(cpu_lib, seed, shapes, n, m, d, lq, points):
    value, locations, weights = msda_case(seed, shapes, n, m, d, lq, points)
    ref = ms_deform_attn_core(value, shapes, None, locations, weights).numpy()
    out = _run_cpu(cpu_lib, value.numpy(), shapes, locations.numpy(), weights.numpy(), np.float32)
    err = float(np.abs(out - ref).max())
    print(f"\nCPU build fp32 vs PyTorch grid_sample core, shapes {shapes} D={d} P={points}: max |diff| = {err:.2e}")
    assert err <= 1e-5


def test_cpu_build_edges_outside_and_pixel_centres(cpu_lib):
    shapes = [(5, 7), (3, 4)]
    value, locations, weights = msda_case(9, shapes, 1, 2, 3, 12, 4)
    special = [  # (x, y) exactly on edges, corners, pixel centres, just outside, far outside, at -1 pixel
        (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.5), (0.5 / 7, 0.5 / 5), (3.5 / 7, 2.5 / 5), (6.5 / 7, 4.5 / 5),
        (-0.5 / 7, 0.5), (1 + 0.5 / 7, 0.5), (-0.3, 1.7), (2.0, -1.0), (0.25, 0.75)]
    for q, (x, y) in enumerate(special):
        locations[0, q, :, :, :, 0] = x
        locations[0, q, :, :, :, 1] = y
    ref = ms_deform_attn_core(value, shapes, None, locations, weights).numpy()
    out = _run_cpu(cpu_lib, value.numpy(), shapes, locations.numpy(), weights.numpy(), np.float32)
    assert np.abs(out - ref).max() <= 1e-5
    # a point on the border pixel's outer edge reads half of it (blend with the zero padding)
    one = np.array([[[[1.0]], [[4.0]]]], np.float32).reshape(1, 2, 1, 1)
    loc = np.array([1.0, 0.5], np.float32).reshape(1, 1, 1, 1, 1, 2)
    got = _run_cpu(cpu_lib, one, [(1, 2)], loc, np.ones((1, 1, 1, 1, 1), np.float32), np.float32)
    assert got.item() == pytest.approx(2.0)


@pytest.mark.parametrize("seed,shapes,n,m,d,lq,points", CASES[:3])
def test_cpu_build_fp16_inputs_within_half_precision(cpu_lib, seed, shapes, n, m, d, lq, points):
    value, locations, weights = msda_case(seed, shapes, n, m, d, lq, points)
    # the same half-rounded inputs through the fp32 reference: what remains is output rounding only
    ref = ms_deform_attn_core(value.half().float(), shapes, None, locations.half().float(),
                              weights.half().float()).numpy()
    out = _run_cpu(cpu_lib, value.numpy(), shapes, locations.numpy(), weights.numpy(), np.float16)
    err = np.abs(out.astype(np.float32) - ref)
    print(f"\nCPU build fp16 vs reference on the same half inputs: max |diff| = {err.max():.2e}")
    assert (err <= 1e-3 * np.abs(ref) + 2e-3).all()
    # against full-precision inputs: half-rounded sampling locations move samples by up to ~size * 2^-11 pixels
    exact = ms_deform_attn_core(value, shapes, None, locations, weights).numpy()
    relative = np.abs(out.astype(np.float32) - exact).max() / np.abs(exact).max()
    print(f"  vs full-precision inputs: max |diff| / max |output| = {relative:.2%}")
    assert relative < 0.03


def test_cpu_build_equals_runtime_numpy_kernel(cpu_lib):
    """The numpy kernel behind plugin nodes in onnxruntime and the C++ maths agree."""
    shapes = [(13, 17), (7, 9), (4, 5)]
    value, locations, weights = msda_case(5, shapes, 2, 4, 8, 30, 4)
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]])
    ours = msda_cpu.msda_numpy(value.numpy(), np.array(shapes), starts, locations.numpy(), weights.numpy())
    out = _run_cpu(cpu_lib, value.numpy(), shapes, locations.numpy(), weights.numpy(), np.float32)
    assert np.abs(ours.reshape(out.shape) - out).max() <= 1e-5


def test_plugin_name_and_version_agree_with_the_cuda_plugin():
    header = (SRC / "msdaPlugin.h").read_text()
    name = re.search(r'kMSDA_PLUGIN_NAME = "([^"]+)"', header).group(1)
    version = re.search(r'kMSDA_PLUGIN_VERSION = "([^"]+)"', header).group(1)
    assert name == msda_contract.OUR_PLUGIN and version == msda_contract.OUR_PLUGIN_VERSION
    assert msda_contract.PluginSpec.for_name(name, None) == msda_contract.PluginSpec(
        name, version, "", flat_output=True, library="libdetr_deploy_plugins.so")
    assert name in msda_contract.PLUGIN_OPS and msda_contract.PLUGIN_OPS[name] is True  # flat [N, Lq, M*D]


# --- compile checks (CI: nvcc is installed, no GPU needed) -------------------------------------------------
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
def test_cuda_kernel_compiles_for_turing_orin_hopper(tmp_path):
    arches = ["75", "87", "90"]  # T4 / Turing, Jetson Orin, H100
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arches]
    result = subprocess.run([NVCC, "-std=c++17", "-O3", "-c", str(SRC / "msdaKernel.cu"), "-o",
                             str(tmp_path / "msdaKernel.o"), *gencode, "-Xcompiler", "-Wall,-Wextra,-Werror"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(["cuobjdump", "--list-elf", str(tmp_path / "msdaKernel.o")], capture_output=True,
                             text=True) if shutil.which("cuobjdump") else None
    if listing is not None and listing.returncode == 0:
        for arch in arches:
            assert f"sm_{arch}" in listing.stdout


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed on this machine")
def test_cmake_project_builds_the_cpu_target(tmp_path):
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(PLUGINS), "-B", str(build), "-DDETR_DEPLOY_BUILD_CUDA=OFF",
                                "-DDETR_DEPLOY_BUILD_TRT=OFF"], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    assert (build / "libdetr_deploy_msda_cpu.so").is_file()


@pytest.mark.skipif(not os.environ.get("DETR_DEPLOY_TRT_INCLUDE"),
                    reason="TensorRT headers are not available here (set DETR_DEPLOY_TRT_INCLUDE to a folder with "
                           "NvInfer.h to compile the plugin wrapper)")
def test_tensorrt_wrapper_compiles_against_headers():
    include = os.environ["DETR_DEPLOY_TRT_INCLUDE"]
    cuda_include = "/usr/local/cuda/include"
    result = subprocess.run([shutil.which("g++") or "c++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra",
                             "-Werror", "-isystem", include, "-isystem", cuda_include, f"-I{SRC}",
                             str(SRC / "msdaPlugin.cpp")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- the CUDA kernel on a GPU (run when the device tool lends one) -----------------------------------------
@pytest.fixture(scope="module")
def cuda_lib(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch here")
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    major, minor = torch.cuda.get_device_capability()
    out = tmp_path_factory.mktemp("msda_cuda") / "libmsda_cuda.so"
    subprocess.run([NVCC, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC",
                    f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}", str(SRC / "msdaKernel.cu"),
                    "-o", str(out)], check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def run_cuda(lib, value, shapes, locations, weights):
    """The kernel through its C API on torch CUDA tensors; returns [N, Lq, M*D] of value's dtype."""
    n, s, m, d = value.shape
    lq, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    shapes_t = torch.tensor(shapes, dtype=torch.int32, device=value.device)
    starts = torch.cat([shapes_t.new_zeros(1), (shapes_t[:, 0] * shapes_t[:, 1]).cumsum(0)[:-1]]).int()
    out = torch.empty(n, lq, m * d, dtype=value.dtype, device=value.device)
    args = [value.contiguous(), shapes_t, starts, locations.contiguous(), weights.contiguous()]
    stream = torch.cuda.current_stream().cuda_stream
    status = lib.detr_msda_cuda(ctypes.c_int32(0 if value.dtype == torch.float32 else 1),
                                *[ctypes.c_void_p(a.data_ptr()) for a in args], ctypes.c_void_p(out.data_ptr()),
                                *[ctypes.c_int64(v) for v in (n, s, m, d, lq, levels, points)],
                                ctypes.c_void_p(stream))
    assert status == 0
    torch.cuda.synchronize()
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("seed,shapes,n,m,d,lq,points", CASES)
def test_cuda_kernel_equals_pytorch_reference(cuda_lib, seed, shapes, n, m, d, lq, points):
    value, locations, weights = msda_case(seed, shapes, n, m, d, lq, points)
    ref = ms_deform_attn_core(value, shapes, None, locations, weights)
    out32 = run_cuda(cuda_lib, value.cuda(), shapes, locations.cuda(), weights.cuda()).cpu()
    print(f"\nCUDA fp32 vs PyTorch: {float((out32 - ref).abs().max()):.2e}")
    assert (out32 - ref).abs().max() <= 1e-5
    ref16 = ms_deform_attn_core(value.half().float(), shapes, None, locations.half().float(), weights.half().float())
    out16 = run_cuda(cuda_lib, value.half().cuda(), shapes, locations.half().cuda(), weights.half().cuda())
    assert ((out16.float().cpu() - ref16).abs() <= 1e-3 * ref16.abs() + 2e-3).all()
