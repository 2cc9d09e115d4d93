# SPDX-License-Identifier: Apache-2.0
"""Key conversions between the three naming schemes: Hugging Face, official, and ours.

Ours is the official scheme with ``backbone.body.`` for ``backbone.0.body.`` and without the aliased
``transformer.decoder.{class,bbox}_embed`` copies (those are resolved when loading, see ``load.py``).
Conversions are pure functions on ``{name: tensor}`` dicts; nothing here knows the target model.
"""
from __future__ import annotations

import re

import torch

from ..errors import CheckpointError

OFFICIAL_BACKBONE = "backbone.0.body."
OURS_BACKBONE = "backbone.body."
HF_BACKBONE = "model.backbone.conv_encoder.model."

# transformers 5.x live-model names (what model.state_dict() returns) -> the legacy names of Hub files
_HF_LIVE_TO_SAVED = [
    (re.compile(r"^((?:detr\.)?model\.backbone\.)model\."), r"\1conv_encoder.model."),
    (re.compile(r"\.mlp\.fc([12])\."), r".fc\1."),
    (re.compile(r"\.o_proj\."), r".out_proj."),
    # the segmentation head (before the q/k/v packing, which would take bbox_attention's q_proj/k_proj)
    (re.compile(r"^bbox_attention\.(q|k)_proj\."), r"bbox_attention.\1_linear."),
    (re.compile(r"^mask_head\.conv([12])\.conv\."), r"mask_head.lay\1."),
    (re.compile(r"^mask_head\.conv([12])\.norm\."), r"mask_head.gn\1."),
    (re.compile(r"^mask_head\.fpn_stages\.(\d)\.fpn_adapter\."), lambda m: f"mask_head.adapter{int(m[1]) + 1}."),
    (re.compile(r"^mask_head\.fpn_stages\.(\d)\.refine\.conv\."), lambda m: f"mask_head.lay{int(m[1]) + 3}."),
    (re.compile(r"^mask_head\.fpn_stages\.(\d)\.refine\.norm\."), lambda m: f"mask_head.gn{int(m[1]) + 3}."),
    (re.compile(r"^mask_head\.output_conv\."), "mask_head.out_lay."),
]
SEGMENTATION_HEAD = ("bbox_attention.", "mask_head.")

# Hugging Face native ResNet (use_timm_backbone=False) -> torchvision/timm names
_HF_NATIVE_STEM = re.compile(r"^embedder\.embedder\.(convolution|normalization)\.(.*)$")
_HF_NATIVE_BLOCK = re.compile(
    r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:layer\.(\d+)|shortcut)\.(convolution|normalization)\.(.*)$")

_HF_DETR = [
    (r"^model\.backbone\.conv_encoder\.model\.", OFFICIAL_BACKBONE),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder.norm."),
    (r"^model\.encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.encoder.layers.\1.norm1."),
    (r"^model\.encoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.encoder.layers.\1.norm2."),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"^model\.decoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^model\.(en|de)coder\.layers\.(\d+)\.fc([12])\.", r"transformer.\1coder.layers.\2.linear\3."),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn\.", r"transformer.decoder.layers.\1.multihead_attn."),
    (r"^model\.(en|de)coder\.layers\.(\d+)\.self_attn\.", r"transformer.\1coder.layers.\2.self_attn."),
]

_HF_DEFORMABLE = [
    (r"^model\.backbone\.conv_encoder\.model\.", OFFICIAL_BACKBONE),
    (r"^model\.input_proj\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^model\.(level_embed|reference_points\.|enc_output_norm\.|enc_output\.|pos_trans_norm\.|pos_trans\.)",
     r"transformer.\1"),
    (r"^model\.encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.encoder.layers.\1.norm1."),
    (r"^model\.encoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.encoder.layers.\1.norm2."),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"^model\.decoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^model\.(en|de)coder\.layers\.(\d+)\.fc([12])\.", r"transformer.\1coder.layers.\2.linear\3."),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn\.", r"transformer.decoder.layers.\1.cross_attn."),
    (r"^model\.(en|de)coder\.layers\.(\d+)\.self_attn\.", r"transformer.\1coder.layers.\2.self_attn."),
    (r"^model\.decoder\.(bbox_embed|class_embed)\.", r"transformer.decoder.\1."),
]
_HF_RULES = {"detr": [(re.compile(p), r) for p, r in _HF_DETR],
             "deformable": [(re.compile(p), r) for p, r in _HF_DEFORMABLE]}
_QKV = re.compile(r"^(.*)\.(q|k|v)_proj\.(weight|bias)$")


def detect_layout(keys) -> str:
    """"ours", "official" or "hf" from the key names (panoptic ``detr.`` prefixes allowed)."""
    keys = list(keys)
    if any(k.startswith(OURS_BACKBONE) for k in keys):
        return "ours"
    if any(k.startswith(("backbone.0.", "detr.backbone.0.", "transformer.", "detr.transformer.")) for k in keys):
        return "official"
    if any(k.startswith(("model.", "detr.model.", "class_labels_classifier.", "bbox_predictor.")) for k in keys):
        return "hf"
    raise CheckpointError("the checkpoint's keys are neither official DETR/Deformable DETR nor Hugging Face names "
                          f"(first keys: {keys[:5]}); is this a DETR-family checkpoint?")


def detect_family(keys) -> str:
    """"deformable" or "detr" from official or Hugging Face key names."""
    keys = set(keys)
    if any(k.endswith("level_embed") for k in keys):
        return "deformable"
    if any(k.startswith(("class_labels_classifier.", "detr.class_labels_classifier.")) or k == "class_embed.weight"
           or k.endswith("transformer.decoder.norm.weight") for k in keys):
        return "detr"
    raise CheckpointError("cannot tell DETR from Deformable DETR in this checkpoint (no level_embed and no "
                          "DETR classifier); is it a detection checkpoint?")


def _strip_panoptic(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """Panoptic checkpoints prefix the detector with ``detr.``; its segmentation head keeps its own names."""
    if not any(k.startswith("detr.") for k in state):
        return state
    notes.append("panoptic checkpoint: the detector's keys carry a detr. prefix")
    return {(key[len("detr."):] if key.startswith("detr.") else key): value for key, value in state.items()}


def _native_resnet_key(rest: str) -> str:
    """``encoder.stages.1.layers.0.layer.2.normalization.weight`` -> ``layer2.0.bn3.weight`` and so on."""
    m = _HF_NATIVE_STEM.match(rest)
    if m:
        return ("conv1." if m[1] == "convolution" else "bn1.") + m[2]
    m = _HF_NATIVE_BLOCK.match(rest)
    if not m:
        return rest
    stage, block, index, kind, tail = m.groups()
    head = f"layer{int(stage) + 1}.{block}."
    if index is None:  # shortcut
        head += "downsample.0." if kind == "convolution" else "downsample.1."
    else:
        head += f"{'conv' if kind == 'convolution' else 'bn'}{int(index) + 1}."
    return head + tail


def _native_resnet_to_timm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(prefix + _native_resnet_key(k[len(prefix):]) if k.startswith(prefix) else k): v
            for k, v in state.items()}


def _pack_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge ``X.{q,k,v}_proj.{weight,bias}`` into ``X.in_proj_{weight,bias}`` (rows q, k, v)."""
    out, parts = {}, {}
    for key, value in state.items():
        m = None if key.startswith(OFFICIAL_BACKBONE) else _QKV.match(key)  # a backbone's own q/k/v stay apart
        if m:
            parts.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        else:
            out[key] = value
    for (module, kind), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise CheckpointError(f"{module} has {sorted(qkv)} projections but needs q, k and v")
        out[f"{module}.in_proj_{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


_HF_BACKBONE_KEY = re.compile(r"^(?:detr\.)?model\.backbone\.conv_encoder\.model\.")


def _live_to_saved(key: str) -> str:
    """One key through ``_HF_LIVE_TO_SAVED``; a backbone key only gets its prefix renamed, because the rest is the
    backbone module's own name (a timm model's ``mlp.fc1`` or ``o_proj`` is not DETR's)."""
    pattern, repl = _HF_LIVE_TO_SAVED[0]
    key = pattern.sub(repl, key)
    if _HF_BACKBONE_KEY.match(key):
        return key
    for pattern, repl in _HF_LIVE_TO_SAVED[1:]:
        key = pattern.sub(repl, key)
    return key


def hf_to_official(state: dict[str, torch.Tensor], family: str, notes: list[str]) -> dict[str, torch.Tensor]:
    """Hugging Face names (Hub files or live transformers 5.x names) -> official names."""
    renamed = {}
    for key, value in state.items():
        renamed[_live_to_saved(key)] = value
    state = _strip_panoptic(renamed, notes)
    if any(k.startswith(HF_BACKBONE + "embedder.") for k in state):
        state = _native_resnet_to_timm(state, HF_BACKBONE)
        notes.append("converted the Hugging Face native ResNet backbone to torchvision/timm names")
    rules = _HF_RULES[family]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, count = pattern.subn(repl, key, count=1)
            if count:
                key = new
                break
        out[key] = value
    return _pack_qkv(out)


def official_to_ours(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    state = _strip_panoptic(state, notes)
    return {(OURS_BACKBONE + k[len(OFFICIAL_BACKBONE):] if k.startswith(OFFICIAL_BACKBONE) else k): v
            for k, v in state.items()}


def to_ours(state: dict[str, torch.Tensor], notes: list[str] | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Any supported naming -> ours. Returns (state, layout it came in)."""
    notes = notes if notes is not None else []
    layout = detect_layout(state)
    if layout == "ours":
        return dict(state), layout
    if layout == "hf":
        state = hf_to_official(state, detect_family(state), notes)
    return official_to_ours(state, notes), layout


def ours_to_official(state: dict[str, torch.Tensor], with_box_refine: bool = False,
                     two_stage: bool = False) -> dict[str, torch.Tensor]:
    """Ours -> official, re-creating the aliased decoder heads that official checkpoints store (and the ``detr.``
    prefix of a panoptic model's detector)."""
    out = {(OFFICIAL_BACKBONE + k[len(OURS_BACKBONE):] if k.startswith(OURS_BACKBONE) else k): v
           for k, v in state.items()}
    if any(k.startswith(SEGMENTATION_HEAD) for k in out):
        out = {(k if k.startswith(SEGMENTATION_HEAD) else "detr." + k): v for k, v in out.items()}
    for key, value in list(out.items()):
        if with_box_refine and key.startswith("bbox_embed."):
            out["transformer.decoder." + key] = value
        if two_stage and key.startswith("class_embed."):
            out["transformer.decoder." + key] = value
    return out
