# SPDX-License-Identifier: Apache-2.0
"""MSDA plugin nodes on the CPU in onnxruntime: a plugin-form ONNX file (TensorRT-bound) runs here with the plugin
node itself executed, never swapped for the portable GridSample form.

The kernel is the native one compiled from ``plugins/src/msdaMath.h`` (``msda_native``, multi-threaded) when it is
built, else the numpy one below (slow; a one-line notice says how to build the native one). onnxruntime-extensions
registers it: it serves Python custom ops only in its own domain (``ai.onnx.contrib``), so :func:`plugin_session`
gives the session an in-memory copy whose plugin nodes carry that domain; op type, inputs and attributes are
untouched.
"""
from __future__ import annotations

import copy
import sys

import numpy as np

from .._optional import require
from ..artifact.msda import PLUGIN_OPS

CONTRIB_DOMAIN = "ai.onnx.contrib"
_state = {"registered": False, "threads": 0, "notice": False}


def msda_numpy(value: np.ndarray, spatial_shapes: np.ndarray, level_start_index: np.ndarray,
               sampling_locations: np.ndarray, attention_weights: np.ndarray) -> np.ndarray:
    """MSDA with the plugin contract: bilinear, zero padding, align_corners=False, float32 accumulation.

    Args: value ``[N,S,M,D]``, spatial_shapes ``[L,2]`` (H, W), level_start_index ``[L]``,
    sampling_locations ``[N,Lq,M,L,P,2]`` (x, y in [0, 1]), attention_weights ``[N,Lq,M,L,P]``.
    Returns ``[N,Lq,M,D]`` float32.
    """
    value = np.asarray(value, dtype=np.float32)
    loc = np.asarray(sampling_locations, dtype=np.float32)
    weights = np.asarray(attention_weights, dtype=np.float32)
    n, _, m, d = value.shape
    lq, num_levels = loc.shape[1], loc.shape[3]
    out = np.zeros((n, lq, m, d), dtype=np.float32)
    batch_idx = np.arange(n).reshape(n, 1, 1, 1)
    head_idx = np.arange(m).reshape(1, 1, m, 1)
    for level in range(num_levels):
        h, w = (int(v) for v in spatial_shapes[level])
        start = int(level_start_index[level])
        # one zero row at index h*w absorbs every out-of-map neighbour
        v = np.concatenate([value[:, start:start + h * w], np.zeros((n, 1, m, d), np.float32)], axis=1)
        x = loc[:, :, :, level, :, 0] * w - 0.5  # [N, Lq, M, P]
        y = loc[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        lx, ly = x - x0, y - y0
        aw = weights[:, :, :, level, :]
        for dy, dx, corner in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx), (1, 0, ly * (1 - lx)),
                               (1, 1, ly * lx)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = np.where(valid, yi * w + xi, h * w).astype(np.int64)
            sampled = v[batch_idx, idx, head_idx]  # [N, Lq, M, P, D]
            out += np.einsum("nqmp,nqmpd->nqmd", (corner * aw).astype(np.float32), sampled)
    return out


def msda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                 threads: int = 0) -> np.ndarray:
    """The plugin maths, ``[N,Lq,M*D]`` float32: the native kernel when built, else :func:`msda_numpy`."""
    from .msda_native import load_native, msda_native

    if load_native() is not None:
        return msda_native(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                           num_threads=threads)
    if not _state["notice"]:
        _state["notice"] = True
        print("notice: MSDA plugin nodes run on the slow numpy kernel: the native one is not built (reinstall "
              "detr-deploy where a C++ compiler is present, or see detr_deploy/runtime/msda_native.py)",
              file=sys.stderr)
    out = msda_numpy(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return out.reshape(out.shape[0], out.shape[1], -1)


def _extensions():
    """onnxruntime_extensions, imported without torch and transformers.

    Its package init probes for both (tokenizer and audio converters we never use) and imports them when they are
    installed: 10 s and a torch import in a runtime that must stay numpy-only. Those probes are guarded by
    ``except ImportError``, so for the duration of the import the two are made unimportable (unless already loaded).
    """
    if "onnxruntime_extensions" in sys.modules:
        return sys.modules["onnxruntime_extensions"]
    blocked = [name for name in ("torch", "transformers", "tokenizers") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # makes "import name" raise ImportError
    try:
        return require("onnxruntime_extensions", "running MSDA plugin nodes on the CPU")
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _register_plugin_ops() -> None:
    """Register the CPU kernel of each plugin op type with onnxruntime-extensions (once per process)."""
    if _state["registered"]:
        return
    ext = _extensions()
    types = ext.PyCustomOpDef
    inputs = [types.dt_float, types.dt_int32, types.dt_int32, types.dt_float, types.dt_float]
    attrs = {"plugin_version": types.dt_string, "plugin_namespace": types.dt_string}

    for op_type, flat in PLUGIN_OPS.items():
        def kernel(value, shapes, starts, loc, aw, flat=flat, **_attrs):
            out = msda_forward(value, shapes, starts, loc, aw, _state["threads"])
            return out if flat else out.reshape(out.shape[0], out.shape[1], value.shape[2], value.shape[3])

        ext.onnx_op(op_type=op_type, inputs=inputs, outputs=[types.dt_float], attrs=attrs)(kernel)
    _install_array_results(ext)
    _state["registered"] = True


def _install_array_results(ext) -> None:
    """Let Python custom ops hand their numpy results to onnxruntime-extensions as arrays.

    Its own invocation hook returns every result as ``array.flatten().tolist()``: one Python float per element,
    converted back to an array in C++. For an encoder MSDA output (1x17821x256 at 800x1066) that is 0.7 s per node,
    2.5x the native kernel itself, about 4 s of a 15 s image. The C++ side takes any numpy array (``py::array``,
    ``memcpy`` of its data), so this hook returns C-contiguous arrays (strings still as lists); the invocation is
    otherwise the same. Left as it is when the package's internals differ from what this expects.
    """
    ocos = sys.modules.get("onnxruntime_extensions._ocos")
    registry = getattr(getattr(ocos, "Opdef", None), "_odlist", None)
    if registry is None or not hasattr(ext.PyCustomOpDef, "install_hooker"):
        return

    def invoke(op_id, feed, attributes):
        if op_id not in registry:
            raise RuntimeError(f"no Python custom op with id {op_id}")
        op = registry[op_id]
        results = op.body(*feed, **op.cast_attributes(attributes))
        flat = []
        for result in results if isinstance(results, tuple) else (results,):
            result = np.asarray(result)
            flat += [result.shape, result.flatten().tolist() if result.dtype.kind in "OSU"
                     else np.ascontiguousarray(result)]
        return (op_id, *flat)

    ext.PyCustomOpDef.install_hooker(invoke)


def has_plugin_nodes(model) -> bool:
    """True if an ``onnx.ModelProto`` holds MSDA plugin nodes."""
    return any(node.op_type in PLUGIN_OPS for node in model.graph.node)


def plugin_session(model, options, threads: int | None = None):
    """(model copy, session options) for running a plugin-form ``onnx.ModelProto`` on onnxruntime's CPU provider.

    The copy's plugin nodes are in onnxruntime-extensions' domain (see module doc); ``options`` (SessionOptions)
    gets the extensions library, and its intra-op threads do not spin (they would compete with the kernel's).
    ``threads`` sets the native kernel's threads (None: all cores).
    """
    ext = _extensions()
    _register_plugin_ops()
    _state["threads"] = int(threads or 0)
    options.register_custom_ops_library(ext.get_library_path())
    # onnxruntime's idle intra-op threads spin while a plugin node runs, on the cores the native kernel's threads need
    # (measured at 800x1066 on 2 cores: the kernel 1.3-2.0 s per image with spinning, 0.9-1.4 s without)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = copy.deepcopy(model)
    for node in model.graph.node:
        if node.op_type in PLUGIN_OPS:
            node.domain = CONTRIB_DOMAIN
    if CONTRIB_DOMAIN not in {o.domain for o in model.opset_import}:
        entry = model.opset_import.add()
        entry.domain, entry.version = CONTRIB_DOMAIN, 1
    return model, options
