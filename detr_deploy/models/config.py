# SPDX-License-Identifier: Apache-2.0
"""Typed configurations of the reference models.

Every size knob of DETR and Deformable DETR is a field here, so tests can build tiny models and
``create_model(name, **overrides)`` can change any of them. Defaults are the published R50 models.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigError
from ..labels import default_id2label

# name -> (block, depths). Widths follow torchvision/timm: planes 64,128,256,512, stem 64.
RESNET_PRESETS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
RESNET_DEFAULT_WIDTHS = (64, 128, 256, 512)


@dataclass
class BackboneConfig:
    """CNN backbone.

    Attributes:
        name: "resnet18|34|50|101" (built in, torchvision/timm key layout, no timm needed), "resnet" with
            explicit ``block``/``depths``/``widths``/``stem_width`` (tiny test models), or any other timm model
            name (``features_only``; needs ``pip install 'detr-deploy[timm]'``).
        dilation: DC5: the last stage uses dilation 2 instead of stride 2 (output stride 16; timm's
            ``output_stride=16``, what Hugging Face's ``dilation=True`` asks of timm).
        out_stages: which stages feed the transformer, 1..4 = C2..C5 (stride 4..32). For a timm backbone these are
            timm's ``out_indices`` (feature index s has stride 2**(s+1); 0, stride 2, is allowed there too).
        norm: "frozen_bn" (the published models; eval-mode BatchNorm with fixed statistics) or "bn"
            (trainable BatchNorm, for training from scratch; identical maths in eval mode for the built-in
            ResNet). For a timm backbone, "frozen_bn" is exactly what transformers' DETR and Deformable DETR do:
            every ``BatchNorm2d`` (subclasses included, so timm's ``BatchNormAct2d`` together with the activation
            it carries) becomes a FrozenBatchNorm2d with eps 1e-5; "frozen_bn_timm" is timm's
            ``freeze_batch_norm_2d`` (each layer keeps its eps and its activation), what transformers does when the
            backbone config sets ``freeze_batch_norm_2d``; "bn" leaves timm's layers as they are.
        block, depths, widths, stem_width: explicit ResNet shape; None takes the preset of ``name``.
        pretrained: timm backbones only: ask timm for its pretrained weights (network needed).
    """

    name: str = "resnet50"
    dilation: bool = False
    out_stages: tuple[int, ...] = (4,)
    norm: str = "frozen_bn"
    block: str | None = None
    depths: tuple[int, ...] | None = None
    widths: tuple[int, ...] | None = None
    stem_width: int | None = None
    pretrained: bool = False

    @property
    def is_builtin_resnet(self) -> bool:
        return self.name in RESNET_PRESETS or self.name == "resnet"

    @property
    def is_timm(self) -> bool:
        """Built by timm (``features_only``) rather than the built-in ResNet."""
        return not self.is_builtin_resnet

    def resnet_spec(self) -> tuple[str, tuple[int, ...], tuple[int, ...], int]:
        """(block, depths, widths, stem_width) of a built-in ResNet."""
        if not self.is_builtin_resnet:
            raise ConfigError(f"backbone {self.name!r} is not a built-in ResNet")
        preset_block, preset_depths = RESNET_PRESETS.get(self.name, (None, None))
        block = self.block or preset_block
        depths = tuple(self.depths or preset_depths or ())
        if block not in ("basic", "bottleneck") or len(depths) != 4:
            raise ConfigError(
                "backbone 'resnet' needs block='basic'|'bottleneck' and four depths, "
                f"got block={block!r} depths={depths!r}"
            )
        widths = tuple(self.widths or RESNET_DEFAULT_WIDTHS)
        return block, depths, widths, int(self.stem_width or 64)

    def validate(self) -> None:
        stages = (0, 1, 2, 3, 4) if self.is_timm else (1, 2, 3, 4)
        if not self.out_stages or any(s not in stages for s in self.out_stages):
            raise ConfigError(f"backbone out_stages must be a subset of {stages}, got {self.out_stages}")
        if list(self.out_stages) != sorted(set(self.out_stages)):
            raise ConfigError(f"backbone out_stages must be increasing, got {self.out_stages}")
        norms = ("frozen_bn", "frozen_bn_timm", "bn") if self.is_timm else ("frozen_bn", "bn")
        if self.norm not in norms:
            raise ConfigError(f"backbone {self.name!r}: norm must be one of {norms}, got {self.norm!r}")
        if self.is_builtin_resnet:
            self.resnet_spec()


@dataclass
class _DetectorConfig:
    """Fields shared by DETR and Deformable DETR.

    ``image_size`` is the (shortest edge, longest edge) of the preprocessing resize the model was trained with
    (800/1333 for the published models); exported artifacts record it.
    """

    family: ClassVar[str] = ""
    task: ClassVar[str] = "detection"

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    d_model: int = 256
    num_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    num_queries: int = 100
    num_classes: int = 91
    dropout: float = 0.1
    id2label: dict[int, str] | None = None
    image_size: tuple[int, int] = (800, 1333)

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = BackboneConfig(**self.backbone)
        self.image_size = tuple(self.image_size)
        if self.id2label is None:
            self.id2label = default_id2label(self.num_classes)
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    def validate(self) -> None:
        self.backbone.validate()
        for name in ("d_model", "num_heads", "encoder_layers", "decoder_layers", "ffn_dim", "num_queries",
                     "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if len(self.id2label) != self.num_classes:
            raise ConfigError(
                f"id2label has {len(self.id2label)} names but num_classes is {self.num_classes}; "
                "pass matching id2label and num_classes"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["family"] = self.family
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _DetectorConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        bb = data.get("backbone")
        if isinstance(bb, dict):
            bb = dict(bb)
            for key in ("out_stages", "depths", "widths"):
                if bb.get(key) is not None:
                    bb[key] = tuple(bb[key])
            data["backbone"] = BackboneConfig(**bb)
        return cls(**data)

    def replace(self, **overrides: Any) -> _DetectorConfig:
        """A copy with fields changed. ``backbone`` may be a name; ``dilation`` is a backbone field."""
        return apply_overrides(self, overrides)


@dataclass
class DetrConfig(_DetectorConfig):
    """DETR (Carion et al. 2020): single-scale C5, 6+6 post-norm transformer, softmax over classes + no-object.

    ``num_classes`` is "max category id + 1" (91 for COCO); the classifier has ``num_classes + 1`` logits,
    the last being "no object".
    """

    family: ClassVar[str] = "detr"


@dataclass
class DeformableDetrConfig(_DetectorConfig):
    """Deformable DETR (Zhu et al. 2021): multi-scale deformable attention, sigmoid classification.

    Attributes (beyond the shared ones):
        num_feature_levels: levels fed to the encoder; levels beyond the backbone's come from stride-2 convs.
        encoder_points, decoder_points: sampling points per head and level.
        with_box_refine: each decoder layer refines the boxes of the previous one (independent heads).
        two_stage: queries are the top-k encoder proposals (requires with_box_refine, as published).
        num_queries: also the number of two-stage proposals.
    """

    family: ClassVar[str] = "deformable"

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(out_stages=(2, 3, 4)))
    ffn_dim: int = 1024
    num_queries: int = 300
    num_feature_levels: int = 4
    encoder_points: int = 4
    decoder_points: int = 4
    with_box_refine: bool = False
    two_stage: bool = False

    def validate(self) -> None:
        super().validate()
        if self.d_model % 32:
            raise ConfigError(f"Deformable DETR uses GroupNorm(32, d_model): d_model must be a multiple of 32, "
                              f"got {self.d_model}")
        if self.num_feature_levels < len(self.backbone.out_stages):
            raise ConfigError(
                f"num_feature_levels ({self.num_feature_levels}) is smaller than the number of backbone "
                f"stages used ({len(self.backbone.out_stages)}); set backbone out_stages accordingly"
            )
        if self.two_stage and not self.with_box_refine:
            raise ConfigError("two_stage=True requires with_box_refine=True (as in the published model)")
        if self.d_model % 2:
            raise ConfigError("d_model must be even")

    @property
    def num_pred(self) -> int:
        """Number of prediction heads: one per decoder layer, plus the encoder proposal head in two-stage."""
        return self.decoder_layers + (1 if self.two_stage else 0)


@dataclass
class DetrSegmentationConfig(DetrConfig):
    """DETR panoptic (Carion et al. 2020, section 4.4): DETR plus a box-attention map and a small FPN mask head
    on backbone stages C2-C4 (``backbone.out_stages`` must include 1, 2, 3 and 4).

    ``num_classes`` is "max category id + 1" as for DETR (250 for COCO panoptic: things 1-90, stuff 92-200);
    ``stuff_ids`` lists the labels that are stuff (segments without instances), what panoptic post-processing
    fuses; the others are things.
    """

    task: ClassVar[str] = "segmentation"

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(out_stages=(1, 2, 3, 4)))
    num_classes: int = 250
    stuff_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stuff_ids = tuple(int(i) for i in self.stuff_ids)

    def validate(self) -> None:
        super().validate()
        if tuple(self.backbone.out_stages) != (1, 2, 3, 4):
            raise ConfigError("the segmentation head reads backbone stages C2-C5: backbone out_stages must be "
                              f"(1, 2, 3, 4), got {self.backbone.out_stages}")
        if (self.d_model + self.num_heads) % 8 or self.d_model % 16:
            raise ConfigError(f"the mask head's GroupNorm(8) needs d_model + num_heads divisible by 8 and d_model by "
                              f"16, got d_model={self.d_model}, num_heads={self.num_heads}")
        if any(not 0 <= i < self.num_classes for i in self.stuff_ids):
            raise ConfigError(f"stuff_ids must be class indices below num_classes ({self.num_classes})")


ModelConfig = DetrConfig | DeformableDetrConfig | DetrSegmentationConfig
_BACKBONE_KEYS = {f.name for f in dataclasses.fields(BackboneConfig)}


def apply_overrides(config: _DetectorConfig, overrides: dict[str, Any]) -> _DetectorConfig:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys give a ConfigError.

    ``backbone`` may be a name (str), a dict or a BackboneConfig; backbone fields (``dilation``,
    ``out_stages``, ``norm``...) may also be passed flat. Changing ``num_classes`` resets ``id2label`` (and a
    segmentation model's ``stuff_ids``) unless given too.
    """
    overrides = dict(overrides)
    fields = {f.name for f in dataclasses.fields(config)}
    backbone = dataclasses.replace(config.backbone)
    bb = overrides.pop("backbone", None)
    if isinstance(bb, str):
        backbone = dataclasses.replace(backbone, name=bb)
    elif isinstance(bb, dict):
        backbone = dataclasses.replace(backbone, **bb)
    elif isinstance(bb, BackboneConfig):
        backbone = bb
    elif bb is not None:
        raise ConfigError(f"backbone must be a name, a dict or a BackboneConfig, got {type(bb).__name__}")
    if backbone.is_timm:  # the ResNet shape fields of a previous built-in backbone mean nothing to timm
        backbone = dataclasses.replace(backbone, block=None, depths=None, widths=None, stem_width=None)
    for key in list(overrides):
        if key in _BACKBONE_KEYS and key not in fields:
            value = overrides.pop(key)
            if key in ("out_stages", "depths", "widths") and value is not None:
                value = tuple(value)
            backbone = dataclasses.replace(backbone, **{key: value})
    unknown = sorted(set(overrides) - fields)
    if unknown:
        known = sorted(fields | _BACKBONE_KEYS)
        raise ConfigError(f"unknown option(s) {unknown} for {type(config).__name__}; known: {known}")
    if "num_classes" in overrides and "id2label" not in overrides:
        overrides["id2label"] = default_id2label(int(overrides["num_classes"]))
    if ("num_classes" in overrides and "stuff_ids" in fields and "stuff_ids" not in overrides
            and int(overrides["num_classes"]) != config.num_classes):
        overrides["stuff_ids"] = ()  # another label set: say which labels are stuff with stuff_ids=...
    new = dataclasses.replace(config, backbone=backbone, **overrides)
    new.validate()
    return new
