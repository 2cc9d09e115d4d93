# SPDX-License-Identifier: Apache-2.0
"""CNN backbones: a built-in ResNet in the torchvision/timm key layout, or any timm ``features_only`` model.

The built-in ResNet has exactly the parameter names of torchvision's and timm's ResNets (``conv1``, ``bn1``,
``layer{1..4}.{b}.conv{1,2,3}``, ``downsample.{0,1}``), which is what both official repositories and the
Hugging Face Hub checkpoints store, so no timm (and hence no torchvision) is needed for the published models.
"""
from __future__ import annotations

import torch
from torch import nn

from .._optional import require
from ..errors import ConfigError
from .config import BackboneConfig


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (four buffers, no parameters).

    ``y = x * scale + shift`` with ``scale = weight * rsqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale``; eps 1e-5 as in DETR, Deformable DETR and Hugging Face.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # present in weights from trainable BN
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def _norm(kind: str, channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels) if kind == "frozen_bn" else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convs. Dilation as in timm (first conv takes the previous dilation)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, first_dilation: int,
                 downsample: nn.Module | None, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=first_dilation, dilation=first_dilation,
                               bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50/101 block ("v1.5": the stride sits on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, first_dilation: int,
                 downsample: nn.Module | None, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(norm, planes)
        # torchvision and timm agree: block 0 of a dilated stage keeps the previous dilation here
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=first_dilation, dilation=first_dilation,
                               bias=False)
        self.bn2 = _norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _norm(norm, planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk without pooling head; returns the requested stages.

    Args:
        block: "basic" or "bottleneck".
        depths: blocks per stage (4 entries).
        widths: planes per stage (4 entries); stage output channels are ``width * expansion``.
        stem_width: channels of the 7x7 stem conv.
        dilation: DC5, replace the stride of stage 4 with dilation 2.
        out_stages: stages to return, 1..4.
        norm: "frozen_bn" or "bn".
    """

    def __init__(self, block: str, depths, widths, stem_width: int, dilation: bool, out_stages, norm: str):
        super().__init__()
        block_cls = Bottleneck if block == "bottleneck" else BasicBlock
        self.out_stages = tuple(out_stages)
        self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = _norm(norm, stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, current_dilation = stem_width, 1
        channels = []
        for stage, (depth, planes) in enumerate(zip(depths, widths), start=1):
            stride = 1 if stage == 1 else 2
            previous_dilation = current_dilation
            if stage == 4 and dilation:
                current_dilation *= stride
                stride = 1
            out_ch = planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != out_ch:
                downsample = nn.Sequential(nn.Conv2d(inplanes, out_ch, 1, stride, bias=False), _norm(norm, out_ch))
            blocks = [block_cls(inplanes, planes, stride, current_dilation, previous_dilation, downsample, norm)]
            blocks += [block_cls(out_ch, planes, 1, current_dilation, current_dilation, None, norm)
                       for _ in range(1, depth)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            inplanes = out_ch
            channels.append(out_ch)
        self.channels = [channels[s - 1] for s in self.out_stages]
        self.strides = [min(4 * 2 ** (s - 1), 16) if dilation else 4 * 2 ** (s - 1) for s in self.out_stages]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in range(1, max(self.out_stages) + 1):
            x = getattr(self, f"layer{stage}")(x)
            if stage in self.out_stages:
                outs.append(x)
        return outs


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d holding its current statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def freeze_batch_norm_like_transformers(module: nn.Module) -> nn.Module:
    """Freeze ``module``'s BatchNorm exactly as transformers' DETR and Deformable DETR do with a timm backbone.

    Every ``nn.BatchNorm2d`` instance, subclasses included, becomes a FrozenBatchNorm2d with eps **1e-5** (whatever
    the layer's own eps; tf_* models use 1e-3) holding its statistics. timm's ``BatchNormAct2d`` is such a subclass,
    so the activation and dropout it carries are dropped with it: a frozen EfficientNet or MobileNetV3 has no
    activation after its convolutions, only inside its squeeze-excite blocks. Checkpoints trained in transformers
    have those semantics, so they are kept here (``norm="frozen_bn_timm"`` keeps the activations).
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features)
            with torch.no_grad():
                if child.weight is not None:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm_like_transformers(child)
    return module


def build_timm_features(config: BackboneConfig) -> nn.Module:
    """Any timm model with ``features_only=True``; stage s is timm feature index s (stride 2**(s+1)).

    Built with the arguments transformers' ``TimmBackbone`` passes: ``out_indices`` = ``out_stages``,
    ``output_stride=16`` for ``dilation`` (else timm's default), ``in_chans=3``, ``pretrained`` (False unless
    asked). BatchNorm is frozen per ``config.norm`` (see BackboneConfig). The timm module is returned as is, so its
    parameter names match Hugging Face's timm-backbone checkpoints; ``channels`` and ``strides`` come from timm's
    ``feature_info``.
    """
    timm = require("timm", f"the timm backbone {config.name!r}")
    kwargs = {"features_only": True, "out_indices": tuple(config.out_stages), "pretrained": config.pretrained,
              "in_chans": 3}
    if config.dilation:
        kwargs["output_stride"] = 16
    try:
        model = timm.create_model(config.name, **kwargs)
    except Exception as exc:  # timm raises RuntimeError/ValueError/KeyError for unknown names
        raise ConfigError(f"timm could not build backbone {config.name!r} with features_only: {exc}") from exc
    if config.norm == "frozen_bn_timm":
        from timm.utils.model import freeze_batch_norm_2d

        model = freeze_batch_norm_2d(model)
    if config.norm in ("frozen_bn", "frozen_bn_timm"):
        # after timm's freezing only BatchNorm2d subclasses timm does not know are left (transformers does the same)
        freeze_batch_norm_like_transformers(model)
    model.channels = list(model.feature_info.channels())
    model.strides = list(model.feature_info.reduction())
    return model


class Backbone(nn.Module):
    """Backbone trunk under the name ``body`` (state-dict keys ``backbone.body.*``).

    ``forward(pixel_values [B,3,H,W]) -> list of [B, channels[i], H_i, W_i]``, one per ``out_stages`` entry.
    """

    def __init__(self, config: BackboneConfig):
        super().__init__()
        config.validate()
        if config.is_builtin_resnet:
            if config.pretrained:
                raise ConfigError("pretrained=True applies to timm backbones only; built-in ResNets load their "
                                  "weights from the detector checkpoint")
            block, depths, widths, stem = config.resnet_spec()
            self.body: nn.Module = ResNet(block, depths, widths, stem, config.dilation, config.out_stages,
                                          config.norm)
        else:
            self.body = build_timm_features(config)
        self.channels: list[int] = list(self.body.channels)
        self.strides: list[int] = list(self.body.strides)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(pixel_values))
