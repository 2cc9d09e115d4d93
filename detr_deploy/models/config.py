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
        dilation: DC5: the last stage uses dilation 2 instead of stride 2 (output stride 16).
        out_stages: which stages feed the transformer, 1..4 = C2..C5 (stride 4..32).
        norm: "frozen_bn" (the published models; eval-mode BatchNorm with fixed statistics) or "bn"
            (trainable BatchNorm, for training from scratch; identical maths in eval mode).
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
        if not self.out_stages or any(s not in (1, 2, 3, 4) for s in self.out_stages):
            raise ConfigError(f"backbone out_stages must be a subset of (1, 2, 3, 4), got {self.out_stages}")
        if list(self.out_stages) != sorted(set(self.out_stages)):
            raise ConfigError(f"backbone out_stages must be increasing, got {self.out_stages}")
        if self.norm not in ("frozen_bn", "bn"):
            raise ConfigError(f"backbone norm must be 'frozen_bn' or 'bn', got {self.norm!r}")
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


ModelConfig = DetrConfig | DeformableDetrConfig
_BACKBONE_KEYS = {f.name for f in dataclasses.fields(BackboneConfig)}


def apply_overrides(config: _DetectorConfig, overrides: dict[str, Any]) -> _DetectorConfig:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys give a ConfigError.

    ``backbone`` may be a name (str), a dict or a BackboneConfig; backbone fields (``dilation``,
    ``out_stages``, ``norm``...) may also be passed flat. Changing ``num_classes`` resets ``id2label``
    unless it is given too.
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
    new = dataclasses.replace(config, backbone=backbone, **overrides)
    new.validate()
    return new
