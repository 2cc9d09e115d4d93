# SPDX-License-Identifier: Apache-2.0
"""PyTorch reference models (know nothing of checkpoints, export, runtime or the renderer).

Configs and the registry import without torch; model classes load lazily.
"""
from __future__ import annotations

from .config import BackboneConfig, DeformableDetrConfig, DetrConfig, apply_overrides
from .registry import ALIASES, get_entry, is_registered, list_models, register_model, resolve_name

_LAZY = {
    "DETR": ".detr",
    "DeformableDETR": ".deformable_detr",
    "DetrFamilyModel": ".base",
    "MSDeformAttn": ".deformable_attention",
    "ms_deform_attn_core": ".deformable_attention",
    "build_model": ".build",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALIASES", "BackboneConfig", "DeformableDetrConfig", "DetrConfig", "apply_overrides", "get_entry",
           "is_registered", "list_models", "register_model", "resolve_name", *_LAZY]
