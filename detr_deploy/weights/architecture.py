# SPDX-License-Identifier: Apache-2.0
"""Read a model's architecture from a checkpoint: its ``config.json`` when it has one, else its keys and shapes.

Some settings are invisible in the keys (DC5 dilation, attention heads vs points, two-stage query count); for
those the Hugging Face config wins, then the file name (``dc5``), then the published defaults, and the caller
may override any field.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..labels import COCO_PANOPTIC_STUFF_IDS, default_id2label
from ..models.config import (
    RESNET_DEFAULT_WIDTHS,
    RESNET_PRESETS,
    BackboneConfig,
    DeformableDetrConfig,
    DetrConfig,
    DetrSegmentationConfig,
    ModelConfig,
    apply_overrides,
)
from .convert import OURS_BACKBONE, SEGMENTATION_HEAD


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def _backbone_from_keys(state: dict[str, torch.Tensor]) -> BackboneConfig:
    p = OURS_BACKBONE
    if p + "conv1.weight" not in state or p + "layer1.0.conv1.weight" not in state:
        raise CheckpointError("the backbone is not a ResNet; pass backbone=<timm name> to create_model")
    block = "bottleneck" if p + "layer1.0.conv3.weight" in state else "basic"
    depths = tuple(_count(state, rf"^{re.escape(p)}layer{s}\.(\d+)\.") for s in range(1, 5))
    widths = tuple(int(state[f"{p}layer{s}.0.conv1.weight"].shape[0]) for s in range(1, 5))
    stem = int(state[p + "conv1.weight"].shape[0])
    for name, (preset_block, preset_depths) in RESNET_PRESETS.items():
        if (block, depths, widths, stem) == (preset_block, preset_depths, RESNET_DEFAULT_WIDTHS, 64):
            return BackboneConfig(name)
    return BackboneConfig("resnet", block=block, depths=depths, widths=widths, stem_width=stem)


# timm arguments of a transformers 4.x ``backbone_kwargs`` that do not change the eval-mode network
_TIMM_EVAL_NEUTRAL = {"drop_rate", "drop_path_rate", "drop_block_rate", "features_only", "pretrained"}


def _timm_backbone_from_hf(hf: dict[str, Any], family: str) -> BackboneConfig | None:
    """The timm backbone a Hugging Face DETR / Deformable DETR config names, built as transformers builds it.

    transformers 5.x stores ``backbone_config`` (``model_type: timm_backbone``, ``backbone``, ``out_indices``,
    ``output_stride``, ``num_channels``, ``freeze_batch_norm_2d``); 4.x stored ``use_timm_backbone``, ``backbone``,
    ``backbone_kwargs`` (``out_indices``, ``output_stride``, ``in_chans``) and ``dilation``. Levels default as in
    transformers: (1, 2, 3, 4) for DETR (its transformer reads the last), for Deformable DETR (2, 3, 4), or (4,)
    with ``num_feature_levels`` 1. ``dilation`` means ``output_stride=16``. None when no timm backbone is named.
    """
    bb = hf.get("backbone_config") or {}
    if isinstance(bb, dict) and bb.get("model_type") == "timm_backbone" and bb.get("backbone"):
        name, kwargs = bb["backbone"], {k: bb.get(k) for k in ("out_indices", "output_stride")}
        kwargs["in_chans"] = bb.get("num_channels", 3)
        freeze_timm = bool(bb.get("freeze_batch_norm_2d"))
    elif not bb and hf.get("use_timm_backbone", True) and hf.get("backbone"):
        name, kwargs, freeze_timm = hf["backbone"], dict(hf.get("backbone_kwargs") or {}), False
        if hf.get("dilation") and kwargs.get("output_stride") is None:
            kwargs["output_stride"] = 16
        unknown = sorted(set(kwargs) - {"out_indices", "output_stride", "in_chans"} - _TIMM_EVAL_NEUTRAL)
        if unknown:
            raise ConfigError(f"backbone_kwargs {unknown} of the timm backbone {name!r} are not supported "
                              "(supported: out_indices, output_stride, in_chans)")
    else:
        return None
    channels = kwargs.get("in_chans") or hf.get("num_channels") or 3
    if int(channels) != 3:
        raise ConfigError(f"the timm backbone {name!r} takes {channels} input channels; detr-deploy feeds RGB (3)")
    output_stride = kwargs.get("output_stride")
    if hf.get("dilation") and output_stride is None:
        output_stride = 16
    if output_stride not in (None, 32, 16):
        raise ConfigError(f"output_stride={output_stride} of the timm backbone {name!r} is not supported (32, or 16 "
                          "with dilation)")
    out_indices = kwargs.get("out_indices")
    if out_indices is None:
        if family == "deformable":
            out_indices = (2, 3, 4) if int(hf.get("num_feature_levels", 4)) > 1 else (4,)
        else:
            out_indices = (1, 2, 3, 4)
    out_indices = tuple(int(i) for i in out_indices)
    if any(i < 0 for i in out_indices):
        raise ConfigError(f"negative out_indices {list(out_indices)} of the timm backbone {name!r} are not "
                          "supported; give them as feature indices 0..4")
    return BackboneConfig(name, dilation=output_stride == 16, out_stages=out_indices,
                          norm="frozen_bn_timm" if freeze_timm else "frozen_bn")


def _resnet_from_keys(state: dict[str, torch.Tensor]) -> BackboneConfig | None:
    """The built-in ResNet the keys describe, or None when they are not a torchvision/timm-layout ResNet."""
    if OURS_BACKBONE + "conv1.weight" not in state or OURS_BACKBONE + "layer1.0.conv1.weight" not in state:
        return None
    return _backbone_from_keys(state)


def _backbone_from_hint(hint: Any) -> BackboneConfig:
    """The caller's ``backbone=`` override (a name, a dict or a BackboneConfig) for keys that are not a ResNet;
    ``config_with_overrides`` applies it again afterwards, so only its name (and fields) matter here."""
    if isinstance(hint, BackboneConfig):
        return dataclasses.replace(hint)
    if isinstance(hint, dict):
        fields = dict(hint)
        for key in ("out_stages", "depths", "widths"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return BackboneConfig(**fields)
    if isinstance(hint, str):
        return BackboneConfig(hint)
    raise ConfigError(f"backbone must be a name, a dict or a BackboneConfig, got {type(hint).__name__}")


def _backbone_from_hf(hf: dict[str, Any], keys_backbone: BackboneConfig) -> BackboneConfig:
    """Backbone name and dilation from a Hugging Face config; the shape itself comes from the keys."""
    bb = hf.get("backbone_config") or {}
    timm_name = hf.get("backbone") or (bb.get("backbone") if bb.get("model_type") == "timm_backbone" else None)
    dilation = bool(hf.get("dilation")) or bb.get("output_stride") == 16
    if keys_backbone.is_builtin_resnet or not timm_name:
        return BackboneConfig(keys_backbone.name, dilation=dilation, block=keys_backbone.block,
                              depths=keys_backbone.depths, widths=keys_backbone.widths,
                              stem_width=keys_backbone.stem_width)
    return BackboneConfig(timm_name, dilation=dilation)


def _id2label(hf: dict[str, Any] | None, num_classes: int) -> dict[int, str]:
    if hf and isinstance(hf.get("id2label"), dict) and len(hf["id2label"]) == num_classes:
        return {int(k): str(v) for k, v in hf["id2label"].items()}
    return default_id2label(num_classes)


def _heads_and_points(rows: int, levels: int, hf_heads: int | None, hf_points: int | None, what: str):
    """sampling_offsets has M * L * P * 2 rows: split M and P (8 heads, as published, unless told)."""
    heads = hf_heads or 8
    per_head = rows // (2 * levels)
    if hf_points:
        return heads, hf_points
    if per_head % heads:
        raise CheckpointError(f"cannot split {what} sampling offsets ({rows} rows, {levels} levels) into heads and "
                              "points; pass num_heads=... and encoder_points=/decoder_points=...")
    return heads, per_head // heads


def infer_config(state: dict[str, torch.Tensor], hf_config: dict[str, Any] | None = None,
                 file_name: str = "", hints: dict[str, Any] | None = None) -> ModelConfig:
    """Architecture of a checkpoint already converted to our names (see ``convert.to_ours``).

    ``hints`` (the caller's overrides) resolve what keys cannot tell: ``num_heads`` and ``encoder_points`` /
    ``decoder_points`` (sampling_offsets only fixes heads x points).
    """
    hf = dict(hf_config or {})
    hints = hints or {}
    for ours, theirs in (("num_heads", "encoder_attention_heads"), ("num_heads", "decoder_attention_heads"),
                         ("encoder_points", "encoder_n_points"), ("decoder_points", "decoder_n_points")):
        if ours in hints and theirs not in hf:
            hf[theirs] = hints[ours]
    backbone = _resnet_from_keys(state)
    timm_backbone = _timm_backbone_from_hf(hf, "deformable" if "transformer.level_embed" in state else "detr") \
        if hf else None
    if timm_backbone is not None and not (backbone is not None and timm_backbone.name in RESNET_PRESETS):
        backbone = timm_backbone  # what the config names, unless the keys are a built-in ResNet of that name
    elif backbone is None and hints.get("backbone") is not None:
        backbone = _backbone_from_hint(hints["backbone"])
    elif hf:
        if backbone is None:
            backbone = BackboneConfig("resnet50")
        backbone = _backbone_from_hf(hf, backbone)
    elif backbone is None:
        raise CheckpointError("the backbone is not a ResNet and there is no config.json; pass backbone=<timm name>")
    elif "dc5" in file_name.lower():
        backbone.dilation = True
    if hf.get("position_embedding_type", "sine") != "sine":
        raise ConfigError(f"position_embedding_type={hf['position_embedding_type']!r} is not supported (sine only)")
    if hf.get("activation_function", "relu") != "relu":
        raise ConfigError(f"activation_function={hf['activation_function']!r} is not supported (relu only)")
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf.get(enc) is not None and hf.get(dec) is not None and hf[enc] != hf[dec]:
            raise ConfigError(f"{enc}={hf[enc]} differs from {dec}={hf[dec]}; detr-deploy uses one value for both")

    enc_layers = _count(state, r"^transformer\.encoder\.layers\.(\d+)\.")
    dec_layers = _count(state, r"^transformer\.decoder\.layers\.(\d+)\.")
    if "transformer.level_embed" in state:
        levels = int(state["transformer.level_embed"].shape[0])
        d_model = int(state["transformer.level_embed"].shape[1])
        backbone_levels = sum(1 for k in state if re.match(r"^input_proj\.\d+\.0\.weight$", k)
                              and state[k].shape[-1] == 1)
        if backbone is timm_backbone:  # its levels are in the config: they must be the ones the keys project
            if len(backbone.out_stages) != backbone_levels:
                raise CheckpointError(
                    f"the config's timm backbone {backbone.name!r} returns {len(backbone.out_stages)} levels "
                    f"(out_indices {list(backbone.out_stages)}) but the checkpoint projects {backbone_levels}")
        else:
            backbone.out_stages = tuple(range(5 - backbone_levels, 5))
        two_stage = "transformer.enc_output.weight" in state
        refine = bool(hf.get("with_box_refine")) or two_stage or any(
            k.startswith("transformer.decoder.bbox_embed.") for k in state)
        enc_rows = int(state["transformer.encoder.layers.0.self_attn.sampling_offsets.weight"].shape[0])
        dec_rows = int(state["transformer.decoder.layers.0.cross_attn.sampling_offsets.weight"].shape[0])
        heads, enc_points = _heads_and_points(enc_rows, levels, hf.get("encoder_attention_heads"),
                                              hf.get("encoder_n_points"), "encoder")
        _, dec_points = _heads_and_points(dec_rows, levels, hf.get("decoder_attention_heads"),
                                          hf.get("decoder_n_points"), "decoder")
        head = state.get("class_embed.0.weight", state.get("transformer.decoder.class_embed.0.weight"))
        if head is None:
            raise CheckpointError("no class head (class_embed.0 or its transformer.decoder alias) in the checkpoint")
        num_classes = int(head.shape[0])
        if two_stage:
            num_queries = int(hf.get("two_stage_num_proposals") or hf.get("num_queries") or 300)
        else:
            num_queries = int(state["query_embed.weight"].shape[0])
        return DeformableDetrConfig(
            backbone=backbone, d_model=d_model, num_heads=heads, encoder_layers=enc_layers,
            decoder_layers=dec_layers, ffn_dim=int(state["transformer.encoder.layers.0.linear1.weight"].shape[0]),
            num_queries=num_queries, num_classes=num_classes, id2label=_id2label(hf, num_classes),
            num_feature_levels=levels, encoder_points=enc_points, decoder_points=dec_points,
            with_box_refine=refine, two_stage=two_stage)
    if "class_embed.weight" not in state:
        raise CheckpointError("no DETR classifier (class_embed) and no Deformable DETR level_embed in the checkpoint")
    num_classes = int(state["class_embed.weight"].shape[0]) - 1
    fields = dict(backbone=backbone, d_model=int(state["input_proj.weight"].shape[0]),
                  num_heads=int(hf.get("encoder_attention_heads") or 8), encoder_layers=enc_layers,
                  decoder_layers=dec_layers, ffn_dim=int(state["transformer.encoder.layers.0.linear1.weight"].shape[0]),
                  num_queries=int(state["query_embed.weight"].shape[0]), num_classes=num_classes,
                  id2label=_id2label(hf, num_classes))
    if any(k.startswith(SEGMENTATION_HEAD) for k in state):
        # the head reads C2-C4; which labels are stuff is not in the keys: COCO panoptic's for 250 classes
        backbone.out_stages = (1, 2, 3, 4)
        heads = int(state["mask_head.lay1.weight"].shape[0]) - fields["d_model"]
        fields["num_heads"] = int(hf.get("encoder_attention_heads") or heads)
        stuff = COCO_PANOPTIC_STUFF_IDS if num_classes == 250 else ()
        return DetrSegmentationConfig(**fields, stuff_ids=stuff)
    return DetrConfig(**fields)


def config_with_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """Apply user overrides to an inferred config (e.g. ``dilation=True`` for an official DC5 file)."""
    if not overrides:
        config.validate()
        return config
    return apply_overrides(config, overrides)


def warn_invisible_settings(config: ModelConfig, hf_config: dict | None, file_name: str,
                            overrides: dict[str, Any]) -> None:
    """Tell the user which settings were assumed because checkpoints of this kind do not record them."""
    name = file_name or "checkpoint"
    if hf_config is not None:
        return
    if config.backbone.is_builtin_resnet and not config.backbone.dilation and "dilation" not in overrides:
        warnings.warn(f"{name}: DC5 (dilation) cannot be read from official checkpoint keys; assuming a plain "
                      "ResNet (pass dilation=True for a DC5 model)", stacklevel=3)
    points = (getattr(config, "encoder_points", 4), getattr(config, "decoder_points", 4))
    if config.family == "deformable" and "num_heads" not in overrides and points != (4, 4):
        warnings.warn(f"{name}: attention heads x sampling points cannot be split from the keys; assumed "
                      f"{config.num_heads} heads and {points[0]}/{points[1]} points (pass num_heads=... if the model "
                      "differs)", stacklevel=3)
