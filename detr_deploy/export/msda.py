# SPDX-License-Identifier: Apache-2.0
"""The MSDA export seam: a torch custom op standing for one plugin node, and its ONNX translation.

During export every :class:`~detr_deploy.models.deformable_attention.MSDeformAttn` gets ``core`` = a function
calling ``torch.ops.detr_deploy.msda``; the ONNX translation table turns each call into one
``MultiscaleDeformableAttnPlugin_TRT`` node (NVIDIA's plugin in libnvinfer_plugin, output ``[N,Lq,M,D]`` followed
by a Reshape) or into our plugin (libdetr_deploy_plugins.so, output ``[N,Lq,M*D]``). ``spatial_shapes`` and
``level_start_index`` are cast to int32, as both plugins require. The contract itself (names, versions, domain) is
``detr_deploy.artifact.msda``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..artifact.msda import PLUGIN_DOMAIN, PluginSpec
from ..models.deformable_attention import MSDeformAttn, ms_deform_attn_core


@torch.library.custom_op("detr_deploy::msda", mutates_args=())
def msda_op(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
            sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Eager: the reference core (so an exported-for-plugin model still runs in PyTorch)."""
    return ms_deform_attn_core(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@msda_op.register_fake
def _msda_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


def plugin_core(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """``MSDeformAttn.core`` used during plugin-form export: one custom-op call per attention."""
    if not isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = torch.tensor(spatial_shapes, dtype=torch.int64, device=value.device)
    return torch.ops.detr_deploy.msda(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights)


def register_onnx_schema(op_type: str) -> None:
    """Declare the plugin op to onnx (this process only) so onnxscript can emit it and the checker can check it.

    Inputs: value (T), spatial_shapes (int32), level_start_index (int32), sampling_locations (T),
    attention_weights (T); output (T); optional string attributes plugin_version and plugin_namespace.
    """
    import onnx
    from onnx.defs import OpSchema

    try:
        onnx.defs.get_schema(op_type, 1, PLUGIN_DOMAIN)
        return
    except onnx.defs.SchemaError:
        pass
    types = ["tensor(float)", "tensor(float16)"]
    param = OpSchema.FormalParameter
    schema = OpSchema(
        op_type, PLUGIN_DOMAIN, 1, doc="Multi-scale deformable attention (TensorRT plugin)",
        inputs=[param("value", "T"), param("spatial_shapes", "tensor(int32)"),
                param("level_start_index", "tensor(int32)"), param("sampling_locations", "T"),
                param("attention_weights", "T")],
        outputs=[param("output", "T")],
        type_constraints=[("T", types, "float or half")],
        attributes=[OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "plugin version", required=False),
                    OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "plugin namespace",
                                       required=False)])
    onnx.defs.register_schema(schema)


def onnx_translation(spec: PluginSpec):
    """An onnxscript function emitting the plugin node for ``torch.ops.detr_deploy.msda``."""
    import onnx
    from onnxscript import opset18 as op
    from onnxscript import values

    register_onnx_schema(spec.name)
    plugins = values.Opset(PLUGIN_DOMAIN, 1)

    def msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        shapes32 = op.Cast(spatial_shapes, to=onnx.TensorProto.INT32)
        starts32 = op.Cast(level_start_index, to=onnx.TensorProto.INT32)
        out = getattr(plugins, spec.name)(value, shapes32, starts32, sampling_locations, attention_weights,
                                          plugin_version=spec.version, plugin_namespace=spec.namespace)
        if spec.flat_output:
            return out
        return op.Reshape(out, op.Constant(value_ints=[0, 0, -1]))

    return msda


@contextlib.contextmanager
def msda_core(model: nn.Module, core) -> Iterator[None]:
    """Temporarily set ``core`` on every MSDeformAttn of ``model``."""
    modules = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    saved = [m.core for m in modules]
    for m in modules:
        m.core = core
    try:
        yield
    finally:
        for m, c in zip(modules, saved):
            m.core = c
