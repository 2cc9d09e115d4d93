# SPDX-License-Identifier: Apache-2.0
"""torch -> ONNX for DETR and Deformable DETR, with MSDA as a TensorRT plugin node or standard ops.

The exported graph has inputs ``pixel_values`` float32 ``[batch,3,height,width]`` and ``pixel_mask`` int32
``[batch,height,width]`` (1 = real pixel) and outputs ``logits`` ``[batch,Q,C]`` and ``pred_boxes``
``[batch,Q,4]``, exactly the PyTorch model's. It uses torch's ``torch.export``-based exporter (the TorchScript
exporter is deprecated and bakes Python shape arithmetic into constants, which breaks dynamic sizes).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from .._optional import require
from ..artifact.metadata import METADATA_KEY, ArtifactMetadata, MSDAInfo
from ..artifact.msda import NVIDIA_PLUGIN, PLUGIN_DOMAIN, PluginSpec
from ..artifact.settings import postprocess_settings, preprocess_settings
from ..errors import ConfigError
from ..files import atomic_output
from ..progress import progress
from ..runtime.preprocess import IMAGE_INPUT
from .config import ExportConfig
from .fold import fold_frozen_batchnorm
from .msda import msda_core, onnx_translation, plugin_core
from .same_padding import replace_same_padding

INPUT_NAMES = ("pixel_values", "pixel_mask")
IMAGE_DIMS = ("image_height", "image_width")  # the source image's, for in-graph pre-processing
MASK_DTYPE = torch.int32  # int32 rather than int64: every TensorRT version takes int32 inputs


class OnnxOutputs(nn.Module):
    """``forward(pixel_values, pixel_mask) -> tuple`` of the model's ``output_names``, in that order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
        out = self.model(pixel_values, pixel_mask)
        return tuple(out[name] for name in self.model.output_names)


@dataclass
class ExportResult:
    path: Path
    metadata: ArtifactMetadata
    seconds: float
    num_nodes: int
    size_bytes: int


def max_stride(model: nn.Module) -> int:
    """Total stride of the coarsest feature level (32 for DETR R50, 64 for 4-level Deformable DETR)."""
    strides = list(model.backbone.strides)
    extra = getattr(model.config, "num_feature_levels", len(strides)) - len(strides)
    return max(strides) * 2 ** max(extra, 0)


def plugin_spec(config: ExportConfig) -> PluginSpec:
    return PluginSpec.for_name(config.plugin_name, config.plugin_version)


def output_shapes(model: nn.Module, batch, height, width) -> dict[str, dict]:
    """Declared shapes of the model's outputs for the metadata (``pred_masks`` at 1/4 of the input)."""
    mc = model.config
    logits = mc.num_classes if mc.family == "deformable" else mc.num_classes + 1
    shapes = {"logits": [batch, mc.num_queries, logits], "pred_boxes": [batch, mc.num_queries, 4]}
    if "pred_masks" in model.output_names:  # the stride-4 backbone level: ceil(size / 4)
        shapes["pred_masks"] = [batch, mc.num_queries] + [v if isinstance(v, str) else -(-v // 4)
                                                          for v in (height, width)]
    return {name: {"shape": shapes[name], "dtype": "float32"} for name in model.output_names}


def backbone_summary(model: nn.Module) -> dict:
    """The backbone in the metadata's ``extra.backbone``: ``name``, ``source`` ("built-in" ResNet or "timm", with
    timm's version), ``dilation``, ``norm``, ``out_stages`` (timm ``out_indices``) and, per level fed to the
    transformer, its ``channels`` and ``strides``."""
    bb = model.config.backbone
    summary = {"name": bb.name, "source": "timm" if bb.is_timm else "built-in", "dilation": bool(bb.dilation),
               "norm": bb.norm, "out_stages": [int(s) for s in bb.out_stages],
               "channels": [int(c) for c in model.backbone.channels],
               "strides": [int(s) for s in model.backbone.strides]}
    if bb.is_timm:
        import timm

        summary["timm_version"] = timm.__version__
    return summary


def build_metadata(model: nn.Module, config: ExportConfig) -> ArtifactMetadata:
    """The artifact contract for ``model`` exported with ``config`` (see ``detr_deploy.artifact.metadata``)."""
    mc = model.config
    batch = "batch" if config.dynamic else config.batch
    h, w = ("height", "width") if config.dynamic else config.input_size
    msda = None
    if mc.family == "deformable":
        if config.msda == "plugin":
            spec = plugin_spec(config)
            msda = MSDAInfo("plugin", spec.name, spec.version, spec.namespace, spec.library)
        else:
            msda = MSDAInfo("gridsample")
    preprocess = preprocess_settings(mc, None if config.dynamic else config.input_size)
    inputs = {"pixel_values": {"shape": [batch, 3, h, w], "dtype": "float32"},
              "pixel_mask": {"shape": [batch, h, w], "dtype": "int32"}}
    if config.preprocess_in_graph:
        preprocess = dataclasses.replace(preprocess, in_graph=True)
        inputs = {IMAGE_INPUT: {"shape": [batch, *IMAGE_DIMS, 3], "dtype": "uint8"}}
    return ArtifactMetadata(
        variant=model.variant, family=mc.family, num_queries=mc.num_queries, num_classes=mc.num_classes,
        id2label=dict(mc.id2label), weights=dict(model.weights_info), preprocess=preprocess,
        postprocess=postprocess_settings(mc), inputs=inputs,
        outputs=output_shapes(model, batch, h, w), task=mc.task, stuff_ids=list(getattr(mc, "stuff_ids", ())),
        msda=msda, precision=config.precision, opset=config.opset, detr_deploy_version=__version__,
        extra={"model_config": mc.to_dict(), "backbone": backbone_summary(model), "min_size": max_stride(model) + 1,
               "max_size": config.max_size})


def build_metadata_for_tensors(metadata: ArtifactMetadata) -> ArtifactMetadata:
    """The same artifact taking ``pixel_values``/``pixel_mask`` (the graph before in-graph pre-processing is added:
    what INT8 calibration runs)."""
    if not metadata.preprocess.in_graph:
        return metadata
    batch = metadata.static_batch or "batch"
    h, w = metadata.preprocess.input_size or ("height", "width")
    return dataclasses.replace(metadata, preprocess=dataclasses.replace(metadata.preprocess, in_graph=False),
                               inputs={"pixel_values": {"shape": [batch, 3, h, w], "dtype": "float32"},
                                       "pixel_mask": {"shape": [batch, h, w], "dtype": "int32"}})


def _example_inputs(config: ExportConfig) -> tuple[torch.Tensor, torch.Tensor]:
    # dynamic: batch 2, or torch.export specialises batch 1 to a constant
    batch = 2 if config.dynamic else config.batch
    h, w = config.input_size
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, h, w, generator=gen), torch.ones(batch, h, w, dtype=MASK_DTYPE)


def _dynamic_shapes(model: nn.Module, config: ExportConfig):
    from torch.export import Dim

    low = max_stride(model) + 1
    batch = Dim("batch", min=1, max=256)
    height = Dim("height", min=low, max=config.max_size)
    width = Dim("width", min=low, max=config.max_size)
    return {"pixel_values": {0: batch, 2: height, 3: width}, "pixel_mask": {0: batch, 1: height, 2: width}}


def _declare_plugin_outputs(model_proto) -> None:
    """Give every plugin node's output a type and a full shape, so shape inference continues past it.

    NVIDIA's plugin returns ``[N, Lq, M, D]``; ours ``[N, Lq, M*D]``. N and M, D come from ``value``, Lq from
    ``sampling_locations``.
    """
    onnx = require("onnx")
    model_proto = onnx.shape_inference.infer_shapes(model_proto)  # shapes of the plugin inputs
    known = {vi.name: vi for vi in list(model_proto.graph.value_info) + list(model_proto.graph.input)}

    def dims(name):
        vi = known.get(name)
        return list(vi.type.tensor_type.shape.dim) if vi is not None and vi.type.tensor_type.HasField("shape") \
            else None

    declared = []
    for node in model_proto.graph.node:
        if node.domain != PLUGIN_DOMAIN:
            continue
        value, locations = dims(node.input[0]), dims(node.input[3])
        if not value or not locations:
            raise ConfigError(f"cannot declare the output shape of plugin node {node.name}: input shapes unknown")
        flat = node.op_type != NVIDIA_PLUGIN
        vi = onnx.helper.make_tensor_value_info(node.output[0], known[node.input[0]].type.tensor_type.elem_type,
                                                None)
        shape = vi.type.tensor_type.shape
        for d in [value[0], locations[1]] + ([None] if flat else [value[2], value[3]]):
            new = shape.dim.add()
            if d is None:  # M * D
                m, dd = value[2], value[3]
                if m.HasField("dim_value") and dd.HasField("dim_value"):
                    new.dim_value = m.dim_value * dd.dim_value
                else:
                    new.dim_param = "heads_x_head_dim"
            elif d.HasField("dim_value"):
                new.dim_value = d.dim_value
            else:
                new.dim_param = d.dim_param
        declared.append(vi)
    names = {vi.name for vi in declared}
    kept = [vi for vi in model_proto.graph.value_info if vi.name not in names]
    del model_proto.graph.value_info[:]
    model_proto.graph.value_info.extend(kept + declared)
    return model_proto


def _simplify(model_proto, log: Callable[[str], None]):
    """onnxslim: pure-graph rewriting (no onnxruntime run), so custom plugin nodes pass through untouched."""
    onnxslim = require("onnxslim", "simplifying the exported graph")
    before = len(model_proto.graph.node)
    try:
        slim = onnxslim.slim(model_proto)
    except Exception as exc:  # a simplifier bug must not lose the export; the unsimplified graph is valid
        log(f"  onnxslim failed ({type(exc).__name__}: {exc}); keeping the unsimplified graph")
        return model_proto
    log(f"  onnxslim: {before} -> {len(slim.graph.node)} nodes")
    return slim


def _prepend_preprocess(model_proto, metadata: ArtifactMetadata):
    """The in-graph pre-processing in front of the model: input ``image`` uint8 replaces ``pixel_values`` and
    ``pixel_mask``, which become the pre-processing's outputs (``runtime.preprocess_graph``)."""
    from ..runtime.preprocess_graph import build_preprocess_graph, image_input

    front = build_preprocess_graph(metadata.preprocess)
    graph = model_proto.graph
    kept = [i for i in graph.input if i.name not in INPUT_NAMES]
    del graph.input[:]
    graph.input.extend([image_input(metadata.static_batch or "batch")] + kept)
    nodes = list(front.nodes) + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(front.initializers)
    return model_proto


def _finalize(model_proto, metadata: ArtifactMetadata, config: ExportConfig):
    onnx = require("onnx")
    model_proto.producer_name = "detr-deploy"
    model_proto.producer_version = __version__
    model_proto.doc_string = f"{metadata.variant} exported by detr-deploy {__version__}"
    del model_proto.metadata_props[:]
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    if metadata.msda is not None and metadata.msda.form == "plugin":
        if not any(o.domain == PLUGIN_DOMAIN for o in model_proto.opset_import):
            op = model_proto.opset_import.add()
            op.domain, op.version = PLUGIN_DOMAIN, 1
    # plugin nodes: a model-local function of the same name would be inlined by TensorRT instead of the plugin
    del model_proto.functions[:]
    model_proto = onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=False)
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def _lower_precision(model_proto, metadata: ArtifactMetadata, config: ExportConfig, log: Callable[[str], None]):
    """FP16 (and INT8 Q/DQ) on the raw exported graph, whose nodes still carry their PyTorch module scopes."""
    from .precision import convert_to_mixed_fp16

    fp32_proto = model_proto
    mixed, report = convert_to_mixed_fp16(fp32_proto, msda_fp16=config.msda_fp16)
    metadata.extra["precision_report"] = report.summary()
    log(f"  mixed precision: {report.summary()}")
    if config.precision != "int8":
        return mixed
    from .quantize import calibration_batches, collect_ranges, insert_qdq, plan_quantization

    calib = config.calibration
    plan = plan_quantization(fp32_proto, calib.excluded_scopes)
    feeds = calibration_batches(calib.images, build_metadata_for_tensors(metadata))
    passes = 1 if calib.method == "max" else 2
    log(f"  INT8: calibrating {len(plan.nodes)} Conv/MatMul inputs on {len(calib.images)} images "
        f"({calib.method}; {len(plan.skipped)} nodes left out)")
    with progress(passes * len(feeds), "calibration", unit="batch", leave=False) as advance:
        collector = collect_ranges(fp32_proto, plan, feeds, calib.method, progress=advance)
    quantized = insert_qdq(mixed, fp32_proto, plan, collector, calib.method, calib.percentile)
    metadata.extra["int8"] = {"method": calib.method, "images": len(calib.images), "quantized": sorted(plan.nodes),
                              "left_out": plan.skipped}
    return quantized


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Keep the user's terminal readable: the exporter's optimizer logs every constant it cannot fold, and torch's
    op registry one line per torchvision op when torchvision is not installed."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, output: str | os.PathLike, config: ExportConfig | None = None,
                log: Callable[[str], None] = print) -> ExportResult:
    """Export ``model`` (from ``create_model``) to ``output``; returns path, metadata, time, node count, size."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    config = config or ExportConfig()
    config.validate()
    if config.precision == "int8" and model.config.task == "segmentation":
        raise ConfigError("INT8 export of segmentation models is not supported (its mask head was never calibrated "
                          "and measured); export --precision fp16 or fp32")
    if config.precision == "int8" and config.opset < 19:
        log(f"INT8: opset {config.opset} -> 19 (QuantizeLinear/DequantizeLinear with FP16 scales)")
        config = dataclasses.replace(config, opset=19)
    output = Path(output)
    start = time.perf_counter()
    metadata = build_metadata(model, config)
    prepared = fold_frozen_batchnorm(model).eval()
    if config.dynamic:
        replace_same_padding(prepared)  # timm's tf_* "same" padding, in integers the shape solver can simplify
    wrapper = OnnxOutputs(prepared).eval()
    args = _example_inputs(config)
    plugin = metadata.msda is not None and metadata.msda.form == "plugin"
    table = {torch.ops.detr_deploy.msda.default: onnx_translation(plugin_spec(config))} if plugin else None
    shape_note = "dynamic batch/height/width" if config.dynamic else f"static {config.batch}x{config.input_size}"
    log(f"exporting {metadata.variant} ({shape_note}, msda={metadata.msda.form if metadata.msda else 'n/a'}, "
        f"opset {config.opset}){' - dynamic shapes take 1-3 minutes on a CPU' if config.dynamic else ''}...")
    with contextlib.ExitStack() as stack:
        if plugin:
            stack.enter_context(msda_core(prepared, plugin_core))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(_quiet_logger("onnxscript"))
        stack.enter_context(_quiet_logger("torch.onnx._internal.exporter._registration"))
        stack.enter_context(torch.no_grad())
        program = torch.onnx.export(
            wrapper, args, dynamo=True, input_names=list(INPUT_NAMES), output_names=list(model.output_names),
            dynamic_shapes=_dynamic_shapes(prepared, config) if config.dynamic else None,
            opset_version=config.opset, custom_translation_table=table, optimize=True, verbose=False)
    model_proto = program.model_proto
    log(f"  traced and translated in {time.perf_counter() - start:.1f}s ({len(model_proto.graph.node)} nodes)")
    if config.precision in ("fp16", "int8"):
        model_proto = _lower_precision(model_proto, metadata, config, log)
    if config.simplify:
        model_proto = _simplify(model_proto, log)
    if plugin:
        model_proto = _declare_plugin_outputs(model_proto)
    if metadata.preprocess.in_graph:
        model_proto = _prepend_preprocess(model_proto, metadata)
    model_proto = _finalize(model_proto, metadata, config)
    with atomic_output(output) as tmp:
        onnx.save_model(model_proto, str(tmp))
    seconds = time.perf_counter() - start
    size = output.stat().st_size
    log(f"  exported in {seconds:.1f}s: {size / 1e6:.1f} MB, {len(model_proto.graph.node)} nodes")
    return ExportResult(output, metadata, seconds, len(model_proto.graph.node), size)
