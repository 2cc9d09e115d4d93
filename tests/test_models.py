# SPDX-License-Identifier: Apache-2.0
"""Reference models: registry, exact parameter layout of the published models, MSDA core semantics."""
from __future__ import annotations

import math

import pytest
import torch

import detr_deploy
from detr_deploy.errors import ConfigError, UnknownModelError
from detr_deploy.models import DeformableDetrConfig, DetrConfig, build_model
from detr_deploy.models.deformable_attention import ms_deform_attn_core
from detr_deploy.models.position_encoding import SinePositionEmbedding
from detr_deploy.weights import ours_to_official

from conftest import key_spec, tiny_model

# variant -> (official key list, published unique parameter count; checkpoint-formats.md 3.2 and 4.5)
PUBLISHED = {
    "detr-r50": ("official_detr_r50", 41_524_768),
    "detr-r50-dc5": ("official_detr_r50", 41_524_768),
    "detr-r101": ("official_detr_r101", 60_464_672),
    "detr-r101-dc5": ("official_detr_r101", 60_464_672),
    "deformable-detr": ("official_ddetr", 40_069_665),
    "deformable-detr-single-scale": ("official_ddetr_ss", 34_066_593),
    "deformable-detr-refine": ("official_ddetr_refine", 40_849_660),
    "deformable-detr-two-stage": ("official_ddetr_two_stage", 41_181_529),
}


def test_registry_lists_every_variant_and_aliases():
    names = detr_deploy.list_models()
    assert set(PUBLISHED) <= set(names)
    assert detr_deploy.models.resolve_name("detr") == "detr-r50"
    assert detr_deploy.models.resolve_name("deformable") == "deformable-detr"
    assert detr_deploy.models.resolve_name("Deformable_DETR_refine") == "deformable-detr-refine"


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError) as err:
        detr_deploy.create_model("deformable-detr-refin")
    text = str(err.value)
    assert "Did you mean deformable-detr-refine" in text and "detr-r50" in text


def test_unknown_override_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown option.*num_querys"):
        detr_deploy.create_model("detr", weights="random", num_querys=10)


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_parameter_layout_equals_official_checkpoint(variant):
    """Every key and shape of the official checkpoint, and the published parameter count."""
    keys_file, params = PUBLISHED[variant]
    with torch.device("meta"):
        model = detr_deploy.create_model(variant, weights="random")
    config = model.config
    state = ours_to_official(model.state_dict(), getattr(config, "with_box_refine", False),
                             getattr(config, "two_stage", False))
    expected = key_spec(keys_file)
    assert sorted(state) == sorted(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected
    assert sum(p.numel() for p in model.parameters()) == params


def test_dc5_dilates_only_the_last_stage():
    with torch.device("meta"):
        model = detr_deploy.create_model("detr-r50-dc5", weights="random")
    layer4 = model.backbone.body.layer4
    assert layer4[0].conv2.stride == (1, 1) and layer4[0].conv2.dilation == (1, 1)
    assert layer4[0].downsample[0].stride == (1, 1)
    for block in layer4[1:]:
        assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
    assert model.backbone.body.layer3[0].conv2.stride == (2, 2)
    assert model.backbone.strides == [16]
    x = torch.zeros(1, 3, 64, 96)
    small = build_model(DetrConfig(backbone={"name": "resnet18", "dilation": True}, d_model=32, num_heads=4,
                                   encoder_layers=1, decoder_layers=1, ffn_dim=32, num_queries=5, num_classes=3))
    assert small.backbone(x)[-1].shape[-2:] == (4, 6)  # stride 16, not 32


@pytest.mark.parametrize("kw", [{}, {"with_box_refine": True}, {"with_box_refine": True, "two_stage": True},
                                {"num_feature_levels": 1, "backbone": {"name": "resnet18", "out_stages": (4,)}},
                                {"num_feature_levels": 5}])
def test_tiny_deformable_outputs_and_training_mode_extras(kw):
    model = tiny_model("deformable-detr", randomize=False, num_queries=8, num_classes=4, **kw)
    x = torch.randn(2, 3, 96, 80)
    out = model(x)
    assert set(out) == {"logits", "pred_boxes"}  # eval mode: exactly the exported outputs
    assert out["logits"].shape == (2, 8, 4) and out["pred_boxes"].shape == (2, 8, 4)
    model.train()
    out = model(x)
    assert len(out["aux_outputs"]) == model.config.decoder_layers - 1
    assert ("enc_outputs" in out) == bool(kw.get("two_stage"))
    if kw.get("two_stage"):  # one proposal per encoder position
        positions = sum(s.shape[-2] * s.shape[-1] for s in model._features(x, torch.zeros(2, 96, 80, dtype=bool))[0])
        assert out["enc_outputs"]["logits"].shape == (2, positions, 4)


def test_two_stage_too_small_input_is_a_clear_error():
    model = tiny_model("deformable-detr", randomize=False, backbone={"name": "resnet18", "out_stages": (2, 3, 4)},
                       with_box_refine=True, two_stage=True, num_queries=400)
    with pytest.raises(ConfigError, match="input too small.*340 encoder positions for 400 queries"):
        model(torch.randn(1, 3, 128, 128))  # levels 16x16 + 8x8 + 4x4 + 2x2 = 340 positions


def test_deformable_d_model_must_fit_groupnorm():
    with pytest.raises(ConfigError, match="multiple of 32"):
        DeformableDetrConfig(d_model=48, num_heads=4).validate()


# --- MSDA core ---------------------------------------------------------------------------------------------
def _bilinear_reference(value, shapes, locations, weights):
    """Scalar loops: the official CUDA kernel's maths (h = y*H - 0.5, neighbours outside the map read 0)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = locations.shape
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(num_points):
                        x, y = locations[b, q, head, lvl, p].tolist()
                        him, wim = y * h - 0.5, x * w - 0.5
                        if not (-1 < him < h and -1 < wim < w):
                            continue
                        h0, w0 = math.floor(him), math.floor(wim)
                        lh, lw = him - h0, wim - w0
                        acc = torch.zeros(d, dtype=torch.float64)
                        for hh, ww, wt in ((h0, w0, (1 - lh) * (1 - lw)), (h0, w0 + 1, (1 - lh) * lw),
                                           (h0 + 1, w0, lh * (1 - lw)), (h0 + 1, w0 + 1, lh * lw)):
                            if 0 <= hh < h and 0 <= ww < w:
                                acc += wt * value[b, starts[lvl] + hh * w + ww, head].double()
                        out[b, q, head] += weights[b, q, head, lvl, p].double() * acc
    return out.reshape(n, lq, m * d)


def test_msda_core_matches_bilinear_zero_padding_reference():
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (1, 2)]
    n, m, d, lq, p = 2, 2, 3, 6, 4
    value = torch.randn(n, sum(h * w for h, w in shapes), m, d, generator=gen)
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=gen) * 1.4 - 0.2  # some outside [0, 1]
    # exact edges, pixel centres, corners and far outside
    loc[0, 0, 0, :, 0] = torch.tensor([0.0, 0.0])
    loc[0, 0, 0, :, 1] = torch.tensor([1.0, 1.0])
    loc[0, 0, 1, 0, 2] = torch.tensor([0.5 / 7, 2.5 / 5])
    loc[0, 1, 0, 1, 3] = torch.tensor([-0.5, 1.5])
    loc[1, 2, 1, 2, 0] = torch.tensor([1.0, 0.5])
    weights = torch.rand(n, lq, m, len(shapes), p, generator=gen)
    ours = ms_deform_attn_core(value, shapes, None, loc, weights)
    ref = _bilinear_reference(value, shapes, loc, weights)
    assert (ours.double() - ref).abs().max() < 1e-5
    # the tensor form of spatial_shapes gives the same result
    tensor_form = ms_deform_attn_core(value, torch.tensor(shapes), None, loc, weights)
    assert torch.equal(ours, tensor_form)
    # a point exactly on the image edge reads half the edge pixel (blended with zero padding)
    edge = torch.zeros(1, 1, 1, 1, 1, 2)
    edge[..., 0], edge[..., 1] = 1.0, 0.5  # x on the right edge, y at a pixel centre of a 1x2 map
    v = torch.tensor([[1.0], [4.0]]).reshape(1, 2, 1, 1)
    out = ms_deform_attn_core(v, [(1, 2)], None, edge, torch.ones(1, 1, 1, 1, 1))
    assert torch.allclose(out, torch.tensor([[[2.0]]]))


def test_sine_encoding_offset_is_the_only_difference():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, 3:, :] = True
    detr = SinePositionEmbedding(8, offset=0.0)(mask)
    deformable = SinePositionEmbedding(8, offset=0.5)(mask)
    assert detr.shape == (1, 16, 4, 6)
    # channel 0 is sin(y_normalized / 1); rows 0..2 are real, row 3 is padding (its cumsum stays at 3)
    for row, count in enumerate([1, 2, 3, 3]):
        assert detr[0, 0, row, 0].item() == pytest.approx(math.sin(count / (3 + 1e-6) * 2 * math.pi), abs=1e-5)
        assert deformable[0, 0, row, 0].item() == pytest.approx(
            math.sin((count - 0.5) / (3 + 1e-6) * 2 * math.pi), abs=1e-5)


def test_mask_downsampling_equals_torch_nearest_interpolate():
    """Our explicit index arithmetic (exportable exactly) equals F.interpolate(mode="nearest") everywhere."""
    import torch.nn.functional as F

    from detr_deploy.models.masks import downsample_mask

    gen = torch.Generator().manual_seed(0)
    for h_in in range(1, 420, 11):
        for h_out in list(range(1, 140, 7)) + [h_in, 2 * h_in, (h_in + 31) // 32]:
            mask = torch.rand(2, h_in, 3, generator=gen) > 0.5
            ref = F.interpolate(mask[None].float(), size=(h_out, 3))[0].to(torch.bool)
            assert torch.equal(downsample_mask(mask, torch.zeros(1, 1, h_out, 3)), ref), (h_in, h_out)
