# SPDX-License-Identifier: Apache-2.0
"""DETR segmentation post-processing in numpy, equal to Hugging Face's ``DetrImageProcessor`` methods.

Same names, arguments, defaults and result layout as ``DetrImageProcessor.post_process_semantic_segmentation``,
``post_process_instance_segmentation`` and ``post_process_panoptic_segmentation`` in
``transformers/models/detr/image_processing_detr.py`` (and ``image_processing_pil_detr.py``), with the helpers
they call (``remove_low_and_no_objects``, ``check_segment_validity``, ``compute_segments``,
``convert_segmentation_to_rle``), but numpy arrays in and out and no torch import.

``outputs`` is a mapping (or an object with attributes) holding

* ``logits`` ``[B, Q, C + 1]``: class logits; softmax over classes + "no object" (the last one).
* ``pred_masks`` ``[B, Q, h, w]``: mask logits (DETR: 1/4 of the padded input).

Details reproduced from the reference (they change results):

* mask probabilities are resized with PyTorch's CPU ``interpolate(mode="bilinear", align_corners=False)``
  arithmetic, bit for bit (float32, source index ``max(0, fma(scale, dst + 0.5, -0.5))`` with
  ``scale = float32(in) / out``, the kernel's fused multiply-adds, and the channels-last kernel that PyTorch picks
  for small outputs, ``H + W <= 128``); see :func:`resize_bilinear`;
* instance/panoptic masks are weighted by the query score *before* both the per-pixel argmax and the
  ``>= mask_threshold`` area test; thresholds are compared in float32, the area ratio is a float32 division;
* segment ids restart from the last fused id (``current_segment_id = stuff_memory_list[label]``), so an id can be
  given twice, and a fused label gets one ``segments_info`` entry per query;
* with no query above ``threshold`` the segmentation is a float32 map of ``-1`` (not int32), never RLE-encoded.

Softmax and sigmoid reproduce PyTorch's vectorised CPU kernels too (SLEEF's float32 ``exp`` with fused
multiply-adds; the softmax sum in the lane order of the SIMD width PyTorch picks on this CPU, 8 lanes for AVX2 and
16 for AVX512: :func:`simd_float_lanes`), so scores are bit-identical to PyTorch's on x86-64 (checked on AVX2 and
AVX512 machines); where the reference ran on another SIMD width, sums can differ in the last bit and a pixel
exactly at a threshold or tie can flip. The semantic class-by-query sum is a float32 matrix product
whose BLAS summation order differs from PyTorch's (MKL), so semantic class scores agree only to ~1e-7 relative:
a pixel whose two best classes tie to within that may differ.
"""
from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["binary_mask_to_rle", "convert_segmentation_to_rle", "id_to_rgb", "post_process_instance_segmentation",
           "post_process_panoptic_segmentation", "post_process_semantic_segmentation", "resize_bilinear",
           "rgb_to_id"]

logger = logging.getLogger(__name__)

_F32 = np.float32
_F64 = np.float64
# Elements of one resized block (its float64 temporaries are 8 bytes each): bounds memory for large targets.
_BLOCK_ELEMENTS = 1 << 22


def simd_float_lanes() -> int:
    """float32 lanes of PyTorch's softmax kernel on this machine: 16 where PyTorch dispatches to AVX512 (x86-64
    with AVX512 F/BW/VL/DQ and FMA, or ``ATEN_CPU_CAPABILITY=avx512``), else 8 (AVX2, and the 256-bit default
    elsewhere). The softmax sum accumulates in this many lanes."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if capability:
        return 16 if capability == "avx512" else 8
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 8
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:  # not Linux: AVX2 is the common case
        return 8
    return 16 if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= set(flags) else 8


_LANES = simd_float_lanes()
# The channels-last bilinear kernel vectorises over channels in groups of 8 on AVX2 and AVX512 machines alike (seen
# on both: PyTorch does not dispatch it to AVX512) and runs the remainder through a scalar loop with another FMA order.
_RESIZE_LANES = 8
_warned_no_fuse = False


# ---------------------------------------------------------------------------------------------------------------
# elementwise pieces
# ---------------------------------------------------------------------------------------------------------------

def _get(outputs: Any, name: str) -> np.ndarray:
    value = outputs[name] if isinstance(outputs, Mapping) else getattr(outputs, name)
    return np.asarray(value)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (a fused multiply-add): the float32 product is exact in float64."""
    r = np.multiply(a, b, dtype=_F64)
    r += c
    return r.astype(_F32)


# PyTorch's vectorised float32 exp (SLEEF's expf, 1-ulp variant, with fused multiply-adds): Cody-Waite reduction
# by ln 2 split in two, a degree-6 polynomial, scaling by 2**q in two steps. Reproduced operation by operation so
# that softmax scores and sigmoid masks are bit-identical to PyTorch's on x86-64 (not just within an ulp).
_LOG2_E = _F32(1.442695040888963407359924681001892137426645954152985934135449406931)
_LN2_HI = _F32(0.693145751953125)
_LN2_LO = _F32(1.428606765330187045e-06)
_EXP_POLY = tuple(_F32(c) for c in (0.000198527617612853646278381, 0.00139304355252534151077271,
                                    0.00833336077630519866943359, 0.0416664853692054748535156,
                                    0.166666671633720397949219, 0.5))


def _pow2(q: np.ndarray) -> np.ndarray:
    return ((q + 127) << 23).astype(np.int32).view(_F32)


def _exp(x: np.ndarray) -> np.ndarray:
    """float32 ``exp(x)`` rounded as PyTorch's CPU kernels (``Vectorized<float>::exp``) round it."""
    x = np.asarray(x, dtype=_F32)
    d = np.clip(x, _F32(-104), _F32(100))
    with np.errstate(invalid="ignore"):  # NaN stays NaN through the polynomial
        q = np.rint(d * _LOG2_E).astype(np.int32)
    qf = q.astype(_F32)
    s = _fma(qf, -_LN2_HI, d)
    s = _fma(qf, -_LN2_LO, s)
    u = np.full(s.shape, _EXP_POLY[0], _F32)
    for c in _EXP_POLY[1:]:
        u = _fma(u, s, c)
    u = _F32(1) + _fma(s * s, u, s)
    half = q >> 1
    with np.errstate(over="ignore", under="ignore"):
        u = u * _pow2(half) * _pow2(q - half)
    u[x < _F32(-104)] = 0
    u[x > _F32(100)] = np.inf
    return u


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 ``1 / (exp(0 - x) + 1)``, PyTorch's vectorised sigmoid (in chunks: bounded temporaries)."""
    x = np.asarray(x, dtype=_F32)
    out = np.empty(x.shape, _F32)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK_ELEMENTS):
        chunk = slice(start, start + _BLOCK_ELEMENTS)
        e = _exp(_F32(0) - flat_in[chunk])
        e += _F32(1)
        flat_out[chunk] = np.reciprocal(e, out=e)
    return out


def _lane_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis in PyTorch's ``vec::reduce_all`` order for ``_LANES`` float32 lanes: lane-wise
    accumulation of consecutive blocks (the last one zero-padded), then the halves pairwise (8 lanes: l0+l4, ...);
    fewer elements than lanes are summed in order."""
    n = x.shape[-1]
    lanes = _LANES
    if n < lanes:
        acc = x[..., 0].copy()
        for i in range(1, n):
            acc += x[..., i]
        return acc
    padded = np.zeros(x.shape[:-1] + (-(-n // lanes) * lanes,), _F32)
    padded[..., :n] = x
    blocks = padded.reshape(x.shape[:-1] + (-1, lanes))
    acc = blocks[..., 0, :].copy()
    for k in range(1, blocks.shape[-2]):
        acc += blocks[..., k, :]
    while acc.shape[-1] > 1:  # vec::reduce_all: halves added pairwise (l0 + l[n/2], ...)
        half = acc.shape[-1] // 2
        acc = acc[..., :half] + acc[..., half:]
    return acc[..., 0]


def _softmax(x: np.ndarray) -> np.ndarray:
    """float32 softmax over the last axis as PyTorch's ``_vec_softmax_lastdim``: ``exp(x - max)`` times the
    float32 reciprocal of the lane-ordered sum."""
    x = np.asarray(x, dtype=_F32)
    e = _exp(x - x.max(axis=-1, keepdims=True))
    return e * (_F32(1) / _lane_sum(e))[..., None]


# ---------------------------------------------------------------------------------------------------------------
# bilinear resize (PyTorch CPU, align_corners=False)
# ---------------------------------------------------------------------------------------------------------------

def _linear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and float32 weights ``l0, l1`` per output index (PyTorch's
    ``compute_source_index_and_lambda`` with ``align_corners=False`` and no scale factor)."""
    if in_size == out_size:
        idx = np.arange(out_size)
        return idx, idx, np.ones(out_size, _F32), np.zeros(out_size, _F32)
    scale = _F32(in_size) / _F32(out_size)
    centre = np.arange(out_size, dtype=_F32) + _F32(0.5)
    src = _fma(scale, centre, _F32(-0.5))
    src = np.maximum(src, _F32(0))  # "Follow OpenCV": negative source positions clamp to 0
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    l1 = np.clip(src - i0.astype(_F32), _F32(0), _F32(1)).astype(_F32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    l0 = (_F32(1) - l1).astype(_F32)
    return i0, i1, l0, l1


def _uses_channels_last_kernel(channels: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """PyTorch's ``_use_vectorized_kernel_cond_2d`` for a contiguous ``[1, C, h, w]`` input: the channels-last
    kernel for small outputs or (C > 3 and a channels-last-contiguous input, i.e. ``h == w == 1``)."""
    return out_hw[0] + out_hw[1] <= 128 or (channels > 3 and in_hw == (1, 1))


def _resized_blocks(x: np.ndarray, size: tuple[int, int] | None,
                    block_elements: int = _BLOCK_ELEMENTS) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, block)``: ``block`` is ``resize_bilinear(x, size)[:, rows]`` (float32 ``[C, r, W]``), a few
    output rows at a time so that large targets with many channels do not need the full float64 temporaries."""
    channels, h, w = x.shape
    if size is None or (int(size[0]), int(size[1])) == (h, w):
        rows = max(1, block_elements // max(1, channels * w))
        for start in range(0, h, rows):
            sl = slice(start, min(h, start + rows))
            yield sl, x[:, sl].copy()
        return
    out_h, out_w = int(size[0]), int(size[1])
    y0, y1, h0, h1 = _linear_weights(h, out_h)
    x0, x1, w0, w1 = _linear_weights(w, out_w)
    rows = max(1, block_elements // max(1, channels * out_w))
    channels_last = _uses_channels_last_kernel(channels, (h, w), (out_h, out_w))
    for start in range(0, out_h, rows):
        sl = slice(start, min(out_h, start + rows))
        ys0, ys1 = y0[sl], y1[sl]
        if channels_last:
            yield sl, _channels_last_block(x, ys0, ys1, h0[sl], h1[sl], x0, x1, w0, w1)
            continue
        # generic kernel: t = fma(w0, a, w1 * b) along the width, then fma(h0, t0, h1 * t1) along the height
        lo, hi = int(ys0.min()), int(ys1.max()) + 1
        src = x[:, lo:hi]
        horizontal = _fma(w0, src[:, :, x0], w1 * src[:, :, x1])
        top, bottom = horizontal[:, ys0 - lo], horizontal[:, ys1 - lo]
        yield sl, _fma(h0[sl, None], top, h1[sl, None] * bottom)


def _channels_last_block(x, ys0, ys1, h0, h1, x0, x1, w0, w1) -> np.ndarray:
    """PyTorch's ``upsample_linear_channels_last`` for some output rows: four products with the corner weights
    ``h*w``; SIMD groups of channels and the scalar remainder accumulate in different orders."""
    w00, w01 = h0[:, None] * w0[None, :], h0[:, None] * w1[None, :]
    w10, w11 = h1[:, None] * w0[None, :], h1[:, None] * w1[None, :]
    top, bottom = x[:, ys0], x[:, ys1]
    a, b = top[:, :, x0], top[:, :, x1]
    c, d = bottom[:, :, x0], bottom[:, :, x1]
    out = np.empty(a.shape, _F32)
    split = x.shape[0] - x.shape[0] % _RESIZE_LANES
    if split:  # vectorised: a*w00 + (b*w01 + (c*w10 + d*w11)), contracted to fused multiply-adds
        v = slice(0, split)
        out[v] = _fma(a[v], w00, _fma(b[v], w01, _fma(d[v], w11, c[v] * w10)))
    if split < x.shape[0]:  # scalar tail: ((a*w00 + b*w01) + c*w10) + d*w11, contracted
        s = slice(split, None)
        out[s] = _fma(d[s], w11, _fma(c[s], w10, _fma(a[s], w00, b[s] * w01)))
    return out


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``torch.nn.functional.interpolate(x[None], size, mode="bilinear", align_corners=False)[0]`` on CPU, float32.

    Args:
        x: ``[C, h, w]`` (cast to float32).
        size: ``(H, W)``.
    Returns:
        float32 ``[C, H, W]``, bit-identical to PyTorch's x86-64 CPU kernels (both the generic and the
        channels-last one, chosen as PyTorch chooses for a multi-threaded process).
    """
    x = np.ascontiguousarray(x, dtype=_F32)
    out_h, out_w = int(size[0]), int(size[1])
    out = np.empty((x.shape[0], out_h, out_w), _F32)
    for rows, block in _resized_blocks(x, (out_h, out_w)):
        out[:, rows] = block
    return out


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face helpers
# ---------------------------------------------------------------------------------------------------------------

def binary_mask_to_rle(mask: np.ndarray) -> list:
    """HF's run-length encoding of a binary ``[H, W]`` mask (row-major): ``[start1, length1, start2, ...]`` with
    1-based starts of the runs of ones, as a list of ``np.int64``."""
    pixels = np.concatenate([[0], np.asarray(mask).ravel(), [0]])
    runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs[1::2] -= runs[::2]
    return list(runs)


def convert_segmentation_to_rle(segmentation: np.ndarray) -> list[list]:
    """One :func:`binary_mask_to_rle` per distinct value of ``segmentation`` ``[H, W]``, in increasing value order
    (background 0 included when present)."""
    flat = np.asarray(segmentation).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    values = flat[starts]
    pairs = np.stack([starts + 1, lengths], axis=1).astype(np.int64)
    order = np.argsort(values, kind="stable")  # runs of one value stay in image order
    sorted_values = values[order]
    bounds = np.flatnonzero(np.diff(sorted_values)) + 1
    return [list(pairs[group].ravel()) for group in np.split(order, bounds)]


def _remove_low_and_no_objects(scores: np.ndarray, labels: np.ndarray, threshold: float,
                               num_labels: int) -> np.ndarray:
    """Indices of the queries HF keeps: not "no object" and ``score > threshold`` (compared in float32)."""
    return np.flatnonzero((labels != num_labels) & (scores > _F32(threshold)))


def _compute_segments(mask_probs: np.ndarray, pred_scores: np.ndarray, pred_labels: np.ndarray,
                      mask_threshold: float, overlap_mask_area_threshold: float, label_ids_to_fuse,
                      target_size: tuple[int, int] | None, unique_ids: bool = False) -> tuple[np.ndarray, list[dict]]:
    """HF's ``compute_segments`` + ``check_segment_validity`` for one image (``K`` kept queries); ``unique_ids``:
    after a fused label reuses its id, the next new segment still gets a new id (HF's counter falls back)."""
    num_queries, h, w = mask_probs.shape
    height, width = (h, w) if target_size is None else (int(target_size[0]), int(target_size[1]))
    mask_labels = np.empty((height, width), np.int64)
    original_area = np.zeros(num_queries, np.int64)
    weights = pred_scores.astype(_F32)[:, None, None]
    threshold = _F32(mask_threshold)
    for rows, block in _resized_blocks(mask_probs, target_size):
        block *= weights  # weighed by the query score before the argmax *and* the area test
        mask_labels[rows] = block.argmax(axis=0)
        original_area += np.count_nonzero(block >= threshold, axis=(1, 2))
    mask_area = np.bincount(mask_labels.ravel(), minlength=num_queries)
    exists = (mask_area > 0) & (original_area > 0)
    ratio = mask_area.astype(_F32) / np.maximum(original_area, 1).astype(_F32)  # torch int/int -> float32
    valid = exists & (ratio.astype(_F64) > float(overlap_mask_area_threshold))

    segment_ids = np.zeros(num_queries, np.int32)
    segments: list[dict] = []
    current_segment_id = largest_id = 0
    stuff_memory_list: dict[int, int] = {}
    for k in np.flatnonzero(valid):
        pred_class = int(pred_labels[k])
        should_fuse = pred_class in label_ids_to_fuse
        if pred_class in stuff_memory_list:
            current_segment_id = stuff_memory_list[pred_class]
        else:
            current_segment_id = (largest_id if unique_ids else current_segment_id) + 1
            largest_id = max(largest_id, current_segment_id)
        segment_ids[k] = current_segment_id
        segments.append({"id": current_segment_id, "label_id": pred_class, "was_fused": should_fuse,
                         "score": round(float(pred_scores[k]), 6)})
        if should_fuse:
            stuff_memory_list[pred_class] = current_segment_id
    return segment_ids[mask_labels], segments


def _instances(outputs, threshold, mask_threshold, overlap_mask_area_threshold, label_ids_to_fuse, target_sizes,
               return_coco_annotation, unique_ids=False):
    logits = _get(outputs, "logits")
    masks = _get(outputs, "pred_masks")
    batch_size, num_labels = logits.shape[0], logits.shape[-1] - 1
    probs = _softmax(logits)
    pred_scores, pred_labels = probs.max(axis=-1), probs.argmax(axis=-1)
    results = []
    for i in range(batch_size):
        keep = _remove_low_and_no_objects(pred_scores[i], pred_labels[i], threshold, num_labels)
        if keep.size == 0:
            height, width = target_sizes[i] if target_sizes is not None else masks.shape[-2:]
            results.append({"segmentation": np.full((int(height), int(width)), -1, _F32), "segments_info": []})
            continue
        target_size = target_sizes[i] if target_sizes is not None else None
        segmentation, segments = _compute_segments(
            _sigmoid(masks[i][keep]), pred_scores[i][keep], pred_labels[i][keep], mask_threshold,
            overlap_mask_area_threshold, label_ids_to_fuse, target_size, unique_ids)
        if return_coco_annotation:
            segmentation = convert_segmentation_to_rle(segmentation)
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


# ---------------------------------------------------------------------------------------------------------------
# public post-processors
# ---------------------------------------------------------------------------------------------------------------

def post_process_semantic_segmentation(outputs, target_sizes: Sequence[tuple[int, int]] | None = None,
                                       return_segmentation_scores: bool = False) -> list:
    """Semantic maps: per pixel the class maximising ``sum_q softmax(logits)[q, c] * sigmoid(pred_masks)[q]``.

    Args:
        outputs: ``logits`` ``[B, Q, C+1]`` and ``pred_masks`` ``[B, Q, h, w]``.
        target_sizes: ``B`` pairs ``(H, W)``; the ``[C, h, w]`` class scores are resized (bilinear) before the
            argmax. ``None``: maps at ``(h, w)``.
        return_segmentation_scores: also return the (resized) float32 scores ``[C, H, W]``.
    Returns:
        ``B`` int64 maps ``[H, W]`` of class ids in ``[0, C)``; with ``return_segmentation_scores`` instead ``B``
        dicts ``{"segmentation": [H, W] int64, "segmentation_scores": [C, H, W] float32}``.
    Raises:
        ValueError: ``len(target_sizes) != B``.
    """
    logits = _get(outputs, "logits")
    masks = _get(outputs, "pred_masks")
    batch_size = logits.shape[0]
    if target_sizes is not None and batch_size != len(target_sizes):
        raise ValueError("Make sure that you pass in as many target sizes as the batch dimension of the logits")
    classes = _softmax(logits)[..., :-1]  # [B, Q, C]
    results = []
    for i in range(batch_size):
        num_queries, h, w = masks[i].shape
        probs = _sigmoid(masks[i]).reshape(num_queries, h * w)
        scores = np.matmul(classes[i].T, probs).reshape(-1, h, w)  # [C, h, w] float32
        size = None if target_sizes is None else (int(target_sizes[i][0]), int(target_sizes[i][1]))
        out_h, out_w = (h, w) if size is None else size
        semantic = np.empty((out_h, out_w), np.int64)
        resized = np.empty((scores.shape[0], out_h, out_w), _F32) if return_segmentation_scores else None
        if size is None:
            semantic[:] = scores.argmax(axis=0)
            resized = scores if return_segmentation_scores else None
        else:
            for rows, block in _resized_blocks(scores, size):
                semantic[rows] = block.argmax(axis=0)
                if resized is not None:
                    resized[:, rows] = block
        results.append({"segmentation": semantic, "segmentation_scores": resized} if return_segmentation_scores
                       else semantic)
    return results


def post_process_instance_segmentation(outputs, threshold: float = 0.5, mask_threshold: float = 0.5,
                                       overlap_mask_area_threshold: float = 0.8,
                                       target_sizes: Sequence[tuple[int, int]] | None = None,
                                       return_coco_annotation: bool | None = False) -> list[dict]:
    """Instance maps (HF's panoptic procedure with nothing fused).

    Queries with a best class (softmax over C+1, no-object included) that is not "no object" and a score
    ``> threshold`` are kept; their sigmoid masks are resized to the target size, weighted by the score, and each
    pixel goes to the query with the largest weighted mask. A query becomes a segment if it wins some pixels, has
    some weighted mask ``>= mask_threshold``, and wins ``> overlap_mask_area_threshold`` of that area.

    Args:
        outputs: ``logits`` ``[B, Q, C+1]`` and ``pred_masks`` ``[B, Q, h, w]``.
        threshold, mask_threshold, overlap_mask_area_threshold: see above.
        target_sizes: ``B`` pairs ``(H, W)``; ``None``: maps at ``(h, w)``.
        return_coco_annotation: return ``segmentation`` as :func:`convert_segmentation_to_rle` of the map.
    Returns:
        Per image ``{"segmentation": int32 [H, W] segment ids (0 = none) or list of RLE lists,
        "segments_info": [{"id": int, "label_id": int, "was_fused": False, "score": float (6 decimals)}, ...]}``.
        With no query kept: ``segmentation`` is float32 ``[H, W]`` filled with -1 (never RLE) and
        ``segments_info`` is ``[]``.
    """
    return _instances(outputs, threshold, mask_threshold, overlap_mask_area_threshold, [], target_sizes,
                      return_coco_annotation)


def post_process_panoptic_segmentation(outputs, threshold: float = 0.5, mask_threshold: float = 0.5,
                                       overlap_mask_area_threshold: float = 0.8, label_ids_to_fuse=None,
                                       target_sizes: Sequence[tuple[int, int]] | None = None, *,
                                       unique_ids: bool = False) -> list[dict]:
    """Panoptic maps: as :func:`post_process_instance_segmentation`, and all segments of a label in
    ``label_ids_to_fuse`` share one id (the first one's).

    Segment ids count up from 1 in query order; after a fused label reuses its id, counting resumes from that id,
    so (as in HF) a later segment can get an id already in use. Each fused query still adds its own
    ``segments_info`` entry (same ``id``, ``was_fused`` True).

    Args:
        outputs: ``logits`` ``[B, Q, C+1]`` and ``pred_masks`` ``[B, Q, h, w]``.
        threshold, mask_threshold, overlap_mask_area_threshold: as for instance segmentation.
        label_ids_to_fuse: set of label ids to fuse (e.g. the COCO "stuff" ids); ``None``: none (with a warning).
        target_sizes: ``B`` pairs ``(H, W)``; ``None``: maps at ``(h, w)``.
        unique_ids: detr-deploy's extension (keyword only, default off = HF): every segment gets its own id
            (fused labels excepted), what a COCO panoptic PNG needs; HF can give two segments one id.
    Returns:
        Per image ``{"segmentation": int32 [H, W] segment ids (0 = none), "segments_info": [{"id", "label_id",
        "was_fused", "score"}, ...]}``; with no query kept, float32 ``[H, W]`` of -1 and ``[]``.
    """
    global _warned_no_fuse
    if label_ids_to_fuse is None:
        if not _warned_no_fuse:
            logger.warning("`label_ids_to_fuse` unset. No instance will be fused.")
            _warned_no_fuse = True
        label_ids_to_fuse = set()
    return _instances(outputs, threshold, mask_threshold, overlap_mask_area_threshold, label_ids_to_fuse,
                      target_sizes, False, unique_ids)


def label_map(result: dict) -> np.ndarray:
    """A panoptic/instance result -> ``[H, W]`` int64 label per pixel (-1 where no segment)."""
    ids = np.asarray(result["segmentation"])
    labels = np.full(ids.shape, -1, np.int64)
    for entry in result["segments_info"]:
        labels[ids == entry["id"]] = entry["label_id"]
    return labels


def segment_image(outputs, index: int, resized_size: tuple[int, int], original_size: tuple[int, int],
                  task: str = "panoptic", threshold: float = 0.5, mask_threshold: float = 0.5,
                  overlap_mask_area_threshold: float = 0.8, stuff_ids=(), id2label: dict | None = None) -> dict:
    """One image of a (padded) batch through the post-processing, as the Detector and the gate use it.

    The masks are first cropped to the image's unpadded region at stride 4 (``ceil(resized / 4)``): Hugging Face's
    functions assume an unpadded input (for one unpadded image the two agree). Panoptic fuses ``stuff_ids`` and
    gives every segment its own id (``unique_ids``); an empty result is an all-zero int32 map. Adds ``"names"``
    (one per ``segments_info`` entry) from ``id2label``. ``task``: "panoptic", "instance" or "semantic".
    """
    h, w = resized_size
    single = {"logits": _get(outputs, "logits")[index:index + 1],
              "pred_masks": _get(outputs, "pred_masks")[index:index + 1, :, :-(-h // 4), :-(-w // 4)]}
    size = [tuple(original_size)]
    if task == "semantic":
        return {"segmentation": post_process_semantic_segmentation(single, size)[0]}
    thresholds = (threshold, mask_threshold, overlap_mask_area_threshold)
    if task == "instance":
        result = post_process_instance_segmentation(single, *thresholds, target_sizes=size)[0]
    elif task == "panoptic":
        result = post_process_panoptic_segmentation(single, *thresholds, label_ids_to_fuse=set(stuff_ids),
                                                    target_sizes=size, unique_ids=True)[0]
    else:
        raise ValueError(f"unknown segmentation task {task!r}")
    if not result["segments_info"]:  # HF's "nothing kept" map is float -1: an empty map of ids here
        result["segmentation"] = np.zeros(size[0], np.int32)
    names = id2label or {}
    result["names"] = [names.get(s["label_id"], str(s["label_id"])) for s in result["segments_info"]]
    return result


# ---------------------------------------------------------------------------------------------------------------
# COCO panoptic PNG encoding
# ---------------------------------------------------------------------------------------------------------------

def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic colours: ``ids`` int ``[H, W]`` (0 <= id < 256**3) -> uint8 ``[H, W, 3]`` with
    ``id = R + 256 * G + 256**2 * B``."""
    ids = np.asarray(ids).astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`id_to_rgb`: ``[H, W, 3]`` (uint8 or int) -> int32 ``[H, W]`` ``R + 256 G + 256**2 B``."""
    rgb = np.asarray(rgb).astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
