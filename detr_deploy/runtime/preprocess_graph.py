# SPDX-License-Identifier: Apache-2.0
"""The host pre-processing as ONNX nodes, for artifacts that take decoded images (``--preprocess-in-graph``).

Input ``image`` uint8 ``[batch, height, width, 3]`` (RGB as decoded; the images of one call share a size). Outputs
``pixel_values`` float32 ``[batch, 3, h, w]`` and ``pixel_mask`` int32 ``[batch, h, w]``: the tensors
:func:`~detr_deploy.runtime.preprocess.preprocess_images` makes on the host, computed with ops TensorRT runs on the
GPU (integer arithmetic, Gather, ReduceSum, Pad; no float64, no ``Resize``):

- the resize rule (shortest edge / longest edge, or a static artifact's "fit") from the input's shape, in int64;
- Pillow's bilinear resampling reproduced in int32: per output pixel the taps of the triangle filter (stretched by the
  scale when reducing: Pillow's antialiasing), Pillow's 22-bit fixed-point coefficients derived exactly from integer
  ratios, two separable passes in Pillow 13's order (vertical first when the height loses more than twice as many
  pixels as the width, else horizontal first; an ``If`` node), each rounded and clipped to uint8 as Pillow does. ONNX
  ``Resize`` cannot do this: TensorRT refuses ``antialias=1``, and it has no uint8 rounding between the passes nor
  Pillow's coefficients;
- normalisation by a gather from the host's own ``[3, 256]`` table;
- zero padding bottom-right to a static input size, mask 1 on real pixels.

So for the same output size the graph's ``pixel_values`` are bit-identical to the host's (tests/
test_preprocess_in_graph.py checks it against Pillow on many sizes). The one documented difference is the output size
itself in one case: with the long side capped (``longest_edge``) and "hf" rounding, Hugging Face computes the long side
as ``int(raw * long / short)`` in float64, which lands one pixel short of ``longest_edge`` for about 5% of capped aspect
ratios (e.g. 149x8); the graph, in integers (TensorRT has no float64), gives ``longest_edge``. Likewise "fit" rounds
exact ties (x.5) half to even where the host's float product may fall either side (12 of 597,802 sizes differ by one
pixel for an 800x1333 input). :func:`graph_output_size` is the
graph's rule in Python.

Pillow before 13 always resampled horizontally first: with such a Pillow on the host, images whose height shrinks
more than twice as much as their width differ from the graph by one level in some pixels.

Exactness bounds: the int32 sums are exact for any size; the gather holds ``K = 2 * ceil(in / out) + 1`` taps per
output pixel and axis, so memory grows with the reduction factor (a 4000x3000 photo to 1066x800: ~0.35 GB per int32
intermediate of the horizontal pass). On a CPU this front end is slow (onnxruntime: ~0.4 s for a 640x480 photo, ~4 s for
a 12-megapixel one, against ~10 ms / ~0.3 s on the host): it is meant for GPUs.
"""
from __future__ import annotations

import numpy as np

from .._optional import require
from ..artifact.metadata import Preprocess
from ..errors import ConfigError
from .preprocess import IMAGE_INPUT, fit_size, normalization_table, shortest_edge_size

PREFIX = "preprocess/"
PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2 bits of fixed-point coefficients
OUTPUTS = ("pixel_values", "pixel_mask")


def _round_half_even(numerator: int, denominator: int) -> int:
    q, r = divmod(numerator, denominator)
    return q + (1 if 2 * r > denominator or (2 * r == denominator and q % 2) else 0)


def graph_output_size(height: int, width: int, pre: Preprocess) -> tuple[int, int]:
    """The in-graph resize rule in Python (exact integers): equal to the host's
    :func:`~detr_deploy.runtime.preprocess.output_size` except where the module docstring says."""
    if pre.resize == "fit":
        th, tw = pre.input_size
        if th * width <= tw * height:
            return th, min(tw, max(1, _round_half_even(width * th, height)))
        return min(th, max(1, _round_half_even(height * tw, width))), tw
    s, cap = pre.shortest_edge, pre.longest_edge
    lo, hi = min(height, width), max(height, width)
    capped = hi * s > cap * lo
    size = _round_half_even(cap * lo, hi) if capped else s
    if lo == size:
        return height, width
    long = cap if capped and pre.rounding == "hf" else size * hi // lo
    return (long, size) if width < height else (size, long)


def host_output_size(height: int, width: int, pre: Preprocess) -> tuple[int, int]:
    """The host's rule (float arithmetic, as Hugging Face's processors)."""
    if pre.resize == "fit":
        return fit_size(height, width, pre.input_size)
    return shortest_edge_size(height, width, pre.shortest_edge, pre.longest_edge, pre.rounding)


class _Graph:
    """Nodes and initializers under one name prefix (:meth:`branch`: the nodes of an ``If`` branch, sharing the
    initializers and the name counter)."""

    def __init__(self, parent: _Graph | None = None):
        self.onnx = require("onnx", "pre-processing in the graph")
        self.nodes = []
        self.initializers = parent.initializers if parent else []
        self._counter = parent._counter if parent else [0]

    def branch(self) -> _Graph:
        return _Graph(self)

    def const(self, value, dtype) -> str:
        name = f"{PREFIX}const_{len(self.initializers)}"
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def i64(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        self._counter[0] += 1
        count = self._counter[0]
        name = output or f"{PREFIX}{op_type}_{count}"
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=f"{PREFIX}{op_type}_{count}",
                                                     **attrs))
        return name

    def scalar(self, tensor: str) -> str:
        return self.op("Squeeze", tensor, self.i64(0))

    def round_half_even(self, numerator: str, denominator: str) -> str:
        """Python's ``round(numerator / denominator)`` of positive int64 tensors, exactly."""
        q = self.op("Div", numerator, denominator)
        twice_r = self.op("Mul", self.op("Sub", numerator, self.op("Mul", q, denominator)), self.i64(2))
        odd = self.op("Equal", self.op("Mod", q, self.i64(2)), self.i64(1))
        up = self.op("Or", self.op("Greater", twice_r, denominator),
                     self.op("And", self.op("Equal", twice_r, denominator), odd))
        return self.op("Add", q, self.op("Cast", up, to=self.onnx.TensorProto.INT64))

    def clamp(self, value: str, low: str, high: str) -> str:
        return self.op("Min", self.op("Max", value, low), high)


def _output_size(g: _Graph, height: str, width: str, pre: Preprocess) -> tuple[str, str]:
    """(height, width) [1] int64 of the resize: :func:`graph_output_size` as nodes."""
    if pre.resize == "fit":
        th, tw = g.i64(pre.input_size[0]), g.i64(pre.input_size[1])
        by_height = g.op("LessOrEqual", g.op("Mul", th, width), g.op("Mul", tw, height))
        w_fit = g.clamp(g.round_half_even(g.op("Mul", width, th), height), g.i64(1), tw)
        h_fit = g.clamp(g.round_half_even(g.op("Mul", height, tw), width), g.i64(1), th)
        return g.op("Where", by_height, th, h_fit), g.op("Where", by_height, w_fit, tw)
    if pre.resize != "shortest_edge":
        raise ConfigError(f"unknown resize rule {pre.resize!r}")
    s, cap = g.i64(pre.shortest_edge), g.i64(pre.longest_edge)
    lo, hi = g.op("Min", height, width), g.op("Max", height, width)
    capped = g.op("Greater", g.op("Mul", hi, s), g.op("Mul", lo, cap))
    size = g.op("Where", capped, g.round_half_even(g.op("Mul", lo, cap), hi), s)
    long = g.op("Div", g.op("Mul", size, hi), lo)  # int(size * long / short): exact in integers
    if pre.rounding == "hf":
        long = g.op("Where", capped, cap, long)
    long = g.op("Where", g.op("Equal", lo, size), hi, long)  # the short side is already the target: unchanged
    portrait = g.op("Less", width, height)
    return g.op("Where", portrait, long, size), g.op("Where", portrait, size, long)


def _taps(g: _Graph, size_in: str, size_out: str) -> tuple[str, str]:
    """Gather indices ``[out, K]`` int64 and Pillow's fixed-point coefficients ``[out, K]`` int32 along one axis.

    Pillow (Resample.c ``precompute_coeffs``, bilinear): output pixel ``x`` is centred at ``(x + 0.5) * in / out`` in
    input pixels; tap ``j`` weighs ``max(0, 1 - |j + 0.5 - centre| / support)`` with ``support = max(in / out, 1)``;
    the weights are normalised by their sum and rounded to ``2**-22``. In integers: numerator
    ``max(0, 2M - |(2j + 1) out - (2x + 1) in|)`` with ``M = max(in, out)``, coefficient
    ``floor(num * 2**22 / sum(num) + 1/2)``; Pillow's float64 agrees with it, as no exact tie can occur.
    """
    one, two = g.i64(1), g.i64(2)
    double_m = g.op("Mul", g.op("Max", size_in, size_out), two)
    ceil = g.op("Div", g.op("Sub", g.op("Add", size_in, size_out), one), size_out)
    taps = g.op("Add", g.op("Mul", g.op("Max", ceil, one), two), one)  # Pillow's ksize
    x = g.op("Range", g.scalar(g.i64(0)), g.scalar(size_out), g.scalar(one))
    t = g.op("Range", g.scalar(g.i64(0)), g.scalar(taps), g.scalar(one))
    centre = g.op("Mul", g.op("Add", g.op("Mul", x, two), one), size_in)  # (2x + 1) in
    # first tap with a non-zero weight: (2j + 1) out > centre - 2M
    first = g.op("Div", g.op("Max", g.op("Add", g.op("Sub", centre, double_m), size_out), g.i64(0)),
                 g.op("Mul", size_out, two))
    j = g.op("Add", g.op("Unsqueeze", first, g.i64(1)), g.op("Unsqueeze", t, g.i64(0)))
    distance = g.op("Abs", g.op("Sub", g.op("Mul", g.op("Add", g.op("Mul", j, two), one), size_out),
                                g.op("Unsqueeze", centre, g.i64(1))))
    num = g.op("Max", g.op("Sub", double_m, distance), g.i64(0))
    num = g.op("Where", g.op("Less", j, size_in), num, g.i64(0))  # taps past the edge: Pillow's window ends there
    den = g.op("ReduceSum", num, g.i64(1), keepdims=1)
    coeff = g.op("Div", g.op("Add", g.op("Mul", num, g.i64(1 << (PRECISION_BITS + 1))), den), g.op("Mul", den, two))
    index = g.op("Min", j, g.op("Sub", size_in, one))
    return index, g.op("Cast", coeff, to=g.onnx.TensorProto.INT32)


def _round_to_uint8(g: _Graph, sums: str) -> str:
    """Pillow's ``clip8``: ``(sum + 2**21) >> 22``, at most 255 (the sums are never negative)."""
    shifted = g.op("Div", g.op("Add", sums, g.const(1 << (PRECISION_BITS - 1), np.int32)),
                   g.const(1 << PRECISION_BITS, np.int32))
    return g.op("Min", shifted, g.const(255, np.int32))


def build_preprocess_graph(pre: Preprocess, g: _Graph | None = None) -> _Graph:
    """The nodes from ``image`` to ``pixel_values`` / ``pixel_mask`` (tensors named so, prefix ``preprocess/`` for
    everything else)."""
    g = g or _Graph()
    shape = g.op("Shape", IMAGE_INPUT)
    batch = g.op("Slice", shape, g.i64(0), g.i64(1))
    height, width = g.op("Slice", shape, g.i64(1), g.i64(2)), g.op("Slice", shape, g.i64(2), g.i64(3))
    out_h, out_w = _output_size(g, height, width, pre)
    planes = g.op("Transpose", g.op("Cast", IMAGE_INPUT, to=g.onnx.TensorProto.INT32), perm=[0, 3, 1, 2])
    index_w, coeff_w = _taps(g, width, out_w)
    index_h, coeff_h = _taps(g, height, out_h)
    coeff_h = g.op("Unsqueeze", coeff_h, g.i64(2))  # [h, K, 1]: broadcast over the columns

    def horizontal(b: _Graph, x: str) -> str:  # [B, 3, R, W] -> [B, 3, R, w]: gather [B, 3, R, w, K]
        return _round_to_uint8(b, b.op("ReduceSum", b.op("Mul", b.op("Gather", x, index_w, axis=3), coeff_w),
                                       b.i64(4), keepdims=0))

    def vertical(b: _Graph, x: str) -> str:  # [B, 3, H, C] -> [B, 3, h, C]: gather [B, 3, h, K, C]
        return _round_to_uint8(b, b.op("ReduceSum", b.op("Mul", b.op("Gather", x, index_h, axis=2), coeff_h),
                                       b.i64(3), keepdims=0))

    # Pillow >= 13 (Resample.c): vertical pass first when the height shrinks by more pixels than twice the width does
    shrink_h, shrink_w = g.op("Sub", height, out_h), g.op("Sub", width, out_w)
    vertical_first = g.op("And", g.op("Greater", shrink_h, g.i64(0)),
                          g.op("Greater", shrink_h, g.op("Mul", shrink_w, g.i64(2))))
    branches = {}
    for key, order in (("then_branch", (vertical, horizontal)), ("else_branch", (horizontal, vertical))):
        b = g.branch()
        result = b.op("Identity", order[1](b, order[0](b, planes)))
        branches[key] = g.onnx.helper.make_graph(
            b.nodes, f"{PREFIX}{key}", [], [g.onnx.helper.make_tensor_value_info(result, g.onnx.TensorProto.INT32,
                                                                                 None)])
    levels = g.op("If", g.scalar(vertical_first), **branches)
    levels = g.op("Add", levels, g.const(np.arange(3).reshape(1, 3, 1, 1) * 256, np.int32))
    table = g.const(normalization_table(pre).reshape(-1), np.float32)
    ones = g.op("Expand", g.const(1, np.int32), g.op("Concat", batch, out_h, out_w, axis=0))
    if pre.input_size is None:
        g.op("Gather", table, levels, axis=0, output=OUTPUTS[0])
        g.op("Identity", ones, output=OUTPUTS[1])
        return g
    pad_h = g.op("Sub", g.i64(pre.input_size[0]), out_h)
    pad_w = g.op("Sub", g.i64(pre.input_size[1]), out_w)
    values = g.op("Gather", table, levels, axis=0)
    g.op("Pad", values, g.op("Concat", g.i64(0, 0, 0, 0, 0, 0), pad_h, pad_w, axis=0), g.const(0.0, np.float32),
         output=OUTPUTS[0])
    g.op("Pad", ones, g.op("Concat", g.i64(0, 0, 0, 0), pad_h, pad_w, axis=0), g.const(0, np.int32), output=OUTPUTS[1])
    return g


def image_input(batch: int | str = "batch"):
    """The ``image`` graph input: uint8 ``[batch, image_height, image_width, 3]``."""
    onnx = require("onnx", "pre-processing in the graph")
    return onnx.helper.make_tensor_value_info(IMAGE_INPUT, onnx.TensorProto.UINT8,
                                              [batch, "image_height", "image_width", 3])


def preprocess_model(pre: Preprocess, batch: int | str = "batch", opset: int = 18):
    """The pre-processing alone as an ONNX model (``image`` in, ``pixel_values`` / ``pixel_mask`` out)."""
    onnx = require("onnx", "pre-processing in the graph")
    g = build_preprocess_graph(pre)
    h, w = ("height", "width") if pre.input_size is None else pre.input_size
    outputs = [onnx.helper.make_tensor_value_info(OUTPUTS[0], onnx.TensorProto.FLOAT, [batch, 3, h, w]),
               onnx.helper.make_tensor_value_info(OUTPUTS[1], onnx.TensorProto.INT32, [batch, h, w])]
    graph = onnx.helper.make_graph(g.nodes, "detr_deploy_preprocess", [image_input(batch)], outputs, g.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


class GraphPreprocess:
    """The in-graph pre-processing run by onnxruntime on the CPU: ``(image uint8 [B,H,W,3]) -> (pixel_values,
    pixel_mask)``, the tensors an in-graph artifact's model part sees (its raw check against PyTorch feeds these)."""

    def __init__(self, pre: Preprocess, threads: int | None = None):
        from .backends.onnxruntime import session_options

        ort = require("onnxruntime", "running the in-graph pre-processing")
        model = preprocess_model(pre)
        self.session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                            providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, mask = self.session.run(list(OUTPUTS), {IMAGE_INPUT: np.ascontiguousarray(image, dtype=np.uint8)})
        return values, mask
