# SPDX-License-Identifier: Apache-2.0
"""Registry of named variants: ``@register_model`` recipes returning a config (where their published weights live
is a separate table, ``detr_deploy.weights.pretrained``)."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UnknownModelError
from ..labels import COCO_PANOPTIC_STUFF_IDS, SHAPES_CATEGORIES, SHAPES_PANOPTIC_CATEGORIES, SHAPES_STUFF_IDS
from .config import BackboneConfig, DeformableDetrConfig, DetrConfig, DetrSegmentationConfig, ModelConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build_config: Callable[[], ModelConfig]
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}
ALIASES: dict[str, str] = {"detr": "detr-r50", "deformable": "deformable-detr"}


def register_model(name: str, description: str = ""):
    """Decorator: register a zero-argument function returning the variant's config."""

    def wrap(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        _REGISTRY[name] = ModelEntry(name, fn, description or (fn.__doc__ or ""))
        return fn

    return wrap


def list_models() -> list[str]:
    """Registered variant names (aliases excluded), in registration order."""
    return list(_REGISTRY)


def resolve_name(name: str) -> str:
    """Canonical variant name for a name or alias; UnknownModelError listing the known names otherwise."""
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key in _REGISTRY:
        return key
    known = list_models() + sorted(ALIASES)
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(list_models())} (aliases: "
        f"{', '.join(f'{a} -> {t}' for a, t in ALIASES.items())}). A checkpoint file or Hugging Face folder "
        "(an existing path) or a Hub repository (hf-hub:org/name) also works.")


def is_registered(name: str) -> bool:
    key = name.strip().lower().replace("_", "-")
    return ALIASES.get(key, key) in _REGISTRY


def get_entry(name: str) -> ModelEntry:
    return _REGISTRY[resolve_name(name)]


# --- DETR -------------------------------------------------------------------------------------------------
@register_model("detr-r50")
def detr_r50() -> DetrConfig:
    """DETR, ResNet-50, 42.0 AP on COCO val."""
    return DetrConfig(backbone=BackboneConfig("resnet50"))


@register_model("detr-r50-dc5")
def detr_r50_dc5() -> DetrConfig:
    """DETR, ResNet-50 with a dilated last stage (DC5), 43.3 AP."""
    return DetrConfig(backbone=BackboneConfig("resnet50", dilation=True))


@register_model("detr-r101")
def detr_r101() -> DetrConfig:
    """DETR, ResNet-101, 43.5 AP."""
    return DetrConfig(backbone=BackboneConfig("resnet101"))


@register_model("detr-r101-dc5")
def detr_r101_dc5() -> DetrConfig:
    """DETR, ResNet-101 DC5, 44.9 AP."""
    return DetrConfig(backbone=BackboneConfig("resnet101", dilation=True))


# --- DETR panoptic segmentation --------------------------------------------------------------------------
_PANOPTIC = dict(num_classes=250, stuff_ids=COCO_PANOPTIC_STUFF_IDS)


@register_model("detr-r50-panoptic")
def detr_r50_panoptic() -> DetrSegmentationConfig:
    """DETR panoptic, ResNet-50, 43.4 PQ on COCO val."""
    return DetrSegmentationConfig(backbone=BackboneConfig("resnet50", out_stages=(1, 2, 3, 4)), **_PANOPTIC)


@register_model("detr-r50-dc5-panoptic")
def detr_r50_dc5_panoptic() -> DetrSegmentationConfig:
    """DETR panoptic, ResNet-50 DC5, 44.6 PQ."""
    return DetrSegmentationConfig(backbone=BackboneConfig("resnet50", dilation=True, out_stages=(1, 2, 3, 4)),
                                  **_PANOPTIC)


@register_model("detr-r101-panoptic")
def detr_r101_panoptic() -> DetrSegmentationConfig:
    """DETR panoptic, ResNet-101, 45.1 PQ."""
    return DetrSegmentationConfig(backbone=BackboneConfig("resnet101", out_stages=(1, 2, 3, 4)), **_PANOPTIC)


# --- Deformable DETR --------------------------------------------------------------------------------------
@register_model("deformable-detr")
def deformable_detr() -> DeformableDetrConfig:
    """Deformable DETR, 4 levels, 44.5 AP."""
    return DeformableDetrConfig()


@register_model("deformable-detr-single-scale")
def deformable_detr_single_scale() -> DeformableDetrConfig:
    """Deformable DETR on C5 only, 39.4 AP."""
    return DeformableDetrConfig(backbone=BackboneConfig("resnet50", out_stages=(4,)), num_feature_levels=1)


@register_model("deformable-detr-refine")
def deformable_detr_refine() -> DeformableDetrConfig:
    """Deformable DETR with iterative box refinement, 46.2 AP."""
    return DeformableDetrConfig(with_box_refine=True)


@register_model("deformable-detr-two-stage")
def deformable_detr_two_stage() -> DeformableDetrConfig:
    """Two-stage Deformable DETR with box refinement, 46.9 AP."""
    return DeformableDetrConfig(with_box_refine=True, two_stage=True)


# --- detr-deploy's own trained models (detr_deploy/zoo) ------------------------------------------------------
@register_model("deformable-detr-shapes")
def deformable_detr_shapes() -> DeformableDetrConfig:
    """Small Deformable DETR (box refinement) trained by detr-deploy on rendered shapes; see zoo/MODEL_CARD.md."""
    return DeformableDetrConfig(
        backbone=BackboneConfig("resnet", block="basic", depths=(2, 2, 2, 2), widths=(32, 64, 128, 256),
                                stem_width=32, out_stages=(2, 3, 4)),
        d_model=128, num_heads=4, encoder_layers=2, decoder_layers=3, ffn_dim=512, num_queries=30, num_classes=8,
        dropout=0.0, with_box_refine=True, id2label=dict(enumerate(SHAPES_CATEGORIES)), image_size=(256, 416))


@register_model("detr-shapes-panoptic")
def detr_shapes_panoptic() -> DetrSegmentationConfig:
    """Small DETR panoptic trained by detr-deploy on rendered shapes with stuff; see zoo/MODEL_CARD_PANOPTIC.md."""
    return DetrSegmentationConfig(
        backbone=BackboneConfig("resnet", block="basic", depths=(2, 2, 2, 2), widths=(32, 64, 128, 256),
                                stem_width=32, out_stages=(1, 2, 3, 4)),
        d_model=128, num_heads=8, encoder_layers=2, decoder_layers=3, ffn_dim=512, num_queries=30,
        num_classes=len(SHAPES_PANOPTIC_CATEGORIES), dropout=0.0, id2label=dict(enumerate(SHAPES_PANOPTIC_CATEGORIES)),
        stuff_ids=SHAPES_STUFF_IDS, image_size=(256, 416))
