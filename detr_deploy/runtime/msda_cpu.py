# SPDX-License-Identifier: Apache-2.0
"""A CPU implementation of the MSDA plugin nodes for onnxruntime (numpy; via onnxruntime-extensions).

This lets a plugin-form ONNX (TensorRT-bound) run on the CPU for verification, with the plugin node itself
executed, never swapped for the portable GridSample form. onnxruntime-extensions serves Python custom ops
only in its own domain (``ai.onnx.contrib``), so :func:`redomain_plugin_nodes` gives the session an in-memory
copy whose plugin nodes carry that domain; op type, inputs and attributes are untouched.
"""
from __future__ import annotations

import numpy as np

from .._optional import require

PLUGIN_DOMAIN = "trt.plugins"
NVIDIA_PLUGIN = "MultiscaleDeformableAttnPlugin_TRT"
OUR_PLUGIN = "DetrDeployMSDA_TRT"
PLUGIN_OPS = {NVIDIA_PLUGIN: False, OUR_PLUGIN: True}  # op type -> output is flat [N, Lq, M*D]
_CONTRIB_DOMAIN = "ai.onnx.contrib"
_registered = False


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


def register_plugin_ops() -> None:
    """Register the CPU kernels of both plugin op types with onnxruntime-extensions (once per process)."""
    global _registered
    if _registered:
        return
    ext = require("onnxruntime_extensions", "running MSDA plugin nodes on the CPU")
    types = ext.PyCustomOpDef
    inputs = [types.dt_float, types.dt_int32, types.dt_int32, types.dt_float, types.dt_float]
    attrs = {"plugin_version": types.dt_string, "plugin_namespace": types.dt_string}

    for op_type, flat in PLUGIN_OPS.items():
        def kernel(value, shapes, starts, loc, aw, flat=flat, **_attrs):
            out = msda_numpy(value, shapes, starts, loc, aw)
            return out.reshape(out.shape[0], out.shape[1], -1) if flat else out

        ext.onnx_op(op_type=op_type, inputs=inputs, outputs=[types.dt_float], attrs=attrs)(kernel)
    _registered = True


def has_plugin_nodes(model) -> bool:
    """True if an ``onnx.ModelProto`` holds MSDA plugin nodes."""
    return any(node.op_type in PLUGIN_OPS for node in model.graph.node)


def redomain_plugin_nodes(model):
    """A copy of ``model`` whose MSDA plugin nodes are in onnxruntime-extensions' domain (see module doc)."""
    import copy

    model = copy.deepcopy(model)
    for node in model.graph.node:
        if node.op_type in PLUGIN_OPS:
            node.domain = _CONTRIB_DOMAIN
    domains = {o.domain for o in model.opset_import}
    if _CONTRIB_DOMAIN not in domains:
        entry = model.opset_import.add()
        entry.domain, entry.version = _CONTRIB_DOMAIN, 1
    return model


def session_options_with_plugins(options=None):
    """onnxruntime SessionOptions with the CPU plugin kernels' library registered."""
    ort = require("onnxruntime", "running ONNX models")
    ext = require("onnxruntime_extensions", "running MSDA plugin nodes on the CPU")
    register_plugin_ops()
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(ext.get_library_path())
    return options
