# SPDX-License-Identifier: Apache-2.0
"""Load a checkpoint (any naming) into one of our models, with a precise report when it does not fit."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointMismatchError
from .convert import SEGMENTATION_HEAD, to_ours
from .io import Checkpoint

_HEAD = re.compile(r"^(class_embed|bbox_embed)\.(\d+)\.(.+)$")
_ALIAS = re.compile(r"^transformer\.decoder\.(class_embed|bbox_embed)\.")
_MAX_LISTED = 8


@dataclass
class LoadReport:
    """What was loaded: ``source`` (path or Hub id), ``layout`` ("official"|"hf"|"ours"), ``sha256``, ``notes``."""

    source: str
    layout: str
    sha256: str
    notes: list[str] = field(default_factory=list)


def resolve_head_aliases(state: dict[str, torch.Tensor], expected: set[str],
                         notes: list[str]) -> dict[str, torch.Tensor]:
    """Fill per-layer heads a file omits and drop the aliased decoder copies.

    A missing ``class_embed.j.*`` / ``bbox_embed.j.*`` comes from its alias ``transformer.decoder.<head>.j.*``
    (what box-refine/two-stage files and transformers 5.x store) or, failing that, is tied to head 0 (shared
    heads, and what transformers 5.x writes for box-refine class heads). Present aliases must equal their source.
    """
    out = {k: v for k, v in state.items() if not _ALIAS.match(k)}
    aliases = {k[len("transformer.decoder."):]: v for k, v in state.items() if _ALIAS.match(k)}
    for key, value in aliases.items():
        if key in out and not torch.equal(out[key], value):
            raise CheckpointError(f"{key} and its alias transformer.decoder.{key} differ; the checkpoint is "
                                  "inconsistent (they are one module in the published models)")
    filled_from_alias, tied = set(), set()
    for key in sorted(expected - set(out)):
        m = _HEAD.match(key)
        if not m:
            continue
        if key in aliases:
            out[key] = aliases[key]
            filled_from_alias.add(f"{m[1]}.{m[2]}")
        elif f"{m[1]}.0.{m[3]}" in out or f"{m[1]}.0.{m[3]}" in aliases:
            out[key] = out.get(f"{m[1]}.0.{m[3]}", aliases.get(f"{m[1]}.0.{m[3]}"))
            tied.add(f"{m[1]}.{m[2]}")
    if filled_from_alias:
        notes.append(f"took {len(filled_from_alias)} head(s) from their transformer.decoder aliases")
    if tied:
        notes.append(f"tied {', '.join(sorted(tied))} to head 0 (not stored separately in the file)")
    return out


def _class_count(state: dict[str, torch.Tensor], family: str) -> int | None:
    if family == "detr" and "class_embed.weight" in state:
        return int(state["class_embed.weight"].shape[0]) - 1
    if family == "deformable" and "class_embed.0.weight" in state:
        return int(state["class_embed.0.weight"].shape[0])
    return None


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED]) + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED
                                              else "")
    return f"\n  {title} ({len(items)}): {shown}"


def check_fits(state: dict[str, torch.Tensor], model: nn.Module, label: str) -> None:
    """Raise CheckpointMismatchError naming class-count, missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} (checkpoint {list(state[k].shape)}, model {list(expected[k].shape)})"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if not (missing or unexpected or shapes):
        return
    family = model.config.family
    message = f"the checkpoint does not fit {label}:"
    got, want = _class_count(state, family), model.config.num_classes
    if got is not None and got != want:
        message += (f"\n  class count: the checkpoint has {got} classes, the model {want}. Pass num_classes={got} "
                    f"(create_model(name, weights=..., num_classes={got})), or give only the checkpoint "
                    "(create_model(path)) to read the whole architecture from it.")
        shapes = [s for s in shapes if not s.startswith(("class_embed", "transformer.decoder.class_embed"))]
    if missing:
        message += _listing("missing keys", missing)
    if unexpected:
        message += _listing("unexpected keys", unexpected)
    if shapes:
        message += _listing("shape mismatches", shapes)
    if missing or unexpected:
        message += ("\n  The checkpoint is probably another variant (box refine, two-stage, single-scale, another "
                    "backbone or layer count); create_model(path) reads the architecture from the file.")
    raise CheckpointMismatchError(message)


def _check_shared_heads(state: dict[str, torch.Tensor], model: nn.Module, label: str) -> None:
    """Models without box refinement share one head; different per-layer copies mean another variant."""
    config = model.config
    if config.family != "deformable" or config.with_box_refine:
        return
    for key, value in state.items():
        m = _HEAD.match(key)
        if m and m[2] != "0" and not torch.equal(value, state[f"{m[1]}.0.{m[3]}"]):
            raise CheckpointMismatchError(
                f"the checkpoint does not fit {label}: its {m[1]} heads differ per decoder layer, so it was trained "
                "with box refinement; use deformable-detr-refine or create_model(path)")


def match_segmentation_head(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                            notes: list[str]) -> dict[str, torch.Tensor]:
    """A panoptic checkpoint loads into a detection model (its segmentation head is left out), and a detection
    checkpoint initialises the detector of a segmentation model (the head keeps its random initialisation: the
    two-step training of the DETR paper)."""
    in_file = [k for k in state if k.startswith(SEGMENTATION_HEAD)]
    in_model = [k for k in expected if k.startswith(SEGMENTATION_HEAD)]
    if in_file and not in_model:
        notes.append(f"loaded the detector of a panoptic checkpoint; ignored its {len(in_file)} segmentation-head "
                     "tensors")
        return {k: v for k, v in state.items() if not k.startswith(SEGMENTATION_HEAD)}
    if in_model and not in_file:
        notes.append("a detection checkpoint: the segmentation head (bbox_attention, mask_head) keeps its random "
                     "initialisation; train it before use")
        return {**state, **{k: expected[k] for k in in_model}}
    return state


def load_checkpoint(model: nn.Module, checkpoint: Checkpoint, label: str) -> LoadReport:
    """Convert ``checkpoint`` to our names, resolve head aliases, check it fits, and load it (strict)."""
    notes = list(checkpoint.notes)
    state, layout = to_ours(checkpoint.state_dict, notes)
    expected = model.state_dict()
    state = match_segmentation_head(state, expected, notes)
    state = resolve_head_aliases(state, set(expected), notes)
    check_fits(state, model, label)
    _check_shared_heads(state, model, label)
    dtypes = {str(v.dtype) for v in state.values() if v.is_floating_point()}
    if dtypes - {"torch.float32"}:
        notes.append(f"converted {sorted(dtypes - {'torch.float32'})} weights to float32")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return LoadReport(checkpoint.source, layout, checkpoint.sha256, notes)
