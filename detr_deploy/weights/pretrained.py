# SPDX-License-Identifier: Apache-2.0
"""Where each registered variant's published weights live (the registry in ``models`` holds the architectures)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainedSource:
    """Published weights of a variant.

    Attributes:
        hub_id: Hugging Face Hub repository (config.json + weights).
        url: official release URL (``.pth``), tried when the Hub cannot be reached.
        sha256_prefix: the hash prefix in the official file name, checked after download.
        local: a file shipped inside this package (relative to ``detr_deploy/``), used first.
    """

    hub_id: str | None = None
    url: str | None = None
    sha256_prefix: str | None = None
    local: str | None = None


_FB = "https://dl.fbaipublicfiles.com/detr/"

PRETRAINED: dict[str, PretrainedSource] = {
    "detr-r50": PretrainedSource("facebook/detr-resnet-50", _FB + "detr-r50-e632da11.pth", "e632da11"),
    "detr-r50-dc5": PretrainedSource("facebook/detr-resnet-50-dc5", _FB + "detr-r50-dc5-f0fb7ef5.pth", "f0fb7ef5"),
    "detr-r101": PretrainedSource("facebook/detr-resnet-101", _FB + "detr-r101-2c7b67e5.pth", "2c7b67e5"),
    "detr-r101-dc5": PretrainedSource("facebook/detr-resnet-101-dc5", _FB + "detr-r101-dc5-a2e86def.pth",
                                      "a2e86def"),
    "detr-r50-panoptic": PretrainedSource("facebook/detr-resnet-50-panoptic", _FB + "detr-r50-panoptic-00ce5173.pth",
                                          "00ce5173"),
    "detr-r50-dc5-panoptic": PretrainedSource("facebook/detr-resnet-50-dc5-panoptic",
                                              _FB + "detr-r50-dc5-panoptic-da08f1b1.pth", "da08f1b1"),
    "detr-r101-panoptic": PretrainedSource("facebook/detr-resnet-101-panoptic",
                                           _FB + "detr-r101-panoptic-40021d53.pth", "40021d53"),
    "deformable-detr": PretrainedSource("SenseTime/deformable-detr"),
    "deformable-detr-single-scale": PretrainedSource("SenseTime/deformable-detr-single-scale"),
    "deformable-detr-refine": PretrainedSource("SenseTime/deformable-detr-with-box-refine"),
    "deformable-detr-two-stage": PretrainedSource("SenseTime/deformable-detr-with-box-refine-two-stage"),
    "deformable-detr-shapes": PretrainedSource(local="zoo/weights/deformable_detr_shapes.safetensors"),
    "detr-shapes-panoptic": PretrainedSource(local="zoo/weights/detr_shapes_panoptic.safetensors"),
}


def pretrained_source(variant: str) -> PretrainedSource:
    """The published weights of ``variant`` (an empty source for variants without any)."""
    return PRETRAINED.get(variant, PretrainedSource())
