# SPDX-License-Identifier: Apache-2.0
"""timm backbones (``features_only``) for DETR and Deformable DETR: Hugging Face folders whose config names one,
official-style and our own checkpoints with ``backbone=``, parity with transformers, ONNX export in onnxruntime.

Most tests need timm, which needs a torchvision that imports beside torch: they skip in the default environment and
run in the timm stage (``bash .ci/timm_stage.sh``, which sets DETR_DEPLOY_REQUIRE_TIMM=1 so that they cannot skip).
The architecture-reading tests at the top need neither.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import detr_deploy
from detr_deploy.errors import CheckpointError, ConfigError
from detr_deploy.weights.architecture import infer_config
from detr_deploy.weights.convert import ours_to_official, to_ours

from conftest import padded_batch, randomize_, segmentation_vs_transformers, tiny_model, two_sizes_and_a_padded_batch

try:
    import timm  # noqa: F401  (imports torchvision)

    TIMM_ERROR = None
except Exception as exc:  # ImportError, or torchvision failing beside another torch build
    if os.environ.get("DETR_DEPLOY_REQUIRE_TIMM"):
        raise
    TIMM_ERROR = f"{type(exc).__name__}: {exc}"

needs_timm = pytest.mark.skipif(
    TIMM_ERROR is not None,
    reason=f"timm cannot be imported here ({TIMM_ERROR}); the timm stage runs these: bash .ci/timm_stage.sh")
TOLERANCE = 1e-4


# --- reading the architecture (no timm needed) ------------------------------------------------------------------
def _state_with_timm_backbone(variant: str) -> dict:
    """A tiny model's keys (ours) with its ResNet replaced by a stand-in timm key: enough for infer_config."""
    state = {k: v for k, v in tiny_model(variant, randomize=False).state_dict().items()
             if not k.startswith("backbone.body.")}
    state["backbone.body.conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    return state


@pytest.mark.parametrize("family", ["detr", "deformable"])
def test_hf_configs_name_the_timm_backbone(family):
    """transformers 5.x (backbone_config) and 4.x (use_timm_backbone, backbone_kwargs, dilation) configs give the
    backbone transformers builds: its name, timm out_indices (defaults per family), output_stride 16, BN freezing."""
    state = _state_with_timm_backbone("detr-r50" if family == "detr" else "deformable-detr")
    default = (1, 2, 3, 4) if family == "detr" else (2, 3, 4)
    five = {"backbone_config": {"model_type": "timm_backbone", "backbone": "efficientnet_b0",
                                "out_indices": list(default), "output_stride": None, "num_channels": 3}}
    four = {"use_timm_backbone": True, "backbone": "efficientnet_b0", "backbone_kwargs": None, "dilation": True}
    bb = infer_config(state, five).backbone
    assert (bb.name, bb.out_stages, bb.dilation, bb.norm) == ("efficientnet_b0", default, False, "frozen_bn")
    bb = infer_config(state, four).backbone
    assert (bb.name, bb.out_stages, bb.dilation, bb.norm) == ("efficientnet_b0", default, True, "frozen_bn")
    frozen = {"backbone_config": {**five["backbone_config"], "freeze_batch_norm_2d": True, "output_stride": 16}}
    bb = infer_config(state, frozen).backbone
    assert bb.norm == "frozen_bn_timm" and bb.dilation
    if family == "deformable":  # the levels in the config must be the ones the checkpoint projects
        with pytest.raises(CheckpointError, match="projects 3"):
            infer_config(state, {"backbone_config": {**five["backbone_config"], "out_indices": [1, 2, 3, 4]}})
    for bad, message in ((dict(five["backbone_config"], num_channels=1), "input channels"),
                         (dict(five["backbone_config"], output_stride=8), "output_stride=8")):
        with pytest.raises(ConfigError, match=message):
            infer_config(state, {"backbone_config": bad})


def test_keys_that_are_not_a_resnet_need_a_config_or_backbone(tmp_path):
    state = _state_with_timm_backbone("detr-r50")
    path = tmp_path / "own.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="backbone="):
        detr_deploy.create_model(str(path))
    assert infer_config(state, None, hints={"backbone": "efficientnet_b0"}).backbone.name == "efficientnet_b0"


def test_backbone_keys_keep_the_timm_module_names():
    """transformers' live names are renamed to the saved ones (mlp.fc1 -> fc1, o_proj -> out_proj, q/k/v packed) for
    DETR's layers only: a timm ConvNeXt's ``mlp.fc1`` or an attention block's ``q_proj`` is the backbone's own name."""
    hf = {"model.backbone.model.stages.0.blocks.0.mlp.fc1.weight": torch.zeros(4, 2),
          "model.backbone.model.stages.1.attn.q_proj.weight": torch.zeros(2, 2),
          "model.backbone.model.stages.1.attn.o_proj.weight": torch.zeros(2, 2),
          "model.encoder.layers.0.mlp.fc1.weight": torch.zeros(8, 4),
          "class_labels_classifier.weight": torch.zeros(3, 4)}
    ours, layout = to_ours(hf)
    assert layout == "hf"
    assert {"backbone.body.stages.0.blocks.0.mlp.fc1.weight", "backbone.body.stages.1.attn.q_proj.weight",
            "backbone.body.stages.1.attn.o_proj.weight", "transformer.encoder.layers.0.linear1.weight",
            "class_embed.weight"} == set(ours)


# --- transformers with timm backbones -------------------------------------------------------------------------
SMALL = dict(d_model=64, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
             encoder_attention_heads=4, decoder_attention_heads=4, num_labels=7)
# id -> (family, timm name, options); options: dilation, out_indices, freeze (timm's freeze_batch_norm_2d), levels
CASES = {
    "detr-tf_mobilenetv3_small_075": ("detr", "tf_mobilenetv3_small_075", {}),
    "detr-efficientnet_b0": ("detr", "efficientnet_b0", {}),
    "detr-resnet18d": ("detr", "resnet18d", {}),
    "detr-efficientnet_b0-dilation": ("detr", "efficientnet_b0", {"dilation": True}),
    "detr-efficientnet_b0-timm-frozen-bn": ("detr", "efficientnet_b0", {"freeze": True}),
    "detr-resnet18-dc5-built-in": ("detr", "resnet18", {"dilation": True}),
    "deformable-tf_mobilenetv3_small_075": ("deformable", "tf_mobilenetv3_small_075", {}),
    "deformable-efficientnet_b0": ("deformable", "efficientnet_b0", {}),
    "deformable-resnet18d": ("deformable", "resnet18d", {}),
    "deformable-tf_mobilenetv3_small_075-levels-1234": ("deformable", "tf_mobilenetv3_small_075",
                                                        {"out_indices": [1, 2, 3, 4]}),
    "deformable-efficientnet_b0-single-scale": ("deformable", "efficientnet_b0", {"levels": 1}),
}


def _hf_model(family: str, name: str, options: dict):
    """A small transformers model with the timm backbone ``name``, randomised (so outputs are not degenerate)."""
    transformers = pytest.importorskip("transformers", reason="transformers is the parity oracle")
    dilation = bool(options.get("dilation"))
    extra = {"num_queries": 10} if family == "detr" else {"num_queries": 12,
                                                           "num_feature_levels": options.get("levels", 4)}
    if options.get("out_indices") or options.get("freeze"):  # a transformers 5.x backbone_config
        default = [1, 2, 3, 4] if family == "detr" else [2, 3, 4]
        backbone = {"model_type": "timm_backbone", "backbone": name, "features_only": True,
                    "out_indices": options.get("out_indices") or default,
                    "freeze_batch_norm_2d": bool(options.get("freeze")), "output_stride": 16 if dilation else None}
        kwargs = {"backbone_config": backbone}
    else:  # what the documentation shows: use_timm_backbone=True, backbone=NAME
        kwargs = {"use_timm_backbone": True, "backbone": name, "use_pretrained_backbone": False,
                  "dilation": dilation}
    if family == "detr":
        model = transformers.DetrForObjectDetection(transformers.DetrConfig(**SMALL, **extra, **kwargs))
    else:
        model = transformers.DeformableDetrForObjectDetection(
            transformers.DeformableDetrConfig(**SMALL, **extra, **kwargs))
    randomize_(model.eval())
    return model


@pytest.fixture(scope="session")
def hf_case(tmp_path_factory):
    """``hf_case(case_id) -> (folder, transformers model reloaded from it, our model from create_model(folder))``."""
    cache: dict = {}

    def get(case_id: str):
        if case_id not in cache:
            family, name, options = CASES[case_id]
            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(case_id)
            _hf_model(family, name, options).save_pretrained(folder)
            reloaded = type(_hf_model(family, name, options)).from_pretrained(folder).eval()
            cache[case_id] = (folder, reloaded, detr_deploy.create_model(str(folder)))
        return cache[case_id]

    return get


def _run(model, pixels, mask):
    with torch.no_grad():
        out = model(pixels, mask)
    return out["logits"], out["pred_boxes"]


@needs_timm
@pytest.mark.parametrize("case_id", list(CASES))
def test_matches_transformers_on_a_padded_batch(case_id, hf_case):
    family, name, options = CASES[case_id]
    folder, reloaded, ours = hf_case(case_id)
    x, mask = padded_batch((96, 128), (70, 100))
    with torch.no_grad():
        ref = reloaded(pixel_values=x, pixel_mask=mask)
    logits, boxes = _run(ours, x, mask)
    d_logits = (ref.logits - logits).abs().max().item()
    d_boxes = (ref.pred_boxes - boxes).abs().max().item()
    print(f"\n{case_id}: ours vs transformers max|dlogits|={d_logits:.2e} max|dboxes|={d_boxes:.2e}")
    assert ref.logits.std() > 0.05 and ref.pred_boxes.std() > 0.01  # the comparison can fail
    assert d_logits <= TOLERANCE and d_boxes <= TOLERANCE
    bb = ours.config.backbone
    assert ours.config.family == family and bb.name == name and bb.dilation == bool(options.get("dilation"))
    if name == "resnet18":  # a ResNet the keys describe: the built-in one, equal to timm's (DC5 included)
        assert not bb.is_timm
        return
    assert bb.is_timm and bb.norm == ("frozen_bn_timm" if options.get("freeze") else "frozen_bn")
    default = (1, 2, 3, 4) if family == "detr" else ((2, 3, 4) if options.get("levels", 4) > 1 else (4,))
    assert bb.out_stages == tuple(options.get("out_indices") or default)


@needs_timm
def test_dc5_panoptic_matches_transformers(tmp_path):
    """DETR DC5 panoptic as Hugging Face builds facebook/detr-resnet-50-dc5-panoptic (timm resnet50 with
    output_stride 16; transformers has dilation only with a timm backbone): our model from the saved folder equals
    DetrForSegmentation in all three outputs, at two sizes and on a padded batch of two."""
    transformers = pytest.importorskip("transformers", reason="transformers is the parity oracle")
    torch.manual_seed(0)
    config = transformers.DetrConfig(use_timm_backbone=True, backbone="resnet50", use_pretrained_backbone=False,
                                     dilation=True, d_model=64, encoder_layers=1, decoder_layers=2,
                                     encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_attention_heads=8,
                                     decoder_attention_heads=8, num_queries=10, num_labels=9)
    hf_model = transformers.DetrForSegmentation(config).eval()
    randomize_(hf_model)
    inputs = two_sizes_and_a_padded_batch((70, 100))
    ours, diffs = segmentation_vs_transformers(hf_model, tmp_path, inputs)
    assert type(ours).__name__ == "DETRSegmentation" and ours.config.backbone.dilation
    print("\nDC5 panoptic vs DetrForSegmentation (logits, boxes, masks):",
          [f"{a:.1e}/{b:.1e}/{c:.1e}" for a, b, c in diffs])
    assert max(max(d) for d in diffs) <= TOLERANCE


@needs_timm
def test_frozen_batch_norm_is_transformers_own():
    """transformers replaces every BatchNorm2d, timm's BatchNormAct2d included (its activation goes with it), by a
    frozen BN with eps 1e-5; timm's freeze_batch_norm_2d keeps activation and eps. Both are what we build."""
    from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d

    from detr_deploy.models.backbone import Backbone, FrozenBatchNorm2d
    from detr_deploy.models.config import BackboneConfig

    plain = timm.create_model("tf_mobilenetv3_small_075", features_only=True, out_indices=(4,))
    assert any(isinstance(m, BatchNormAct2d) and m.eps == 1e-3 for m in plain.modules())
    hf_like = Backbone(BackboneConfig("tf_mobilenetv3_small_075", out_stages=(4,)))
    norms = [m for m in hf_like.modules() if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d)]
    assert norms and all(type(m) is FrozenBatchNorm2d and m.eps == 1e-5 for m in norms)
    kept = Backbone(BackboneConfig("tf_mobilenetv3_small_075", out_stages=(4,), norm="frozen_bn_timm"))
    assert any(isinstance(m, FrozenBatchNormAct2d) and m.eps == 1e-3 for m in kept.modules())


@needs_timm
@pytest.mark.parametrize("case_id", ["detr-tf_mobilenetv3_small_075", "detr-efficientnet_b0", "detr-resnet18d",
                                     "deformable-efficientnet_b0"])
def test_batch_norm_folds_exactly_into_timm_convolutions(case_id, hf_case):
    from detr_deploy.export.fold import fold_frozen_batchnorm
    from detr_deploy.models.backbone import FrozenBatchNorm2d

    _, _, ours = hf_case(case_id)
    folded = fold_frozen_batchnorm(ours)
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in ours.modules()) > 10
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    x, mask = padded_batch((96, 128), (70, 100))
    for a, b in zip(_run(ours, x, mask), _run(folded, x, mask)):
        assert (a - b).abs().max().item() <= 1e-5


@needs_timm
@pytest.mark.parametrize("case_id", ["detr-tf_mobilenetv3_small_075", "deformable-efficientnet_b0"])
def test_official_style_and_own_checkpoints_with_a_backbone_override(case_id, hf_case, tmp_path):
    """Our own state dict and an official-style .pth of the same model load with backbone=NAME, to equal outputs."""
    family, name, _ = CASES[case_id]
    _, _, ours = hf_case(case_id)
    own, official = tmp_path / "own.pth", tmp_path / "official.pth"
    torch.save(ours.state_dict(), own)
    torch.save({"model": ours_to_official(ours.state_dict())}, official)
    x, mask = padded_batch((96, 128), (70, 100))
    expected = _run(ours, x, mask)
    for path in (own, official):
        with pytest.raises(CheckpointError, match="backbone="):
            detr_deploy.create_model(str(path))
        loaded = detr_deploy.create_model(str(path), backbone=name, num_heads=4)
        assert loaded.config.backbone.name == name and loaded.config.family == family
        for a, b in zip(expected, _run(loaded, x, mask)):
            assert torch.equal(a, b)


# --- ONNX export in onnxruntime -----------------------------------------------------------------------------------
# (the timm-frozen BN of "detr-efficientnet_b0-timm-frozen-bn" exports unfolded and exactly too; left out for time)
EXPORTS = [("detr-tf_mobilenetv3_small_075", "gridsample", False), ("detr-efficientnet_b0", "gridsample", False),
           ("detr-resnet18d", "gridsample", False)]
EXPORTS += [(c, form, False) for c in ("deformable-tf_mobilenetv3_small_075", "deformable-efficientnet_b0",
                                       "deformable-resnet18d") for form in ("plugin", "gridsample")]
EXPORTS += [("deformable-tf_mobilenetv3_small_075", "plugin", True)]  # "same" padding with dynamic sizes


@needs_timm
@pytest.mark.parametrize("case_id,form,dynamic", EXPORTS)
def test_onnx_export_matches_in_onnxruntime(case_id, form, dynamic, hf_case, tmp_path):
    from detr_deploy.artifact.metadata import read_onnx_metadata
    from detr_deploy.export import ExportConfig, export_onnx
    from detr_deploy.export.verify import synthetic_batch

    from conftest import onnx_vs_torch

    _, _, ours = hf_case(case_id)
    path = tmp_path / "model.onnx"
    result = export_onnx(ours, path, ExportConfig(msda=form, dynamic=dynamic, input_size=(96, 128), batch=2),
                         log=lambda message: None)
    inputs = [(2, 96, 128, [(96, 128), (70, 100)])]
    if dynamic:
        inputs = [(1, 131, 97, None), (2, 160, 201, [(160, 201), (99, 150)])]
    for batch, h, w, valid in inputs:
        pixels, mask = synthetic_batch(batch, h, w, valid=valid, seed=h + w)
        diff = onnx_vs_torch(ours, path, pixels, mask)
        print(f"\n{case_id} [{form}, {'dynamic' if dynamic else 'static'}] {batch}x{h}x{w}: onnxruntime vs PyTorch "
              f"max|dlogits|={diff.max_abs_logits:.2e} max|dboxes|={diff.max_abs_boxes:.2e} "
              f"({result.num_nodes} nodes, export {result.seconds:.0f}s)")
        assert diff.max_abs_logits <= TOLERANCE and diff.max_abs_boxes <= TOLERANCE
    import onnx

    meta = read_onnx_metadata(onnx.load(str(path)))
    backbone = meta.extra["backbone"]
    assert backbone["name"] == ours.config.backbone.name and backbone["source"] == "timm"
    assert backbone["out_stages"] == list(ours.config.backbone.out_stages)
    assert backbone["strides"] == list(ours.backbone.strides) and backbone["channels"] == list(ours.backbone.channels)
    assert meta.extra["model_config"]["backbone"]["name"] == ours.config.backbone.name
    if ours.config.family == "deformable":
        assert meta.msda.form == form


def test_stage_script_installs_the_pinned_pair():
    """The CI stage pins the torch/torchvision pair timm needs here, then the extras (it cannot move torch)."""
    text = (Path(__file__).resolve().parents[1] / ".ci" / "timm_stage.sh").read_text()
    pair = text.index("pip install -q torch==2.14.1 torchvision==0.29.1")
    assert pair < text.index('pip install -q -e ".[export,dev,timm]"')
    assert "DETR_DEPLOY_REQUIRE_TIMM=1" in text and "tests/test_timm.py" in text
