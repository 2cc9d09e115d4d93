# SPDX-License-Identifier: Apache-2.0
"""Lazy imports of optional packages with an actionable message. Torch-free."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# package import name -> (pip name, detr-deploy extra that provides it)
_EXTRAS = {
    "torch": ("torch", "export"),
    "timm": ("timm", "timm"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "onnxslim": ("onnxslim", "export"),
    "onnxscript": ("onnxscript", "export"),
    "safetensors": ("safetensors", "export"),
    "huggingface_hub": ("huggingface_hub", "export"),
    "scipy": ("scipy", "train"),
    "skimage": ("scikit-image", "shapes"),
    "onnxruntime_extensions": ("onnxruntime-extensions", "export"),
    "pycocotools": ("pycocotools", "eval"),
    "tensorrt": ("tensorrt", "trt"),
    "cuda": ("cuda-python", "trt"),
    "tqdm": ("tqdm", "export"),
    "torchmetrics": ("torchmetrics", "eval"),
    "tritonclient": ("tritonclient[http,grpc]", "serving"),
    "PIL": ("pillow", None),  # a base dependency, imported lazily so numpy-only callers need not load it
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra that installs it.

    Args:
        module: import name, e.g. "onnxruntime" or "safetensors.torch".
        purpose: what the caller needs it for, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        pip_name, extra = _EXTRAS.get(top, (top, None))
        what = f" ({purpose})" if purpose else ""
        hint = f"pip install 'detr-deploy[{extra}]'" if extra else f"pip install {pip_name}"
        raise MissingDependencyError(
            f"{module} is needed{what} but could not be imported ({exc}). Install it with: {hint}"
        ) from exc
