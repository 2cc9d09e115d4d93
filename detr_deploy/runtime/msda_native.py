# SPDX-License-Identifier: Apache-2.0
"""The native CPU kernel of multi-scale deformable attention (MSDA), through ctypes (numpy only, never torch).

The library is ``plugins/src/msdaCpu.cpp``: the maths header the CUDA plugin uses (``plugins/src/msdaMath.h``),
with channel loops the compiler vectorises and threads over queries. ``pip install`` builds it as
``detr_deploy/runtime/_msda_native*.so`` when a C++ compiler is present (without one the install still succeeds
and :func:`load_native` returns None). To build it by hand::

    cmake -S plugins -B plugins/build -DDETR_DEPLOY_BUILD_CUDA=OFF -DDETR_DEPLOY_BUILD_TRT=OFF
    cmake --build plugins/build
    export DETR_DEPLOY_MSDA_LIBRARY=plugins/build/libdetr_deploy_msda_cpu.so

or reinstall the package (``pip install .`` / ``pip install -e .``) with a compiler present.

Lookup order: the ``DETR_DEPLOY_MSDA_LIBRARY`` environment variable, then the library installed next to this
module. The library's ABI number (``detr_msda_cpu_version``) must be :data:`ABI_VERSION`; a stale build is refused.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
import threading
from pathlib import Path

import numpy as np

ENV_VAR = "DETR_DEPLOY_MSDA_LIBRARY"
ABI_VERSION = 1
BUILD_HINT = ("reinstall detr-deploy with a C++ compiler present (pip install .), or build it with "
              "`cmake -S plugins -B plugins/build -DDETR_DEPLOY_BUILD_CUDA=OFF -DDETR_DEPLOY_BUILD_TRT=OFF && "
              f"cmake --build plugins/build` and set {ENV_VAR}=plugins/build/libdetr_deploy_msda_cpu.so")
_STEM = "_msda_native"
_STATUS = {1: "invalid arguments (negative size, or a level outside value)", 2: "the kernel failed (out of memory?)"}

_lock = threading.Lock()
_cache: dict[str, ctypes.CDLL | None] = {}
_errors: dict[str, str] = {}


def native_library_path() -> Path | None:
    """The library to load: ``$DETR_DEPLOY_MSDA_LIBRARY`` if set, else the built ``_msda_native*.so`` here."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:  # this interpreter's tag first
        candidate = here / f"{_STEM}{suffix}"
        if candidate.is_file():
            return candidate
    found = sorted(p for pattern in (f"{_STEM}*.so", f"{_STEM}*.pyd", f"{_STEM}*.dylib") for p in here.glob(pattern))
    return found[0] if found else None


def load_error() -> str | None:
    """Why :func:`load_native` returns None (None when the library loads)."""
    if load_native() is not None:
        return None
    path = native_library_path()
    if path is None:
        return f"the native MSDA library is not built: {BUILD_HINT}"
    return _errors.get(str(path), f"{path} did not load; {BUILD_HINT}")


def load_native() -> ctypes.CDLL | None:
    """The native library (cached per path), or None if it is absent, does not load, or has another ABI."""
    path = native_library_path()
    if path is None:
        return None
    key = str(path)
    with _lock:
        if key in _cache:
            return _cache[key]
        lib = None
        try:
            lib = _open(path)
        except (OSError, AttributeError, RuntimeError) as error:  # AttributeError: a missing function
            _errors[key] = f"{path}: {error}; {BUILD_HINT}"
        _cache[key] = lib
        return lib


def _open(path: Path) -> ctypes.CDLL:
    if not path.is_file():
        raise OSError("no such file")
    lib = ctypes.CDLL(str(path))
    try:
        version = lib.detr_msda_cpu_version
    except AttributeError:
        raise RuntimeError("it has no detr_msda_cpu_version (a stale build, before ABI 1)") from None
    version.argtypes, version.restype = [], ctypes.c_int32
    found = version()
    if found != ABI_VERSION:
        raise RuntimeError(f"library ABI {found}, this module needs {ABI_VERSION} (a stale build)")
    pointer, i64 = ctypes.c_void_p, ctypes.c_int64
    for name in ("detr_msda_cpu_f32", "detr_msda_cpu_f16"):
        fn = getattr(lib, name)
        fn.argtypes = [pointer] * 6 + [i64] * 7 + [ctypes.c_int32]
        fn.restype = ctypes.c_int32
    return lib


def _contiguous(array, dtype) -> np.ndarray:
    """``array`` as a C-contiguous, aligned ndarray of ``dtype``; copies only when it is not one already."""
    return np.require(np.asarray(array), dtype=dtype, requirements=["C", "A"])


def msda_native(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                num_threads: int = 0) -> np.ndarray:
    """MSDA forward with the plugin contract, on the native CPU kernel.

    Args: value ``[N,S,M,D]``, spatial_shapes ``[L,2]`` (H, W), level_start_index ``[L]``,
    sampling_locations ``[N,Lq,M,L,P,2]`` (x, y in [0, 1]), attention_weights ``[N,Lq,M,L,P]``; floats are
    used as float32, indices as int32. ``num_threads`` <= 0: one per hardware thread (the result is the same,
    bit for bit, for every thread count). Bilinear, zero padding, align_corners=False, float32 accumulation.

    Returns: ``[N, Lq, M*D]`` float32.

    Raises: RuntimeError if the library is not available (see the module doc), ValueError for inconsistent shapes.
    """
    lib = load_native()
    if lib is None:
        raise RuntimeError(load_error() or f"the native MSDA library is not available: {BUILD_HINT}")
    value = _contiguous(value, np.float32)
    shapes = _contiguous(spatial_shapes, np.int32)
    starts = _contiguous(level_start_index, np.int32)
    locations = _contiguous(sampling_locations, np.float32)
    weights = _contiguous(attention_weights, np.float32)
    if value.ndim != 4 or locations.ndim != 6 or weights.ndim != 5:
        raise ValueError(f"expected value [N,S,M,D], sampling_locations [N,Lq,M,L,P,2], attention_weights "
                         f"[N,Lq,M,L,P]; got {value.shape}, {locations.shape}, {weights.shape}")
    n, s, m, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    if locations.shape != (n, lq, m, levels, points, 2) or weights.shape != (n, lq, m, levels, points):
        raise ValueError(f"sampling_locations {locations.shape} / attention_weights {weights.shape} do not match "
                         f"value {value.shape}")
    if shapes.shape != (levels, 2) or starts.shape != (levels,):
        raise ValueError(f"spatial_shapes {shapes.shape} / level_start_index {starts.shape} do not match "
                         f"{levels} levels")
    out = np.empty((n, lq, m * d), np.float32)
    status = lib.detr_msda_cpu_f32(value.ctypes.data, shapes.ctypes.data, starts.ctypes.data,
                                   locations.ctypes.data, weights.ctypes.data, out.ctypes.data,
                                   n, s, m, d, lq, levels, points, max(-1, min(int(num_threads), 2**31 - 1)))
    if status != 0:
        raise ValueError(f"native MSDA kernel: {_STATUS.get(status, f'status {status}')}")
    return out


__all__ = ["ABI_VERSION", "ENV_VAR", "load_error", "load_native", "msda_native", "native_library_path"]
