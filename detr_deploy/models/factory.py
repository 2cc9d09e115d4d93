# SPDX-License-Identifier: Apache-2.0
"""``build_model`` (config -> module) and ``create_model`` (name or checkpoint -> loaded module)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError, WeightsUnavailableError
from ..weights.architecture import config_with_overrides, infer_config, warn_invisible_settings
from ..weights.convert import to_ours
from ..weights.hub import download_hub, download_url
from ..weights.io import Checkpoint, read_checkpoint
from ..weights.load import load_checkpoint
from .config import ModelConfig, apply_overrides
from .registry import ModelEntry, get_entry, is_registered, resolve_name

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class RandomWeightsWarning(UserWarning):
    """The model runs on random weights because its published ones could not be had."""


def build_model(config: ModelConfig) -> nn.Module:
    """A randomly initialised model for ``config`` (official initialisation), in eval mode."""
    from .deformable_detr import DeformableDETR
    from .detr import DETR

    model = DeformableDETR(config) if config.family == "deformable" else DETR(config)
    return model.eval()


def read_weights_source(source: str) -> Checkpoint:
    """A local file/folder, else a Hub id (``org/name``) downloaded with huggingface_hub."""
    path = Path(source).expanduser()
    if path.exists():
        return read_checkpoint(path, source)
    if _HUB_ID.match(source):
        return read_checkpoint(download_hub(source), source)
    raise CheckpointError(f"{source!r} is neither an existing file or folder nor a Hugging Face Hub id (org/name)")


def _published(entry: ModelEntry) -> Checkpoint:
    """The variant's published weights: shipped file, then Hub, then the official URL."""
    src = entry.pretrained
    if src.local and (_PACKAGE_ROOT / src.local).exists():
        return read_checkpoint(_PACKAGE_ROOT / src.local, f"detr_deploy/{src.local}")
    errors = []
    if src.hub_id:
        try:
            return read_checkpoint(download_hub(src.hub_id), src.hub_id)
        except WeightsUnavailableError as exc:
            errors.append(str(exc))
    if src.url:
        try:
            return read_checkpoint(download_url(src.url, src.sha256_prefix), src.url)
        except WeightsUnavailableError as exc:
            errors.append(str(exc))
    raise WeightsUnavailableError("; ".join(errors) or f"{entry.name} has no published weights")


def _attach(model: nn.Module, variant: str | None, info: dict[str, Any]) -> nn.Module:
    model.variant = variant or "custom"
    model.weights_info = info
    return model


def create_model(name_or_path: str, weights: str | None = None, **overrides: Any) -> nn.Module:
    """Build a DETR-family model by variant name, or read the whole architecture from a checkpoint.

    Args:
        name_or_path: a variant (``list_models()``, aliases ``detr``/``deformable``), or a checkpoint: an official
            ``.pth``, a Hugging Face folder or file, or a Hub id.
        weights: for a variant name: None/"auto" (its published weights when they can be had, else random
            weights with a RandomWeightsWarning), "random", a checkpoint path, a Hugging Face folder/file or a
            Hub id. Must be None when ``name_or_path`` is a checkpoint.
        **overrides: config fields (``num_classes``, ``d_model``, ``backbone``, ``dilation``, ...).

    Returns:
        The model in eval mode, with ``model.config``, ``model.variant`` and ``model.weights_info``
        (``source``, ``format``, ``sha256``, ``notes``) for artefact metadata.
    """
    if is_registered(name_or_path):
        entry = get_entry(name_or_path)
        config = entry.build_config()
        if overrides:
            config = apply_overrides(config, overrides)
        model = build_model(config)
        label = f"{entry.name}" + (f" with {overrides}" if overrides else "")
        if weights == "random":
            return _attach(model, entry.name, {"source": "random"})
        if weights in (None, "auto"):
            try:
                checkpoint = _published(entry)
            except WeightsUnavailableError as exc:
                warnings.warn(f"\n{'!' * 78}\n{entry.name}: published weights unavailable, the model has RANDOM "
                              f"weights and its outputs are meaningless.\n{exc}\n{'!' * 78}",
                              RandomWeightsWarning, stacklevel=2)
                return _attach(model, entry.name, {"source": "random", "requested": "auto"})
        else:
            checkpoint = read_weights_source(str(weights))
        report = load_checkpoint(model, checkpoint, label)
        return _attach(model, entry.name, {"source": report.source, "format": report.layout,
                                           "sha256": report.sha256, "notes": report.notes})

    looks_like_checkpoint = Path(name_or_path).expanduser().exists() or bool(_HUB_ID.match(name_or_path))
    if not looks_like_checkpoint:
        resolve_name(name_or_path)  # raises UnknownModelError listing the known names
    if weights not in (None, "auto"):
        raise ConfigError(f"weights={weights!r} is for named variants; {name_or_path!r} is already a checkpoint")
    checkpoint = read_weights_source(name_or_path)
    notes: list[str] = []
    state, _ = to_ours(checkpoint.state_dict, notes)
    name = Path(name_or_path).name
    config = infer_config(state, checkpoint.hf_config, name, hints=overrides)
    config = config_with_overrides(config, overrides)
    warn_invisible_settings(config, checkpoint.hf_config, name, overrides)
    model = build_model(config)
    report = load_checkpoint(model, checkpoint, f"the architecture read from {name_or_path}")
    return _attach(model, None, {"source": report.source, "format": report.layout, "sha256": report.sha256,
                                 "notes": report.notes})
