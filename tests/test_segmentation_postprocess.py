# SPDX-License-Identifier: Apache-2.0
"""detr_deploy.runtime.segmentation against Hugging Face's DETR segmentation post-processing.

The outputs are synthetic but shaped like DETR panoptic (100 queries, 250 classes + no-object, masks at 1/4 of the
padded batch of real photo sizes) and built so that the interesting branches run: many confident queries of
repeated "thing" and "stuff" classes (fusing), territories that overlap (the overlap-area test rejects some),
near-duplicate queries, scores straddling the thresholds, smooth masks (not white noise).
"""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from detr_deploy.runtime import segmentation as seg

NUM_QUERIES, NUM_CLASSES = 100, 250
THINGS = [1, 1, 1, 1, 3, 3, 18, 18, 44, 62, 62]
STUFF = [184, 184, 187, 187, 187, 199, 200]
LABEL_IDS_TO_FUSE = set(STUFF)
# (height, width) of scikit-image photographs: coffee, chelsea, rocket, coins, astronaut
PHOTO_SIZES = [(400, 600), (300, 451), (427, 640), (303, 384), (512, 512)]


# --------------------------------------------------------------------------------------------------------------
# synthetic DETR outputs
# --------------------------------------------------------------------------------------------------------------

def detr_mask_size(sizes: list[tuple[int, int]], shortest: int = 800, longest: int = 1333) -> tuple[int, int]:
    """``pred_masks`` size for a batch: DETR resizes each image (shortest edge 800, longest <= 1333), pads the batch
    to the largest, and predicts masks at 1/4 of that."""
    resized = []
    for h, w in sizes:
        scale = min(shortest / min(h, w), longest / max(h, w))
        resized.append((round(h * scale), round(w * scale)))
    return -(-max(h for h, _ in resized) // 4), -(-max(w for _, w in resized) // 4)


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency field, ~N(0, 1): a coarse random grid bilinearly interpolated to ``(h, w)``."""
    gh, gw = cells
    grid = rng.standard_normal((gh + 1, gw + 1))
    ys, xs = np.linspace(0, gh, h), np.linspace(0, gw, w)
    y0, x0 = np.minimum(ys.astype(int), gh - 1), np.minimum(xs.astype(int), gw - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    return (grid[y0][:, x0] * (1 - fy) * (1 - fx) + grid[y0][:, x0 + 1] * (1 - fy) * fx
            + grid[y0 + 1][:, x0] * fy * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fy * fx)


def make_outputs(seed: int, batch: int, mask_hw: tuple[int, int], things: int = 22, stuff: int = 10,
                 duplicates: int = 4, unsure: int = 8) -> dict[str, np.ndarray]:
    """``logits [B, 100, 251]`` and ``pred_masks [B, 100, h, w]`` (float32).

    Per image: ``things`` blob-shaped and ``stuff`` large irregular territories (a potential per query, each
    pixel's territory is the largest); a query's mask logit grows with its margin over the best other potential,
    shifted so that most masks reach a little into their neighbours. Classes repeat (so stuff fuses), a few
    lower-scored near-duplicates overlap confident queries, ``unsure`` queries score around 0.3-0.9, the rest say
    "no object".
    """
    rng = np.random.default_rng(seed)
    h, w = mask_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    logits = rng.standard_normal((batch, NUM_QUERIES, NUM_CLASSES + 1))
    logits[..., -1] += 6.0
    masks = np.empty((batch, NUM_QUERIES, h, w))
    for b in range(batch):
        order = rng.permutation(NUM_QUERIES)
        n = things + stuff
        confident, doubles = order[:n], order[n:n + duplicates]
        unsure_q = order[n + duplicates:n + duplicates + unsure]
        for q in order[n:]:
            masks[b, q] = 3.0 * smooth_field(rng, h, w, (4, 5)) - 4.0
        potentials = np.empty((n, h, w))
        for j in range(n):
            if j < things:
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                ry, rx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.05, 0.2) * w
                potentials[j] = 1.5 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2
            else:
                potentials[j] = 0.6 * smooth_field(rng, h, w, (2, 3))
        for j, q in enumerate(confident):
            label = THINGS[j % len(THINGS)] if j < things else STUFF[(j - things) % len(STUFF)]
            logits[b, q, label] += rng.uniform(8.0, 16.0)
            others = np.delete(potentials, j, axis=0)
            margin = potentials[j] - (others.max(axis=0) if len(others) else -1.0)
            if j < things:
                logit = 12.0 * (margin + rng.uniform(-0.1, 0.4))
            else:  # stuff potentials are flatter: steeper edges
                logit = 40.0 * (margin + rng.uniform(-0.02, 0.06))
            masks[b, q] = np.clip(logit, -30, 30) + 0.5 * smooth_field(rng, h, w, (6, 8))
        for q, src in zip(doubles, confident):
            label = int(np.argmax(logits[b, src]))
            logits[b, q] = logits[b, src]
            logits[b, q, label] -= rng.uniform(0.3, 2.0)
            shift = (int(rng.integers(-4, 5)), int(rng.integers(-4, 5)))
            masks[b, q] = np.roll(masks[b, src], shift, axis=(0, 1)) + rng.uniform(-1.0, 2.0)
        for q in unsure_q:
            logits[b, q, rng.choice(THINGS + STUFF)] += rng.uniform(5.0, 8.0)
    return {"logits": logits.astype(np.float32), "pred_masks": masks.astype(np.float32)}


# --------------------------------------------------------------------------------------------------------------
# comparison helpers
# --------------------------------------------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.maps = self.pixels = self.segments = self.rle = self.fused = self.empty = 0
        self.max_score_diff = 0.0
        self.exact_scores = True

    def line(self) -> str:
        return (f"segmentation parity vs HF: {self.maps} maps ({self.pixels} px) identical, {self.segments} segments "
                f"({self.fused} fused) identical, {self.rle} RLE lists identical, {self.empty} empty results; "
                f"max |score diff| {self.max_score_diff:.1e} (scores bit-equal: {self.exact_scores})")


@pytest.fixture(scope="module")
def tally():
    t = Tally()
    yield t
    print("\n" + t.line())


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch", reason="the Hugging Face reference runs on torch")
    pytest.importorskip("transformers", reason="transformers provides the reference post-processing")
    try:
        from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil as Processor
    except ImportError:
        from transformers import DetrImageProcessor as Processor
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # the "label_ids_to_fuse unset" notice
    processor = Processor()

    def as_model_output(outputs):
        return types.SimpleNamespace(logits=torch.from_numpy(outputs["logits"]),
                                     pred_masks=torch.from_numpy(outputs["pred_masks"]))
    return types.SimpleNamespace(processor=processor, wrap=as_model_output, torch=torch)


def assert_same_instances(ours: list[dict], ref: list[dict], tally: Tally, rle: bool = False):
    assert len(ours) == len(ref)
    for image, (o, r) in enumerate(zip(ours, ref)):
        assert list(o) == list(r) == ["segmentation", "segments_info"]
        ref_map = r["segmentation"]
        if rle and isinstance(ref_map, list):
            assert isinstance(o["segmentation"], list)
            assert [[int(v) for v in run] for run in o["segmentation"]] == [[int(v) for v in run] for run in ref_map]
            tally.rle += len(ref_map)
        else:
            ref_map = ref_map.numpy()
            assert o["segmentation"].dtype == ref_map.dtype, image
            assert o["segmentation"].shape == ref_map.shape, image
            mismatch = np.count_nonzero(o["segmentation"] != ref_map)
            assert mismatch == 0, f"image {image}: {mismatch} pixels differ"
            tally.maps += 1
            tally.pixels += ref_map.size
        ri, oi = r["segments_info"], o["segments_info"]
        assert [list(s) for s in oi] == [list(s) for s in ri]  # same keys, same order
        assert [(s["id"], s["label_id"], s["was_fused"]) for s in oi] == \
            [(s["id"], s["label_id"], s["was_fused"]) for s in ri]
        for a, b in zip(oi, ri):
            assert type(a["id"]) is type(b["id"]) and type(a["label_id"]) is type(b["label_id"])
            assert abs(a["score"] - b["score"]) <= 1e-5
            tally.max_score_diff = max(tally.max_score_diff, abs(a["score"] - b["score"]))
            tally.exact_scores &= a["score"] == b["score"]
        tally.segments += len(ri)
        tally.fused += sum(s["was_fused"] for s in ri)
        tally.empty += not ri


# --------------------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------------------

BATCH_SIZES = [PHOTO_SIZES[0], PHOTO_SIZES[1]]
PANOPTIC_SETTINGS = [dict(), dict(threshold=0.85, mask_threshold=0.4, overlap_mask_area_threshold=0.6),
                     dict(threshold=0.3, mask_threshold=0.7, overlap_mask_area_threshold=0.95)]


def test_panoptic_matches_hf(hf, tally, seed=0):
    """Batch of 2 photos of different sizes, resized to their own sizes (3 threshold settings) and not resized;
    stuff fused. Also checks that the data exercises fusing and the overlap test."""
    outputs = make_outputs(seed, 2, detr_mask_size(BATCH_SIZES))
    model_output = hf.wrap(outputs)
    rejected = 0
    for settings, target_sizes in [(s, BATCH_SIZES) for s in PANOPTIC_SETTINGS] + [(PANOPTIC_SETTINGS[0], None)]:
        ref = hf.processor.post_process_panoptic_segmentation(
            model_output, label_ids_to_fuse=LABEL_IDS_TO_FUSE, target_sizes=target_sizes, **settings)
        ours = seg.post_process_panoptic_segmentation(
            outputs, label_ids_to_fuse=LABEL_IDS_TO_FUSE, target_sizes=target_sizes, **settings)
        assert_same_instances(ours, ref, tally)
        scores, labels = hf.torch.from_numpy(outputs["logits"]).softmax(-1).max(-1)
        kept = int(((labels != NUM_CLASSES) & (scores > settings.get("threshold", 0.5))).sum())
        rejected += kept - sum(len(r["segments_info"]) for r in ref)
    defaults = seg.post_process_panoptic_segmentation(outputs, label_ids_to_fuse=LABEL_IDS_TO_FUSE)
    assert all(len(r["segments_info"]) >= 5 for r in defaults), "the synthetic data should give many segments"
    assert any(s["was_fused"] for r in defaults for s in r["segments_info"]), "the synthetic data should fuse"
    assert rejected > 0, "some kept queries should fail the overlap test"


@pytest.mark.parametrize("photo", [PHOTO_SIZES[2], PHOTO_SIZES[4]])
def test_panoptic_single_photos_match_hf(hf, tally, photo):
    outputs = make_outputs(sum(photo), 1, detr_mask_size([photo]))
    ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs), label_ids_to_fuse=LABEL_IDS_TO_FUSE,
                                                          target_sizes=[photo])
    ours = seg.post_process_panoptic_segmentation(outputs, label_ids_to_fuse=LABEL_IDS_TO_FUSE, target_sizes=[photo])
    assert_same_instances(ours, ref, tally)


def test_panoptic_without_fusing_matches_hf(hf, tally):
    outputs = make_outputs(7, 2, detr_mask_size(BATCH_SIZES))
    ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs))
    ours = seg.post_process_panoptic_segmentation(outputs)
    assert_same_instances(ours, ref, tally)
    assert not any(s["was_fused"] for r in ours for s in r["segments_info"])


def test_instance_matches_hf(hf, tally):
    """RLE at the photo sizes, maps at mask resolution with other thresholds."""
    outputs = make_outputs(3, 2, detr_mask_size(BATCH_SIZES))
    for settings, target_sizes, rle in ((PANOPTIC_SETTINGS[0], BATCH_SIZES, True), (PANOPTIC_SETTINGS[1], None, False)):
        ref = hf.processor.post_process_instance_segmentation(
            hf.wrap(outputs), target_sizes=target_sizes, return_coco_annotation=rle, **settings)
        ours = seg.post_process_instance_segmentation(
            outputs, target_sizes=target_sizes, return_coco_annotation=rle, **settings)
        assert_same_instances(ours, ref, tally, rle=rle)


def test_small_targets_and_few_queries_match_hf(hf, tally):
    """Outputs with H + W <= 128 take PyTorch's channels-last bilinear kernel (different arithmetic), with 8-wide
    channel groups plus a remainder; 1 and 2 kept queries take the generic one."""
    outputs = make_outputs(11, 2, (30, 41))
    for target_sizes in ([(60, 67), (23, 97)], [(120, 164), (29, 41)]):
        ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs), label_ids_to_fuse=LABEL_IDS_TO_FUSE,
                                                              target_sizes=target_sizes)
        ours = seg.post_process_panoptic_segmentation(outputs, label_ids_to_fuse=LABEL_IDS_TO_FUSE,
                                                      target_sizes=target_sizes)
        assert_same_instances(ours, ref, tally)
    for kept in (1, 2):
        few = make_outputs(12 + kept, 1, (50, 75), things=kept, stuff=0, duplicates=0, unsure=0)
        ref = hf.processor.post_process_instance_segmentation(hf.wrap(few), target_sizes=[(200, 301)])
        ours = seg.post_process_instance_segmentation(few, target_sizes=[(200, 301)])
        assert_same_instances(ours, ref, tally)


def test_fused_id_reuse_matches_hf(hf, tally):
    """HF numbers segments in query order and, after a fused label takes back its id, counts on from that id: with
    queries (stuff A, thing, stuff A, thing) the second thing gets id 2 again. Stripes make every query valid."""
    h, w, queries = 16, 32, [(187, 0), (1, 1), (187, 2), (3, 3)]
    logits = np.full((1, 6, NUM_CLASSES + 1), -5.0, np.float32)
    logits[0, :, -1] = 5.0
    masks = np.full((1, 6, h, w), -10.0, np.float32)
    for q, (label, stripe) in enumerate(queries):
        logits[0, q, label] = 12.0 - q
        masks[0, q, :, stripe * 8:(stripe + 1) * 8] = 10.0
    outputs = {"logits": logits, "pred_masks": masks}
    for target_sizes in (None, [(64, 128)]):
        ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs), label_ids_to_fuse={187},
                                                              target_sizes=target_sizes)
        ours = seg.post_process_panoptic_segmentation(outputs, label_ids_to_fuse={187}, target_sizes=target_sizes)
        assert_same_instances(ours, ref, tally)
        assert [s["id"] for s in ours[0]["segments_info"]] == [1, 2, 1, 2]
        assert [s["was_fused"] for s in ours[0]["segments_info"]] == [True, False, True, False]


def test_threshold_boundaries_match_hf(hf, tally):
    """Values exactly at the thresholds: weighted mask == mask_threshold counts (``>=``), float32 thresholds, and
    the area ratio is a float32 division (4 / 5 -> 0.800000012 > 0.8, so the segment stays)."""
    torch = hf.torch
    h, w = 4, 10
    logits = np.full((1, 5, NUM_CLASSES + 1), -5.0, np.float32)
    logits[0, :, -1] = 5.0
    logits[0, 0, 1], logits[0, 1, 187] = 11.0, 12.0
    masks = np.full((1, 5, h, w), -10.0, np.float32)
    masks[0, 0, 0, :5] = 3.0     # query 0: 5 pixels, all exactly at the mask threshold chosen below
    masks[0, 1, 2, :] = 10.0     # query 1: a row, and takes one of query 0's pixels (4 / 5 left)
    masks[0, 1, 0, 4] = 10.0
    outputs = {"logits": logits, "pred_masks": masks}
    score = torch.from_numpy(logits[0, 0]).softmax(-1).max()
    at_threshold = float(torch.sigmoid(torch.tensor(3.0)) * score)
    ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs), mask_threshold=at_threshold,
                                                          overlap_mask_area_threshold=0.8)
    ours = seg.post_process_panoptic_segmentation(outputs, mask_threshold=at_threshold,
                                                  overlap_mask_area_threshold=0.8)
    assert_same_instances(ours, ref, tally)
    assert [s["label_id"] for s in ours[0]["segments_info"]] == [1, 187]
    # a threshold just below a score in float64 but equal to it in float32: the query is dropped
    just_below = float(np.nextafter(float(score), 0.0))
    ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs), threshold=just_below)
    ours = seg.post_process_panoptic_segmentation(outputs, threshold=just_below)
    assert_same_instances(ours, ref, tally)
    assert [s["label_id"] for s in ours[0]["segments_info"]] == [187]


def test_empty_results_match_hf(hf, tally):
    """No query above the threshold: HF returns a float32 map of -1 (also with RLE requested); queries kept but none
    valid: an int32 map of zeros."""
    outputs = make_outputs(5, 2, (40, 56))
    nothing = {"logits": outputs["logits"].copy(), "pred_masks": outputs["pred_masks"]}
    nothing["logits"][..., -1] += 50.0
    for target_sizes in (None, [(160, 224), (150, 200)]):
        ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(nothing), label_ids_to_fuse=LABEL_IDS_TO_FUSE,
                                                              target_sizes=target_sizes)
        ours = seg.post_process_panoptic_segmentation(nothing, label_ids_to_fuse=LABEL_IDS_TO_FUSE,
                                                      target_sizes=target_sizes)
        assert_same_instances(ours, ref, tally)
        assert ours[0]["segmentation"].dtype == np.float32 and (ours[0]["segmentation"] == -1).all()
        ref = hf.processor.post_process_instance_segmentation(hf.wrap(nothing), target_sizes=target_sizes,
                                                              return_coco_annotation=True)
        ours = seg.post_process_instance_segmentation(nothing, target_sizes=target_sizes, return_coco_annotation=True)
        assert_same_instances(ours, ref, tally)
    ref = hf.processor.post_process_panoptic_segmentation(hf.wrap(outputs), overlap_mask_area_threshold=1.0)
    ours = seg.post_process_panoptic_segmentation(outputs, overlap_mask_area_threshold=1.0)
    assert_same_instances(ours, ref, tally)
    assert ours[0]["segmentation"].dtype == np.int32 and not ours[0]["segments_info"]


def test_semantic_matches_hf(hf, tally):
    outputs = make_outputs(2, 2, detr_mask_size(BATCH_SIZES))
    for target_sizes in (BATCH_SIZES, None):
        ref = hf.processor.post_process_semantic_segmentation(hf.wrap(outputs), target_sizes=target_sizes)
        ours = seg.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
        assert len(ours) == len(ref) == 2
        for o, r in zip(ours, ref):
            r = r.numpy()
            assert o.dtype == r.dtype and o.shape == r.shape
            mismatch = np.count_nonzero(o != r)
            assert mismatch == 0, f"{mismatch} pixels differ"
            assert len(np.unique(r)) > 5
            tally.maps += 1
            tally.pixels += r.size
    with pytest.raises(ValueError):
        seg.post_process_semantic_segmentation(outputs, target_sizes=BATCH_SIZES[:1])


def test_resize_matches_torch_interpolate(hf):
    """Bit-identical to F.interpolate(bilinear, align_corners=False): up/down-sampling, equal sizes, 1-pixel edges,
    both PyTorch kernels (generic; channels-last for H + W <= 128 or 1x1 inputs with C > 3), channel counts around
    the 8-lane split."""
    torch = hf.torch
    rng = np.random.default_rng(0)
    cases = 0
    for channels in (1, 2, 3, 8, 11, 100):
        for src in ((1, 1), (1, 7), (5, 1), (7, 9), (30, 41), (75, 113), (100, 151)):
            for dst in ((1, 1), (3, 2), (src[0], src[1] + 1), src, (2 * src[0] + 1, 3 * src[1] - 1), (37, 90),
                        (64, 65), (max(1, src[0] // 3), max(1, src[1] // 2)), (4 * src[0], 4 * src[1]), (301, 452)):
                if channels * dst[0] * dst[1] > 2_000_000:
                    continue
                x = rng.random((channels, *src), dtype=np.float32)
                ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=dst, mode="bilinear",
                                                      align_corners=False)[0].numpy()
                out = seg.resize_bilinear(x, dst)
                assert np.array_equal(out, ref), (channels, src, dst, np.count_nonzero(out != ref))
                cases += 1
    print(f"\nresize_bilinear: {cases} size/channel cases bit-identical to torch")


def test_activations_match_torch(hf):
    torch = hf.torch
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(1 << 18) * 12).astype(np.float32)
    assert np.array_equal(seg._sigmoid(x), torch.from_numpy(x).sigmoid().numpy())
    logits = (rng.standard_normal((2, 100, 251)) * 4).astype(np.float32)
    assert np.array_equal(seg._softmax(logits), torch.from_numpy(logits).softmax(-1).numpy())


def test_rle_and_panoptic_png_helpers():
    segmentation = np.array([[0, 0, 2, 2], [2, 1, 1, 0], [0, 0, 0, 5]], np.int32)
    rle = seg.convert_segmentation_to_rle(segmentation)
    # runs of each id in row-major order, 1-based start then length
    assert [[int(v) for v in r] for r in rle] == [[1, 2, 8, 4], [6, 2], [3, 3], [12, 1]]
    assert [[int(v) for v in r] for r in rle] == [[int(v) for v in seg.binary_mask_to_rle(segmentation == i)]
                                                  for i in (0, 1, 2, 5)]
    ids = np.array([[0, 1, 255], [256, 65535, 16777215]])
    rgb = seg.id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0, 2].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 1, 0] and rgb[1, 2].tolist() == [255] * 3
    assert np.array_equal(seg.rgb_to_id(rgb), ids)
    try:
        from transformers.image_transforms import id_to_rgb, rgb_to_id
    except ImportError:
        return
    assert np.array_equal(seg.id_to_rgb(ids), id_to_rgb(ids))
    assert np.array_equal(seg.rgb_to_id(rgb), rgb_to_id(rgb))


def test_import_does_not_load_torch():
    code = "import sys, detr_deploy.runtime.segmentation; sys.exit(3 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_softmax_lanes_follow_the_capability_pytorch_dispatches_to(hf, monkeypatch):
    """The softmax sum order is PyTorch's on this CPU (16 lanes under AVX512, 8 under AVX2); ATEN_CPU_CAPABILITY,
    which makes PyTorch pick another kernel, picks the matching order here."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert seg.simd_float_lanes() == 8
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    assert seg.simd_float_lanes() == 16
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    capability = hf.torch.backends.cpu.get_cpu_capability()
    print(f"\nPyTorch dispatches to {capability}; softmax lanes here: {seg.simd_float_lanes()}")
    assert seg.simd_float_lanes() == (16 if capability == "AVX512" else 8)
