# SPDX-License-Identifier: Apache-2.0
"""The shapes scenes renderer (``detr-render``) that detr-deploy's own trained models learn from."""
from .scenes import CATEGORIES, COLOURS, RenderConfig, render_dataset, render_scene

__all__ = ["CATEGORIES", "COLOURS", "RenderConfig", "render_dataset", "render_scene"]
