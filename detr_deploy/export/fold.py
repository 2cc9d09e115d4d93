# SPDX-License-Identifier: Apache-2.0
"""Fold frozen BatchNorm into the preceding convolution: fewer graph nodes, same maths up to rounding."""
from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

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


def _foldable_convs() -> tuple[type, ...]:
    """Conv classes whose forward is ``conv2d(pad(x), weight, bias)`` with the stored weight: scaling the weight
    scales the output. torch's Conv2d and timm's Conv2dSame ("same" padding computed from the input size); not
    subclasses that transform the weight first (timm's StdConv2d standardises it, folding into it is wrong)."""
    kinds: tuple[type, ...] = (nn.Conv2d,)
    try:
        from timm.layers import Conv2dSame
    except ImportError:  # timm absent: there is no timm backbone either
        return kinds
    return kinds + (Conv2dSame,)


class _Uses(TorchFunctionMode):
    """Counts, per tensor, the torch calls that read it outside a FrozenBatchNorm2d forward."""

    def __init__(self):
        super().__init__()
        self.uses: Counter = Counter()
        self.inside_norm = 0
        self.alive: list[torch.Tensor] = []  # every tensor counted stays alive, so no later tensor reuses its id

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.inside_norm:
            for leaf in tree_leaves((args, kwargs or {})):
                if isinstance(leaf, torch.Tensor):
                    self.uses[id(leaf)] += 1
                    self.alive.append(leaf)
        return func(*args, **(kwargs or {}))


def _traced_pairs(body: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, FrozenBatchNorm2d]]:
    """(conv, norm) pairs of ``body`` where folding is exact, read from one forward pass on ``example``.

    A pair qualifies when each module runs once, the norm's input is the very tensor the conv returned, and nothing
    else reads that tensor (no residual, no in-place op, no second consumer). Tensors are kept alive during the pass
    so that ``id`` stays unique.
    """
    convs = _foldable_convs()
    calls: Counter = Counter()
    produced: dict[int, nn.Module] = {}
    fed: dict[nn.Module, int] = {}
    alive: list[torch.Tensor] = []
    mode = _Uses()
    handles = []

    def conv_done(module, inputs, output):
        calls[module] += 1
        produced[id(output)] = module
        alive.append(output)

    def norm_start(module, inputs):
        calls[module] += 1
        fed[module] = id(inputs[0])
        alive.append(inputs[0])
        mode.inside_norm += 1

    def norm_done(module, inputs, output):
        mode.inside_norm -= 1

    for module in body.modules():
        if type(module) in convs:
            handles.append(module.register_forward_hook(conv_done))
        elif isinstance(module, FrozenBatchNorm2d):
            handles.append(module.register_forward_pre_hook(norm_start))
            handles.append(module.register_forward_hook(norm_done))
    try:
        with torch.no_grad(), mode:
            returned = {id(t) for t in tree_leaves(body(example)) if isinstance(t, torch.Tensor)}
    finally:
        for handle in handles:
            handle.remove()
    readers = Counter(fed.values())  # a conv output two norms read cannot fold into both
    pairs = []
    for norm, tensor in fed.items():
        conv = produced.get(tensor)
        if conv is not None and calls[conv] == 1 and calls[norm] == 1 and mode.uses[tensor] == 0 \
                and readers[tensor] == 1 and tensor not in returned and conv.out_channels == norm.weight.numel():
            pairs.append((conv, norm))
    return pairs


def fold_traced_batchnorm(body: nn.Module, example: torch.Tensor) -> int:
    """Fold, in place, every FrozenBatchNorm2d of ``body`` (any backbone, e.g. a timm one) into the convolution
    whose output it alone reads (see ``_traced_pairs``); the conv keeps its class and padding, gains a bias, and the
    norm becomes an Identity. Returns the number of folded pairs."""
    pairs = _traced_pairs(body, example)
    if not pairs:
        return 0
    folded = {id(norm) for _, norm in pairs}
    with torch.no_grad():
        for conv, norm in pairs:
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
            conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
    for module in list(body.modules()):
        for name, child in list(module.named_children()):
            if id(child) in folded:
                setattr(module, name, nn.Identity())
    return len(pairs)


def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose conv + FrozenBatchNorm2d pairs are single convs.

    Built-in ResNets by their module names; any other backbone (timm) by tracing one small forward pass
    (``fold_traced_batchnorm``), which folds exactly the pairs where it is exact and leaves the rest.
    """
    model = copy.deepcopy(model)
    config = getattr(model, "config", None)
    backbone = getattr(getattr(model, "backbone", None), "body", None)
    if backbone is not None and config is not None and getattr(config.backbone, "is_timm", False):
        folded = copy.deepcopy(backbone)
        fold_traced_batchnorm(folded, torch.zeros(1, 3, 64, 64))
        probe = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():  # a safety net for what the trace cannot see (a forward hook keeping a conv output)
            same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()) + 1e-6)
                       for a, b in zip(backbone(probe), folded(probe)))
        if same:
            model.backbone.body = folded
        return model
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
