# SPDX-License-Identifier: Apache-2.0
"""``create_model``: a variant name or a checkpoint -> a loaded reference model. Sits above ``models`` (the
architectures) and ``weights`` (formats, conversion, download), which know nothing of each other's internals.

What ``create_model`` was given is explicit:
- a registered variant name or alias (``list_models()``): that architecture, weights per ``weights=``;
- ``hf-hub:ORG/NAME``: a Hugging Face Hub repository (architecture from its config.json);
- anything else is a local path: an official ``.pth``, a Hugging Face folder or a weights file. A path that does
  not exist is an error that says so. A bare ``org/name`` that exists nowhere locally and has no file suffix is
  still read as a Hub id, with a deprecation warning (write ``hf-hub:org/name``).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError, WeightsUnavailableError
from .models.base import DetrFamilyModel
from .models.build import build_model
from .models.config import apply_overrides
from .models.registry import get_entry, is_registered, resolve_name
from .weights.architecture import config_with_overrides, infer_config, warn_invisible_settings
from .weights.convert import to_ours
from .weights.hub import download_hub, download_url
from .weights.io import Checkpoint, read_checkpoint
from .weights.load import load_checkpoint
from .weights.pretrained import pretrained_source

HUB_PREFIX = "hf-hub:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".json")
_PACKAGE_ROOT = Path(__file__).resolve().parent


class RandomWeightsWarning(UserWarning):
    """The model runs on random weights because its published ones could not be had."""


@dataclass(frozen=True)
class ModelSource:
    """What a model or weights string names: ``kind`` "variant", "path" or "hub", and the name/path/id."""

    kind: str
    value: str


def parse_source(text: str, allow_variant: bool = True) -> ModelSource:
    """Classify ``text`` (see the module docstring). CheckpointError for a local path that does not exist."""
    text = str(text).strip()
    if text.startswith(HUB_PREFIX):
        repo = text[len(HUB_PREFIX):]
        if not _HUB_ID.match(repo):
            raise CheckpointError(f"{text!r}: a Hub repository is hf-hub:ORG/NAME")
        return ModelSource("hub", repo)
    if allow_variant and is_registered(text):
        return ModelSource("variant", text)
    path = Path(text).expanduser()
    if path.exists():
        return ModelSource("path", str(path))
    if _HUB_ID.match(text) and not text.lower().endswith(_CHECKPOINT_SUFFIXES):
        warnings.warn(f"{text!r} is read as a Hugging Face Hub id because no such local path exists; write "
                      f"hf-hub:{text} (bare Hub ids will be refused in a later release)", FutureWarning, stacklevel=3)
        return ModelSource("hub", text)
    looks_like_path = "/" in text or "\\" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)
    if allow_variant and not looks_like_path:
        resolve_name(text)  # raises UnknownModelError: the known names and the closest ones
    raise CheckpointError(f"{text}: no such file or folder")


def _read(source: ModelSource) -> Checkpoint:
    if source.kind == "hub":
        return read_checkpoint(download_hub(source.value), HUB_PREFIX + source.value)
    return read_checkpoint(source.value, source.value)


def _published(variant: str) -> Checkpoint:
    """The variant's published weights: shipped file, then Hub, then the official URL."""
    src = pretrained_source(variant)
    if src.local and (_PACKAGE_ROOT / src.local).exists():
        return read_checkpoint(_PACKAGE_ROOT / src.local, f"detr_deploy/{src.local}")
    errors = []
    if src.hub_id:
        try:
            return read_checkpoint(download_hub(src.hub_id), HUB_PREFIX + src.hub_id)
        except WeightsUnavailableError as exc:
            errors.append(str(exc))
    if src.url:
        try:
            return read_checkpoint(download_url(src.url, src.sha256_prefix), src.url)
        except WeightsUnavailableError as exc:
            errors.append(str(exc))
    raise WeightsUnavailableError("; ".join(errors) or f"{variant} has no published weights")


def _provenance(report) -> dict[str, Any]:
    return {"source": report.source, "format": report.layout, "sha256": report.sha256, "notes": report.notes}


def create_model(name_or_path: str, weights: str | None = None, **overrides: Any) -> DetrFamilyModel:
    """Build a DETR-family model by variant name, or read the whole architecture from a checkpoint.

    Args:
        name_or_path: a variant (``list_models()``, aliases ``detr``/``deformable``), a local checkpoint (official
            ``.pth``, Hugging Face folder or file), or ``hf-hub:ORG/NAME``.
        weights: for a variant name: None/"auto" (its published weights when they can be had, else random
            weights with a RandomWeightsWarning), "random", a local checkpoint, or ``hf-hub:ORG/NAME``. Must be
            None when ``name_or_path`` is already a checkpoint.
        **overrides: config fields (``num_classes``, ``d_model``, ``backbone``, ``dilation``, ...).

    Returns:
        The model in eval mode; ``model.config``, ``model.variant`` and ``model.weights_info`` (``source``,
        ``format``, ``sha256``, ``notes``) describe it and go into artifact metadata.
    """
    source = parse_source(name_or_path)
    if source.kind == "variant":
        entry = get_entry(source.value)
        config = entry.build_config()
        if overrides:
            config = apply_overrides(config, overrides)
        model = build_model(config)
        model.variant = entry.name
        if weights == "random":
            return model
        if weights in (None, "auto"):
            try:
                checkpoint = _published(entry.name)
            except WeightsUnavailableError as exc:
                warnings.warn(f"{entry.name}: published weights unavailable, the model has RANDOM weights and its "
                              f"outputs are meaningless. {exc}", RandomWeightsWarning, stacklevel=2)
                model.weights_info = {"source": "random", "requested": "auto"}
                return model
        else:
            checkpoint = _read(parse_source(str(weights), allow_variant=False))
        label = entry.name + (f" with {overrides}" if overrides else "")
        model.weights_info = _provenance(load_checkpoint(model, checkpoint, label))
        return model

    if weights not in (None, "auto"):
        raise ConfigError(f"weights={weights!r} is for named variants; {name_or_path!r} is already a checkpoint")
    checkpoint = _read(source)
    notes: list[str] = []
    state, _ = to_ours(checkpoint.state_dict, notes)
    name = Path(source.value).name
    config = infer_config(state, checkpoint.hf_config, name, hints=overrides)
    config = config_with_overrides(config, overrides)
    warn_invisible_settings(config, checkpoint.hf_config, name, overrides)
    model = build_model(config)
    model.weights_info = _provenance(load_checkpoint(model, checkpoint, f"the architecture read from {name_or_path}"))
    return model
