# SPDX-License-Identifier: Apache-2.0
"""TensorFlow "same" padding (timm's ``Conv2dSame``, in the tf_* models) in integer arithmetic, for dynamic export.

``Conv2dSame`` pads by ``total = max((ceil(x / s) - 1) * s + e - x, 0)`` per axis (``x`` the input size, ``s`` the
stride, ``e = dilation * (kernel - 1) + 1``), ``total // 2`` before and the rest after. timm writes it with
``math.ceil(x / s)`` (a float division) and ``max``; traced with symbolic sizes, each stride-2 layer nests the previous
layer's expressions and torch.export's symbolic-shape solver runs for tens of minutes on a tiny MobileNetV3.

Where ``e >= s`` (every such layer of the timm models seen), ``max`` never clips, since
``(ceil(x/s) - 1) * s >= x - s``, and ``ceil(x / s) == (x + s - 1) // s``; so the same padding is
``((x + s - 1) // s - 1) * s + e - x`` in integers, which the solver simplifies. ``SamePadConv2d`` computes exactly
that; the export swaps it in for every ``Conv2dSame`` with ``e >= s`` on both axes and leaves any other as it is.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _total(size, stride: int, effective: int):
    return ((size + stride - 1) // stride - 1) * stride + effective - size


class SamePadConv2d(nn.Conv2d):
    """``Conv2dSame`` with its padding in integer arithmetic (exact when the effective kernel is >= the stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pad_h = _total(height, sh, dh * (kh - 1) + 1)
        pad_w = _total(width, sw, dw * (kw - 1) + 1)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def replace_same_padding(module: nn.Module) -> int:
    """Swap, in place, every timm ``Conv2dSame`` of ``module`` whose effective kernel is at least its stride (both
    axes) for a SamePadConv2d holding the same parameters; returns how many. Without timm there are none."""
    try:
        from timm.layers import Conv2dSame
    except ImportError:
        return 0
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not Conv2dSame:
                continue
            if any(d * (k - 1) + 1 < s for k, s, d in zip(child.kernel_size, child.stride, child.dilation)):
                continue
            conv = SamePadConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, 0,
                                 child.dilation, child.groups, bias=child.bias is not None)
            conv.weight = child.weight
            conv.bias = child.bias
            setattr(parent, name, conv)
            replaced += 1
    return replaced
