# SPDX-License-Identifier: Apache-2.0
"""Parity with Hugging Face transformers (the external oracle): save_pretrained -> our loader -> same outputs."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is the parity oracle (pip install 'detr-deploy[dev]')")

import detr_deploy

from conftest import padded_batch, randomize_, tiny_hf_model

TOLERANCE = 1e-4


def _compare(hf_model, tmp_path, pixel_values, pixel_mask):
    """Save ``hf_model``, load the folder with create_model(path), run both; returns (ours, diffs)."""
    hf_model.save_pretrained(tmp_path)
    reloaded = type(hf_model).from_pretrained(tmp_path).eval()  # what a user of the saved folder gets in HF
    ours = detr_deploy.create_model(str(tmp_path))
    with torch.no_grad():
        ref = reloaded(pixel_values=pixel_values, pixel_mask=pixel_mask)
        out = ours(pixel_values, pixel_mask)
    diffs = {"logits": (ref.logits - out["logits"]).abs().max().item(),
             "boxes": (ref.pred_boxes - out["pred_boxes"]).abs().max().item()}
    # the comparison must be able to fail: outputs are far from constant
    assert ref.logits.std() > 0.05 and ref.pred_boxes.std() > 0.01
    print(f"\nparity vs transformers ({type(hf_model).__name__}): max|dlogits|={diffs['logits']:.2e} "
          f"max|dboxes|={diffs['boxes']:.2e}")
    return ours, diffs


@pytest.mark.parametrize("kind", ["detr", "deformable", "single-scale", "refine", "two-stage"])
def test_tiny_models_match_transformers_on_a_padded_batch(kind, tmp_path):
    torch.manual_seed(0)
    hf_model = tiny_hf_model(kind)
    randomize_(hf_model)
    x, mask = padded_batch((96, 128), (70, 100))
    ours, diffs = _compare(hf_model, tmp_path, x, mask)
    assert diffs["logits"] <= TOLERANCE and diffs["boxes"] <= TOLERANCE
    family = "detr" if kind == "detr" else "deformable"
    assert ours.config.family == family
    if family == "deformable":
        assert ours.config.with_box_refine == (kind in ("refine", "two-stage"))
        assert ours.config.two_stage == (kind == "two-stage")
        assert ours.config.num_feature_levels == (1 if kind == "single-scale" else 4)


@pytest.mark.parametrize("kind", ["detr", "deformable"])
def test_the_padding_mask_is_used(kind, tmp_path):
    """Equal to transformers with the mask (above); without it the padded image's outputs change, so a model
    that ignored ``pixel_mask`` would fail here, and the unpadded image of the batch is unaffected by the other's
    padding only through the mask."""
    hf_model = tiny_hf_model(kind)
    randomize_(hf_model)
    # padding large enough to reach DETR's stride-32 grid (rows 0, 32, 64 of a 96-row batch)
    x, mask = padded_batch((96, 128), (40, 50))
    ours, _ = _compare(hf_model, tmp_path, x, mask)
    with torch.no_grad():
        masked = ours(x, mask)
        unmasked = ours(x, torch.ones_like(mask))
    change = (unmasked["logits"][1] - masked["logits"][1]).abs().max().item()
    print(f"\n{kind}: ignoring the padding mask changes the padded image's logits by up to {change:.3f}")
    assert change > 1e-2
    # image 0 fills the batch: its mask is all ones, so its outputs cannot depend on the mask argument
    assert torch.allclose(unmasked["logits"][0], masked["logits"][0], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["detr", "deformable"])
def test_full_size_r50_matches_transformers_at_800x1066(family, tmp_path):
    from transformers import (
        DeformableDetrConfig,
        DeformableDetrForObjectDetection,
        DetrConfig,
        DetrForObjectDetection,
        ResNetConfig,
    )

    torch.manual_seed(0)
    stages = ["stage4"] if family == "detr" else ["stage2", "stage3", "stage4"]
    backbone = ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                            layer_type="bottleneck", out_features=stages)
    if family == "detr":
        hf_model = DetrForObjectDetection(DetrConfig(backbone_config=backbone, use_timm_backbone=False,
                                                     use_pretrained_backbone=False, num_labels=91)).eval()
    else:
        hf_model = DeformableDetrForObjectDetection(DeformableDetrConfig(
            backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, num_labels=91)).eval()
    randomize_(hf_model)
    x, mask = padded_batch((800, 1066), (800, 1066)) if family == "detr" else padded_batch((800, 1066), (600, 800))
    ours, diffs = _compare(hf_model, tmp_path, x[:1] if family == "detr" else x,
                           mask[:1] if family == "detr" else mask)
    assert sum(p.numel() for p in ours.parameters()) == (41_524_768 if family == "detr" else 40_069_665)
    assert diffs["logits"] <= TOLERANCE and diffs["boxes"] <= TOLERANCE
