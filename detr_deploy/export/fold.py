# SPDX-License-Identifier: Apache-2.0
"""Fold frozen BatchNorm into the preceding convolution: fewer graph nodes, same maths up to rounding."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.backbone import FrozenBatchNorm2d

# (conv, norm) attribute pairs of the built-in ResNet's stem and blocks
_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _fold(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> nn.Conv2d:
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(bias * scale + shift)
    return fused


def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose conv + FrozenBatchNorm2d pairs are single convs (built-in ResNets)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        for conv_name, norm_name in _PAIRS:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, FrozenBatchNorm2d):
                setattr(module, conv_name, _fold(conv, norm))
                setattr(module, norm_name, nn.Identity())
        if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d) \
                and isinstance(module[1], FrozenBatchNorm2d):
            module[0] = _fold(module[0], module[1])
            module[1] = nn.Identity()
    return model
