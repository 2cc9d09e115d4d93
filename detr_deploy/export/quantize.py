# SPDX-License-Identifier: Apache-2.0
"""INT8 explicit quantization: QuantizeLinear/DequantizeLinear pairs that TensorRT fuses into INT8 kernels.

The mixed FP16 graph (``precision.py``) gets Q/DQ on the inputs of its Conv, MatMul and Gemm nodes with a constant
weight:
- weights: symmetric per output channel, stored as int8 initializers with a DequantizeLinear (zero point 0);
- activations: symmetric per tensor, scale = amax / 127, amax calibrated by running the FP32 graph on the user's
  images (max, percentile or entropy/KL, the TensorRT calibrators' method);
- left out (measured in benchmarks/precision.py): the MSDA sampling-offset and attention-weight projections
  (a quantised offset moves the sample), the heads, reference points, two-stage scoring, and products of two
  activations (attention scores).
Q/DQ carry FP16 scales where their consumer runs in FP16 (opset >= 19), so each DequantizeLinear feeds its Conv or
MatMul directly, the pattern TensorRT fuses. Everything not quantised stays as the FP16 pass left it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .._optional import require
from ..errors import ConfigError, ImageError
from .precision import MSDA_CLASS, node_module, replace_nodes

QUANT_OPS = {"Conv", "MatMul", "Gemm"}
EXCLUDED_SCOPES = ("sampling_offsets", "attention_weights", "class_embed", "bbox_embed", "reference_points",
                   "enc_output", "pos_trans", "query_embed", "position_embedding", "proposal_embedding")
QMAX = 127.0
HISTOGRAM_BINS = 2048


@dataclass
class CalibrationConfig:
    """Where INT8 activation ranges come from.

    Attributes:
        images: image files (see :func:`calibration_images`).
        method: "percentile" (99.99th percentile of |x|, default), "entropy" (KL divergence) or "max".
            Percentile is the default because entropy clipped too hard on the trained shapes model
            (COCO mAP 0.581 -> 0.204 with entropy, 0.579 with percentile, 200 held-out scenes; MODEL_CARD.md).
        percentile: for "percentile", of |x| over all calibration data.
        excluded_scopes: module-path fragments never quantised.
    """

    images: list[str]
    method: str = "percentile"
    percentile: float = 99.99
    excluded_scopes: tuple[str, ...] = EXCLUDED_SCOPES

    def validate(self) -> None:
        if self.method not in ("entropy", "percentile", "max"):
            raise ConfigError(f"calibration method must be entropy, percentile or max, got {self.method!r}")
        if not self.images:
            raise ConfigError("INT8 needs calibration images: pass --calib DIR with representative images")


def calibration_images(folder: str | os.PathLike | None, count: int | None) -> list[str]:
    """The first ``count`` readable images of ``folder`` (sorted), with clear errors for every way this fails."""
    from ..runtime.images import find_images, load_image

    if folder is None:
        raise ConfigError("--precision int8 needs calibration images: pass --calib DIR (a few hundred images like "
                          "the ones the model will see; 100 is a reasonable minimum)")
    if not os.path.isdir(folder):
        raise ConfigError(f"calibration folder {folder} does not exist or is not a folder")
    try:
        files = find_images([str(folder)])
    except ImageError:  # a folder without image files
        files = []
    readable, bad = [], []
    for path in files:
        if count is not None and len(readable) >= count:
            break
        try:
            load_image(path)
            readable.append(str(path))
        except ImageError as exc:
            bad.append(str(exc))
    if not readable:
        detail = f" ({len(bad)} unreadable, e.g. {bad[0]})" if bad else ""
        raise ConfigError(f"no readable images in calibration folder {folder}{detail}")
    if count is not None and len(readable) < count:
        raise ConfigError(f"calibration folder {folder} has {len(readable)} readable images but --calib-size {count} "
                          f"was asked; pass --calib-size {len(readable)} or add images"
                          + (f" ({len(bad)} unreadable skipped)" if bad else ""))
    return readable


@dataclass
class QuantPlan:
    """Per quantised node: its activation input tensor (FP32 graph name) and weight initializer."""

    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # node name -> (activation, weight)
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why


def plan_quantization(fp32_model, excluded_scopes: Iterable[str] = EXCLUDED_SCOPES) -> QuantPlan:
    """Which Conv/MatMul/Gemm nodes of the exported FP32 graph get Q/DQ."""
    initializers = {init.name for init in fp32_model.graph.initializer}
    plan = QuantPlan()
    for node in fp32_model.graph.node:
        if node.op_type not in QUANT_OPS:
            continue
        scope, cls = node_module(node)
        weights = [name for name in node.input[:2] if name in initializers]
        activations = [name for name in node.input[:2] if name and name not in initializers]
        if len(weights) != 1 or len(activations) != 1:
            plan.skipped[node.name] = "product of two activations"
        elif cls == MSDA_CLASS or any(part in scope for part in excluded_scopes):
            plan.skipped[node.name] = f"excluded scope {scope}"
        else:
            plan.nodes[node.name] = (activations[0], weights[0])
    return plan


class RangeCollector:
    """Per tensor: running max of |x| (pass 1) and a histogram of |x| over [0, max] (pass 2)."""

    def __init__(self, names: list[str]):
        self.names = names
        self.amax = dict.fromkeys(names, 0.0)
        self.hist: dict[str, np.ndarray] = {}

    def observe_max(self, values: dict[str, np.ndarray]) -> None:
        for name in self.names:
            self.amax[name] = max(self.amax[name], float(np.abs(values[name]).max()))

    def observe_histogram(self, values: dict[str, np.ndarray]) -> None:
        for name in self.names:
            top = self.amax[name] or 1.0
            counts, _ = np.histogram(np.abs(values[name]), bins=HISTOGRAM_BINS, range=(0.0, top))
            self.hist[name] = self.hist.get(name, 0) + counts

    def amax_for(self, name: str, method: str, percentile: float) -> float:
        if method == "max" or name not in self.hist:
            return self.amax[name]
        hist, width = self.hist[name].astype(np.float64), (self.amax[name] or 1.0) / HISTOGRAM_BINS
        if method == "percentile":
            cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
            return float((np.searchsorted(cdf, percentile / 100.0) + 1) * width)
        return float(entropy_threshold_bin(hist) * width)


def entropy_threshold_bin(hist: np.ndarray, levels: int = 128) -> int:
    """TensorRT's entropy calibration: the clipping bin (>= levels) minimising KL(P || Q).

    P is the histogram up to the threshold with the clipped tail added to its last bin; Q quantises the same bins
    to ``levels`` chunks and spreads each chunk's mass back over its non-empty bins.
    """
    hist = np.asarray(hist, dtype=np.float64)
    total_bins = len(hist)
    if hist.sum() == 0:
        return total_bins
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[t] = sum(hist[t:])
    best_bin, best_kl = total_bins, np.inf
    for threshold in range(levels, total_bins + 1):
        source = hist[:threshold]
        p = source.copy()
        p[-1] += tail[threshold]
        starts = np.linspace(0, threshold, levels + 1).astype(int)[:-1]  # every chunk has >= 1 bin
        nonzero = source > 0
        chunk_mass = np.add.reduceat(source, starts)
        chunk_nonzero = np.add.reduceat(nonzero.astype(np.float64), starts)
        lengths = np.diff(np.append(starts, threshold))
        q = np.repeat(chunk_mass / np.maximum(chunk_nonzero, 1.0), lengths) * nonzero
        mask = p > 0
        if (q[mask] == 0).any():
            continue
        p_norm, q_norm = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float(np.sum(p_norm * np.log(p_norm / q_norm)))
        if kl < best_kl:
            best_bin, best_kl = threshold, kl
    return best_bin


def calibration_batches(images: list[str], metadata) -> list[dict[str, np.ndarray]]:
    """The artifact's own preprocessing of the calibration images: one feed per batch (static batches filled)."""
    from ..runtime.images import load_image
    from ..runtime.preprocess import normalization_table, preprocess_for

    batch = metadata.inputs["pixel_values"]["shape"][0]
    size = batch if isinstance(batch, int) else 1
    table = normalization_table(metadata.preprocess)
    return [preprocess_for([load_image(path) for path in images[start:start + size]], metadata, table).feeds()
            for start in range(0, len(images), size)]


def collect_ranges(fp32_model, plan: QuantPlan, batches: Iterable[dict[str, np.ndarray]], method: str,
                   progress: Callable[[int], None] | None = None) -> RangeCollector:
    """Run the FP32 graph (plugin nodes through the CPU kernel) and record the quantised nodes' input ranges."""
    import copy

    onnx = require("onnx", "INT8 calibration")
    ort = require("onnxruntime", "INT8 calibration")
    from ..runtime.backends.onnxruntime import session_options
    from ..runtime.msda_cpu import has_plugin_nodes, plugin_session

    names = sorted({activation for activation, _ in plan.nodes.values()})
    probe = copy.deepcopy(fp32_model)
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = session_options()
    if has_plugin_nodes(probe):
        probe, options = plugin_session(probe, options)
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    collector = RangeCollector(names)
    batches = list(batches)
    passes = [collector.observe_max] + ([collector.observe_histogram] if method != "max" else [])
    for observe in passes:
        for feeds in batches:
            outputs = session.run(names, feeds)
            observe(dict(zip(names, outputs)))
            if progress is not None:
                progress(1)
    return collector


def insert_qdq(mixed_model, fp32_model, plan: QuantPlan, collector: RangeCollector, method: str,
               percentile: float):
    """Add Q/DQ to the mixed-precision graph for every planned node; returns the model (opset raised to 19).

    Weights are quantised from ``fp32_model``'s initializers (not from the FP16 copies of the mixed graph).
    """
    from onnx import TensorProto, helper, numpy_helper

    fp32_weights = {init.name: init for init in fp32_model.graph.initializer}

    graph = mixed_model.graph
    initializers = {init.name: init for init in graph.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.input)}
    types.update({name: init.data_type for name, init in initializers.items()})
    nodes, new_inits, done = [], [], {}
    zero = numpy_helper.from_array(np.array(0, np.int8), "qdq_zero_point")
    new_inits.append(zero)

    def base(name: str) -> str:
        # the precision pass names its FP16 copies/casts <name>__fp16, and <name>__fp32 the casts back for FP32
        # nodes fed by FP16 ones (a planned node in an FP32 scope when nothing is excluded)
        return name[:-len("__fp16")] if name.endswith(("__fp16", "__fp32")) else name

    for node in graph.node:
        if node.name not in plan.nodes:
            nodes.append(node)
            continue
        activation, weight = plan.nodes[node.name]
        act_index = next((i for i, n in enumerate(node.input[:2]) if base(n) == activation), None)
        if act_index is None:
            raise RuntimeError(f"INT8: node {node.name} no longer reads {activation} after the FP16 pass "
                               f"(inputs {list(node.input)}); please report this with the model variant")
        w_index = 1 - act_index
        act_name = node.input[act_index]
        dtype = types.get(act_name, TensorProto.FLOAT)
        np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
        # activation: one Q/DQ per tensor and precision, shared by its consumers
        key = (act_name, dtype)
        if key not in done:
            amax = max(collector.amax_for(activation, method, percentile), 1e-8)
            scale = numpy_helper.from_array(np.array(amax / QMAX, np_dtype), f"{act_name}__act_scale")
            new_inits.append(scale)
            q, dq = f"{act_name}__q", f"{act_name}__dq"
            nodes.append(helper.make_node("QuantizeLinear", [act_name, scale.name, zero.name], [q], name=q))
            nodes.append(helper.make_node("DequantizeLinear", [q, scale.name, zero.name], [dq], name=dq))
            done[key] = dq
        node.input[act_index] = done[key]
        # weight: int8 per output channel (Conv W [out,...]: axis 0; MatMul X @ W [in, out]: axis 1;
        # Gemm with transB: B [out, in]: axis 0). One DequantizeLinear per weight and precision, shared by the
        # nodes that share the weight (a decoder head applied at every layer).
        if node.op_type == "MatMul":
            axis = len(fp32_weights[weight].dims) - 1
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        else:
            axis = 0
        w_key = (weight, dtype, node.op_type, axis)
        if w_key not in done:
            w = numpy_helper.to_array(fp32_weights[weight]).astype(np.float32)
            reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
            w_scale = np.maximum(np.abs(w).max(axis=reduce_axes), 1e-8) / QMAX
            shape = [1] * w.ndim
            shape[axis] = -1
            w_q = np.clip(np.round(w / w_scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
            stem = f"{weight}__{node.op_type}{axis}" + ("_fp16" if dtype == TensorProto.FLOAT16 else "")
            q_init = numpy_helper.from_array(w_q, f"{stem}__int8")
            s_init = numpy_helper.from_array(w_scale.astype(np_dtype), f"{stem}__w_scale")
            z_init = numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), f"{stem}__w_zero_point")
            new_inits += [q_init, s_init, z_init]
            done[w_key] = f"{stem}__w_dq"
            nodes.append(helper.make_node("DequantizeLinear", [q_init.name, s_init.name, z_init.name], [done[w_key]],
                                          axis=axis, name=done[w_key]))
        w_dq = done[w_key]
        node.input[w_index] = w_dq
        nodes.append(node)
    replace_nodes(graph, nodes, new_inits)
    for opset in mixed_model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < 19:
            opset.version = 19  # QuantizeLinear/DequantizeLinear with FP16 scales
    return mixed_model
