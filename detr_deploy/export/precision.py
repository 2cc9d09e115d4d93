# SPDX-License-Identifier: Apache-2.0
"""Mixed-precision FP16 graphs: the heavy compute in FP16, everything precision-sensitive in FP32.

TensorRT 11 takes precision from the graph (strongly typed), so FP16 lives in the ONNX file as Cast nodes and FP16
tensors. This pass runs on the freshly exported graph, whose nodes still carry their PyTorch module scopes and
classes (``pkg.torch.onnx.name_scopes`` / ``class_hierarchy``), and decides per node:

FP16: convolutions and matrix products with the element-wise ops and data movement around them, in the backbone,
the input projections and the transformer layers (value/output/attention-weight projections, attention, FFN,
residual adds).

FP32 (and why; numbers in benchmarks/precision.py):
- LayerNormalization, Softmax, GroupNorm (InstanceNormalization), Sigmoid, Log, Exp, Sin/Cos and reductions: their
  FP16 forms overflow or lose the small differences they work on (the DETR-family FP16 failures in the wild);
- anything computed from the padding mask alone: sine position encodings, valid ratios, reference points;
- the sampling-location maths of deformable attention (``sampling_offsets`` and MSDeformAttn's own arithmetic):
  a half-precision location is off by up to size * 2^-11 pixels;
- the MSDA node itself (plugin or GridSample), so value, locations and weights share FP32 (TensorRT plugins take one
  float type for all three); ``msda_fp16=True`` gives it half storage instead;
- the detection heads (``class_embed``, ``bbox_embed``), two-stage proposal scoring and the query position paths;
- segmentation: the box-attention map (``bbox_attention``: its logits over heads x h x w feed one softmax) and the
  mask head's last convolution (the mask logits the post-processing thresholds); its GroupNorms are
  InstanceNormalization, FP32 as above.
Graph inputs and outputs stay FP32.
"""
from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field

from .._optional import require
from ..artifact.msda import PLUGIN_OPS

# the only ops put in FP16: all their float inputs share one type, so casting every float input is valid
FP16_OPS = {"Conv", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "MaxPool", "Reshape", "Transpose",
            "Concat", "Slice", "Gather", "Split", "Unsqueeze", "Squeeze", "Expand", "Where", "Flatten", "Identity"}
FP32_SCOPES = ("position_embedding", "proposal_embedding", "sampling_offsets", "reference_points", "class_embed",
               "bbox_embed", "enc_output", "pos_trans", "query_embed", "bbox_attention", "mask_head.out_lay")
MSDA_OPS = {"GridSample", *PLUGIN_OPS}
MSDA_CLASS = "detr_deploy.models.deformable_attention.MSDeformAttn"
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"


@dataclass
class PrecisionReport:
    """What the pass did: node counts per precision and the casts it inserted."""

    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts: int = 0
    fp16_ops: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        top = ", ".join(f"{op} {n}" for op, n in self.fp16_ops.most_common(6))
        return (f"{self.fp16_nodes} nodes in FP16 ({top}); {self.fp32_nodes} float nodes kept in FP32; "
                f"{self.casts} casts")


def replace_nodes(graph, nodes: list, new_initializers: list) -> None:
    """Set the graph's nodes, add initializers, and drop the initializers nothing reads any more."""
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_initializers)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def node_module(node) -> tuple[str, str]:
    """(deepest module path, its class) of an exported node, e.g.
    ("model.transformer.encoder.layers.0.self_attn.value_proj", "torch.nn.modules.linear.Linear")."""
    props = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(props.get(_SCOPES_KEY, "[]"))
        classes = ast.literal_eval(props.get(_CLASSES_KEY, "[]"))
    except (ValueError, SyntaxError):
        return "", ""
    # both lists end with the op itself; the entry before it is the innermost module
    return (scopes[-2] if len(scopes) >= 2 else ""), (classes[-2] if len(classes) >= 2 else "")


def _pixel_dependent(model) -> set[str]:
    """Names of nodes that depend on ``pixel_values`` (the others are mask and constant maths)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    reached, frontier = set(), ["pixel_values"]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name not in reached:
                reached.add(node.name)
                frontier.extend(node.output)
    return reached


def plan_fp16(model, msda_fp16: bool = False) -> dict[str, bool]:
    """Node name -> True if the node runs in FP16 (rules in the module docstring)."""
    pixel = _pixel_dependent(model)
    plan = {}
    for node in model.graph.node:
        if node.op_type in MSDA_OPS:
            plan[node.name] = msda_fp16
            continue
        scope, cls = node_module(node)
        plan[node.name] = (node.op_type in FP16_OPS and node.name in pixel and cls != MSDA_CLASS
                           and not any(part in scope for part in FP32_SCOPES))
    return plan


def convert_to_mixed_fp16(model, msda_fp16: bool = False):
    """Rewrite an exported FP32 ``onnx.ModelProto`` into a mixed FP16/FP32 graph; returns (model, report).

    FP16 nodes get FP16 versions of their float inputs (initializers converted once, other tensors through one
    shared Cast each); FP32 consumers of FP16 tensors get one shared Cast back. Nodes keep their order (every Cast is
    placed right before its first consumer), so the graph stays topologically sorted.
    """
    onnx = require("onnx", "FP16 conversion")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
    initializers = {init.name: init for init in graph.initializer}
    types.update({name: init.data_type for name, init in initializers.items()})
    graph_outputs = {o.name for o in graph.output}
    plan = plan_fp16(model, msda_fp16)
    report = PrecisionReport()
    half_of: dict[str, str] = {}
    single_of: dict[str, str] = {}
    half_tensors: set[str] = set()
    nodes, new_initializers = [], []

    def cast(source: str, target: str, to: int) -> None:
        nodes.append(helper.make_node("Cast", [source], [target], to=to, name=f"{target}__cast"))
        report.casts += 1

    def as_half(name: str) -> str:
        if name in half_tensors:
            return name
        if name not in half_of:
            half_of[name] = f"{name}__fp16"
            if name in initializers:
                array = numpy_helper.to_array(initializers[name]).astype("float16")
                new_initializers.append(numpy_helper.from_array(array, half_of[name]))
            else:
                cast(name, half_of[name], TensorProto.FLOAT16)
        return half_of[name]

    def as_single(name: str) -> str:
        if name not in half_tensors:
            return name
        if name not in single_of:
            single_of[name] = f"{name}__fp32"
            cast(name, single_of[name], TensorProto.FLOAT)
        return single_of[name]

    for node in graph.node:
        float_inputs = [i for i, name in enumerate(node.input) if name and types.get(name) == TensorProto.FLOAT]
        if plan.get(node.name) and float_inputs:
            for i in float_inputs:
                node.input[i] = as_half(node.input[i])
            renamed_outputs = []
            for j, out in enumerate(node.output):
                if types.get(out) != TensorProto.FLOAT:
                    continue
                if out in graph_outputs:  # keep FP32 outputs: the node writes a half copy, a Cast restores it
                    node.output[j] = f"{out}__fp16"
                    renamed_outputs.append((node.output[j], out))
                    half_tensors.add(node.output[j])
                else:
                    half_tensors.add(out)
            report.fp16_nodes += 1
            report.fp16_ops[node.op_type] += 1
            nodes.append(node)
            for half, out in renamed_outputs:
                cast(half, out, TensorProto.FLOAT)
            continue
        if node.op_type != "Cast":  # Cast takes any input type as it is
            for i, name in enumerate(node.input):
                if name:
                    node.input[i] = as_single(name)
        if float_inputs:
            report.fp32_nodes += 1
        nodes.append(node)
    replace_nodes(graph, nodes, new_initializers)
    # keep the exporter's shapes (inference cannot see through plugin nodes); only the element types changed
    for vi in graph.value_info:
        if vi.name in half_tensors:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return onnx.shape_inference.infer_shapes(model), report
